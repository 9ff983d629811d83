"""``infership bench`` and ``plan`` as a user runs them, against a real server; and the suite's
smoke mode. Nothing here asserts a timing: only that answers were counted and nothing failed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TESTDATA, RunningServer
from infership.bench import payloads
from infership.bench.loadgen import Load
from infership.bench.runner import measure
from infership.bench.transport import HttpTarget

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).parents[2]
IMAGE = TESTDATA / "images" / "chelsea.jpg"


def infership(*args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "infership", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


def test_bench_then_plan_from_its_json(example_server: RunningServer, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    bench = infership("bench", example_server.url, "--image", str(IMAGE), "-c", "1", "-c", "2",
                      "-d", "0.5", "--warmup", "0.2", "--json", str(out),
                      "--server-pid", str(example_server.process.pid), "--progress")  # fmt: skip
    assert bench.returncode == 0, bench.stderr
    assert "| upload | c=2 |" in bench.stdout
    assert "recent p50" in bench.stderr  # the live display
    report = json.loads(out.read_text())
    assert [run["concurrency"] for run in report["runs"]] == [1, 2]
    assert all(run["ok"] > 0 and run["errors"] == {} for run in report["runs"])
    assert report["runs"][0]["server_cpu"] > 0
    plan = infership("plan", str(out), "--rate", "100", "--p99", "10000", "--json")
    assert plan.returncode == 0, plan.stderr
    assert json.loads(plan.stdout)["replicas"] >= 1
    table = infership("plan", str(out), "--rate", "100", "--p99", "10000")
    assert "HPA min / max replicas" in table.stdout
    impossible = infership("plan", str(out), "--rate", "100", "--p99", "0.001")
    assert impossible.returncode == 1
    assert "no run meets the p99 budget" in impossible.stderr


def test_bench_compares_two_targets_alternately(example_server: RunningServer) -> None:
    bench = infership("bench", example_server.url, "--versus", example_server.url,
                      "--payload", "oip-binary", "--model", "efficientnet-lite0",
                      "--image", str(IMAGE), "--output", "label", "-r", "20", "-d", "0.5",
                      "--warmup", "0.1", "--rounds", "2")  # fmt: skip
    assert bench.returncode == 0, bench.stderr
    assert "throughput B/A" in bench.stdout
    assert bench.stdout.count("| oip-binary | 20/s |") == 2


def test_bench_counts_client_errors_by_status(example_server: RunningServer) -> None:
    bench = infership("bench", example_server.url, "--payload", "oip-json", "--model",
                      "efficientnet-lite0", "--input", "input:FP32:1,3", "-d", "0.3",
                      "--warmup", "0")  # fmt: skip
    assert bench.returncode == 1
    assert "http 400" in bench.stdout
    assert "no successful request" in bench.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--payload", "upload"], "needs --image"), (["--payload", "oip-json"], "needs --model"),
     (["--payload", "oip-binary", "--model", "m"], "needs --input or --image")],
)  # fmt: skip
def test_bench_refuses_incomplete_payloads(args: list[str], message: str) -> None:
    result = infership("bench", "http://127.0.0.1:9", *args)
    assert result.returncode == 2
    assert message in result.stderr


def test_bench_says_when_the_target_is_unreachable() -> None:
    from conftest import free_port

    result = infership("bench", f"http://127.0.0.1:{free_port()}", "--image", str(IMAGE))
    assert result.returncode == 1
    assert "cannot connect" in result.stderr


def test_plan_refuses_a_file_that_is_not_a_bench_result(tmp_path: Path) -> None:
    bad = tmp_path / "x.json"
    bad.write_text('{"runs": 3}')
    result = infership("plan", str(bad), "--rate", "1", "--p99", "1")
    assert result.returncode == 2
    assert "not an infership bench --json file" in result.stderr


async def test_runner_alternates_two_targets_and_merges_their_slices(
    example_server: RunningServer,
) -> None:
    request = payloads.raw_image(IMAGE.read_bytes(), IMAGE.name)
    targets = [HttpTarget(example_server.url, request), HttpTarget(example_server.url, request)]
    seen: list[str] = []
    results = await measure(
        targets, "raw", [Load(concurrency=1, duration_s=1.0, warmup_s=0.1)], rounds=2,
        server_pids=[example_server.process.pid], progress=lambda label, _: seen.append(label),
    )  # fmt: skip
    assert len(results) == 2
    assert seen == [example_server.url] * 4  # A, B, A, B
    assert [r.duration_s for r in results] == pytest.approx([1.0, 1.0])
    assert all(r.ok > 0 for r in results), results


def test_suite_smoke_mode_runs_every_part(tmp_path: Path) -> None:
    out = tmp_path / "suite.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "suite.py"), "--smoke", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["limit"]["limit_img_s"] > 0
    assert {r["payload"] for r in data["ours"]["runs"]} == {
        "upload",
        "oip-binary",
        "oip-json",
        "grpc",
    }
    assert any(r["mode"] == "open" for r in data["ours"]["runs"])
    by_payload = data["ours"]["peak_rss_mb_by_payload"]
    assert set(by_payload) == {"upload", "oip-binary", "oip-json", "grpc"}
    assert 0 < max(by_payload.values()) <= data["ours"]["peak_rss_mb"]
    assert all(r["ok"] > 0 and not r["errors"] for r in data["trivial"]["runs"])
    (round_,) = data["headline"]["rounds"]  # smoke: one round, no peers
    assert min(round_["limit_img_s"], round_["upload_rps"], round_["trivial_rps"]) > 0
    assert data["headline"]["upload_over_limit"] > 0
    assert "### e. The headline ratios" in result.stdout
    assert "### Targets from this run" in result.stdout


def test_bench_over_grpc_counts_answers_and_status_codes() -> None:
    from conftest import start_server, stop_server

    server = start_server(str(ROOT / "bench" / "models"))
    try:
        target = f"grpc://{server.grpc_address}"
        ok = infership("bench", target, "--payload", "grpc", "--model", "add", "--input",
                       "x:FP32:1,16", "-c", "2", "-d", "0.5", "--warmup", "0.1")  # fmt: skip
        missing = infership("bench", target, "--payload", "grpc", "--model", "nope", "--input",
                            "x:FP32:1,16", "-d", "0.3", "--warmup", "0")  # fmt: skip
        streamed = infership("bench", target, "--payload", "grpc-stream", "--model", "add",
                             "--input", "x:FP32:1,16", "-c", "2", "-d", "0.5", "--warmup",
                             "0.1")  # fmt: skip
        stream_missing = infership("bench", target, "--payload", "grpc-stream", "--model",
                                   "nope", "--input", "x:FP32:1,16", "-d", "0.3", "--warmup",
                                   "0")  # fmt: skip
    finally:
        stop_server(server)
    assert ok.returncode == 0, ok.stderr
    assert "| grpc | c=2 |" in ok.stdout
    assert missing.returncode == 1
    assert "grpc NOT_FOUND" in missing.stdout
    assert streamed.returncode == 0, streamed.stderr
    assert "| grpc-stream | c=2 |" in streamed.stdout
    assert stream_missing.returncode == 1
    assert "grpc stream error" in stream_missing.stdout  # answered on the stream, not ended
