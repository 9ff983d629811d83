"""Does what will be served compute what the user trained? The parity check.

The staged version is loaded by the server's own loader (``ModelLoader``: the runtime, the
built-in and Python pre- and post-processing, the signature checks) and asked, through
``ServedModel.infer``, exactly what a client would ask; its answers are compared with the
original framework's on the same public inputs. So the check covers the export and every
mapping made on the way (a torchvision transform onto ``preprocess.image``, a tokenizer onto
``preprocess.text``), not just the graph.

It also checks the batch axis: each example row alone, then all rows in one request (repeated
up to 8 rows), must give the same per-row answers.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from infership.errors import ImportFailed, InfershipError, ParityFailed
from infership.importing.source import Check, rows
from infership.types import Array, InferenceRequest, RequestedOutput

BATCH_ROWS = 8
"""The fewest rows the batch check sends in one request (the examples, repeated as needed)."""


@dataclass(frozen=True)
class Tolerance:
    """How far the served answers may stray. ``atol``/``rtol`` None: the defaults of the
    output's datatype (``DEFAULTS``); an element passes when |served - original| <= atol +
    rtol * |original|, as ``numpy.isclose``."""

    atol: float | None = None
    rtol: float | None = None
    min_cosine: float = 0.9999
    """``cosine`` outputs: the lowest cosine similarity of a row to the original's."""
    min_top1: float = 1.0
    """``top1`` outputs: the least share of rows whose arg-max class must agree."""

    def __post_init__(self) -> None:
        for name in ("atol", "rtol"):
            value = getattr(self, name)
            if value is not None and not value >= 0:
                raise ImportFailed(f"tolerance {name} must be 0 or more, got {value}")
        if not -1 <= self.min_cosine <= 1:
            raise ImportFailed(f"min_cosine must be from -1 to 1, got {self.min_cosine}")
        if not 0 <= self.min_top1 <= 1:
            raise ImportFailed(f"min_top1 must be from 0 to 1, got {self.min_top1}")

    def bounds(self, dtype: np.dtype[Any]) -> tuple[float, float]:
        atol, rtol = DEFAULTS.get(dtype.name, (0.0, 0.0))
        return (
            atol if self.atol is None else self.atol,
            rtol if self.rtol is None else self.rtol,
        )


DEFAULT_TOLERANCE = Tolerance()

DEFAULTS: dict[str, tuple[float, float]] = {
    "float16": (1e-2, 1e-2),
    "float32": (1e-4, 1e-3),
    "float64": (1e-7, 1e-6),
}
"""(atol, rtol) per served dtype. FP32 allows what reordered sums and fused kernels change
(1e-5 to 1e-4 on logits of a few units, in the exports measured); integers and strings must be
equal."""


@dataclass(frozen=True)
class OutputParity:
    """One output's comparison."""

    name: str
    check: Check
    rows: int
    max_abs_diff: float | None
    """Largest |served - original| (None for strings)."""
    max_rel_diff: float | None
    """Largest |served - original| / |original| over elements whose original is not zero."""
    top1_agreement: float | None = None
    min_cosine: float | None = None
    problem: str | None = None
    """Why it failed, in words; None when it passed."""

    @property
    def passed(self) -> bool:
        return self.problem is None


@dataclass(frozen=True)
class ParityReport:
    """The whole check: every compared output, and the batch-axis check."""

    outputs: tuple[OutputParity, ...]
    batch: tuple[OutputParity, ...]
    """Each output of all rows in one request against the same rows one request each."""
    samples: int
    batch_rows: int = BATCH_ROWS
    """Rows asked in one request for the batch check; 1: the model cannot batch."""

    @property
    def passed(self) -> bool:
        return all(o.passed for o in (*self.outputs, *self.batch))

    def problems(self) -> list[str]:
        found = [f"output {o.name!r}: {o.problem}" for o in self.outputs if not o.passed]
        found += [
            f"output {o.name!r}, a batch of {o.rows} against one row at a time: {o.problem}"
            for o in self.batch
            if not o.passed
        ]
        return found

    def as_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "samples": self.samples,
            "batch_rows": self.batch_rows,
            "outputs": [asdict(o) | {"passed": o.passed} for o in self.outputs],
            "batch": [asdict(o) | {"passed": o.passed} for o in self.batch],
        }


