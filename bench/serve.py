"""Cold start and HTTP throughput of ``infership serve`` on the bundled example, with hey.

Usage: python bench/serve.py [--duration 20] [--concurrency 1 8 32] [--out bench/results/x.json]

Starts the server in its own process, measures process start → ready, then drives it with
``hey`` (Debian package ``hey``) on two request shapes: a raw JPEG upload to /predict, and the
same JPEG as a BYTES tensor through the binary Open Inference Protocol /infer. Prints a Markdown
table and writes the raw numbers as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMAGE = ROOT / "tests" / "testdata" / "images" / "chelsea.jpg"
MODEL = "efficientnet-lite0"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start(port: int, repository: Path | None) -> tuple[subprocess.Popen[bytes], float]:
    """Start the server; return the process and seconds from spawn to ready."""
    began = time.perf_counter()
    argv = [
        sys.executable,
        "-m",
        "infership",
        "serve",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    process = subprocess.Popen(argv + ([str(repository)] if repository else []))
    url = f"http://127.0.0.1:{port}/v2/health/ready"
    while True:
        if process.poll() is not None:
            raise SystemExit(f"server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return process, time.perf_counter() - began
        except OSError:
            pass
        time.sleep(0.005)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait(timeout=30)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def in_process_loop(image: bytes, seconds: float) -> float:
    """Images/s of decode + preprocess + onnxruntime in one sequential loop, no server: the
    reference a server has to approach at concurrency 1."""
    import io

    import numpy as np
    import onnxruntime as ort
    from PIL import Image

    from infership.app import EXAMPLE_REPOSITORY

    model = EXAMPLE_REPOSITORY / MODEL / "1" / "model.onnx"
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])

    def once() -> None:
        rgb = (
            Image.open(io.BytesIO(image))
            .convert("RGB")
            .resize((224, 224), Image.Resampling.BILINEAR)
        )
        x = (np.asarray(rgb, dtype=np.float32) / 255 - 0.5) / 0.5
        session.run(None, {"input": x.transpose(2, 0, 1)[None]})

    for _ in range(10):
        once()
    count, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        once()
        count += 1
    return count / (time.perf_counter() - began)


def binary_infer_body(image: bytes) -> tuple[bytes, int]:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "image",
                    "datatype": "BYTES",
                    "shape": [1],
                    "parameters": {"binary_data_size": len(image) + 4},
                }
            ],
            "outputs": [{"name": "label"}, {"name": "probability"}],
        },
        separators=(",", ":"),
    ).encode()
    return header + struct.pack("<I", len(image)) + image, len(header)


def hey(
    url: str, body: Path, concurrency: int, duration: int, headers: list[str]
) -> dict[str, float]:
    argv = ["hey", "-z", f"{duration}s", "-c", str(concurrency), "-m", "POST", "-D", str(body)]
    for header in headers:
        argv += ["-H", header]
    out = subprocess.run([*argv, url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    percentiles = {int(p): float(s) * 1000 for p, s in re.findall(r"(\d+)%+ in ([\d.]+) secs", out)}
    codes = dict(re.findall(r"\[(\d+)\]\s+(\d+) responses", out))
    return {
        "rps": rps,
        "p50_ms": percentiles.get(50, float("nan")),
        "p99_ms": percentiles.get(99, float("nan")),
        "ok": int(codes.get("200", 0)),
        "errors": sum(int(n) for code, n in codes.items() if code != "200"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--duration", type=int, default=20, help="seconds per hey run")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--repository", type=Path, help="model repository (default: the example)")
    parser.add_argument("--cold-starts", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "serve.json")
    args = parser.parse_args()
    if shutil.which("hey") is None:
        raise SystemExit("hey is not installed: apt-get install hey")

    cold = []
    for i in range(args.cold_starts):
        process, seconds = start(free_port(), args.repository)
        stop(process)
        cold.append(seconds)
        print(f"cold start {i + 1}/{args.cold_starts}: {seconds:.2f} s", file=sys.stderr)

    image = IMAGE.read_bytes()
    loop_rate = in_process_loop(image, args.duration)
    print(f"in-process loop: {loop_rate:.1f} img/s", file=sys.stderr)
    port = free_port()
    process, _ = start(port, args.repository)
    results: dict[str, dict[str, dict[str, float]]] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            jpeg = Path(tmp) / "chelsea.jpg"
            jpeg.write_bytes(image)
            body, header_length = binary_infer_body(image)
            infer_body = Path(tmp) / "infer.bin"
            infer_body.write_bytes(body)
            shapes = {
                "predict (raw JPEG)": (
                    f"http://127.0.0.1:{port}/predict", jpeg, ["Content-Type: image/jpeg"]
                ),
                "OIP infer (binary BYTES)": (
                    f"http://127.0.0.1:{port}/v2/models/{MODEL}/infer",
                    infer_body,
                    [f"Inference-Header-Content-Length: {header_length}",
                     "Content-Type: application/octet-stream"],
                ),
            }  # fmt: skip
            for name, (url, path, headers) in shapes.items():
                hey(url, path, 4, 2, headers)  # warm the connection pool and the model
                for c in args.concurrency:
                    print(f"{name}, c={c} ...", file=sys.stderr)
                    results.setdefault(name, {})[str(c)] = hey(url, path, c, args.duration, headers)
        rss = rss_mb(process.pid)
    finally:
        stop(process)

    python = platform.python_version()
    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {python}",
        "cold_start_s": {"median": statistics.median(cold), "runs": cold},
        "rss_mb_after_load": rss,
        "in_process_loop_img_s": loop_rate,
        "duration_s": args.duration,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\ncold start (spawn → ready), median of {len(cold)}: {statistics.median(cold):.2f} s;"
          f" RSS after the runs: {rss:.0f} MB\n")  # fmt: skip
    print(
        f"in-process loop (decode + preprocess + onnxruntime, no server): {loop_rate:.1f} img/s\n"
    )
    print("| request | concurrency | req/s | p50 ms | p99 ms | non-200 |")
    print("|---|---|---|---|---|---|")
    for name, by_c in results.items():
        for c, r in by_c.items():
            print(f"| {name} | {c} | {r['rps']:.1f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} "
                  f"| {r['errors']} |")  # fmt: skip


if __name__ == "__main__":
    main()
