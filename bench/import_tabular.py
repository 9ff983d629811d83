"""Imported tabular models against MLServer's own runtimes (issue 18, "Must show").

    .venv/bin/python bench/import_tabular.py            # full run, about 8 minutes on 2 cores
    .venv/bin/python bench/import_tabular.py --smoke    # seconds
    .venv/bin/python bench/import_tabular.py --append   # and append a section to BENCHMARKS.md

Diagnoses (not the headline): ``--mlserver-env OMP_NUM_THREADS=1`` (XGBoost's OpenMP threads in
MLServer's worker), ``--onnx intra_op_threads=1 --onnx spin_wait=false`` (onnxruntime's threads
in infership, added to the imported ``model.yaml``), ``--model xgboost`` (one model only).

A tabular model costs microseconds to compute, so what is measured is each server's own
overhead. Two classifiers are fitted here, on scikit-learn's digits (64 FP32 features, 10
classes; rows 0-1499), into a temporary folder (nothing binary is committed):

* ``sklearn``: ``make_pipeline(StandardScaler(), LogisticRegression())``;
* ``xgboost``: ``XGBClassifier(n_estimators=100, max_depth=4)`` (1,000 trees).

Each is written twice: imported by ``infership.save_model`` (ONNX, checked for parity by the
importer) and served by ``infership serve``; and saved as MLServer's runtimes load them
(``model.joblib`` for ``mlserver_sklearn.SKLearnModel``, ``model.json`` for
``mlserver_xgboost.XGBoostModel``), served by ``mlserver start`` (MLServer 1.7.1 and its
runtimes, in the virtualenv of ``bench/peers/setup.sh mlserver``) with its default settings (one
parallel inference worker process, no adaptive batching). Both servers get the model under the
same name and one row per request, row 1500 of digits, and are asked for the class
probabilities (infership's ``probabilities`` output, MLServer's ``predict_proba``):

* REST: infership with the binary tensor extension and with JSON; MLServer with JSON (its REST
  API has no binary extension). The JSON bodies differ only in the output's name.
* gRPC: ``ModelInfer`` with the row in ``raw_input_contents`` (as tritonclient sends it); the
  same bytes to both servers apart from the output's name.

Before measuring, every target's answer is checked against ``predict_proba`` of the fitted model.
Each round runs every (load, model) slice on every target once, alternating servers
(infership, MLServer, infership, ...) in an order reversed every other round, so the drift of a
shared machine falls on both; medians over rounds are reported, and each ratio is the median of
the per-round ratios. Load comes from ``infership bench``'s generator (closed loop, one
connection per client) in this process; server CPU is that of the server's whole process tree
(MLServer's inference worker included) per answer.
"""

from __future__ import annotations

import argparse
import json
import os
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
MLSERVER_VENV = suite.PEERS / ".venvs" / "mlserver"
MODELS = ("sklearn", "xgboost")
TRAIN_ROWS = 1500
ROW = 1500
"""The row every request carries (not one the models were fitted on)."""
INPUT = "input"
OURS_OUTPUT = "probabilities"
MLSERVER_OUTPUT = "predict_proba"
LOADS = (1, 8, 32)
TARGETS = ("infership REST binary", "MLServer REST JSON", "infership REST JSON",
           "MLServer gRPC", "infership gRPC")  # fmt: skip
"""One round's order: the servers alternate."""
PAIRS = (("infership REST binary", "MLServer REST JSON"),
         ("infership REST JSON", "MLServer REST JSON"),
         ("infership gRPC", "MLServer gRPC"))  # fmt: skip
"""The ratios reported: ours ÷ MLServer's on the same transport."""


@dataclass(frozen=True)
class Plan:
    slice_s: float
    warmup_s: float
    rounds: int
    models: tuple[str, ...] = MODELS


FULL = Plan(4.0, 0.8, 3)
SMOKE = Plan(0.3, 0.1, 1)


# -- the models ------------------------------------------------------------------------------


def digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return x.astype(np.float32), y