def compare(
    name: str,
    check: Check,
    original: Array,
    served: Array,
    tolerance: Tolerance,
) -> OutputParity:
    """Compare one output, row-major; ``served`` and ``original`` have the same rows."""
    original, served = np.asarray(original), np.asarray(served)
    count = len(served) if served.ndim else 1
    if original.shape != served.shape:
        return OutputParity(
            name, check, count, None, None,
            problem=f"shape {list(served.shape)} served, {list(original.shape)} originally",
        )  # fmt: skip
    if check == "exact" or served.dtype.kind in "OSUb" or original.dtype.kind in "OSUb":
        return _exact(name, check, original, served, count)
    before = original.astype(np.float64).reshape(count, -1)
    after = served.astype(np.float64).reshape(count, -1)
    if not (np.isfinite(before).all() and np.isfinite(after).all()):
        same = np.array_equal(before, after, equal_nan=True)
        problem = None if same else "NaN or infinite values differ from the original's"
        return OutputParity(name, check, count, None, None, problem=problem)
    diff = np.abs(after - before)
    scale = np.abs(before)
    relative = np.divide(diff, scale, out=np.zeros_like(diff), where=scale > 0)
    atol, rtol = tolerance.bounds(served.dtype)
    worst = np.unravel_index(int(np.argmax(diff - (atol + rtol * scale))), diff.shape)
    problem = None
    if not np.all(diff <= atol + rtol * scale):
        problem = (
            f"differs by {diff[worst]:.3g} at row {worst[0]}, element {worst[1]} "
            f"(original {before[worst]:.6g}, served {after[worst]:.6g}); allowed "
            f"{atol:g} + {rtol:g} × |original|"
        )
    top1 = cosine = None
    if check == "top1" and before.shape[1] > 1:
        top1 = float(np.mean(before.argmax(axis=1) == after.argmax(axis=1)))
        if top1 < tolerance.min_top1:
            problem = (
                f"the top-1 class differs on {round((1 - top1) * count)} of {count} rows "
                f"(allowed: {1 - tolerance.min_top1:.0%})"
            )
    if check == "cosine":
        norms = np.linalg.norm(before, axis=1) * np.linalg.norm(after, axis=1)
        cosines = np.sum(before * after, axis=1) / np.maximum(norms, 1e-30)
        cosine = float(cosines.min())
        if cosine < tolerance.min_cosine:
            problem = f"cosine similarity {cosine:.6f} is below {tolerance.min_cosine}"
    return OutputParity(
        name,
        check,
        count,
        float(diff.max(initial=0.0)),
        float(relative.max(initial=0.0)),
        top1_agreement=top1,
        min_cosine=cosine,
        problem=problem,
    )


def _exact(name: str, check: Check, original: Array, served: Array, count: int) -> OutputParity:
    flat_before = [_text(v) for v in original.reshape(-1).tolist()]
    flat_after = [_text(v) for v in served.reshape(-1).tolist()]
    wrong = [i for i, (a, b) in enumerate(zip(flat_before, flat_after, strict=True)) if a != b]
    problem = None
    if wrong:
        i = wrong[0]
        problem = (
            f"{len(wrong)} of {len(flat_before)} values differ, first at element {i}: "
            f"original {flat_before[i]!r}, served {flat_after[i]!r}"
        )
    return OutputParity(name, "exact", count, None, None, problem=problem)


