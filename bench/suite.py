"""The benchmark suite: one command, results appended to BENCHMARKS.md.

    .venv/bin/python bench/suite.py            # full run, about 17 minutes on 2 cores
    .venv/bin/python bench/suite.py --smoke    # seconds; what CI runs so the suite cannot rot

Parts, all in one run so their ratios need no correction between days:
  a. the in-process limit: decode + preprocess + onnxruntime of the example with no HTTP, per
     batch size (the best is the limit), and onnxruntime alone on a ready tensor;
  b. ``infership serve`` over loopback sockets: image upload, OIP binary and OIP JSON at
     concurrency 1, 8, 32, and an open-loop rate sweep up to saturation; cold start and RSS;
  c. per-request overhead on a trivial model (bench/models/add: y = x + 1 on 16 floats);
  d. the peers (bench/peers/), each in its own virtualenv from bench/peers/setup.sh, on the
     same loads; a peer whose virtualenv is missing is reported as such, not skipped silently;
  e. the two headline ratios (upload / limit, trivial model / FastAPI) again, in alternating
     rounds, so that the machine's drift between minutes falls on both sides of each ratio.

Load comes from ``infership bench`` (the library), which reports the share of the cores it
used itself. The JSON goes to bench/results/; ``--append`` adds a section to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
IMAGE = ROOT / "tests" / "testdata" / "images" / "chelsea.jpg"
EXAMPLE = "efficientnet-lite0"
TRIVIAL_MODELS = ROOT / "bench" / "models"
PEERS = ROOT / "bench" / "peers"
PEER_NAMES = ("fastapi", "litserve", "bentoml", "mlserver", "rayserve")


@dataclass(frozen=True)
class Plan:
    duration: float
    warmup: float
    concurrency: tuple[int, ...]
    sweep: tuple[float, ...]  # fractions of the c=32 upload throughput
    cold_starts: int
    loop_seconds: float
    headline_rounds: int


FULL = Plan(10.0, 2.0, (1, 8, 32), (0.5, 0.8, 0.9, 1.0, 1.1), 5, 8.0, 3)
SMOKE = Plan(0.5, 0.2, (1, 4), (0.5, 1.1), 1, 0.5, 1)


# -- processes -------------------------------------------------------------------------------


class Process:
    """A server in a child process: cold start to a 200 from ``ready_url``, RSS while loaded.

    Its stderr goes to a file, not a pipe: nobody reads a pipe while the server runs, and a
    chatty server (Ray forwards its actors' logs) would block once the pipe is full."""

    def __init__(self, argv: list[str], ready_url: str, env: dict[str, str] | None = None) -> None:
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed by stop()
        began = time.perf_counter()
        self.popen = subprocess.Popen(
            argv, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL,
            stderr=self.stderr, start_new_session=True,
        )  # fmt: skip
        self.peak_rss_mb = 0.0
        self._window_peak_rss_mb = 0.0
        self._peaks = threading.Lock()
        self._sampling = False
        try:
            self.cold_start_s = _wait_ready(self.popen, ready_url, began)
        except RuntimeError as exc:
            self._end()
            self.stderr.seek(0)
            err = self.stderr.read().decode(errors="replace")[-2000:]
            self.stderr.close()
            raise RuntimeError(f"{exc}:\n{err}") from None

    def rss_mb(self) -> float:
        """Resident memory summed over the server's process tree (peers fork workers, Ray its
        raylet and actors). Pages shared between them count in each process, as ``ps`` shows."""
        return sum(_rss_kb(pid) for pid in _tree(self.popen.pid)) / 1024

    def sample_rss(self) -> threading.Thread:
        self._sampling = True

        def sample() -> None:
            while self._sampling:
                rss = self.rss_mb()
                with self._peaks:
                    self.peak_rss_mb = max(self.peak_rss_mb, rss)
                    self._window_peak_rss_mb = max(self._window_peak_rss_mb, rss)
                time.sleep(0.25)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        return thread

    def new_window(self) -> float:
        """Start a new window of RSS sampling; returns the peak of the window it ends."""
        with self._peaks:
            peak, self._window_peak_rss_mb = self._window_peak_rss_mb, 0.0
        return peak

    def stop(self) -> None:
        self._end()
        self.stderr.close()

    def _end(self) -> None:
        """SIGTERM, as the server's own shutdown expects; then nothing of its tree or session may
        outlive it (a peer's workers, or Ray's node agents, which ignore SIGTERM)."""
        self._sampling = False
        tree = _tree(self.popen.pid)
        self.popen.terminate()
        try:
            self.popen.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
        deadline = time.perf_counter() + 5
        for signal_ in (15, 9):
            left = [pid for pid in [*tree, *_tree(self.popen.pid)] if _alive(pid)]
            for pid in left:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal_)
            while left and time.perf_counter() < deadline:
                time.sleep(0.1)
                left = [pid for pid in left if _alive(pid)]
            deadline = time.perf_counter() + 5


