"""gRPC against REST on the trivial model, in alternating rounds (issue 20, item 6).

    .venv/bin/python bench/grpc_vs_rest.py                    # 5 rounds of 5 s per transport, c=32
    .venv/bin/python bench/grpc_vs_rest.py --rounds 7 -d 8 -c 1 -c 32
    .venv/bin/python bench/grpc_vs_rest.py --smoke            # seconds
    .venv/bin/python bench/grpc_vs_rest.py --append           # and append to BENCHMARKS.md

One ``infership serve`` with ``bench/models`` (``add``: ``y = x + 1`` on FP32 ``[1, 16]``) serves
both transports. Each round runs REST (the binary tensor extension, as ``infership bench
--payload oip-binary`` sends it) and then gRPC (``ModelInfer`` with ``raw_input_contents``, as
tritonclient sends it), one slice each, so the drift of a shared machine falls on both alike.
Medians over rounds are reported, and the gRPC / REST ratio is the median of the per-round
ratios. Besides req/s each slice records the CPU time per answer of the server (its whole
process, grpcio's threads included) and of the load generator, both in microseconds: on a
2-core machine a generator that spends more per request takes cores from the server.
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


def measure(rounds: int, seconds: float, warmup: float, loads: list[int]) -> dict[str, Any]:
    port = suite.free_port()
    url = f"http://127.0.0.1:{port}"
    argv, grpc_url = suite.serve_argv(port, suite.TRIVIAL_MODELS)
    server = suite.Process(argv, f"{url}/v2/health/ready")
    pid = server.popen.pid
    by_load: dict[str, Any] = {}
    try:
        pair = targets(url, grpc_url)
        for concurrency in loads:
            slices: dict[str, list[dict[str, Any]]] = {"rest": [], "grpc": []}
            for index in range(rounds):
                for name, target in pair.items():
                    piece = one_slice(target, concurrency, seconds, warmup, pid)
                    slices[name].append(piece)
                    _log(
                        f"c={concurrency} round {index + 1}/{rounds} {name}:"
                        f" {piece['rps']:.0f} req/s, server {piece['server_us']:.0f} µs,"
                        f" client {piece['client_us']:.0f} µs"
                    )
            ratios = [
                g["rps"] / r["rps"] for r, g in zip(slices["rest"], slices["grpc"], strict=True)
            ]
            by_load[str(concurrency)] = {
                "slices": slices,
                "median": {name: _medians(runs) for name, runs in slices.items()},
                "ratio_median": statistics.median(ratios),
                "ratios": ratios,
            }
    finally:
        server.stop()
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
        " gRPC / REST |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for load, entry in results["loads"].items():
        for name in ("rest", "grpc"):
            m = entry["median"][name]
            ratio = (
                f"{entry['ratio_median']:.2f}× (rounds {min(entry['ratios']):.2f}–"
                f"{max(entry['ratios']):.2f})"
                if name == "grpc"
                else ""
            )
            rows.append(
                f"| c={load} | {name.upper()} | {m['rps']:.0f} | {m['p50_ms']:.2f} |"
                f" {m['p99_ms']:.2f} | {m['server_us']:.0f} | {m['client_us']:.0f} | {ratio} |"
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
    parser.add_argument("--out", type=Path, help="JSON results (default bench/results/...)")
    parser.add_argument("--append", action="store_true", help="append the table to BENCHMARKS.md")
    args = parser.parse_args()
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
        "loads": measure(args.rounds, args.seconds, args.warmup, loads),
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
