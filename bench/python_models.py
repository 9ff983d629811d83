"""Python models (``runtime: python``, issue 17) against LitServe and ONNX, and GIL-bound code.

    .venv/bin/python bench/python_models.py            # full run, about 8 minutes on 2 cores
    .venv/bin/python bench/python_models.py --smoke    # seconds; tests/bench runs it
    .venv/bin/python bench/python_models.py --append   # and append a section to BENCHMARKS.md

Every model is generated into a temporary folder by this script (nothing binary is committed):
the same numpy computation, ``y = tanh(x @ W)`` with ``x`` FP32 ``[rows, 64]`` and ``W`` a
64×64 float32 matrix from a fixed seed (saved once as ``weights.npy``, which every server
loads), served as

1. infership ``runtime: python`` models (``execution: thread`` and ``process``, several
   ``batching`` settings) against the same code as a LitServe ``LitAPI`` with LitServe's own
   batching (``bench/peers/litserve_numpy_app.py``, in the virtualenv of
   ``bench/peers/setup.sh litserve``). Both servers are sent the same bytes: an Open Inference
   Protocol JSON body with one ``[1, 64]`` row, and answer the same OIP JSON;
2. the same computation as a built-in ONNX model (MatMul + Tanh, built with the ``onnx``
   package), against the python model, over the binary tensor extension: the per-request
   overhead of the python runtime;
3. a model whose ``preprocess`` is a GIL-holding pure-Python step (parsing and normalising
   512 comma-separated numbers sent as a BYTES tensor, a few ms of Python per request) with
   ``execution: process`` and 1 or 2 workers, and with ``execution: thread``.

Measurement: every target of a part is up at once, and the part runs in alternating rounds:
each round runs every (load, target) slice once, in an order reversed every other round, so
the drift of a shared machine falls on every target alike; medians over rounds are reported.
Load comes from ``infership bench``'s generator (closed loop, one connection per client);
"server CPU" is the CPU time of the server's whole process tree (workers included) per answer.
Before measuring, each target's answer is checked against numpy.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import suite  # bench/suite.py: processes, ports, machine and versions

ROOT = suite.ROOT
PEERS = suite.PEERS
LITSERVE_PYTHON = PEERS / ".venvs" / "litserve" / "bin" / "python"
LITSERVE_APP = PEERS / "litserve_numpy_app.py"
WIDTH = 64
SEED = 17
TEXT_VALUES = 512
PASSES = 10
"""How many times ``preprocess`` parses and normalises the text: about 3.5 ms of Python."""


@dataclass(frozen=True)
class Plan:
    slice_s: float
    warmup_s: float
    rounds: int


FULL = Plan(3.0, 0.5, 3)
SMOKE = Plan(0.2, 0.05, 1)

# -- the models ------------------------------------------------------------------------------

MODEL_PY = '''\
"""y = tanh(x @ W); W from weights.npy. Optionally a GIL-holding pure-Python preprocess."""

from pathlib import Path

import numpy as np


def features(text: str, passes: int) -> list[float]:
    """Parse comma-separated numbers, normalise them and fold them into 64 bins, in Python."""
    out = [0.0] * 64
    for _ in range(passes):
        values = [float(v) for v in text.split(",")]
        mean = sum(values) / len(values)
        std = (sum((v - mean) * (v - mean) for v in values) / len(values)) ** 0.5 or 1.0
        out = [0.0] * 64
        for i, v in enumerate(values):
            out[i % 64] += (v - mean) / std
    return out


class Model:
    def __init__(self, folder: Path, options: dict) -> None:
        self.weights = np.load(folder / "weights.npy")
        self.passes = int(options.get("passes", 0))

    def predict(self, batch: dict) -> dict:
        return {"y": np.tanh(batch["x"] @ self.weights)}


class WithPreprocess(Model):
    def preprocess(self, inputs: dict) -> dict:
        rows = [features(t.decode() if isinstance(t, bytes) else t, self.passes)
                for t in inputs["text"].reshape(-1).tolist()]
        return {"x": np.asarray(rows, dtype=np.float32)}
'''

SIGNATURE = f"""\
inputs: [{{name: x, datatype: FP32, shape: [-1, {WIDTH}]}}]
outputs: [{{name: y, datatype: FP32, shape: [-1, {WIDTH}]}}]
"""


@dataclass(frozen=True)
class Ours:
    """One infership model of this benchmark."""

    name: str
    label: str
    runtime: str = "python"  # or onnx
    execution: str = "thread"
    workers: int | None = None
    max_batch: int = 32
    delay_ms: float = 0.0
    preprocess: bool = False

    def yaml(self) -> str:
        text = f"runtime: {self.runtime}\n" + SIGNATURE
        text += (f"batching: {{max_batch_size: {self.max_batch}, max_queue_delay_ms: "
                 f"{self.delay_ms:g}, max_queue_size: 256}}\n")  # fmt: skip
        if self.runtime == "onnx":
            return text + "onnx: {intra_op_threads: 1, inter_op_threads: 1, spin_wait: false}\n"
        workers = "" if self.workers is None else f", workers: {self.workers}"
        if self.preprocess:
            return text + (
                f"python: {{class: WithPreprocess, execution: {self.execution}{workers}, "
                f"options: {{passes: {PASSES}}}, inputs: [{{name: text, datatype: BYTES, "
                "shape: [-1]}]}\n"
            )
        return text + f"python: {{execution: {self.execution}{workers}}}\n"


@dataclass(frozen=True)
class Lit:
    """One LitServe configuration."""

    name: str
    label: str
    max_batch: int
    timeout_ms: float
    workers: int = 1


PART1_OURS = (
    Ours("py-thread-b8", "python, thread, batch ≤ 8", max_batch=8),
    Ours("py-thread-b32", "python, thread, batch ≤ 32"),
    Ours("py-thread-b32-d1", "python, thread, batch ≤ 32, wait 1 ms", delay_ms=1.0),
    Ours("py-process-b8", "python, process ×cores, batch ≤ 8", execution="process", max_batch=8),
    Ours("py-process-b32", "python, process ×cores, batch ≤ 32", execution="process"),
    Ours("py-process1-b32", "python, process ×1, batch ≤ 32", execution="process", workers=1),
)
PART1_LIT = (
    Lit("ls-b8-t10", "LitServe, batch ≤ 8, 10 ms", 8, 10.0),
    Lit("ls-b32-t2", "LitServe, batch ≤ 32, 2 ms", 32, 2.0),
    Lit("ls-b32-t2-w2", "LitServe ×2 workers, batch ≤ 32, 2 ms", 32, 2.0, workers=2),
)
ONNX = Ours("onnx-b32", "ONNX (MatMul + Tanh), batch ≤ 32", runtime="onnx")
PART2 = (ONNX, PART1_OURS[1], PART1_OURS[4])
PART3 = (
    Ours("pre-process1", "preprocess, process, workers: 1", execution="process", workers=1,
         preprocess=True),
    Ours("pre-process2", "preprocess, process, workers: 2", execution="process", workers=2,
         preprocess=True),
    Ours("pre-thread", "preprocess, thread", preprocess=True),
)  # fmt: skip


def weights() -> np.ndarray:
    rng = np.random.default_rng(SEED)
    return (rng.standard_normal((WIDTH, WIDTH)) / np.sqrt(WIDTH)).astype(np.float32)


def write_repository(folder: Path, models: tuple[Ours, ...]) -> Path:
    """Every model of ``models`` in an infership repository under ``folder``; returns the path
    of ``weights.npy`` (the LitServe app loads the same file)."""
    w = weights()
    shared = folder / "weights.npy"
    np.save(shared, w)
    for model in models:
        version = folder / "models" / model.name / "1"
        version.mkdir(parents=True)
        (version.parent / "model.yaml").write_text(model.yaml(), encoding="utf-8")
        if model.runtime == "onnx":
            (version / "model.onnx").write_bytes(onnx_model(w))
        else:
            (version / "model.py").write_text(MODEL_PY, encoding="utf-8")
            np.save(version / "weights.npy", w)
    return shared


def onnx_model(w: np.ndarray) -> bytes:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["xw"]), helper.make_node("Tanh", ["xw"], ["y"])],
        "matmul_tanh",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", WIDTH])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", WIDTH])],
        initializer=[numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()  # type: ignore[no-any-return]


def text_row() -> str:
    rng = random.Random(SEED)
    return ",".join(f"{rng.gauss(0, 1):.4f}" for _ in range(TEXT_VALUES))


def preprocess_ms(seconds: float) -> float:
    """The pure-Python step alone, in this process: ms per request."""
    namespace: dict[str, Any] = {}
    exec(compile(MODEL_PY, "model.py", "exec"), namespace)  # our own text above
    text = text_row()
    namespace["features"](text, PASSES)
    count, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds or count < 3:
        namespace["features"](text, PASSES)
        count += 1
    return (time.perf_counter() - began) / count * 1000


# -- servers ---------------------------------------------------------------------------------


@dataclass
class Server:
    label: str
    process: suite.Process | None
    url: str
    why_not: str | None = None

    def cpu_s(self) -> float:
        if self.process is None:
            return 0.0
        total = 0.0
        for pid in suite._tree(self.process.popen.pid):
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return total


def start_ours(repository: Path) -> Server:
    port = suite.free_port()
    argv = [sys.executable, "-m", "infership", "serve", str(repository), "--port", str(port),
            "--no-grpc", "--log-level", "warning"]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        return Server("infership", suite.Process(argv, f"{url}/v2/health/ready"), url)
    except RuntimeError as exc:
        raise SystemExit(f"infership did not start: {exc}") from None


def start_litserve(config: Lit, weights_path: Path) -> Server:
    if not LITSERVE_PYTHON.exists():
        return Server(config.label, None, "", "no virtualenv; run bench/peers/setup.sh litserve")
    port = suite.free_port()
    url = f"http://127.0.0.1:{port}"
    env = {"PORT": str(port), "WEIGHTS": str(weights_path), "MAX_BATCH": str(config.max_batch),
           "BATCH_TIMEOUT_MS": str(config.timeout_ms), "WORKERS": str(config.workers)}  # fmt: skip
    try:
        process = suite.Process([str(LITSERVE_PYTHON), str(LITSERVE_APP)], f"{url}/health", env)
    except RuntimeError as exc:
        return Server(config.label, None, "", f"did not start: {str(exc)[-300:]}")
    return Server(config.label, process, url)


def litserve_version() -> str:
    if not LITSERVE_PYTHON.exists():
        return "not installed"
    code = "import litserve; print(litserve.__version__)"
    out = subprocess.run([str(LITSERVE_PYTHON), "-c", code], capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


# -- requests --------------------------------------------------------------------------------


def x_row() -> Any:
    from infership.bench import payloads

    return payloads.parse_tensor(f"x:FP32:1,{WIDTH}")


def json_request(path: str) -> Any:
    from infership.bench import payloads

    return payloads.oip_json(path, [x_row()], ["y"])


def binary_request(path: str) -> Any:
    from infership.bench import payloads

    return payloads.oip_binary(path, [x_row()], ["y"])


def text_request(path: str) -> Any:
    from infership.bench import payloads

    data = np.empty(1, dtype=object)
    data[0] = text_row().encode()
    return payloads.oip_binary(path, [payloads.Tensor("text", "BYTES", data)], ["y"])


def check_answer(url: str, path: str, body: bytes, expected: np.ndarray) -> None:
    """One JSON request; its ``y`` must be numpy's within float32 rounding."""
    request = urllib.request.Request(url + path, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        answer = json.loads(response.read())
    (y,) = (o for o in answer["outputs"] if o["name"] == "y")
    got = np.asarray(y["data"], dtype=np.float32).reshape(y["shape"])
    if got.shape != expected.shape or not np.allclose(got, expected, atol=1e-4):
        raise SystemExit(f"{url}{path}: wrong answer {got.ravel()[:4]} (numpy: {expected[0, :4]})")


def expected_y(x: np.ndarray) -> np.ndarray:
    return np.tanh(x.astype(np.float32) @ weights())


def expected_text_y() -> np.ndarray:
    namespace: dict[str, Any] = {}
    exec(compile(MODEL_PY, "model.py", "exec"), namespace)  # our own text above
    return expected_y(np.asarray([namespace["features"](text_row(), PASSES)], dtype=np.float32))


# -- alternating rounds ----------------------------------------------------------------------


@dataclass
class Target:
    label: str
    server: Server
    request: Any  # HttpRequest, or None when the server did not run
    slices: dict[int, list[dict[str, float]]] = field(default_factory=dict)


def alternate(targets: list[Target], loads: tuple[int, ...], plan: Plan, part: str) -> None:
    """Each round: every load, every target once (order reversed every other round)."""
    from infership.bench import loadgen
    from infership.bench.loadgen import Load
    from infership.bench.report import result
    from infership.bench.transport import HttpTarget

    live = [t for t in targets if t.request is not None]
    https = {id(t): HttpTarget(t.server.url, t.request) for t in live}
    for index in range(plan.rounds):
        suite._log(f"{part}: round {index + 1} of {plan.rounds}")
        order = live if index % 2 == 0 else live[::-1]
        for c in loads:
            for t in order:
                warmup = plan.warmup_s
                load = Load(concurrency=c, duration_s=plan.slice_s, warmup_s=warmup)
                before = t.server.cpu_s()
                recording = asyncio.run(loadgen.run(https[id(t)], load))
                used = (t.server.cpu_s() - before) * plan.slice_s / (plan.slice_s + warmup)
                r = result(t.label, "", load, recording)
                lat = r.latency_ms
                t.slices.setdefault(c, []).append({
                    "rps": r.throughput_rps,
                    "p50": lat.p50 if lat else float("nan"),
                    "p99": lat.p99 if lat else float("nan"),
                    "errors": r.error_count,
                    "cpu_us": used / max(r.ok, 1) * 1e6,
                    "client_cpu": r.client_cpu,
                })  # fmt: skip


def medians(t: Target, c: int) -> dict[str, float] | None:
    rows = t.slices.get(c)
    if not rows:
        return None
    out = {k: statistics.median(r[k] for r in rows) for k in ("rps", "p50", "p99", "cpu_us")}
    out["errors"] = sum(r["errors"] for r in rows)
    out["rps_range"] = (min(r["rps"] for r in rows), max(r["rps"] for r in rows))  # type: ignore[assignment]
    return out


# -- the parts -------------------------------------------------------------------------------


def run_all(plan: Plan, work: Path) -> dict[str, Any]:
    models = (*PART1_OURS, ONNX, *PART3)
    weights_path = write_repository(work, models)
    suite._log("starting infership and LitServe")
    with concurrent.futures.ThreadPoolExecutor(len(PART1_LIT) + 1) as pool:
        ours_f = pool.submit(start_ours, work / "models")
        lit_f = [pool.submit(start_litserve, config, weights_path) for config in PART1_LIT]
        ours = ours_f.result()
        lits = [f.result() for f in lit_f]
    servers = [ours, *lits]
    try:
        idle = idle_cpu(servers, 0.2 if plan is SMOKE else 2.0)
        x = x_row().data
        for model in (*PART1_OURS, ONNX):
            check_answer(ours.url, f"/v2/models/{model.name}/infer",
                         json_request("/").body, expected_y(x))  # fmt: skip
        for model in PART3:
            body = json.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1],
                                           "data": [text_row()]}]}).encode()  # fmt: skip
            check_answer(ours.url, f"/v2/models/{model.name}/infer", body, expected_text_y())
        for server in lits:
            if server.process is not None:
                check_answer(server.url, "/predict", json_request("/").body, expected_y(x))

        part1 = [Target(m.label, ours, json_request(f"/v2/models/{m.name}/infer"))
                 for m in PART1_OURS]  # fmt: skip
        part1 += [Target(s.label, s, json_request("/predict") if s.process else None)
                  for s in lits]  # fmt: skip
        alternate(part1, (1, 8, 32), plan, "1. python runtime vs LitServe (OIP JSON)")
        # LitServe's servers poll their queues even when idle (20-40 % of a core each, see
        # idle_cpu): parts 2 and 3 measure infership alone, on both cores.
        for server in lits:
            if server.process is not None:
                server.process.stop()
        part2 = [Target(m.label, ours, binary_request(f"/v2/models/{m.name}/infer"))
                 for m in PART2]  # fmt: skip
        alternate(part2, (1, 32), plan, "2. python vs ONNX (OIP binary)")
        part3 = [Target(m.label, ours, text_request(f"/v2/models/{m.name}/infer"))
                 for m in PART3]  # fmt: skip
        alternate(part3, (8, 32), plan, "3. GIL-holding preprocess (OIP binary, BYTES)")
    finally:
        suite._log("stopping the servers")
        for server in servers:
            if server.process is not None and server.process.popen.poll() is None:
                server.process.stop()
    return {
        "idle_cpu": idle,
        "preprocess_ms": preprocess_ms(0.1 if plan is SMOKE else 2.0),
        "parts": {
            "1": [_dump(t, (1, 8, 32)) for t in part1],
            "2": [_dump(t, (1, 32)) for t in part2],
            "3": [_dump(t, (8, 32)) for t in part3],
        },
    }


