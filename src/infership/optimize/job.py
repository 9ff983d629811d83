"""``optimize``: rewrite a model version, check it against the original, write a new version.

Steps, in order, so that nothing half-made is ever served:
1. read model.yaml and pick the source version (the newest unless told);
2. rewrite the ONNX file into a hidden scratch folder beside the versions;
3. compare the rewrite with the original on samples; a failed check stops here;
4. measure both speeds;
5. rename the scratch folder to the new version and record its digests in model.yaml.
"""

from __future__ import annotations

import hashlib
import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import onnxruntime as ort

from infership.errors import AccuracyCheckFailed, ConfigError, ModelLoadError
from infership.optimize.compare import Accuracy, Speed, accuracy, speed
from infership.optimize.samples import sample_feeds
from infership.optimize.transform import Mode, transform
from infership.repository.digests import add_digests
from infership.repository.manifest import MANIFEST_NAME, ModelManifest, load_manifest
from infership.runtimes.onnx import OnnxRuntime


@dataclass(frozen=True)
class OptimizeReport:
    """What ``optimize`` did and measured; ``as_dict`` for JSON."""

    model: str
    mode: Mode
    source_version: int
    new_version: int
    path: Path
    original_bytes: int
    optimized_bytes: int
    accuracy: Accuracy
    speed: Speed
    keep_fp32: tuple[str, ...] = ()
    """The ``keep_fp32`` patterns the rewrite was made with."""

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["path"] = str(self.path)
        data["speed"]["speedup"] = self.speed.speedup
        return data


@dataclass(frozen=True)
class Gates:
    """The least agreement a rewrite must keep to be written."""

    min_top1_agreement: float = 1.0
    """Classification models: share of samples whose top-1 class must not change."""
    min_cosine: float = 0.99
    """Other models: lowest cosine similarity of an output row to the original's."""


def optimize(
    model_dir: Path,
    mode: Mode = "dynamic",
    *,
    version: int | None = None,
    new_version: int | None = None,
    samples: Path | None = None,
    gates: Gates = Gates(),
    batch_size: int = 8,
    seconds: float = 3.0,
    threads: int = 0,
    keep_fp32: tuple[str, ...] = (),
) -> OptimizeReport:
    """Write ``model_dir/<new_version>/`` holding ``mode``'s rewrite of ``version``.

    ``keep_fp32``: regular expressions of node names the quantising modes leave in FP32.
    Raises ConfigError (bad folder, version, samples or pattern) or AccuracyCheckFailed (nothing
    written).
    """
    manifest_path = model_dir / MANIFEST_NAME
    manifest = load_manifest(manifest_path)
    if manifest.runtime != "onnx":
        raise ConfigError(f"{manifest_path}: field 'runtime': optimize rewrites ONNX models only")
    versions = sorted(int(p.name) for p in model_dir.iterdir() if p.name.isdigit() and p.is_dir())
    source = _pick(version, versions, manifest_path)
    target = new_version if new_version is not None else max(versions) + 1
    if (model_dir / str(target)).exists():
        raise ConfigError(f"{model_dir / str(target)}: version {target} exists already")
    source_dir = model_dir / str(source)
    scratch = model_dir / f".optimize-{target}"
    shutil.rmtree(scratch, ignore_errors=True)
    shutil.copytree(source_dir, scratch)
    try:
        original = _session(source_dir / manifest.artifact, threads)
        spec_inputs = OnnxRuntime(original, source_dir / manifest.artifact).inputs
        feeds = sample_feeds(manifest, source_dir, spec_inputs, samples)
        transform(
            source_dir / manifest.artifact, scratch / manifest.artifact, mode, feeds, keep_fp32
        )
        candidate = _session(scratch / manifest.artifact, threads)
        output, top1 = _compared_output(manifest, original)
        checked = accuracy(original, candidate, feeds, output, top1)
        _enforce(checked, gates, top1)
        measured = speed(original, candidate, feeds[0], batch_size, seconds)
        final = model_dir / str(target)
        scratch.rename(final)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    add_digests(
        manifest_path,
        {
            f"{target}/{p.name}": hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(final.iterdir())
            if f"{source}/{p.name}" in manifest.sha256 or p.name == manifest.artifact
        },
    )
    return OptimizeReport(
        model=model_dir.name,
        mode=mode,
        source_version=source,
        new_version=target,
        path=final / manifest.artifact,
        original_bytes=(source_dir / manifest.artifact).stat().st_size,
        optimized_bytes=(final / manifest.artifact).stat().st_size,
        accuracy=checked,
        speed=measured,
        keep_fp32=keep_fp32,
    )


def _pick(version: int | None, versions: list[int], where: Path) -> int:
    if not versions:
        raise ConfigError(f"{where.parent}: no version folders (1/, 2/, ...)")
    if version is None:
        return versions[-1]
    if version not in versions:
        raise ConfigError(f"{where.parent}: no version {version}; versions are {versions}")
    return version


def _session(path: Path, threads: int) -> Any:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise ModelLoadError(f"{path}: onnxruntime could not load the model: {exc}") from exc


def _compared_output(manifest: ModelManifest, session: Any) -> tuple[str, bool]:
    classification = manifest.postprocess.classification
    if classification is not None:
        return classification.output, True
    return str(session.get_outputs()[0].name), False


def _enforce(checked: Accuracy, gates: Gates, top1: bool) -> None:
    if top1 and checked.top1_agreement is not None:
        if checked.top1_agreement < gates.min_top1_agreement:
            raise AccuracyCheckFailed(
                f"top-1 class changed on {1 - checked.top1_agreement:.0%} of "
                f"{checked.samples} samples (allowed: {1 - gates.min_top1_agreement:.0%}); "
                "nothing written"
            )
    elif math.isnan(checked.min_cosine):  # NaN compares false with everything: refuse it here
        raise AccuracyCheckFailed(
            "an output row's cosine similarity to the original is not a number (NaN in the "
            "outputs); nothing written"
        )
    elif checked.min_cosine < gates.min_cosine:
        shortfall = gates.min_cosine - checked.min_cosine
        # Four decimals, or as many more as it takes for the shortfall to show.
        digits = min(max(4, math.ceil(-math.log10(shortfall)) + 1), 9)
        raise AccuracyCheckFailed(
            f"lowest cosine similarity to the original is {checked.min_cosine:.{digits}f}, "
            f"{shortfall:.{digits}f} below the gate of {gates.min_cosine}; nothing written"
        )
