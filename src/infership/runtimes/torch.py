"""PyTorch: torch.export programs (``.pt2``) and TorchScript, on the CPU or a CUDA device.

Only formats that load without running arbitrary pickled code are accepted:

* a ``.pt2`` archive from ``torch.export.save``, after checking that every weight and constant
  is stored as raw tensor bytes (no pickled payloads) and that its sample inputs load with
  ``torch.load(weights_only=True)``; torch would otherwise fall back to full unpickling;
* TorchScript from ``torch.jit.save``, whose restricted unpickler builds only TorchScript types.

A ``torch.save`` checkpoint (a pickle) is refused with a ConfigError that says how to export.
"""

from __future__ import annotations

import io
import json
import logging
import warnings
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
from torch.export.passes import move_to_device_pass

from infership.errors import ConfigError, InferenceFailed, ModelLoadError
from infership.repository.manifest import ModelManifest, TensorConfig, TorchOptions
from infership.runtimes.base import Runtime
from infership.types import Array, TensorSpec

log = logging.getLogger(__name__)

_DATATYPES = {
    torch.bool: "BOOL",
    torch.uint8: "UINT8",
    torch.int8: "INT8",
    torch.int16: "INT16",
    torch.int32: "INT32",
    torch.int64: "INT64",
    torch.float16: "FP16",
    torch.float32: "FP32",
    torch.float64: "FP64",
}
_TORCHSCRIPT_SUFFIXES = (".ts", ".torchscript")
_HOW_TO_EXPORT = (
    "save the model with torch.export.save (.pt2) or torch.jit.save (TorchScript) instead"
)


class TorchRuntime(Runtime):
    """A loaded torch module called under ``torch.inference_mode``. Torch kernels release the
    GIL, so worker threads compute while the event loop keeps serving."""

    def __init__(
        self,
        module: Any,
        *,
        platform: str,
        inputs: tuple[TensorSpec, ...],
        outputs: tuple[TensorSpec, ...],
        device: torch.device,
        pin_memory: bool,
        path: Path,
    ) -> None:
        super().__init__(inputs, outputs)
        self.platform = platform
        self.device = device
        self._module = module
        self._pin = pin_memory and device.type == "cuda"
        self._path = path

    @classmethod
    def load(cls, path: Path, manifest: ModelManifest, data: bytes | None = None) -> TorchRuntime:
        """Load ``path`` (or ``data``, its bytes, when given) as model.yaml says. Raises
        ConfigError for a refused format or a bad device, ModelLoadError when torch cannot load
        the file."""
        options = manifest.torch
        device = _device(options, path)
        _set_threads(options)
        file = _File(path, data)
        if _format(path, options) == "export":
            return cls._load_export(file, manifest, device, options)
        return cls._load_torchscript(file, manifest, device, options)

    @classmethod
    def _load_export(
        cls, file: _File, manifest: ModelManifest, device: torch.device, options: TorchOptions
    ) -> TorchRuntime:
        path = file.path
        _check_export_archive(file)
        try:
            program = torch.export.load(file.open())
            if device.type != "cpu":
                program = move_to_device_pass(program, device)
            module = program.module()
        except Exception as exc:  # torch raises many untyped errors for bad archives
            raise ModelLoadError(f"{path}: torch.export could not load the program: {exc}") from exc
        inputs, outputs = _export_signature(program, manifest, path)
        log.info("loaded %s (torch.export) on %s", path, device)
        return cls(
            module,
            platform="pytorch_export",
            inputs=inputs,
            outputs=outputs,
            device=device,
            pin_memory=options.pin_memory,
            path=path,
        )

    @classmethod
    def _load_torchscript(
        cls, file: _File, manifest: ModelManifest, device: torch.device, options: TorchOptions
    ) -> TorchRuntime:
        path = file.path
        _check_torchscript_archive(file)
        if manifest.inputs is None or manifest.outputs is None:
            raise ConfigError(
                f"{path}: a TorchScript model does not record its tensor types; declare "
                "'inputs' and 'outputs' in model.yaml"
            )
        try:
            with warnings.catch_warnings():
                # torch marks TorchScript deprecated; serving existing TorchScript is the point.
                warnings.simplefilter("ignore", DeprecationWarning)
                module = torch.jit.load(file.open(), map_location=device)  # type: ignore[no-untyped-call]
            module.eval()
        except Exception as exc:
            raise ModelLoadError(f"{path}: torch.jit could not load the model: {exc}") from exc
        names = [a.name for a in module.forward.schema.arguments[1:]]
        declared = [t.name for t in manifest.inputs]
        if names != declared:
            raise ConfigError(
                f"{path}: field 'inputs': declares {declared} but forward() takes {names}"
            )
        log.info("loaded %s (TorchScript) on %s", path, device)
        return cls(
            module,
            platform="pytorch_libtorch",
            inputs=tuple(t.spec() for t in manifest.inputs),
            outputs=tuple(t.spec() for t in manifest.outputs),
            device=device,
            pin_memory=options.pin_memory,
            path=path,
        )

    def close(self) -> None:
        self._module = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def infer(self, inputs: dict[str, Array]) -> dict[str, Array]:
        try:
            with torch.inference_mode():
                args = [self._tensor(inputs[spec.name]) for spec in self.inputs]
                result = self._module(*args)
                tensors = _flatten(result)
                if len(tensors) != len(self.outputs):
                    raise ValueError(
                        f"forward() returned {len(tensors)} tensors, expected {len(self.outputs)}"
                    )
                arrays = [t.detach().cpu().numpy() for t in tensors]
        except Exception as exc:
            raise InferenceFailed(f"{self._path}: torch failed: {exc}") from exc
        return {spec.name: array for spec, array in zip(self.outputs, arrays, strict=True)}

    def _tensor(self, array: Array) -> torch.Tensor:
        tensor = torch.from_numpy(np.ascontiguousarray(array))
        if self.device.type == "cpu":
            return tensor
        if self._pin:
            # Page-locked memory lets the copy run asynchronously, overlapping the next input.
            tensor = tensor.pin_memory()
        return tensor.to(self.device, non_blocking=self._pin)


