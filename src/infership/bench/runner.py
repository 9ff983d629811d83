"""Several loads against one target, or against two targets taking turns.

Two targets run alternately in short slices (A, B, A, B, ...) and each target's slices are
merged, so drift on a shared machine (another job starting, thermal changes) falls on both
alike and the ratio between them stays honest.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from infership.bench import loadgen
from infership.bench.loadgen import Load, Progress, Recording
from infership.bench.report import RunResult, result
from infership.bench.transport import Target

ProgressFactory = Callable[[str, Load], Progress | None]
"""Given a run's label and load, returns its progress callback (or None for none)."""

SLICE_WARMUP_S = 0.3
"""Warm-up of every slice after a target's first: connections are new, the model is warm."""


async def measure(
    targets: Sequence[Target],
    payload: str,
    loads: Sequence[Load],
    *,
    rounds: int = 1,
    server_pids: Sequence[int | None] = (),
    progress: ProgressFactory | None = None,
) -> list[RunResult]:
    """Run every load; with two targets, alternate them in ``rounds`` slices per load.

    Returns one result per (load, target), in that order.
    """
    if not 1 <= len(targets) <= 2:
        raise ValueError("give one target, or two to compare")
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    pids = list(server_pids) + [None] * (len(targets) - len(server_pids))
    results: list[RunResult] = []
    for load in loads:
        slices = rounds if len(targets) == 2 else 1
        merged = [Recording() for _ in targets]
        server_cpu = [0.0 if pid else None for pid in pids]
        for index in range(slices):
            piece = replace(
                load,
                duration_s=load.duration_s / slices,
                warmup_s=load.warmup_s if index == 0 else min(load.warmup_s, SLICE_WARMUP_S),
            )
            for position, target in enumerate(targets):
                callback = progress(target.label, piece) if progress else None
                before = _server_cpu(pids[position])
                merged[position].merge(await loadgen.run(target, piece, callback))
                after = _server_cpu(pids[position])
                if before is not None and after is not None:
                    used = server_cpu[position] or 0.0
                    # Scale the slice's CPU (warm-up included) to its measured window.
                    total = piece.warmup_s + piece.duration_s
                    server_cpu[position] = used + (after - before) * piece.duration_s / total
        for target, recording, cpu in zip(targets, merged, server_cpu, strict=True):
            results.append(result(target.label, payload, load, recording, cpu))
    return results


def _server_cpu(pid: int | None) -> float | None:
    return loadgen.server_cpu_seconds(pid) if pid else None
