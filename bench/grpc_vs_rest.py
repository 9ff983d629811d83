"""gRPC against REST on the trivial model, in alternating rounds (issue 20, item 6).

    .venv/bin/python bench/grpc_vs_rest.py                    # 5 rounds of 5 s per target, c=32
    .venv/bin/python bench/grpc_vs_rest.py --rounds 7 -d 8 -c 1 -c 32
    .venv/bin/python bench/grpc_vs_rest.py --generator h2load # nghttp2's h2load sends both
    .venv/bin/python bench/grpc_vs_rest.py --smoke            # seconds
    .venv/bin/python bench/grpc_vs_rest.py --append           # and append to BENCHMARKS.md

One ``infership serve`` with ``bench/models`` (``add``: ``y = x + 1`` on FP32 ``[1, 16]``) serves
every target. Each round runs REST (the binary tensor extension, as ``infership bench
--payload oip-binary`` sends it), then gRPC ``ModelInfer`` (``raw_input_contents``, as
tritonclient sends it), then the same request on ``ModelStreamInfer`` (one stream per
connection, as tritonclient's ``async_stream_infer``), one slice each, so the drift of a shared
machine falls on all alike. Medians over rounds are reported, and each ratio to REST is the
median of the per-round ratios. Besides req/s each slice records the CPU time per answer of the
server (its whole process, grpcio's threads included) and of the load generator, both in
microseconds: on a 2-core machine a generator that spends more per request takes cores from
the server.

The generator is ``infership bench``'s own (``--generator python``, the default): HTTP/1.1 on
httptools, gRPC on ``grpc.aio``, which costs 3-4 times as much per request as its REST side.
``--generator h2load`` sends REST (``--h1``) and unary gRPC (HTTP/2 with the gRPC framing) with
nghttp2's C client instead (Debian's ``nghttp2-client``), so both transports meet the same
generator; h2load reads no gRPC status, so every slice is checked against the server's own
count of successful requests. It has no streaming mode and reports no percentiles.

``--floor`` adds a target to every round: a bare ``grpc.aio`` server on uvloop (this script
with ``--serve-floor PORT``) whose one method answers a prepared ``ModelInferResponse`` without
decoding the request. What it costs per request is what grpcio costs before any of our code runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import suite  # bench/suite.py: processes, ports, machine and versions

ROOT = suite.ROOT
RESULTS = ROOT / "bench" / "results"


def targets(url: str, grpc_url: str) -> dict[str, Any]:
    from infership.bench import payloads
    from infership.bench.transport import GrpcTarget, HttpTarget

    x = payloads.parse_tensor("x:FP32:1,16")
    request = payloads.grpc_infer_request("add", [x], ["y"])
    return {
        "rest": HttpTarget(url, payloads.oip_binary(payloads.infer_path("add"), [x], ["y"])),
        "grpc": GrpcTarget(grpc_url, request),
        "grpc stream": GrpcTarget(grpc_url, request, stream=True),
    }


class H2load:
    """One target sent by nghttp2's ``h2load``: REST over HTTP/1.1 or unary gRPC over HTTP/2.

    Its answers are not read, only their HTTP status; a gRPC error is an HTTP 200 with a
    ``grpc-status`` trailer. So every slice also counts the server's successful requests
    (``infership_requests_total``), and any request h2load sent that the server did not count
    as a success is an error."""

    def __init__(
        self, url: str, rest_url: str | None, body: bytes, headers: list[str], h1: bool
    ) -> None:
        """``rest_url``: the infership server whose /metrics count the successes; None for a
        server that counts nothing (the floor)."""
        import tempfile

        self.url, self.rest_url, self.headers, self.h1 = url, rest_url, headers, h1
        self.body = tempfile.NamedTemporaryFile(suffix=".bin")  # noqa: SIM115 - lives with us
        self.body.write(body)
        self.body.flush()

    @classmethod
    def rest(cls, url: str) -> H2load:
        from infership.bench import payloads

        x = payloads.parse_tensor("x:FP32:1,16")
        rest = payloads.oip_binary(payloads.infer_path("add"), [x], ["y"])
        headers = [f"{key}: {value}" for key, value in rest.headers]
        return cls(url + rest.path, url, rest.body, headers, h1=True)

    @classmethod
    def grpc(cls, grpc_url: str, rest_url: str | None) -> H2load:
        import struct

        from infership.bench import payloads

        x = payloads.parse_tensor("x:FP32:1,16")
        message = payloads.grpc_infer_request("add", [x], ["y"])
        framed = b"\x00" + struct.pack(">I", len(message)) + message  # gRPC's message prefix
        path = grpc_url.replace("grpc://", "http://") + f"/{SERVICE}/ModelInfer"
        headers = ["content-type: application/grpc", "te: trailers"]
        return cls(path, rest_url, framed, headers, h1=False)

    def slice(self, concurrency: int, seconds: float, warmup: float, pid: int) -> dict[str, Any]:
        from infership.bench import loadgen

        if warmup > 0:
            self._run(concurrency, warmup)
        before_ok = _successes(self.rest_url) if self.rest_url else 0
        before_cpu = loadgen.server_cpu_seconds(pid)
        out, client_cpu = self._run(concurrency, seconds)
        server_cpu = loadgen.server_cpu_seconds(pid) - before_cpu
        measured = int(_find(r"status codes: (\d+) 2xx", out))
        done = int(_find(r"requests: \d+ total, \d+ started, (\d+) done", out))
        errors = done - measured
        if self.rest_url:  # an HTTP 200 the server did not count as a success was a gRPC error
            errors += max(0, done - (_successes(self.rest_url) - before_ok))
        return {
            "rps": float(_find(r"finished in [\d.]+m?s, ([\d.]+) req/s", out)),
            "errors": errors,
            "p50_ms": None,
            "p99_ms": None,
            "server_us": 1e6 * server_cpu / measured if measured else None,
            "client_us": 1e6 * client_cpu / measured if measured else None,
        }

    def _run(self, concurrency: int, seconds: float) -> tuple[str, float]:
        """h2load's report and the CPU seconds it used."""
        import os
        import subprocess

        argv = ["h2load", "-c", str(concurrency), "-m", "1", "-D", f"{round(seconds * 1000)}ms",
                "-d", self.body.name]  # fmt: skip
        argv += [a for header in self.headers for a in ("-H", header)]
        argv += ["--h1"] if self.h1 else []
        process = subprocess.Popen([*argv, self.url], stdout=subprocess.PIPE, text=True)
        assert process.stdout is not None
        out = process.stdout.read()
        _, status, usage = os.wait4(process.pid, 0)  # reaped here, for its CPU time
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            raise RuntimeError(f"h2load exited with {process.returncode}:\n{out}")
        return out, usage.ru_utime + usage.ru_stime


