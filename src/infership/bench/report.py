"""Benchmark results as data (JSON in, JSON out) and as text for people.

:class:`BenchReport` is what ``infership bench --json`` writes and ``infership plan`` reads.
"""

from __future__ import annotations

import os
import platform
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from infership import __version__
from infership.bench.loadgen import Load, Recording
from infership.bench.stats import LatencySummary, summarize


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RunResult(_Frozen):
    """One load against one target."""

    target: str
    payload: str
    mode: Literal["closed", "open"]
    concurrency: int | None = None
    """Closed loop: connections, each with one request in flight."""
    rate: float | None = None
    """Open loop: requests per second offered."""
    duration_s: float
    """Measured seconds (warm-up excluded)."""
    ok: int
    errors: dict[str, int]
    """Failed requests by kind: ``http 503``, ``timeout``, ``connect``, ``grpc UNAVAILABLE``..."""
    throughput_rps: float
    """Successful answers per measured second."""
    latency_ms: LatencySummary | None
    """Successful requests only; open loop: from the time each request was due."""
    error_latency_ms: LatencySummary | None = None
    """Failed requests: how long they took to fail (a 503 under overload should be quick)."""
    client_cpu: float
    """Fraction of the machine's cores the load generator itself used."""
    server_cpu: float | None = None
    """Fraction of the machine's cores the server process used (when its pid was given)."""
    late_sends: int = 0
    """Open loop: requests sent more than 1 ms after they were due (latency still counts
    from the due time)."""

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


class BenchReport(_Frozen):
    """Everything one ``infership bench`` invocation measured, with where and how."""

    created: str
    machine: str
    cores: int
    infership: str
    command: str
    runs: list[RunResult]


def result(
    target: str,
    payload: str,
    load: Load,
    recording: Recording,
    server_cpu_s: float | None = None,
) -> RunResult:
    """Summarize a (possibly merged) recording of ``load`` against ``target``."""
    cores = os.cpu_count() or 1
    window = recording.window_s or load.duration_s
    return RunResult(
        target=target,
        payload=payload,
        mode="closed" if load.concurrency is not None else "open",
        concurrency=load.concurrency,
        rate=load.rate,
        duration_s=window,
        ok=len(recording.latencies_s),
        errors=dict(sorted(recording.errors.items())),
        throughput_rps=len(recording.latencies_s) / window,
        latency_ms=summarize(recording.latencies_s),
        error_latency_ms=summarize(recording.error_latencies_s),
        client_cpu=recording.client_cpu_s / window / cores,
        server_cpu=None if server_cpu_s is None else server_cpu_s / window / cores,
        late_sends=recording.late_sends,
    )


def report(runs: list[RunResult], command: str) -> BenchReport:
    return BenchReport(
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        machine=f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}, "
        f"Python {platform.python_version()}",
        cores=os.cpu_count() or 1,
        infership=__version__,
        command=command,
        runs=runs,
    )


def load_label(run: RunResult) -> str:
    return f"c={run.concurrency}" if run.mode == "closed" else f"{run.rate:g}/s"


def table(runs: list[RunResult]) -> str:
    """A Markdown table, one row per run."""
    lines = [
        "| target | payload | load | req/s | p50 ms | p90 ms | p99 ms | max ms | errors "
        "| client CPU |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        lat = run.latency_ms
        cells = [f"{v:.2f}" for v in (lat.p50, lat.p90, lat.p99, lat.max)] if lat else ["–"] * 4
        errors = ", ".join(f"{k}: {v}" for k, v in run.errors.items()) or "0"
        lines.append(
            f"| {run.target} | {run.payload} | {load_label(run)} | {run.throughput_rps:.1f} | "
            + " | ".join(cells)
            + f" | {errors} | {run.client_cpu:.0%} |"
        )
    return "\n".join(lines)


def ratio(a: RunResult, b: RunResult) -> str:
    """How B compares with A: throughput and latency ratios (B / A)."""
    parts = [f"throughput B/A {_div(b.throughput_rps, a.throughput_rps)}"]
    if a.latency_ms and b.latency_ms:
        parts.append(f"p50 B/A {_div(b.latency_ms.p50, a.latency_ms.p50)}")
        parts.append(f"p99 B/A {_div(b.latency_ms.p99, a.latency_ms.p99)}")
    return f"{load_label(a)}: " + ", ".join(parts)


def progress_line(label: str, seconds: float, total_s: float, recording: Recording) -> str:
    """One line of live progress: elapsed, answers, errors, rate so far."""
    ok = len(recording.latencies_s)
    errors = sum(recording.errors.values())
    rate = ok / seconds if seconds > 0 else 0.0
    recent = recording.latencies_s[-200:]
    p50 = f"{sorted(recent)[len(recent) // 2] * 1000:.1f} ms" if recent else "–"
    return (
        f"{label}: {min(seconds, total_s):5.1f}/{total_s:g} s  {ok} ok  {errors} errors  "
        f"{rate:.1f} req/s  recent p50 {p50}"
    )


def _div(numerator: float, denominator: float) -> str:
    return f"{numerator / denominator:.2f}×" if denominator else "–"
