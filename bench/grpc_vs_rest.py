"""gRPC against REST on the trivial model, in alternating rounds (issue 20, item 6).

    .venv/bin/python bench/grpc_vs_rest.py                    # 5 rounds of 5 s per transport, c=32
    .venv/bin/python bench/grpc_vs_rest.py --rounds 7 -d 8 -c 1 -c 32
    .venv/bin/python bench/grpc_vs_rest.py --smoke            # seconds
    .venv/bin/python bench/grpc_vs_rest.py --append           # and append to BENCHMARKS.md

One ``infership serve`` with ``bench/models`` (``add``: ``y = x + 1`` on FP32 ``[1, 16]``) serves
both transports. Each round runs REST (the binary tensor extension, as ``infership bench
--payload oip-binary`` sends it) and then gRPC (``ModelInfer`` with ``raw_input_contents``, as
tritonclient sends it), one slice each, so the drift of a shared machine falls on both alike.
Medians over rounds are reported, and each ratio to REST is the median of the per-round
ratios. Besides req/s each slice records the CPU time per answer of the server (its whole
process, grpcio's threads included) and of the load generator, both in microseconds: on a
2-core machine a generator that spends more per request takes cores from the server.

``--floor`` adds a third target to every round: a bare ``grpc.aio`` server on uvloop (this script
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
    return {
        "rest": HttpTarget(url, payloads.oip_binary(payloads.infer_path("add"), [x], ["y"])),
        "grpc": GrpcTarget(grpc_url, payloads.grpc_infer_request("add", [x], ["y"])),
    }


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
    rounds: int, seconds: float, warmup: float, loads: list[int], floor: bool = False
) -> dict[str, Any]:
    import subprocess

    from infership.bench import payloads
    from infership.bench.transport import GrpcTarget

    port = suite.free_port()
    url = f"http://127.0.0.1:{port}"
    argv, grpc_url = suite.serve_argv(port, suite.TRIVIAL_MODELS)
    server = suite.Process(argv, f"{url}/v2/health/ready")
    pids = {"rest": server.popen.pid, "grpc": server.popen.pid}
    bare: subprocess.Popen[bytes] | None = None
    by_load: dict[str, Any] = {}
    try:
        chosen = targets(url, grpc_url)
        if floor:
            floor_port = suite.free_port()
            bare = subprocess.Popen([sys.executable, __file__, "--serve-floor", str(floor_port)])
            floor_url = f"grpc://127.0.0.1:{floor_port}"
            wait_for_grpc(floor_url)
            x = payloads.parse_tensor("x:FP32:1,16")
            request = payloads.grpc_infer_request("add", [x], ["y"])
            chosen["grpc floor"] = GrpcTarget(floor_url, request)
            pids["grpc floor"] = bare.pid
        for concurrency in loads:
            slices: dict[str, list[dict[str, Any]]] = {name: [] for name in chosen}
            for index in range(rounds):
                for name, target in chosen.items():
                    piece = one_slice(target, concurrency, seconds, warmup, pids[name])
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
    keys = ("rps", "p50_ms", "p99_ms", "server_us", "client_us")
    return {key: statistics.median(r[key] for r in runs if r[key] is not None) for key in keys}


def markdown(results: dict[str, Any]) -> str:
    rows = [
        f"### gRPC against REST, trivial model ({results['created']})",
        "",
        f"Machine: {results['machine']}; load average {results['load_before']} before the run.",
        f"Command: `{results['command']}`; {results['rounds']} alternating rounds of"
        f" {results['seconds']} s per transport (after {results['warmup']} s warm-up each),"
        " medians.",
        "",
        "| load | transport | req/s | p50 ms | p99 ms | server CPU µs/req | generator CPU µs/req |"
        " ÷ REST req/s |",
        "|---|---|---|---|---|---|---|---|",
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
            rows.append(
                f"| c={load} | {label} | {m['rps']:.0f} | {m['p50_ms']:.2f} | {m['p99_ms']:.2f} |"
                f" {m['server_us']:.0f} | {m['client_us']:.0f} | {ratio} |"
            )
    return "\n".join(rows) + "\n"


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
        "loads": measure(args.rounds, args.seconds, args.warmup, loads, args.floor),
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