def _text(value: object) -> object:
    """Strings compare as text, whichever of bytes, str or numpy scalar each side gives."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.generic):
        return value.item()
    return value


def check_parity(
    repository: Path,
    name: str,
    version: int,
    original: Mapping[str, Array],
    examples: Mapping[str, Array],
    checks: Mapping[str, Check],
    tolerance: Tolerance = DEFAULT_TOLERANCE,
    batch_rows: int = BATCH_ROWS,
) -> ParityReport:
    """Serve ``repository/name/version`` with the server's code and compare its answers on
    ``examples`` with ``original`` (the original's outputs on the same rows), then
    ``batch_rows`` rows (the examples, cycled) in one request against the same rows asked one
    at a time (1: a model that cannot batch, not checked). Raises ParityFailed when the staged
    version does not load or cannot answer."""
    return asyncio.run(
        _check(repository, name, version, original, examples, checks, tolerance, batch_rows)
    )


async def _check(
    repository: Path,
    name: str,
    version: int,
    original: Mapping[str, Array],
    examples: Mapping[str, Array],
    checks: Mapping[str, Check],
    tolerance: Tolerance,
    batch_rows: int,
) -> ParityReport:
    from infership.loader import ModelLoader
    from infership.metrics import Metrics
    from infership.repository import FilesystemRepository
    from infership.settings import ServerSettings

    count = rows(examples)
    wanted = tuple(RequestedOutput(n) for n in checks)
    with ThreadPoolExecutor(2, thread_name_prefix="parity") as pool:
        loader = ModelLoader(FilesystemRepository(repository), ServerSettings(), Metrics(), pool)
        try:
            model = await asyncio.to_thread(lambda: loader.build(loader.prepare(name), version))
            await model.start()
        except InfershipError as exc:
            raise ParityFailed(f"the exported model does not load: {exc}") from exc
        try:

            async def ask(feed: dict[str, Array]) -> dict[str, Array]:
                request = InferenceRequest(inputs=feed, outputs=wanted)
                try:
                    return (await model.infer(request)).outputs
                except InfershipError as exc:
                    raise ParityFailed(f"the exported model cannot answer: {exc}") from exc

            one_by_one = [await ask(_rows(examples, [i])) for i in range(count)]
            repeat = [i % count for i in range(batch_rows)]
            batched = await ask(_rows(examples, repeat)) if batch_rows > 1 else None
        finally:
            await model.stop(drain=False)
    served = {n: np.concatenate([np.asarray(a[n]) for a in one_by_one]) for n in checks}
    outputs = tuple(
        compare(n, check, np.asarray(original[n]), served[n], tolerance)
        for n, check in checks.items()
    )
    # Per-row answers must not depend on the batch: the rows of the big request against the
    # same rows asked alone. The original's tolerance applies (kernels differ by batch size).
    batch = tuple(
        compare(n, check, served[n][repeat], np.asarray(batched[n]), tolerance)
        for n, check in checks.items()
        if batched is not None
    )
    return ParityReport(outputs, batch, count, batch_rows)


def _rows(examples: Mapping[str, Array], index: list[int]) -> dict[str, Array]:
    return {k: np.asarray(v)[index] for k, v in examples.items()}


def describe(report: ParityReport) -> str:
    """The report as a short table, one line per output."""
    batched = f"then {report.batch_rows} in one batch" if report.batch_rows > 1 else "one by one"
    lines = [f"parity on {report.samples} rows ({batched}):"]
    for o in report.outputs:
        measured = []
        if o.max_abs_diff is not None:
            measured.append(f"max abs {o.max_abs_diff:.2e}, max rel {_g(o.max_rel_diff)}")
        if o.top1_agreement is not None:
            measured.append(f"top-1 agreement {o.top1_agreement:.1%}")
        if o.min_cosine is not None:
            measured.append(f"min cosine {o.min_cosine:.6f}")
        if o.check == "exact":
            measured.append("equal" if o.passed else "differs")
        verdict = "ok" if o.passed else f"FAILED: {o.problem}"
        lines.append(f"  {o.name:<16} {o.check:<6} {'; '.join(measured)}  {verdict}")
    broken = [o for o in report.batch if not o.passed]
    if report.batch_rows == 1:
        lines.append("  batch axis: none (max_batch_size 1), not checked")
    elif broken:
        lines.append(f"  batch axis FAILED: {broken[0].name}: {broken[0].problem}")
    else:
        lines.append("  batch axis: rows agree alone and batched")
    return "\n".join(lines)


def _g(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.2e}"