def idle_cpu(servers: list[Server], seconds: float) -> dict[str, float]:
    """Share of one core each server's tree uses while nobody calls it."""
    live = [s for s in servers if s.process is not None]
    before = {s.label: s.cpu_s() for s in live}
    time.sleep(seconds)
    return {s.label: (s.cpu_s() - before[s.label]) / seconds for s in live}


def _dump(t: Target, loads: tuple[int, ...]) -> dict[str, Any]:
    return {"label": t.label, "why_not": t.server.why_not if t.request is None else None,
            "slices": {str(c): t.slices.get(c, []) for c in loads},
            "medians": {str(c): medians(t, c) for c in loads}}  # fmt: skip


# -- report ----------------------------------------------------------------------------------


def _row(entry: dict[str, Any], loads: tuple[int, ...]) -> list[str]:
    lines = []
    for c in loads:
        m = entry["medians"][str(c)]
        if m is None:
            lines.append(f"| {entry['label']} | c={c} | not run: {entry['why_not']} | | | | |")
            continue
        lo, hi = m["rps_range"]
        lines.append(
            f"| {entry['label']} | c={c} | {m['rps']:.0f} ({lo:.0f}–{hi:.0f}) | {m['p50']:.2f} "
            f"| {m['p99']:.2f} | {m['cpu_us']:.0f} | {m['errors']} |"
        )
    return lines