def _device(options: TorchOptions, path: Path) -> torch.device:
    device = torch.device(options.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"{path}: field 'torch.device': {options.device!r} asked for but torch sees no "
                "CUDA device (CPU-only torch build, no driver, or CUDA_VISIBLE_DEVICES empty)"
            )
        index = device.index or 0
        if index >= torch.cuda.device_count():
            raise ConfigError(
                f"{path}: field 'torch.device': {options.device!r} but only "
                f"{torch.cuda.device_count()} CUDA devices are visible"
            )
    return device


def _set_threads(options: TorchOptions) -> None:
    # Both settings are process-wide in torch; the last model loaded with a value wins.
    if options.intra_op_threads:
        torch.set_num_threads(options.intra_op_threads)
    if options.inter_op_threads and torch.get_num_interop_threads() != options.inter_op_threads:
        try:
            torch.set_num_interop_threads(options.inter_op_threads)
        except RuntimeError:
            log.warning(
                "torch inter-op threads stay at %d: they can only be set before the first "
                "parallel work in the process",
                torch.get_num_interop_threads(),
            )


def _format(path: Path, options: TorchOptions) -> str:
    if options.format != "auto":
        return options.format
    if path.suffix == ".pt2":
        return "export"
    if path.suffix in _TORCHSCRIPT_SUFFIXES:
        return "torchscript"
    raise ConfigError(
        f"{path}: field 'torch.format': cannot tell the format from the file name; name the "
        "file .pt2 (torch.export) or .ts (TorchScript), or set torch.format. Pickled "
        f"checkpoints (.pt/.pth from torch.save) are refused: {_HOW_TO_EXPORT}"
    )


class _File:
    """The artifact: on disk, or its bytes in memory (decrypted models never touch the disk)."""

    def __init__(self, path: Path, data: bytes | None) -> None:
        self.path = path
        self._data = data

    def open(self) -> str | io.BytesIO:
        return str(self.path) if self._data is None else io.BytesIO(self._data)


