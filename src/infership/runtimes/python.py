"""``runtime: python``: the model is a class of the user's (``infership.python``), its batched
``predict`` called by the scheduler like any runtime's ``infer``."""

from __future__ import annotations

from pathlib import Path

from infership.errors import ModelLoadError
from infership.repository.manifest import ModelManifest
from infership.runtimes.base import Runtime
from infership.types import Array, TensorSpec
from infership.usercode import CodeHost, load_code
from infership.usercode.checks import check_outputs


class PythonRuntime(Runtime):
    """The class's ``predict``, in the threads or processes ``python.execution`` says."""

    platform = "python"

    def __init__(
        self,
        code: CodeHost,
        inputs: tuple[TensorSpec, ...],
        outputs: tuple[TensorSpec, ...],
    ) -> None:
        super().__init__(inputs, outputs)
        self.code = code
        self.concurrency = code.concurrency

    @classmethod
    def load(cls, path: Path, manifest: ModelManifest, data: bytes | None = None) -> PythonRuntime:
        """``path`` is the module in its version folder; ``data`` its verified bytes."""
        assert manifest.python is not None  # the manifest sets it for runtime: python
        label = f"model {path.parent.parent.name!r} version {path.parent.name}"
        code = load_code(label, path.parent, manifest.python, data)
        try:
            if "predict" not in code.methods:
                raise ModelLoadError(f"{label}: {manifest.python.class_name} has no predict method")
            inputs = _signature(label, "inputs", code, manifest.inputs)
            outputs = _signature(label, "outputs", code, manifest.outputs)
        except BaseException:
            code.close()
            raise
        return cls(code, inputs, outputs)

    def infer(self, inputs: dict[str, Array]) -> dict[str, Array]:
        rows = len(next(iter(inputs.values())))
        outputs = self.code.call("predict", inputs)
        return check_outputs(self.code.label, "predict", self.outputs, outputs, rows)


def _signature(label: str, field: str, code: CodeHost, declared: object) -> tuple[TensorSpec, ...]:
    # The class's own declaration wins; the loader then checks model.yaml's against it.
    specs = code.signatures.get(field)
    if specs is not None:
        return specs
    if declared is not None:
        return tuple(TensorSpec(t.name, t.datatype, t.shape) for t in declared)  # type: ignore[attr-defined]
    raise ModelLoadError(
        f"{label}: declare the model's {field} in model.yaml or as the class's {field!r}"
    )
