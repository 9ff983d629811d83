"""The model's own pre- and post-processing (its class's ``preprocess`` and ``postprocess``),
behind the same seam as the built-in pipelines, around any runtime."""

from __future__ import annotations

from collections.abc import Mapping

from infership.errors import InvalidRequest, ModelCodeFailed, PayloadTooLarge
from infership.processing.base import Postprocessor, Preprocessor
from infership.types import Array, TensorSpec, check_input
from infership.usercode import CodeHost
from infership.usercode.checks import check_outputs


class PythonPreprocessor(Preprocessor):
    """``preprocess`` per request: the public inputs ``takes`` → every model input."""

    def __init__(self, code: CodeHost, takes: tuple[TensorSpec, ...], feeds: tuple[str, ...]):
        self.code = code
        self.takes = takes
        self.feeds = feeds

    def check(self, inputs: Mapping[str, Array], max_rows: int, owner: str) -> None:
        for spec in self.takes:
            if spec.name not in inputs:
                raise InvalidRequest(f"{owner} needs input {spec.name!r}, which is missing")
            rows = check_input(spec, inputs[spec.name], owner)
            if rows > max_rows:
                raise PayloadTooLarge(
                    f"input {spec.name!r} has {rows} rows; {owner} takes at most "
                    f"{max_rows} rows per request"
                )

    def __call__(self, inputs: dict[str, Array]) -> dict[str, Array]:
        made = self.code.call("preprocess", inputs)
        if made.keys() != set(self.feeds):
            missing = sorted(set(self.feeds) - made.keys())
            extra = sorted(made.keys() - set(self.feeds))
            problem = f"without {missing}" if missing else f"with inputs the model lacks: {extra}"
            raise ModelCodeFailed(f"{self.code.label}: preprocess returned inputs {problem}")
        return made


class PythonPostprocessor(Postprocessor):
    """``postprocess`` per batch: the model's outputs → the public outputs ``gives``, which
    replace them."""

    hides_model_outputs = True

    def __init__(self, code: CodeHost, reads: tuple[str, ...], gives: tuple[TensorSpec, ...]):
        self.code = code
        self.reads = reads
        self.gives = gives

    def __call__(self, outputs: dict[str, Array]) -> dict[str, Array]:
        rows = len(next(iter(outputs.values())))
        given = self.code.call("postprocess", {name: outputs[name] for name in self.reads})
        return check_outputs(self.code.label, "postprocess", self.gives, given, rows)