def _open_zip(file: _File, what: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(file.open())
    except (zipfile.BadZipFile, OSError) as exc:
        raise ConfigError(f"{file.path}: not a {what} archive: {exc}") from exc


def _check_export_archive(file: _File) -> None:
    """Refuse a .pt2 whose loading would unpickle anything beyond plain tensors."""
    path = file.path
    with _open_zip(file, "torch.export (.pt2)") as archive:
        names = archive.namelist()
        if not any(PurePosixPath(n).name == "archive_format" for n in names):
            raise ConfigError(
                f"{path}: not a torch.export archive (no archive_format entry; a torch.save "
                f"checkpoint?): {_HOW_TO_EXPORT}"
            )
        for name in names:
            parts = PurePosixPath(name).parts
            if name.endswith(("_weights_config.json", "_constants_config.json")):
                _check_payload_config(path, name, archive.read(name))
            elif "sample_inputs" in parts:
                _check_weights_only(path, name, archive.read(name))
            elif name.endswith((".pt", ".pkl")):
                raise ConfigError(f"{path}: entry {name!r} is a pickle; refused: {_HOW_TO_EXPORT}")


def _check_payload_config(path: Path, entry: str, raw: bytes) -> None:
    try:
        config = json.loads(raw)["config"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: entry {entry!r} is not a valid payload index") from exc
    for fqn, meta in config.items():
        plain = str(meta.get("path_name", "")).startswith(("weight_", "tensor_"))
        if meta.get("use_pickle") or not plain:
            raise ConfigError(
                f"{path}: {fqn!r} is stored as a pickled object; loading it would run code, so "
                "the program is refused (export plain tensors only)"
            )


def _check_weights_only(path: Path, entry: str, raw: bytes) -> None:
    # torch.export.load tries weights_only=True and silently retries with full unpickling.
    try:
        torch.load(io.BytesIO(raw), weights_only=True)
    except Exception as exc:
        raise ConfigError(
            f"{path}: entry {entry!r} needs full unpickling to load; refused: {exc}"
        ) from exc


def _check_torchscript_archive(file: _File) -> None:
    path = file.path
    with _open_zip(file, "TorchScript") as archive:
        names = archive.namelist()
    has_code = any("code" in PurePosixPath(n).parts[:-1] for n in names)
    has_constants = any(PurePosixPath(n).name == "constants.pkl" for n in names)
    if not (has_code and has_constants):
        raise ConfigError(
            f"{path}: not TorchScript (no code/ or constants.pkl; a torch.save checkpoint?): "
            + _HOW_TO_EXPORT
        )


def _export_signature(
    program: Any, manifest: ModelManifest, path: Path
) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """Inputs from the program's placeholders; outputs from its output node, named by
    model.yaml's ``outputs`` in order (``output__N`` as in Triton when not declared)."""
    user_inputs = set(program.graph_signature.user_inputs)
    inputs = tuple(
        _spec(node.name, node.meta.get("val"), path)
        for node in program.graph.nodes
        if node.op == "placeholder" and node.name in user_inputs
    )
    (output_node,) = (n for n in program.graph.nodes if n.op == "output")
    values = [arg.meta.get("val") for arg in output_node.args[0]]
    names = _output_names(manifest.outputs, len(values), path)
    outputs = tuple(_spec(name, value, path) for name, value in zip(names, values, strict=True))
    return inputs, outputs


def _output_names(declared: tuple[TensorConfig, ...] | None, count: int, path: Path) -> list[str]:
    if declared is None:
        return [f"output__{i}" for i in range(count)]
    if len(declared) != count:
        raise ConfigError(
            f"{path}: field 'outputs': declares {len(declared)} outputs but the program "
            f"returns {count}"
        )
    return [t.name for t in declared]


def _spec(name: str, value: Any, path: Path) -> TensorSpec:
    if not isinstance(value, torch.Tensor):
        raise ModelLoadError(f"{path}: tensor {name!r}: only tensor inputs and outputs are served")
    try:
        datatype = _DATATYPES[value.dtype]
    except KeyError:
        raise ModelLoadError(
            f"{path}: tensor {name!r} has unsupported dtype {value.dtype}"
        ) from None
    # Symbolic (dynamic) dimensions are SymInts, not ints.
    shape = tuple(d if isinstance(d, int) else -1 for d in value.shape)
    return TensorSpec(name, datatype, shape)


def _flatten(result: Any) -> list[torch.Tensor]:
    if isinstance(result, torch.Tensor):
        return [result]
    if isinstance(result, tuple | list) and all(isinstance(t, torch.Tensor) for t in result):
        return list(result)
    raise ValueError(f"forward() returned {type(result).__name__}; expected tensors")
