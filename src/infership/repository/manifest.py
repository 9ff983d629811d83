"""``model.yaml``: the per-model configuration, validated strictly.

An unknown key, a wrong type or a bad value is an error naming the file and the field. Example::

    runtime: onnx
    artifact: model.onnx
    version_policy: latest           # all | {latest: 2} | {specific: [1, 3]}
    inputs:  [{name: input, datatype: FP32, shape: [-1, 3, 224, 224]}]
    outputs: [{name: logits, datatype: FP32, shape: [-1, 1000]}]
    batching: {max_batch_size: 8, max_queue_delay_ms: 0}
    preprocess:
      image: {input: input, resize: [224, 224], mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5]}
    postprocess:
      classification: {output: logits, top_k: 5, labels: labels.txt}
    sha256: {1/model.onnx: 3f5c..., labels.txt: 9ab1...}
    signing: {policy: require, public_key: /etc/infership/model-signing.pub}
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from infership.batching.policy import BatchPolicy
from infership.configfile import describe
from infership.errors import ConfigError, InvalidRequest
from infership.safeyaml import read_yaml
from infership.types import DATATYPES, TensorSpec

MANIFEST_NAME = "model.yaml"
_SHA256 = re.compile(r"[0-9a-f]{64}")
# ASCII only, and used with fullmatch: "$" would also match before a trailing newline.
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}", re.ASCII)
_MAX_MESSAGE = 2000
"""Longest problem description sent back: an unknown key may be a megabyte long."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorConfig(_Strict):
    name: str = Field(min_length=1)
    datatype: str
    """Open Inference Protocol datatype name, upper case: FP32, INT64, BYTES, ..."""
    shape: tuple[int, ...]
    """Dimensions, -1 for any size; the first is the batch axis for batching models."""

    @field_validator("datatype")
    @classmethod
    def _known_datatype(cls, value: str) -> str:
        if value not in DATATYPES:
            raise ValueError(f"unknown datatype {value!r}; expected one of {sorted(DATATYPES)}")
        return value

    @field_validator("shape")
    @classmethod
    def _valid_dims(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(d == 0 or d < -1 for d in value):
            raise ValueError("dimensions must be positive or -1 (any size)")
        return value

    def spec(self) -> TensorSpec:
        return TensorSpec(self.name, self.datatype, self.shape)


class LatestVersions(_Strict):
    latest: int = Field(1, ge=1)
    """Serve the newest N versions."""


class SpecificVersions(_Strict):
    specific: tuple[Annotated[int, Field(ge=1)], ...] = Field(min_length=1)
    """Serve exactly these versions."""


VersionPolicy = Literal["latest", "all"] | LatestVersions | SpecificVersions


class OnnxOptions(_Strict):
    intra_op_threads: int = Field(0, ge=0)
    """Threads inside one operator; 0 lets onnxruntime use every core."""
    inter_op_threads: int = Field(1, ge=0)
    """Threads running independent operators in parallel; 1 suits most CNNs."""
    execution_providers: tuple[Literal["cpu", "cuda", "tensorrt"], ...] = ("cpu",)
    """Preferred order. GPU providers are used only when installed and asked for here."""
    graph_optimization: Literal["disable", "basic", "extended", "all"] = "all"
    spin_wait: bool = True
    """Let idle onnxruntime threads spin briefly for the next batch. Turn off when the cores are
    shared with image decoding: spinning threads then slow the decoder more than they save."""


class TorchOptions(_Strict):
    """PyTorch runtime (``runtime: torch``): torch.export programs (.pt2) and TorchScript."""

    format: Literal["auto", "export", "torchscript"] = "auto"
    """auto: ``.pt2`` is a torch.export program, ``.ts``/``.torchscript`` is TorchScript.
    Other files (pickled ``torch.save`` checkpoints) are refused: loading them runs code."""
    device: str = "cpu"
    """``cpu``, ``cuda`` or ``cuda:N``; a CUDA device that is not there is a load error."""
    intra_op_threads: int = Field(0, ge=0)
    """torch.set_num_threads; 0 keeps torch's default (one per core). Process-wide in torch."""
    inter_op_threads: int = Field(0, ge=0)
    """torch.set_num_interop_threads; 0 keeps the default. Settable once per process."""
    pin_memory: bool = True
    """On CUDA, copy inputs through page-locked host memory (faster, asynchronous transfers)."""

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if not re.fullmatch(r"cpu|cuda(:\d+)?", value):
            raise ValueError(f"device must be cpu, cuda or cuda:N, got {value!r}")
        return value


class PythonCode(_Strict):
    """A model's own Python (docs/python-models.md): the model of ``runtime: python``, or
    pre- and post-processing hooks around any other runtime."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    module: str = "model.py"
    """The module file, inside each version folder (so it is versioned, digested and signed
    with the model); sibling modules import relatively (``from . import helpers``)."""
    class_name: str = Field("Model", alias="class", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    """The class in the module: ``__init__(folder, options)``, then ``predict`` and/or
    ``preprocess``/``postprocess``."""
    options: dict[str, Any] = {}
    """Passed to the class as ``options``: the model's own settings."""
    execution: Literal["process", "thread"] = "process"
    """process: ``workers`` processes, each with its own instance (code that holds the GIL
    uses every core; tensors cross through shared memory); thread: one instance in the server
    process (no copy, no IPC; for code that releases the GIL, such as numpy)."""
    workers: int | None = Field(None, ge=1, le=64)
    """Worker processes (``execution: process``); None: one per CPU core."""
    inputs: tuple[TensorConfig, ...] | None = None
    """The public inputs ``preprocess`` takes (default: the class's ``preprocess_inputs``,
    else the model's inputs)."""
    outputs: tuple[TensorConfig, ...] | None = None
    """The public outputs ``postprocess`` gives (default: the class's
    ``postprocess_outputs``, else the model's outputs)."""

    @field_validator("module")
    @classmethod
    def _module_inside(cls, value: str) -> str:
        if not value.endswith(".py") or "/" in value or "\\" in value:
            raise ValueError(f"{value!r} must be a .py file name in the version folder")
        return _inside_model_folder(value)


class ImagePreprocess(_Strict):
    """Encoded image (JPEG, PNG, ...) → float tensor for one model input."""

    input: str
    """The model input this pipeline feeds."""
    public_input: str = "image"
    """Name of the BYTES input (encoded images) in the model's public signature."""
    color: Literal["RGB", "L"] = "RGB"
    resize: tuple[Annotated[int, Field(ge=1)], Annotated[int, Field(ge=1)]]
    """Final (height, width)."""
    resize_shorter: int | None = Field(None, ge=1)
    """When set: resize the shorter side to this, keep the aspect ratio, then centre-crop to
    ``resize``. When unset: resize straight to ``resize``."""
    crop_offset: Literal["floor", "round"] = "floor"
    """How a centre-crop splits an odd margin: floor puts the extra pixel after the crop (Hugging
    Face's image processors), round uses Python's round-half-to-even of half the margin
    (torchvision's CenterCrop). Importers set the one the model was trained with."""
    interpolation: Literal["nearest", "bilinear", "bicubic", "lanczos"] = "bilinear"
    scale: float = 1 / 255
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    layout: Literal["NCHW", "NHWC"] = "NCHW"

    @model_validator(mode="after")
    def _channels_match(self) -> ImagePreprocess:
        channels = 3 if self.color == "RGB" else 1
        if len(self.mean) != channels or len(self.std) != channels:
            raise ValueError(f"mean and std need {channels} values for color {self.color}")
        if any(s == 0 for s in self.std):
            raise ValueError("std values must be non-zero")
        return self


class TextPreprocess(_Strict):
    """Strings (BYTES, UTF-8) → token ids and attention mask, with a ``tokenizers`` tokenizer."""

    tokenizer: str = "tokenizer.json"
    """Hugging Face ``tokenizers`` file inside each version folder."""
    public_input: str = "text"
    """Name of the BYTES input (UTF-8 strings) in the model's public signature."""
    input_ids: str = "input_ids"
    """The model input fed the token ids (INT64 [batch, sequence])."""
    attention_mask: str | None = "attention_mask"
    """The model input fed the attention mask; null when the model takes none."""
    token_type_ids: str | None = None
    """The model input fed the segment ids, for models that take them."""
    max_length: int = Field(256, ge=1)
    """Longer texts are truncated to this many tokens (special tokens included)."""
    pad_to_multiple_of: int = Field(16, ge=1)
    """A request pads to its longest text, rounded up to this, so requests of similar lengths
    share a shape and the scheduler can batch them together."""

    @field_validator("tokenizer")
    @classmethod
    def _tokenizer_inside(cls, value: str) -> str:
        return _inside_model_folder(value)


class Preprocess(_Strict):
    image: ImagePreprocess | None = None
    text: TextPreprocess | None = None

    @model_validator(mode="after")
    def _one_pipeline(self) -> Preprocess:
        if self.image is not None and self.text is not None:
            raise ValueError("give either image or text pre-processing, not both")
        return self


class Classification(_Strict):
    """Scores → top-k labels and probabilities."""

    output: str
    """The model output holding class scores [batch, classes]."""
    softmax: bool = True
    """Apply softmax (set false when the model already outputs probabilities)."""
    top_k: int = Field(5, ge=1)
    labels: str | None = None
    """Labels file, one per line, relative to the model folder."""

    @field_validator("labels")
    @classmethod
    def _labels_inside(cls, value: str | None) -> str | None:
        return None if value is None else _inside_model_folder(value)

    label_output: str = "label"
    probability_output: str = "probability"
    index_output: str = "class_index"


class Postprocess(_Strict):
    classification: Classification | None = None


class SigningConfig(_Strict):
    """Signature checks on this model's version folders (``infership sign``)."""

    policy: Literal["off", "warn", "require"] = "off"
    """off: not checked; warn: checked, problems logged; require: an unsigned or tampered
    version never loads. The server's ``model_security.signing_policy`` is a floor."""
    public_key: str | None = None
    """PEM public key signatures must verify with; relative to the model folder. Ignored when the
    server has its own trust roots (``model_security.signing_public_key``)."""
    certificate_chain: tuple[str, ...] = ()
    """CA certificates (PEM) a certificate signature must chain to, instead of a public key."""

    @model_validator(mode="after")
    def _one_kind_of_trust(self) -> SigningConfig:
        if self.public_key is not None and self.certificate_chain:
            raise ValueError("give public_key or certificate_chain, not both")
        return self


class ModelManifest(_Strict):
    """The contents of one ``model.yaml``."""

    name: str | None = None
    """Defaults to the folder name; if given it must equal it."""
    description: str = ""
    runtime: Literal["onnx", "torch", "python"] = "onnx"
    artifact: str = "model.onnx"
    """File inside each version folder; for ``runtime: python``, ``python.module``."""
    version_policy: VersionPolicy = "latest"
    inputs: tuple[TensorConfig, ...] | None = None
    """Expected model inputs; when given they are checked against the model at load."""
    outputs: tuple[TensorConfig, ...] | None = None
    batching: BatchPolicy = BatchPolicy()
    onnx: OnnxOptions = OnnxOptions()
    torch: TorchOptions = TorchOptions()
    python: PythonCode | None = None
    """The model's own Python: required by ``runtime: python``, hooks for the others."""
    preprocess: Preprocess = Preprocess()
    postprocess: Postprocess = Postprocess()
    warmup: bool = True
    """Run a batch of zeros through the model before reporting it ready."""
    signing: SigningConfig = SigningConfig()
    sha256: dict[str, str] = {}
    """Hex sha256 per file, relative to the model folder (``1/model.onnx``); checked at load."""

    @field_validator("artifact")
    @classmethod
    def _artifact_is_a_file_name(cls, value: str) -> str:
        return _inside_model_folder(value)

    @model_validator(mode="before")
    @classmethod
    def _python_artifact(cls, data: Any) -> Any:
        # runtime: python's artifact is its module: one name, given once, in python.module.
        if isinstance(data, dict) and data.get("runtime") == "python":
            if "artifact" in data:
                raise ValueError("runtime: python has no artifact; name the code in python.module")
            code = data.get("python")
            if code is None:
                code = data["python"] = {}
            module = code.get("module", "model.py") if isinstance(code, dict) else "model.py"
            data = {**data, "artifact": module}
        return data

    @field_validator("sha256")
    @classmethod
    def _hex_digests(cls, value: dict[str, str]) -> dict[str, str]:
        for path, digest in value.items():
            if not _SHA256.fullmatch(digest):
                raise ValueError(f"{path}: expected 64 lower-case hex digits, got {digest!r}")
            _inside_model_folder(path)
        return value


def _inside_model_folder(path: str) -> str:
    if not path or Path(path).is_absolute() or ".." in Path(path).parts:
        raise ValueError(f"{path!r} must be a relative path inside the model folder")
    return path


def is_model_name(name: str) -> bool:
    """True for a name a model folder may have: 1 to 128 ASCII letters, digits, ``_``, ``.``
    and ``-``, starting with a letter or digit. No such name can leave the repository folder
    (no ``/``, no ``..`` of its own) or be too long for a file system."""
    return _MODEL_NAME.fullmatch(name) is not None


def check_model_name(name: str) -> None:
    """Raise InvalidRequest unless ``name`` is a valid model name (``is_model_name``): the
    caller named a model that no repository can hold."""
    if not is_model_name(name):
        shown = repr(name) if len(name) <= 64 else f"{name[:32]!r}... ({len(name)} characters)"
        raise InvalidRequest(
            f"{shown} is not a valid model name: use 1 to 128 ASCII letters, digits, '_', '.' "
            "or '-', starting with a letter or digit"
        )


def load_manifest(path: Path) -> ModelManifest:
    """Parse and validate one ``model.yaml``; any problem is a ConfigError naming file and field.

    The file is read with ``read_yaml``'s limits: it may come from whoever can write to the
    repository, and is read again by every load through the repository API."""
    raw = read_yaml(path)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of settings, got {type(raw).__name__}")
    try:
        manifest = ModelManifest.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_shorten(f"{path}: {describe(exc)}")) from exc
    folder = path.parent.name
    if manifest.name is not None and manifest.name != folder:
        raise ConfigError(
            _shorten(f"{path}: field 'name': {manifest.name!r} differs from folder {folder!r}")
        )
    if not is_model_name(folder):
        raise ConfigError(f"{path}: model folder name {folder!r} is not a valid model name")
    return manifest


def _shorten(message: str) -> str:
    if len(message) <= _MAX_MESSAGE:
        return message
    return f"{message[:_MAX_MESSAGE]}... ({len(message) - _MAX_MESSAGE} more characters)"