def fit() -> dict[str, Any]:
    """The two fitted classifiers, on the first TRAIN_ROWS rows of digits."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from xgboost import XGBClassifier

    x, y = digits()
    x, y = x[:TRAIN_ROWS], y[:TRAIN_ROWS]
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    booster = XGBClassifier(n_estimators=100, max_depth=4, tree_method="hist", random_state=0)
    return {"sklearn": pipeline.fit(x, y), "xgboost": booster.fit(x, y)}


def write_models(
    models: dict[str, Any], work: Path, onnx: dict[str, Any] | None = None
) -> dict[str, Any]:
    """infership's repository (through ``save_model``) and MLServer's, under ``work``; returns
    what the import reported. ``onnx``: an ``onnx:`` section added to each imported
    ``model.yaml`` afterwards (to measure the runtime's settings; not what the import writes)."""
    import joblib  # type: ignore[import-untyped]

    import infership

    x, _ = digits()
    examples = x[TRAIN_ROWS : TRAIN_ROWS + 64]
    reports = {}
    (work / "mlserver").mkdir()
    (work / "mlserver" / "settings.json").write_text('{"debug": false}\n')
    for name, model in models.items():
        began = time.perf_counter()
        report = infership.save_model(model, work / "repo", name, example_inputs=examples)
        reports[name] = {"seconds": time.perf_counter() - began, "text": str(report),
                         "manifest": report.manifest}  # fmt: skip
        if onnx:
            add_onnx_settings(work / "repo" / name / "model.yaml", onnx)
        folder = work / "mlserver" / name
        folder.mkdir()
        if name == "sklearn":
            joblib.dump(model, folder / "model.joblib")
            implementation, uri = "mlserver_sklearn.SKLearnModel", "./model.joblib"
        else:
            model.save_model(folder / "model.json")
            implementation, uri = "mlserver_xgboost.XGBoostModel", "./model.json"
        settings = {"name": name, "implementation": implementation,
                    "parameters": {"uri": uri, "version": "1"}}  # fmt: skip
        (folder / "model-settings.json").write_text(json.dumps(settings, indent=1) + "\n")
    return reports


def add_onnx_settings(path: Path, onnx: dict[str, Any]) -> None:
    import yaml

    manifest = yaml.safe_load(path.read_text())
    manifest["onnx"] = {**manifest.get("onnx", {}), **onnx}
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))


def onnx_value(text: str) -> Any:
    """``--onnx`` values: integers and booleans as YAML reads them."""
    import yaml

    return yaml.safe_load(text)


# -- servers ---------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    process: suite.Process
    url: str
    grpc_url: str

    def cpu_s(self) -> float:
        """CPU seconds of the server's whole process tree (MLServer's inference worker too)."""
        total = 0.0
        for pid in suite._tree(self.process.popen.pid):
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return total


def start_ours(repository: Path) -> Server:
    port, grpc_port = distinct_ports(2)
    url = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "infership", "serve", "--port", str(port), "--grpc-port",
            str(grpc_port), "--log-level", "warning", str(repository)]  # fmt: skip
    ready = f"{url}/v2/health/ready"
    return Server("infership", suite.Process(argv, ready), url, f"grpc://127.0.0.1:{grpc_port}")


def start_mlserver(folder: Path, extra_env: dict[str, str]) -> Server:
    if not (MLSERVER_VENV / "bin" / "mlserver").exists():
        raise SystemExit("no MLServer virtualenv: run bench/peers/setup.sh mlserver")
    port, grpc_port, metrics_port = distinct_ports(3)
    url = f"http://127.0.0.1:{port}"
    env = {
        "MLSERVER_HOST": "127.0.0.1",
        "MLSERVER_HTTP_PORT": str(port),
        "MLSERVER_GRPC_PORT": str(grpc_port),
        "MLSERVER_METRICS_PORT": str(metrics_port),
        **extra_env,
    }
    argv = [str(MLSERVER_VENV / "bin" / "mlserver"), "start", str(folder)]  # fmt: skip
    ready = f"{url}/v2/health/ready"
    return Server("MLServer", suite.Process(argv, ready, env), url, f"grpc://127.0.0.1:{grpc_port}")