HEAD = ["| server / model | load | req/s median (min–max) | p50 ms | p99 ms "
        "| server CPU µs/req | errors |", "|---|---|---|---|---|---|---|"]  # fmt: skip


def _m(results: dict[str, Any], part: str, prefix: str, c: int) -> dict[str, Any] | None:
    for entry in results["parts"][part]:
        if entry["label"].startswith(prefix):
            return entry["medians"][str(c)]  # type: ignore[no-any-return]
    return None


def targets(results: dict[str, Any]) -> list[str]:
    """The issue's targets, computed from this run's medians (never asserted in tests)."""
    out = []
    p1 = results["parts"]["1"]
    ours = [e for e in p1 if e["label"].startswith("python")]
    lits = [e for e in p1 if e["label"].startswith("LitServe") and e["medians"]["32"]]
    if lits:
        best_lit = max(lits, key=lambda e: e["medians"]["32"]["rps"])
        bl = best_lit["medians"]
        for e in ours:
            m = e["medians"]
            ratio = m["32"]["rps"] / max(bl["32"]["rps"], 1e-9)
            ok = (ratio >= 1.3 and m["32"]["p99"] < bl["32"]["p99"]
                  and m["1"]["p50"] <= bl["1"]["p50"])  # fmt: skip
            out.append(
                f"- {e['label']}: c=32 {ratio:.2f}× the best LitServe ({best_lit['label']}), "
                f"p99 {m['32']['p99']:.1f} vs {bl['32']['p99']:.1f} ms; c=1 p50 "
                f"{m['1']['p50']:.2f} vs {bl['1']['p50']:.2f} ms: {'met' if ok else 'NOT met'}"
            )
    else:
        out.append("- LitServe did not run: no comparison")
    onnx1, onnx32 = _m(results, "2", "ONNX", 1), _m(results, "2", "ONNX", 32)
    for label in ("python, thread", "python, process"):
        py1, py32 = _m(results, "2", label, 1), _m(results, "2", label, 32)
        if onnx1 and py1 and onnx32 and py32:
            out.append(
                f"- {label} vs ONNX: c=1 p50 +{(py1['p50'] - onnx1['p50']) * 1000:.0f} µs "
                f"({py1['p50']:.3f} vs {onnx1['p50']:.3f} ms), server CPU +"
                f"{py1['cpu_us'] - onnx1['cpu_us']:.0f} µs/req; c=32 "
                f"{py32['rps'] / max(onnx32['rps'], 1e-9):.2f}× ONNX's req/s"
            )
    for c in (8, 32):
        w1 = _m(results, "3", "preprocess, process, workers: 1", c)
        w2 = _m(results, "3", "preprocess, process, workers: 2", c)
        th = _m(results, "3", "preprocess, thread", c)
        if w1 and w2 and th:
            ratio = w2["rps"] / max(w1["rps"], 1e-9)
            out.append(
                f"- GIL-holding preprocess, c={c}: workers 2 / workers 1 = {ratio:.2f}× "
                f"(target ≥ 1.6: {'met' if ratio >= 1.6 else 'NOT met'}); thread = "
                f"{th['rps'] / max(w1['rps'], 1e-9):.2f}× workers 1"
            )
    return out