def _find(pattern: str, text: str) -> str:
    import re

    found = re.search(pattern, text)
    if found is None:
        raise RuntimeError(f"h2load printed no {pattern!r}:\n{text}")
    return found.group(1)


def _successes(url: str) -> int:
    """Requests to ``add`` the server counted as successful, over every transport."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=10).text
    return int(
        sum(
            sample.value
            for family in text_string_to_metric_families(text)
            if family.name == "infership_requests"
            for sample in family.samples
            if sample.name == "infership_requests_total"
            and sample.labels.get("model") == "add"
            and sample.labels.get("outcome") == "success"
        )
    )


def serve_floor(port: int) -> None:
    """A bare grpc.aio server: ModelInfer answers prepared bytes; nothing is decoded."""

    import grpc
    import uvloop

    from infership.protocols.grpc._pb import pb

    answer = pb.ModelInferResponse(model_name="add", model_version="1").SerializeToString()

    async def model_infer(request: bytes, context: object) -> bytes:
        return answer

    async def main() -> None:
        server = grpc.aio.server()
        handler = grpc.unary_unary_rpc_method_handler(model_infer)
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, {"ModelInfer": handler}),)
        )
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()

    uvloop.run(main())


SERVICE = "inference.GRPCInferenceService"


def wait_for_grpc(url: str) -> None:
    import grpc

    with grpc.insecure_channel(url.removeprefix("grpc://")) as channel:
        grpc.channel_ready_future(channel).result(timeout=30)


def one_slice(
    target: Any, concurrency: int, seconds: float, warmup: float, pid: int
) -> dict[str, Any]:
    from infership.bench import loadgen
    from infership.bench.loadgen import Load
    from infership.cli.common import run

    load = Load(concurrency=concurrency, duration_s=seconds, warmup_s=warmup)
    before = loadgen.server_cpu_seconds(pid)
    box: list[loadgen.Recording] = []

    async def go() -> None:
        box.append(await loadgen.run(target, load))

    run(go())
    recording = box[0]
    server_cpu = (loadgen.server_cpu_seconds(pid) - before) * seconds / (seconds + warmup)
    ok = len(recording.latencies_s)
    latencies = sorted(recording.latencies_s)
    return {
        "rps": ok / seconds,
        "errors": sum(recording.errors.values()),
        "p50_ms": 1000 * latencies[len(latencies) // 2] if latencies else None,
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        if latencies
        else None,
        "server_us": 1e6 * server_cpu / ok if ok else None,
        "client_us": 1e6 * recording.client_cpu_s / ok if ok else None,
    }


def measure(
    rounds: int,
    seconds: float,
    warmup: float,
    loads: list[int],
    floor: bool = False,
    generator: str = "python",
) -> dict[str, Any]:
    import subprocess

    from infership.bench import payloads
    from infership.bench.transport import GrpcTarget

    port = suite.free_port()
    url = f"http://127.0.0.1:{port}"
    argv, grpc_url = suite.serve_argv(port, suite.TRIVIAL_MODELS)
    server = suite.Process(argv, f"{url}/v2/health/ready")
    pids = {"rest": server.popen.pid, "grpc": server.popen.pid, "grpc stream": server.popen.pid}
    bare: subprocess.Popen[bytes] | None = None
    by_load: dict[str, Any] = {}
    try:
        chosen: dict[str, Any] = (
            targets(url, grpc_url)
            if generator == "python"
            else {"rest": H2load.rest(url), "grpc": H2load.grpc(grpc_url, url)}
        )
        if floor:
            floor_port = suite.free_port()
            bare = subprocess.Popen([sys.executable, __file__, "--serve-floor", str(floor_port)])
            floor_url = f"grpc://127.0.0.1:{floor_port}"
            wait_for_grpc(floor_url)
            x = payloads.parse_tensor("x:FP32:1,16")
            request = payloads.grpc_infer_request("add", [x], ["y"])
            chosen["grpc floor"] = (
                GrpcTarget(floor_url, request)
                if generator == "python"
                else H2load.grpc(floor_url, None)
            )
            pids["grpc floor"] = bare.pid
        for concurrency in loads:
            slices: dict[str, list[dict[str, Any]]] = {name: [] for name in chosen}
            for index in range(rounds):
                for name, target in chosen.items():
                    piece = (
                        target.slice(concurrency, seconds, warmup, pids[name])
                        if isinstance(target, H2load)
                        else one_slice(target, concurrency, seconds, warmup, pids[name])
                    )
                    slices[name].append(piece)
                    _log(
                        f"c={concurrency} round {index + 1}/{rounds} {name}:"
                        f" {piece['rps']:.0f} req/s, server {piece['server_us']:.0f} µs,"
                        f" client {piece['client_us']:.0f} µs"
                    )
            ratios = {
                name: [g["rps"] / r["rps"] for r, g in zip(slices["rest"], runs, strict=True)]
                for name, runs in slices.items()
                if name != "rest"
            }
            by_load[str(concurrency)] = {
                "slices": slices,
                "median": {name: _medians(runs) for name, runs in slices.items()},
                "ratio_median": {name: statistics.median(r) for name, r in ratios.items()},
                "ratios": ratios,
            }
    finally:
        server.stop()
        if bare is not None:
            bare.terminate()
            bare.wait()
    return by_load


def _medians(runs: list[dict[str, Any]]) -> dict[str, float]:
    keys = ("rps", "p50_ms", "p99_ms", "server_us", "client_us", "errors")
    return {
        key: statistics.median(values) if (values := [r[key] for r in runs if r[key] is not None])
        else None
        for key in keys
    }  # fmt: skip


def markdown(results: dict[str, Any]) -> str:
    rows = [
        f"### gRPC against REST, trivial model ({results['created']})",
        "",
        f"Machine: {results['machine']}; load average {results['load_before']} before the run.",
        f"Command: `{results['command']}` (generator: {results.get('generator', 'python')});"
        f" {results['rounds']} alternating rounds of"
        f" {results['seconds']} s per transport (after {results['warmup']} s warm-up each),"
        " medians.",
        "",
        "| load | transport | req/s | p50 ms | p99 ms | server CPU µs/req | generator CPU µs/req |"
        " errors | ÷ REST req/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for load, entry in results["loads"].items():
        for name, m in entry["median"].items():
            ratios = entry["ratios"].get(name)
            ratio = (
                f"{entry['ratio_median'][name]:.2f}× (rounds {min(ratios):.2f}–{max(ratios):.2f})"
                if ratios
                else ""
            )
            label = name.replace("grpc", "gRPC").replace("rest", "REST")
            errors = sum(piece["errors"] for piece in entry["slices"][name])
            rows.append(
                f"| c={load} | {label} | {m['rps']:.0f} | {_number(m['p50_ms'], 2)} |"
                f" {_number(m['p99_ms'], 2)} | {_number(m['server_us'], 0)} |"
                f" {_number(m['client_us'], 0)} | {errors} | {ratio} |"
            )
    return "\n".join(rows) + "\n"


def _number(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("-d", "--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("-c", "--concurrency", type=int, action="append")
    parser.add_argument("--smoke", action="store_true", help="2 rounds of 0.5 s")
    parser.add_argument("--floor", action="store_true", help="add a bare grpc.aio server")
    parser.add_argument(
        "--generator", choices=("python", "h2load"), default="python",
        help="infership bench's own client, or nghttp2's h2load for REST and unary gRPC",
    )  # fmt: skip
    parser.add_argument("--serve-floor", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help="JSON results (default bench/results/...)")
    parser.add_argument("--append", action="store_true", help="append the table to BENCHMARKS.md")
    args = parser.parse_args()
    if args.serve_floor:
        serve_floor(args.serve_floor)
        return
    if args.smoke:
        args.rounds, args.seconds, args.warmup = 2, 0.5, 0.2
    loads = args.concurrency or [32]
    import os

    load_before = " ".join(f"{v:.2f}" for v in os.getloadavg())
    results = {
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": suite.machine(),
        "versions": suite.versions(),
        "command": " ".join(["python", "bench/grpc_vs_rest.py", *sys.argv[1:]]),
        "rounds": args.rounds,
        "seconds": args.seconds,
        "warmup": args.warmup,
        "load_before": load_before,
        "generator": args.generator,
        "loads": measure(args.rounds, args.seconds, args.warmup, loads, args.floor, args.generator),
    }
    text = markdown(results)
    print(text)
    if not args.smoke:
        stamp = results["created"].replace("-", "").replace(":", "")
        out = args.out or RESULTS / f"grpc-vs-rest-{stamp}.json"
        out.write_text(json.dumps(results, indent=1) + "\n")
        _log(f"wrote {out}")
        if args.append:
            with (ROOT / "BENCHMARKS.md").open("a") as f:
                f.write("\n" + text)


if __name__ == "__main__":
    main()