def distinct_ports(count: int) -> list[int]:
    """``count`` free ports, all different (free_port may hand out one twice)."""
    ports: list[int] = []
    while len(ports) < count:
        port = suite.free_port()
        if port not in ports:
            ports.append(port)
    return ports


def mlserver_versions() -> dict[str, str]:
    code = ("from importlib.metadata import version as v; import json; print(json.dumps({p: v(p) "
            "for p in ('mlserver', 'mlserver-sklearn', 'mlserver-xgboost', 'scikit-learn', "
            "'xgboost', 'numpy', 'uvloop', 'grpcio')}))")  # fmt: skip
    out = subprocess.run([str(MLSERVER_VENV / "bin" / "python"), "-c", code],
                         capture_output=True, text=True, check=True)  # fmt: skip
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def idle_cpu(servers: list[Server], seconds: float) -> dict[str, float]:
    """Share of one core each server's tree uses while nobody calls it."""
    before = {s.name: s.cpu_s() for s in servers}
    time.sleep(seconds)
    return {s.name: (s.cpu_s() - before[s.name]) / seconds for s in servers}


# -- requests --------------------------------------------------------------------------------


def row() -> Any:
    from infership.bench import payloads

    x, _ = digits()
    return payloads.Tensor(INPUT, "FP32", x[ROW : ROW + 1])


def targets(model: str, ours: Server, theirs: Server) -> dict[str, Any]:
    from infership.bench import payloads
    from infership.bench.transport import GrpcTarget, HttpTarget

    x = [row()]
    path = payloads.infer_path(model)
    return {
        "infership REST binary": HttpTarget(ours.url, payloads.oip_binary(path, x, [OURS_OUTPUT])),
        "infership REST JSON": HttpTarget(ours.url, payloads.oip_json(path, x, [OURS_OUTPUT])),
        "infership gRPC": GrpcTarget(ours.grpc_url,
                                     payloads.grpc_infer_request(model, x, [OURS_OUTPUT])),
        "MLServer REST JSON": HttpTarget(theirs.url,
                                         payloads.oip_json(path, x, [MLSERVER_OUTPUT])),
        "MLServer gRPC": GrpcTarget(theirs.grpc_url,
                                    payloads.grpc_infer_request(model, x, [MLSERVER_OUTPUT])),
    }  # fmt: skip


def check_answers(model: str, expected: np.ndarray, ours: Server, theirs: Server) -> None:
    """Every target's probabilities must be ``predict_proba``'s (float32 rounding)."""
    from infership.bench import payloads

    x = [row()]
    path = payloads.infer_path(model)
    for server, output in ((ours, OURS_OUTPUT), (theirs, MLSERVER_OUTPUT)):
        body = payloads.oip_json(path, x, [output]).body
        request = urllib.request.Request(server.url + path, body,
                                         {"Content-Type": "application/json"})  # fmt: skip
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = json.loads(response.read())
        (entry,) = (o for o in answer["outputs"] if o["name"] == output)
        _same(f"{server.name} REST {model}", np.asarray(entry["data"], np.float32), expected)
        _same(f"{server.name} gRPC {model}", _grpc_answer(server, model, output), expected)


def _grpc_answer(server: Server, model: str, output: str) -> np.ndarray:
    import grpc

    from infership.bench import payloads
    from infership.protocols.grpc._pb import pb

    request = payloads.grpc_infer_request(model, [row()], [output])
    with grpc.insecure_channel(server.grpc_url.removeprefix("grpc://")) as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        answer = pb.ModelInferResponse.FromString(call(request, timeout=30))
    index = [o.name for o in answer.outputs].index(output)
    out = answer.outputs[index]
    if answer.raw_output_contents:
        dtype = {"FP32": np.float32, "FP64": np.float64}[out.datatype]
        return np.frombuffer(answer.raw_output_contents[index], dtype).astype(np.float32)
    contents = out.contents
    return np.asarray(list(contents.fp32_contents) or list(contents.fp64_contents), np.float32)


def _same(what: str, got: np.ndarray, expected: np.ndarray) -> None:
    if got.shape != expected.shape or not np.allclose(got, expected, atol=1e-5):
        raise SystemExit(f"{what}: wrong answer {got[:4]} (predict_proba: {expected[:4]})")


