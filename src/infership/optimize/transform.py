"""ONNX → ONNX rewrites with onnxruntime's own tools: graph optimisation and int8 quantisation.

* ``graph``: onnxruntime's "extended" optimisations (constant folding, fusions) saved to disk, so
  a server does not redo them at every start. The "all" level is not saved: its layout changes
  are specific to the CPU that made them.
* ``dynamic``: int8 weights (per channel, 7-bit range so that no CPU's kernels saturate),
  activations quantised on the fly. Suits transformers (MatMul-heavy); for convolutions
  onnxruntime falls back to slow integer kernels.
* ``static``: int8 weights and activations (QDQ, per-channel weights), with activation ranges
  calibrated on sample inputs. Suits CNNs.
"""

from __future__ import annotations

import logging
import re
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

import onnxruntime as ort

from infership.errors import ConfigError, OptimizeFailed
from infership.types import Array

log = logging.getLogger(__name__)


Mode = Literal["graph", "dynamic", "static"]
MODES: tuple[Mode, ...] = ("graph", "dynamic", "static")


def transform(
    source: Path,
    target: Path,
    mode: Mode,
    calibration: Sequence[dict[str, Array]] = (),
    keep_fp32: Sequence[str] = (),
) -> None:
    """Write ``source`` rewritten by ``mode`` to ``target``. Raises OptimizeFailed.

    ``keep_fp32``: regular expressions; the quantising modes leave every node whose name one of
    them matches (``re.search``) in FP32. Raises ConfigError when one matches no node."""
    if keep_fp32 and mode == "graph":
        raise ConfigError("keep_fp32 (--keep-fp32) applies to the quantising modes only")
    try:
        if mode == "graph":
            optimize_graph(source, target)
        else:
            _quantize(source, target, mode, calibration, keep_fp32)
    except ConfigError:
        raise
    except Exception as exc:  # onnxruntime's tools raise bare Exceptions
        raise OptimizeFailed(
            f"{source}: onnxruntime could not rewrite the model ({mode}): {exc}"
        ) from exc


def _quantize(
    source: Path,
    target: Path,
    mode: Mode,
    calibration: Sequence[dict[str, Array]],
    keep_fp32: Sequence[str],
) -> None:
    # Imported here: onnxruntime.quantization needs the optional onnx package.
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        # Shape inference and folding first, as onnxruntime recommends: more nodes get quantised.
        # Symbolic shape inference gives up on dynamic-length graphs such as BERT's, printing
        # as it goes; ONNX's own shape inference is enough for quantisation.
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        excluded = _matching_nodes(prepared, keep_fp32)
        if mode == "dynamic":
            # Per-channel scales: on all-MiniLM-L6-v2 per-tensor ones cost 4 points of cosine.
            # 7-bit weights (reduce_range): x86 CPUs without VNNI multiply uint8 activations by
            # int8 weights in pairs summed into int16, which saturates with full-range weights,
            # so the same file gave cosine 0.9913 on a VNNI CPU and 0.9870 on one without. With
            # 7 bits no pair can saturate, every CPU computes the same integers, and the check
            # made here holds on the serving machine. Measurements: docs/optimize.md.
            quantize_dynamic(
                str(prepared),
                str(target),
                weight_type=QuantType.QInt8,
                per_channel=True,
                reduce_range=True,
                nodes_to_exclude=excluded,
            )
            return
        if not calibration:
            raise ConfigError("static quantisation needs calibration samples (--samples)")
        quantize_static(
            str(prepared),
            str(target),
            _Reader(calibration),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=excluded,
        )


def _matching_nodes(model: Path, patterns: Sequence[str]) -> list[str]:
    if not patterns:
        return []
    import onnx

    names = [node.name for node in onnx.load(str(model), load_external_data=False).graph.node]
    matched: list[str] = []
    for pattern in patterns:
        try:
            found = [name for name in names if re.search(pattern, name)]
        except re.error as exc:
            raise ConfigError(f"--keep-fp32 {pattern!r}: not a regular expression: {exc}") from exc
        if not found:
            example = next((name for name in names if name), "(the nodes have no names)")
            raise ConfigError(
                f"--keep-fp32 {pattern!r} matches no node name; names look like {example!r}"
            )
        matched += [name for name in found if name not in matched]
    return matched


def optimize_graph(source: Path, target: Path) -> None:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(target)
    ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over prepared sample feeds."""

    def __init__(self, feeds: Sequence[dict[str, Array]]) -> None:
        self._feeds: Iterator[dict[str, Array]] = iter(feeds)

    def get_next(self) -> dict[str, Array] | None:
        return next(self._feeds, None)
