"""How far a rewritten model is from the original: agreement on samples, and speed."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import median
from typing import Any

import numpy as np

from infership.types import Array


@dataclass(frozen=True)
class Accuracy:
    """The candidate's outputs against the original's, on the same samples."""

    samples: int
    top1_agreement: float | None
    """Share of samples whose arg-max class is unchanged (classification models only)."""
    min_cosine: float
    """Lowest cosine similarity between original and candidate output rows."""
    max_abs_diff: float


@dataclass(frozen=True)
class Speed:
    """Rows per second at one batch size, both models measured in alternating rounds."""

    batch_size: int
    original_per_s: float
    candidate_per_s: float

    @property
    def speedup(self) -> float:
        return self.candidate_per_s / self.original_per_s


def accuracy(
    original: Any, candidate: Any, feeds: Sequence[dict[str, Array]], output: str, top1: bool
) -> Accuracy:
    """Run every feed through both sessions and compare ``output``."""
    before = np.concatenate([_run(original, output, f) for f in feeds])
    after = np.concatenate([_run(candidate, output, f) for f in feeds])
    before = before.reshape(len(before), -1).astype(np.float64)
    after = after.reshape(len(after), -1).astype(np.float64)
    norms = np.linalg.norm(before, axis=1) * np.linalg.norm(after, axis=1)
    cosine = np.sum(before * after, axis=1) / np.maximum(norms, 1e-12)
    agreement = None
    if top1:
        agreement = float(np.mean(before.argmax(axis=1) == after.argmax(axis=1)))
    return Accuracy(
        samples=len(before),
        top1_agreement=agreement,
        min_cosine=float(cosine.min()),
        max_abs_diff=float(np.abs(before - after).max()),
    )


def speed(
    original: Any, candidate: Any, feed: dict[str, Array], batch_size: int, seconds: float
) -> Speed:
    """Throughput of both sessions on ``feed``'s first row repeated ``batch_size`` times.

    The two alternate in short rounds and each keeps its median round, so load from other
    processes on the machine weighs on both alike instead of on whichever ran second."""
    batch = {k: np.repeat(v[:1], batch_size, axis=0) for k, v in feed.items()}
    rounds: dict[int, list[float]] = {0: [], 1: []}
    sessions = (original, candidate)
    for session in sessions:
        session.run(None, batch)  # first runs allocate and pick kernels
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(rounds[1]) < 3:
        for i, session in enumerate(sessions):
            rounds[i].append(_round(session, batch, batch_size))
    return Speed(batch_size, median(rounds[0]), median(rounds[1]))


def _round(session: Any, batch: dict[str, Array], batch_size: int, budget: float = 0.2) -> float:
    runs = 0
    started = time.perf_counter()
    while True:
        session.run(None, batch)
        runs += 1
        elapsed = time.perf_counter() - started
        if elapsed >= budget:
            return runs * batch_size / elapsed


def _run(session: Any, output: str, feed: dict[str, Array]) -> Array:
    result: Array = session.run([output], feed)[0]
    return result