# -- alternating rounds ----------------------------------------------------------------------


@dataclass
class Target:
    name: str
    model: str
    server: Server
    endpoint: Any
    slices: dict[int, list[dict[str, float]]] = field(default_factory=dict)


def one_slice(t: Target, concurrency: int, plan: Plan) -> dict[str, float]:
    from infership.bench import loadgen
    from infership.bench.loadgen import Load
    from infership.cli.common import run

    load = Load(concurrency=concurrency, duration_s=plan.slice_s, warmup_s=plan.warmup_s)
    before = t.server.cpu_s()
    box: list[loadgen.Recording] = []

    async def go() -> None:
        box.append(await loadgen.run(t.endpoint, load))

    run(go())
    recording = box[0]
    # The server's CPU over warm-up and slice, scaled to the measured window.
    used = (t.server.cpu_s() - before) * plan.slice_s / (plan.slice_s + plan.warmup_s)
    ok = len(recording.latencies_s)
    latencies = sorted(recording.latencies_s)
    nan = float("nan")
    return {
        "rps": ok / plan.slice_s,
        "p50_ms": 1000 * latencies[len(latencies) // 2] if latencies else nan,
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        if latencies
        else nan,
        "errors": sum(recording.errors.values()),
        "server_us": 1e6 * used / ok if ok else nan,
        "client_us": 1e6 * recording.client_cpu_s / ok if ok else nan,
    }


def alternate(all_targets: list[Target], plan: Plan) -> None:
    """Each round: every load, every model, every target once (order reversed every other
    round)."""
    for index in range(plan.rounds):
        suite._log(f"round {index + 1} of {plan.rounds}")
        for c in LOADS:
            for model in plan.models:
                chosen = [t for t in all_targets if t.model == model]
                for t in chosen if index % 2 == 0 else chosen[::-1]:
                    piece = one_slice(t, c, plan)
                    t.slices.setdefault(c, []).append(piece)
                    suite._log(
                        f"  {model} c={c} {t.name}: {piece['rps']:.0f} req/s, p99 "
                        f"{piece['p99_ms']:.2f} ms, server {piece['server_us']:.0f} µs"
                    )


def medians(rows: list[dict[str, float]]) -> dict[str, Any]:
    keys = ("rps", "p50_ms", "p99_ms", "server_us", "client_us")
    out: dict[str, Any] = {k: statistics.median(r[k] for r in rows) for k in keys}
    out["errors"] = sum(r["errors"] for r in rows)
    out["rps_range"] = [min(r["rps"] for r in rows), max(r["rps"] for r in rows)]
    return out


def ratios(by_name: dict[str, Target], c: int) -> list[dict[str, Any]]:
    """Ours ÷ MLServer's req/s on the same transport: the median of the per-round ratios."""
    out = []
    for ours, theirs in PAIRS:
        a, b = by_name[ours].slices[c], by_name[theirs].slices[c]
        per_round = [x["rps"] / y["rps"] for x, y in zip(a, b, strict=True) if y["rps"] > 0]
        p99_ours, p99_theirs = medians(a)["p99_ms"], medians(b)["p99_ms"]
        ratio = statistics.median(per_round) if per_round else float("nan")
        out.append({"ours": ours, "theirs": theirs, "c": c, "ratio": ratio,
                    "per_round": per_round, "p99_ms": [p99_ours, p99_theirs],
                    "met": ratio >= 2.0 and p99_ours < p99_theirs})  # fmt: skip
    return out


def run_all(
    plan: Plan, work: Path, mlserver_env: dict[str, str], onnx: dict[str, Any]
) -> dict[str, Any]:
    suite._log("fitting the models")
    models = fit()
    suite._log("importing them (infership.save_model) and saving them for MLServer")
    imports = write_models(models, work, onnx)
    suite._log("starting infership and MLServer")
    # One after the other: a port picked for one cannot then be taken by the other (a REST
    # readiness probe answered by the other's gRPC port fails with BadStatusLine).
    ours = start_ours(work / "repo")
    try:
        theirs = start_mlserver(work / "mlserver", mlserver_env)
    except BaseException:
        ours.process.stop()
        raise
    servers = [ours, theirs]
    try:
        x, _ = digits()
        for name, model in models.items():
            expected = model.predict_proba(x[ROW : ROW + 1]).astype(np.float32).ravel()
            check_answers(name, expected, ours, theirs)
        idle = idle_cpu(servers, 0.2 if plan is SMOKE else 2.0)
        all_targets = []
        for model in plan.models:
            endpoints = targets(model, ours, theirs)
            all_targets += [Target(name, model, ours if name.startswith("infership") else theirs,
                                   endpoints[name]) for name in TARGETS]  # fmt: skip
        alternate(all_targets, plan)
    finally:
        suite._log("stopping the servers")
        for server in servers:
            server.process.stop()
    results: dict[str, Any] = {"idle_cpu": idle, "imports": imports,
                               "cold_start_s": {s.name: s.process.cold_start_s for s in servers},
                               "models": {}}  # fmt: skip
    for model in plan.models:
        by_name = {t.name: t for t in all_targets if t.model == model}
        results["models"][model] = {
            "targets": {name: {"slices": {str(c): t.slices[c] for c in LOADS},
                               "medians": {str(c): medians(t.slices[c]) for c in LOADS}}
                        for name, t in by_name.items()},
            "ratios": {str(c): ratios(by_name, c) for c in LOADS},
        }  # fmt: skip
    return results


# -- report ----------------------------------------------------------------------------------

DESCRIPTIONS = {
    "sklearn": "scikit-learn `StandardScaler` + `LogisticRegression` (digits, 64 features, "
    "10 classes)",
    "xgboost": "XGBoost `XGBClassifier` (100 rounds × 10 classes, depth 4; digits)",
}


HEAD = ["| target | load | req/s median (min–max) | p50 ms | p99 ms | server CPU µs/req "
        "| client CPU µs/req | errors |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip


def markdown(results: dict[str, Any]) -> str:
    versions = results["versions"]
    theirs = results["mlserver_versions"]
    idle = ", ".join(f"{k} {v:.0%}" for k, v in results["idle_cpu"].items())
    env = results["mlserver_env"]
    onnx = results.get("onnx") or {}
    lines = [
        f"## Imported tabular models against MLServer's runtimes (issue 18) {results['created']}",
        "",
        f"- **Machine:** {results['machine']}; load average before the run "
        f"{results['load_before']}, after {results['load_after']}",
        f"- **Versions:** infership {versions['infership']} (git {versions['git']}), "
        f"onnxruntime {versions['onnxruntime']}; MLServer "
        + ", ".join(f"{k} {v}" for k, v in theirs.items()),
        f"- **Command:** `{results['command']}` ({results['wall_s'] / 60:.1f} min); "
        f"{results['plan']['rounds']} alternating rounds of {results['plan']['slice_s']:g} s "
        f"slices (+{results['plan']['warmup_s']:g} s warm-up) per load, model and target; "
        f"medians; raw results in `{results['json']}`",
        "- **Setup:** the same fitted models, imported by `infership.save_model` (ONNX, "
        "`max_batch_size` as the importer writes it) and saved as `model.joblib` / `model.json` "
        "for `mlserver_sklearn.SKLearnModel` / `mlserver_xgboost.XGBoostModel` (MLServer's "
        "defaults: one inference worker process, no adaptive batching); one row per request "
        f"(digits row {ROW}, FP32 [1, 64]), class probabilities asked for; every answer checked "
        f"against `predict_proba` first. Idle CPU of one core: {idle}. The load generator runs "
        "on the same 2 cores."
        + (
            " MLServer's environment adds " + ", ".join(f"`{k}={v}`" for k, v in env.items()) + "."
            if env
            else ""
        )
        + (
            " The imported `model.yaml` files were given `onnx: "
            + json.dumps(onnx).replace('"', "")
            + "` after the import (a diagnosis, not what the import writes)."
            if onnx
            else ""
        ),
        "",
    ]
    for model, entry in results["models"].items():
        lines += [f"### {DESCRIPTIONS[model]}", "", *HEAD]
        for name, target in entry["targets"].items():
            for c in LOADS:
                m = target["medians"][str(c)]
                lo, hi = m["rps_range"]
                lines.append(
                    f"| {name} | c={c} | {m['rps']:.0f} ({lo:.0f}–{hi:.0f}) | {m['p50_ms']:.2f} "
                    f"| {m['p99_ms']:.2f} | {m['server_us']:.0f} | {m['client_us']:.0f} "
                    f"| {m['errors']} |"
                )
        lines.append("")
    lines += ["### infership ÷ MLServer (req/s, median of the per-round ratios)", "",
              "| model | load | pair | ratio (rounds) | p99 ms infership / MLServer | goal (≥ 2×, "
              "lower p99) |", "|---|---|---|---|---|---|"]  # fmt: skip
    for model, entry in results["models"].items():
        for c in LOADS:
            for r in entry["ratios"][str(c)]:
                rounds = ", ".join(f"{v:.2f}" for v in r["per_round"])
                goal = ("met" if r["met"] else "NOT met") if c == 32 else ""
                lines.append(
                    f"| {model} | c={c} | {r['ours']} ÷ {r['theirs']} | {r['ratio']:.2f}× "
                    f"({rounds}) | {r['p99_ms'][0]:.2f} / {r['p99_ms'][1]:.2f} | {goal} |"
                )
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--smoke", action="store_true", help="seconds, not minutes")
    parser.add_argument("--rounds", type=int, help="alternating rounds [default: 3; smoke 1]")
    parser.add_argument("--slice", type=float, help="seconds per slice [default: 4]")
    parser.add_argument(
        "--model",
        action="append",
        choices=MODELS,
        help="measure only this model (repeatable) [default: both]",
    )
    parser.add_argument(
        "--mlserver-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for MLServer, e.g. OMP_NUM_THREADS=1",
    )
    parser.add_argument(
        "--onnx",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="add to the imported model.yaml's onnx: section, e.g. "
        "intra_op_threads=1 (diagnosis; the headline runs what the import wrote)",
    )
    parser.add_argument("--out", type=Path, help="JSON results [default: bench/results/]")
    parser.add_argument("--append", action="store_true", help="append a section to BENCHMARKS.md")
    parser.add_argument("--benchmarks-md", type=Path, default=ROOT / "BENCHMARKS.md")
    args = parser.parse_args()
    plan = SMOKE if args.smoke else FULL
    if args.rounds or args.slice:
        plan = Plan(args.slice or plan.slice_s, plan.warmup_s, args.rounds or plan.rounds)
    if args.model:
        plan = Plan(plan.slice_s, plan.warmup_s, plan.rounds, tuple(args.model))
    mlserver_env = dict(item.split("=", 1) for item in args.mlserver_env)
    onnx = {k: onnx_value(v) for k, v in (item.split("=", 1) for item in args.onnx)}
    slices = plan.rounds * len(LOADS) * len(plan.models) * len(TARGETS)
    suite._log(f"{slices} slices, about {slices * (plan.slice_s + plan.warmup_s) / 60:.1f} min "
               "of load")  # fmt: skip
    began = time.perf_counter()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.out or ROOT / "bench" / "results" / f"import-tabular-{stamp}.json"
    load_before = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    with tempfile.TemporaryDirectory(prefix="infership-import-tabular-") as work:
        measured = run_all(plan, Path(work), mlserver_env, onnx)
    versions = suite.versions()
    results = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": suite.machine(), "versions": versions,
        "mlserver_versions": mlserver_versions(),
        "command": " ".join([".venv/bin/python", "bench/import_tabular.py", *sys.argv[1:]]),
        "plan": plan.__dict__, "mlserver_env": mlserver_env, "onnx": onnx,
        "load_before": load_before,
        "load_after": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
        "wall_s": time.perf_counter() - began, **measured,
        "json": str(out.relative_to(ROOT)) if out.is_relative_to(ROOT) else str(out),
    }  # fmt: skip
    suite.publish(results, out, markdown(results), args.benchmarks_md if args.append else None)


if __name__ == "__main__":
    main()