def _wait_ready(
    popen: subprocess.Popen[bytes], url: str, began: float, limit: float = 120
) -> float:
    while time.perf_counter() - began < limit:
        if popen.poll() is not None:
            raise RuntimeError(f"{popen.args} exited with {popen.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return time.perf_counter() - began
        except OSError:
            pass
        time.sleep(0.01)
    raise RuntimeError(f"{popen.args} not ready after {limit} s")


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _tree(pid: int) -> list[int]:
    """The process and its descendants, the children of every thread (Ray and multiprocessing
    start processes from threads other than the main one), and the members of its session (the
    server was started in a session of its own; daemonized processes leave the tree, not it)."""
    found, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        try:
            tasks = list(Path(f"/proc/{parent}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                children = {int(c) for c in (task / "children").read_text().split()}
            except OSError:
                continue
            frontier += children - found
            found |= children
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) not in found and _session(entry) == pid:
            found.add(int(entry.name))
    return sorted(found)


def _session(proc: Path) -> int | None:
    try:  # fields after the parenthesised command name: state ppid pgrp session ...
        return int((proc / "stat").read_text().rsplit(")", 1)[1].split()[3])
    except (OSError, IndexError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:  # a zombie has exited; its parent (not us) reaps it
        return (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]) != "Z"
    except (OSError, IndexError):
        return False


_handed_out: set[int] = set()


def free_port() -> int:
    """A free loopback port, never one handed out before in this process: the kernel may give
    the same ephemeral port to two binds in a row, and a server would get REST's port for gRPC."""
    import socket

    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


# -- a. the in-process limit -----------------------------------------------------------------


def in_process_limit(seconds: float) -> dict[str, Any]:
    """img/s of the example's own preprocessing + onnxruntime, per batch size, no server."""
    import numpy as np

    preprocessor, runtime = _example_pipeline()
    image = IMAGE.read_bytes()
    pipeline, alone = {}, {}
    try:
        for batch in (1, 2, 4, 8):
            ready = np.ascontiguousarray(np.repeat(preprocessor.batch([image]), batch, axis=0))
            pipeline[batch] = _pipeline_rate(preprocessor, runtime, batch, seconds)
            alone[batch] = _rate(lambda r=ready: runtime.infer({"input": r}), seconds) * batch
    finally:
        runtime.close()
    best = max(pipeline, key=pipeline.__getitem__)
    return {"pipeline_img_s": pipeline, "onnxruntime_img_s": alone, "best_batch": best,
            "limit_img_s": pipeline[best]}  # fmt: skip


def _example_pipeline() -> tuple[Any, Any]:
    from infership.app import EXAMPLE_REPOSITORY
    from infership.processing.image import ImagePreprocessor
    from infership.repository.manifest import load_manifest
    from infership.runtimes.onnx import OnnxRuntime

    folder = EXAMPLE_REPOSITORY / EXAMPLE
    manifest = load_manifest(folder / "model.yaml")
    assert manifest.preprocess.image is not None
    preprocessor = ImagePreprocessor(manifest.preprocess.image, max_pixels=40_000_000)
    return preprocessor, OnnxRuntime.load(folder / "1" / "model.onnx", manifest.onnx)


def _pipeline_rate(preprocessor: Any, runtime: Any, batch: int, seconds: float) -> float:
    """img/s of decode + preprocess + onnxruntime, one batch after the other."""
    images = [IMAGE.read_bytes()] * batch
    return _rate(lambda: runtime.infer({"input": preprocessor.batch(images)}), seconds) * batch


def _rate(work: Any, seconds: float) -> float:
    for _ in range(3):
        work()
    count, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        work()
        count += 1
    return count / (time.perf_counter() - began)


# -- loads -----------------------------------------------------------------------------------


def measure(target: Any, payload: str, loads: list[Any], pid: int | None) -> list[dict[str, Any]]:
    from infership.bench.runner import measure as run_loads
    from infership.cli.common import run

    box: list[Any] = []

    async def go() -> None:
        box.extend(await run_loads([target], payload, loads, server_pids=[pid] if pid else []))

    run(go())
    return [r.model_dump() for r in box]


def closed(plan: Plan) -> list[Any]:
    from infership.bench.loadgen import Load

    return [Load(concurrency=c, duration_s=plan.duration, warmup_s=plan.warmup)
            for c in plan.concurrency]  # fmt: skip


def http_targets(url: str, grpc_url: str, model: str) -> dict[str, Any]:
    from infership.bench import payloads
    from infership.bench.transport import GrpcTarget, HttpTarget

    image = IMAGE.read_bytes()
    path = payloads.infer_path(model)
    pixels = payloads.parse_tensor("input:FP32:1,3,224,224")
    return {
        "upload": HttpTarget(url, payloads.upload(image, IMAGE.name)),
        "oip-binary": HttpTarget(url, payloads.oip_binary(
            path, [payloads.image_tensor(image)], ["label", "probability"])),
        "oip-json": HttpTarget(url, payloads.oip_json(path, [pixels], ["logits"])),
        "grpc": GrpcTarget(grpc_url, payloads.grpc_infer_request(
            model, [payloads.image_tensor(image)], ["label", "probability"])),
    }  # fmt: skip


# -- b. and c. our server --------------------------------------------------------------------


def serve_argv(port: int, repository: Path | None = None) -> tuple[list[str], str]:
    """The command serving ``repository`` on ``port`` (REST) and a free port (gRPC), and the
    gRPC target's URL."""
    grpc_port = free_port()
    argv = [sys.executable, "-m", "infership", "serve", "--port", str(port), "--grpc-port",
            str(grpc_port), "--log-level", "warning"]  # fmt: skip
    return argv + ([str(repository)] if repository else []), f"grpc://127.0.0.1:{grpc_port}"


def ours(plan: Plan) -> dict[str, Any]:
    from infership.bench.loadgen import Load

    cold = []
    for _ in range(plan.cold_starts):
        port = free_port()
        p = Process(serve_argv(port)[0], f"http://127.0.0.1:{port}/v2/health/ready")
        cold.append(p.cold_start_s)
        p.stop()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv, grpc_url = serve_argv(port)
    server = Process(argv, f"{url}/v2/health/ready")
    server.sample_rss()
    runs: list[dict[str, Any]] = []
    rss_by_payload: dict[str, float] = {}
    try:
        for payload, target in http_targets(url, grpc_url, EXAMPLE).items():
            _log(f"infership: {payload}")
            server.new_window()
            runs += measure(target, payload, closed(plan), server.popen.pid)
            rss_by_payload[payload] = server.new_window()
        saturation = max(r["throughput_rps"] for r in runs if r["payload"] == "upload")
        sweep = [Load(rate=round(f * saturation, 1), duration_s=plan.duration,
                      warmup_s=plan.warmup) for f in plan.sweep]  # fmt: skip
        _log(f"infership: open-loop sweep around {saturation:.0f} req/s")
        upload = http_targets(url, grpc_url, EXAMPLE)["upload"]
        runs += measure(upload, "upload", sweep, server.popen.pid)
    finally:
        server.stop()
    return {"cold_start_s": cold, "peak_rss_mb": server.peak_rss_mb,
            "peak_rss_mb_by_payload": rss_by_payload, "runs": runs}  # fmt: skip


def trivial(plan: Plan) -> dict[str, Any]:
    from infership.bench import payloads
    from infership.bench.transport import GrpcTarget, HttpTarget

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv, grpc_url = serve_argv(port, TRIVIAL_MODELS)
    server = Process(argv, f"{url}/v2/health/ready")
    server.sample_rss()
    x = payloads.parse_tensor("x:FP32:1,16")
    path = payloads.infer_path("add")
    targets = {
        "oip-binary": HttpTarget(url, payloads.oip_binary(path, [x], ["y"])),
        "oip-json": HttpTarget(url, payloads.oip_json(path, [x], ["y"])),
        "grpc": GrpcTarget(grpc_url, payloads.grpc_infer_request("add", [x], ["y"])),
    }
    runs: list[dict[str, Any]] = []
    try:
        for payload, target in targets.items():
            _log(f"infership trivial model: {payload}")
            runs += measure(target, payload, closed(plan), server.popen.pid)
    finally:
        server.stop()
    return {"cold_start_s": [server.cold_start_s], "peak_rss_mb": server.peak_rss_mb,
            "runs": runs}  # fmt: skip


# -- d. peers --------------------------------------------------------------------------------


def peer(name: str, plan: Plan) -> dict[str, Any]:
    """One peer on the image and the trivial model, each as its docs send them, or why it did not
    run."""
    python = PEERS / ".venvs" / name / "bin" / "python"
    if not python.exists():
        return {"missing": f"no virtualenv; run bench/peers/setup.sh {name}"}
    result: dict[str, Any] = {"runs": []}
    for mode in ("image", "add"):
        try:
            server, request, payload, version = _start_peer(name, mode)
        except RuntimeError as exc:
            result.setdefault("failed", []).append(f"{mode}: {str(exc)[-500:]}")
            continue
        result["version"] = version
        try:
            _log(f"{name}: {mode}")
            # No server CPU: peers compute in child processes that /proc/PID/stat leaves out.
            result["runs"] += measure(request, payload, closed(plan), None)
        finally:
            server.stop()
        result[f"{mode}_cold_start_s"] = server.cold_start_s
        result[f"{mode}_peak_rss_mb"] = server.peak_rss_mb
    return result


def _start_peer(name: str, mode: str) -> tuple[Process, Any, str, str]:
    """A peer serving ``mode`` (image or add), ready; its target, payload name and version.
    ``bench/peers/common.py request NAME MODE`` says how it starts and what it is sent."""
    import base64

    from infership.bench import payloads
    from infership.bench.transport import HttpTarget

    python = PEERS / ".venvs" / name / "bin" / "python"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {"PORT": str(port), "MODE": mode, "PYTHONPATH": str(PEERS)}
    spec = json.loads(subprocess.run(
        [str(python), str(PEERS / "common.py"), "request", name, mode], check=True,
        capture_output=True, text=True, env={**os.environ, **env}).stdout)  # fmt: skip
    server = Process(spec["argv"], url + spec["ready"], {**env, **spec["env"]})
    server.sample_rss()
    image = IMAGE.read_bytes()
    if "body" not in spec:
        request = payloads.upload(image, IMAGE.name, spec["path"])
        payload = "upload"
    else:
        x = payloads.parse_tensor("x:FP32:1,16")
        body = spec["body"].replace("$X", json.dumps(x.data.ravel().tolist()))
        body = body.replace("$IMAGE", base64.b64encode(image).decode())
        headers = (("Content-Type", "application/json"),)
        request = payloads.HttpRequest("POST", spec["path"], headers, body.encode())
        payload = "json (trivial)" if mode == "add" else "oip-json (JPEG base64)"
    return server, HttpTarget(url, request), payload, spec["version"]


# -- e. the two headline ratios, interleaved -------------------------------------------------


def headline(plan: Plan, best_batch: int, peers: list[str]) -> dict[str, Any]:
    """The ratios two targets are about, measured as alternating rounds, so that the machine's
    drift (several per cent from one minute to the next on a shared 2-core host) falls on
    both sides of each ratio alike: image upload at the top concurrency against the in-process
    limit at its best batch; and the trivial model's best req/s against the plain FastAPI
    app's, the best peer on it (when it is among ``peers``). Medians are reported."""
    from infership.bench import payloads
    from infership.bench.loadgen import Load
    from infership.bench.transport import HttpTarget

    top = [Load(concurrency=max(plan.concurrency), duration_s=plan.duration,
                warmup_s=plan.warmup)]  # fmt: skip
    busy = [Load(concurrency=c, duration_s=plan.duration, warmup_s=plan.warmup)
            for c in plan.concurrency if c > 1]  # fmt: skip
    rounds: list[dict[str, float]] = []
    preprocessor, runtime = _example_pipeline()
    servers: list[Process] = []
    try:
        port = free_port()
        argv, grpc_url = serve_argv(port)
        servers.append(Process(argv, f"http://127.0.0.1:{port}/v2/health/ready"))
        upload = http_targets(f"http://127.0.0.1:{port}", grpc_url, EXAMPLE)["upload"]
        port = free_port()
        argv, _ = serve_argv(port, TRIVIAL_MODELS)
        servers.append(Process(argv, f"http://127.0.0.1:{port}/v2/health/ready"))
        x = payloads.parse_tensor("x:FP32:1,16")
        trivial_target = HttpTarget(f"http://127.0.0.1:{port}", payloads.oip_binary(
            payloads.infer_path("add"), [x], ["y"]))  # fmt: skip
        fastapi = None
        if "fastapi" in peers and (PEERS / ".venvs" / "fastapi").exists():
            server, fastapi, _, _ = _start_peer("fastapi", "add")
            servers.append(server)
        for i in range(plan.headline_rounds):
            _log(f"e. headline round {i + 1} of {plan.headline_rounds}")
            row = {"limit_img_s": _pipeline_rate(preprocessor, runtime, best_batch, plan.duration)}
            row["upload_rps"] = measure(upload, "upload", top, servers[0].popen.pid)[0][
                "throughput_rps"]  # fmt: skip
            row["trivial_rps"] = max(r["throughput_rps"] for r in measure(
                trivial_target, "oip-binary", busy, servers[1].popen.pid))  # fmt: skip
            if fastapi is not None:
                row["fastapi_rps"] = max(r["throughput_rps"] for r in measure(
                    fastapi, "json (trivial)", busy, None))  # fmt: skip
            rounds.append(row)
    finally:
        runtime.close()
        for server in servers:
            server.stop()
    upload_ratio = statistics.median(r["upload_rps"] / r["limit_img_s"] for r in rounds)
    result: dict[str, Any] = {"rounds": rounds, "upload_over_limit": upload_ratio}
    if all("fastapi_rps" in r for r in rounds):
        result["trivial_over_fastapi"] = statistics.median(
            r["trivial_rps"] / r["fastapi_rps"] for r in rounds)  # fmt: skip
    return result


# -- report ----------------------------------------------------------------------------------


def versions() -> dict[str, str]:
    from importlib.metadata import version

    found = {"python": platform.python_version()}
    for package in ("infership", "onnxruntime", "numpy", "Pillow", "uvicorn", "httptools",
                    "uvloop", "starlette"):  # fmt: skip
        found[package] = version(package)
    rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True).stdout.strip()  # fmt: skip
    found["git"] = rev or "unknown"
    return found


def machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    memory = int(Path("/proc/meminfo").read_text().split()[1]) / 1024 / 1024
    return f"{platform.machine()}, {os.cpu_count()} cores ({model}), {memory:.0f} GiB"


def markdown(results: dict[str, Any]) -> str:
    lines = [f"## Suite run {results['created']}", ""]
    lines += [f"- **Machine:** {results['machine']}",
              "- **Versions:** " + ", ".join(f"{k} {v}" for k, v in results["versions"].items()),
              f"- **Command:** `{results['command']}` ({results['wall_s'] / 60:.1f} min); raw "
              f"results in `{results['json']}`", ""]  # fmt: skip
    limit = results["limit"]
    lines += ["### a. In-process limit (no HTTP)", "",
              "| batch | decode + preprocess + onnxruntime img/s | onnxruntime alone img/s |",
              "|---|---|---|"]  # fmt: skip
    for b, rate in limit["pipeline_img_s"].items():
        lines.append(f"| {b} | {rate:.1f} | {limit['onnxruntime_img_s'][b]:.1f} |")
    lines += ["", f"Limit: **{limit['limit_img_s']:.1f} img/s** at batch {limit['best_batch']}.",
              ""]  # fmt: skip
    rows = [("infership", r) for r in results["ours"]["runs"]]
    rows += [("infership (trivial model)", r) for r in results["trivial"]["runs"]]
    for name, data in results["peers"].items():
        rows += [(name, r) for r in data.get("runs", [])]
    lines += ["### b–d. Over loopback sockets", "",
              "| server | payload | load | req/s | p50 ms | p90 ms | p99 ms | max ms | errors "
              "| server CPU | generator CPU |", "|---" * 11 + "|"]  # fmt: skip
    for name, r in rows:
        lat = r["latency_ms"] or {}
        load = f"c={r['concurrency']}" if r["mode"] == "closed" else f"{r['rate']:g}/s open"
        cells = " | ".join(f"{lat[k]:.2f}" if lat else "–" for k in ("p50", "p90", "p99", "max"))
        errors = sum(r["errors"].values())
        cpu = f"{r['server_cpu']:.0%}" if r["server_cpu"] is not None else "–"
        lines.append(f"| {name} | {r['payload']} | {load} | {r['throughput_rps']:.1f} | {cells} "
                     f"| {errors} | {cpu} | {r['client_cpu']:.0%} |")  # fmt: skip
    lines += ["", "| server | cold start s | peak RSS MB under load |", "|---|---|---|"]
    ours_ = results["ours"]
    cold = ours_["cold_start_s"]
    lines.append(f"| infership (example) | {statistics.median(cold):.2f} "
                 f"(median of {len(cold)}) | {ours_['peak_rss_mb']:.0f} |")  # fmt: skip
    for name, data in results["peers"].items():
        if "missing" in data or "image_cold_start_s" not in data:
            why = data.get("missing") or "; ".join(data.get("failed", []))[:200]
            lines.append(f"| {name} | not run: {why} | – |")
            continue
        lines.append(f"| {name} {data.get('version', '')} | {data['image_cold_start_s']:.2f} "
                     f"| {data['image_peak_rss_mb']:.0f} |")  # fmt: skip
    lines += ["", *headline_table(results["headline"]), *checks(results), ""]
    return "\n".join(lines)


def headline_table(headline_: dict[str, Any]) -> list[str]:
    rounds = headline_["rounds"]
    fastapi = all("fastapi_rps" in r for r in rounds)
    lines = ["### e. The headline ratios, measured in alternating rounds", "",
             "| round | limit img/s | upload req/s | upload / limit | trivial req/s |"
             + (" FastAPI req/s | trivial / FastAPI |" if fastapi else ""),
             "|---|---|---|---|---|" + ("---|---|" if fastapi else "")]  # fmt: skip
    for i, r in enumerate(rounds, 1):
        line = (f"| {i} | {r['limit_img_s']:.1f} | {r['upload_rps']:.1f} | "
                f"{r['upload_rps'] / r['limit_img_s']:.2f} | {r['trivial_rps']:.1f} |")  # fmt: skip
        if fastapi:
            line += f" {r['fastapi_rps']:.1f} | {r['trivial_rps'] / r['fastapi_rps']:.2f} |"
        lines.append(line)
    return [*lines, ""]


def checks(results: dict[str, Any]) -> list[str]:
    """The issue's targets, computed from this run (never asserted in tests)."""

    def run(runs: list[dict[str, Any]], payload: str, c: int) -> dict[str, Any] | None:
        return next((r for r in runs if r["payload"] == payload and r["concurrency"] == c), None)

    out = ["### Targets from this run", ""]
    ours_runs = results["ours"]["runs"]
    top_c = max(r["concurrency"] or 0 for r in ours_runs)
    up = run(ours_runs, "upload", top_c)
    limit = results["limit"]["limit_img_s"]
    headline_ = results["headline"]
    if up and up["latency_ms"]:
        lat = up["latency_ms"]
        out.append(f"- image upload at c={top_c}: {headline_['upload_over_limit']:.2f}× the "
                   f"in-process limit, median of the alternating rounds (target ≥ 0.95; "
                   f"{up['throughput_rps'] / limit:.2f}× from the tables above), p99/p50 = "
                   f"{lat['p99'] / lat['p50']:.2f} (target ≤ 2)")  # fmt: skip
    binary1 = run(results["trivial"]["runs"], "oip-binary", 1)
    if binary1 and binary1["latency_ms"]:
        out.append(f"- trivial model, binary, c=1: p50 {binary1['latency_ms']['p50']:.3f} ms "
                   "(target < 1 ms)")  # fmt: skip
    best_ours = max((r["throughput_rps"] for r in results["trivial"]["runs"]
                     if r["payload"] == "oip-binary"), default=0.0)  # fmt: skip
    peer_runs = [r for d in results["peers"].values() for r in d.get("runs", [])]
    best_peer = max((r["throughput_rps"] for r in peer_runs
                     if r["payload"] == "json (trivial)"), default=0.0)  # fmt: skip
    if best_peer:
        out.append(f"- trivial model: best infership req/s / best peer req/s = "
                   f"{best_ours / best_peer:.2f} from the tables above (target ≥ 2)")  # fmt: skip
    if "trivial_over_fastapi" in headline_:
        out.append(f"- trivial model against the plain FastAPI app in alternating rounds: "
                   f"{headline_['trivial_over_fastapi']:.2f}× (median)")  # fmt: skip
    by_payload = ", ".join(f"{payload} {mb:.0f}" for payload, mb in
                           results["ours"].get("peak_rss_mb_by_payload", {}).items())  # fmt: skip
    out.append(f"- cold start {statistics.median(results['ours']['cold_start_s']):.2f} s "
               f"(target < 1.5 s); peak RSS under load {results['ours']['peak_rss_mb']:.0f} MB "
               f"(target < 300 MB); by payload (MB): {by_payload}")  # fmt: skip
    return out


def publish(results: dict[str, Any], out: Path, text: str, append_to: Path | None) -> None:
    """Write ``results`` as JSON to ``out``, print their table ``text``, and append it to
    ``append_to`` (BENCHMARKS.md) when given: what every benchmark here ends with."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(text)
    if append_to is not None:
        with append_to.open("a", encoding="utf-8") as md:
            md.write("\n" + text)
        _log(f"appended to {append_to}")


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--smoke", action="store_true", help="seconds, not minutes; no peers")
    parser.add_argument("--peers", nargs="*", default=None, choices=PEER_NAMES,
                        help="peers to run [default: all, or none with --smoke]")  # fmt: skip
    parser.add_argument("--out", type=Path, help="JSON results [default: bench/results/]")
    parser.add_argument("--append", action="store_true", help="append a section to BENCHMARKS.md")
    parser.add_argument("--benchmarks-md", type=Path, default=ROOT / "BENCHMARKS.md")
    args = parser.parse_args()
    plan = SMOKE if args.smoke else FULL
    peers = args.peers if args.peers is not None else ([] if args.smoke else list(PEER_NAMES))
    began = time.perf_counter()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.out or ROOT / "bench" / "results" / f"suite-{stamp}.json"

    _log("a. in-process limit")
    limit = in_process_limit(plan.loop_seconds)
    _log("b. infership over sockets")
    ours_ = ours(plan)
    _log("c. trivial model")
    trivial_ = trivial(plan)
    peer_results = {}
    for name in peers:
        _log(f"d. peer {name}")
        peer_results[name] = peer(name, plan)
    headline_ = headline(plan, limit["best_batch"], peers)
    command = " ".join(["python", "bench/suite.py", *sys.argv[1:]])
    results = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(), "versions": versions(), "command": command,
        "plan": plan.__dict__, "limit": limit, "ours": ours_, "trivial": trivial_,
        "peers": peer_results, "headline": headline_, "wall_s": time.perf_counter() - began,
        "json": str(out.relative_to(ROOT)) if out.is_relative_to(ROOT) else str(out),
    }  # fmt: skip
    publish(results, out, markdown(results), args.benchmarks_md if args.append else None)


if __name__ == "__main__":
    main()