def markdown(results: dict[str, Any]) -> str:
    lines = [f"## Python models (issue 17) {results['created']}", ""]
    idle = ", ".join(f"{k} {v:.0%}" for k, v in results["idle_cpu"].items())
    lines += [
        f"- **Machine:** {results['machine']}; load average before the run "
        f"{results['load_before']}, after {results['load_after']}",
        "- **Versions:** " + ", ".join(f"{k} {v}" for k, v in results["versions"].items()),
        f"- **Command:** `{results['command']}` ({results['wall_s'] / 60:.1f} min); "
        f"{results['plan']['rounds']} alternating rounds of {results['plan']['slice_s']:g} s "
        f"slices (+{results['plan']['warmup_s']:g} s warm-up) per load and target; medians",
        "- **Model:** y = tanh(x @ W), x FP32 [1, 64] per request, W 64×64 float32 (seed "
        f"{SEED}); every answer checked against numpy first. Idle CPU of one core: {idle}",
        "",
        "### 1. The same numpy model: infership `runtime: python` vs a LitServe `LitAPI`",
        "",
        "Both are sent the same OIP JSON body (one row) and answer OIP JSON; LitServe batches "
        "with its `max_batch_size` and `batch_timeout`; ours greedily unless a wait is given.",
        "",
        *HEAD,
    ]
    for entry in results["parts"]["1"]:
        lines += _row(entry, (1, 8, 32))
    lines += ["", "### 2. Per-request overhead: python model vs the same computation in ONNX",
              "", "OIP binary (one `[1, 64]` FP32 row), same server.", "", *HEAD]  # fmt: skip
    for entry in results["parts"]["2"]:
        lines += _row(entry, (1, 32))
    lines += ["", "### 3. A GIL-holding pure-Python `preprocess`", "",
              f"Per request: parse 512 comma-separated numbers from a BYTES tensor, normalise "
              f"and bin them in Python ({PASSES} passes), {results['preprocess_ms']:.2f} ms in "
              "this process alone; then the same predict. OIP binary.", "", *HEAD]  # fmt: skip
    for entry in results["parts"]["3"]:
        lines += _row(entry, (8, 32))
    lines += ["", "### Targets from this run", "", *targets(results), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--smoke", action="store_true", help="seconds, not minutes")
    parser.add_argument("--rounds", type=int, help="alternating rounds [default: 3; smoke 1]")
    parser.add_argument("--slice", type=float, help="seconds per slice [default: 3]")
    parser.add_argument("--out", type=Path, help="JSON results [default: bench/results/]")
    parser.add_argument("--append", action="store_true", help="append a section to BENCHMARKS.md")
    parser.add_argument("--benchmarks-md", type=Path, default=ROOT / "BENCHMARKS.md")
    args = parser.parse_args()
    plan = SMOKE if args.smoke else FULL
    if args.rounds or args.slice:
        plan = Plan(args.slice or plan.slice_s, plan.warmup_s, args.rounds or plan.rounds)
    began = time.perf_counter()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.out or ROOT / "bench" / "results" / f"python-models-{stamp}.json"
    load_before = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    with tempfile.TemporaryDirectory(prefix="infership-python-models-") as work:
        measured = run_all(plan, Path(work))
    versions = suite.versions()
    versions["litserve"] = litserve_version()
    results = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": suite.machine(), "versions": versions,
        "command": " ".join(["python", "bench/python_models.py", *sys.argv[1:]]),
        "plan": plan.__dict__, "load_before": load_before,
        "load_after": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
        "wall_s": time.perf_counter() - began, **measured,
        "json": str(out.relative_to(ROOT)) if out.is_relative_to(ROOT) else str(out),
    }  # fmt: skip
    suite.publish(results, out, markdown(results), args.benchmarks_md if args.append else None)


if __name__ == "__main__":
    main()
