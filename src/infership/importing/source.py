"""The seam every framework's importer implements: a :class:`Source`.

``save_model`` (a Python object) and ``infership import`` (a file or folder on disk) both find
the one source that recognises what they were given, ask it to ``export`` into a staging
version folder, then do the rest themselves, the same way for every framework: write
``model.yaml`` with digests, serve the staged version with the real server code and compare
its answers with the original's (``parity.py``), and only then move the version into the
repository (``writer.py``).

A source knows its framework and nothing of the repository, the server or the parity check;
it imports its framework only inside its methods, so that ``infership`` never needs it
installed until that framework's model is imported. Adding a framework is one module with one
``Source`` subclass, listed in ``registry.py``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from infership.errors import ImportFailed
from infership.types import Array, TensorSpec, numpy_dtype

Check = Literal["close", "top1", "cosine", "exact"]
"""How one output is compared with the original's:

- ``close``: every element within the tolerance of its datatype (``parity.Tolerance``);
- ``top1``: class scores (logits or probabilities): the arg-max class of every row must agree,
  and the scores must be ``close`` too;
- ``cosine``: embeddings: every row's cosine similarity to the original's at least the
  tolerance's ``min_cosine``, and ``close``;
- ``exact``: labels, ids and strings: equal element for element.
"""


@dataclass(frozen=True)
class ImportOptions:
    """What the caller asked for, beyond the model itself. Sources read what applies to them."""

    name: str
    """The model's name in the repository (its folder)."""
    example_inputs: Mapping[str, Any] | Any = None
    """Public inputs, batch-major (rows on the first axis), as the served model will take
    them: the rows the parity check runs and the shapes the exporter traces. A mapping of
    input name to array, or one array (or tensor, or DataFrame) for a model of one input: read
    it with ``example_arrays``. None: the source draws a sample from the signature, or says
    that it needs examples."""
    labels: tuple[str, ...] | None = None
    """Class names, in score order, for classifiers whose framework does not carry them."""
    preprocess: Any = None
    """The user's own pre-processing object (a torchvision ``Compose``, a Hugging Face image
    processor, ...) for the source to map onto ``preprocess.image``/``preprocess.text``, or a
    ready ``model.yaml`` ``preprocess`` mapping. A source that cannot map it raises
    ImportFailed naming the part it cannot map."""
    format: str | None = None
    """The artefact format the caller insists on (``onnx``, ``pt2``); None: the source's best."""
    opset: int | None = None
    """ONNX opset to export with; None: the exporter's default."""
    settings: Mapping[str, Any] = field(default_factory=dict)
    """Source-specific settings (``--set key=value`` on the command line)."""


Original = Callable[[dict[str, Array]], dict[str, Array]]
"""The model as the user trained it: public inputs (batch-major) → outputs by public name."""


@dataclass
class Exported:
    """What a source hands back: the staged version's files are written; the rest describes
    them for ``model.yaml`` and for the parity check."""

    manifest: dict[str, Any]
    """``model.yaml``'s settings (runtime, artifact, inputs, outputs, batching, preprocess,
    postprocess, python, ...), without ``sha256``, which the writer adds, and without the
    labels file, which ``labels`` below names."""
    original: Original
    """Computes, from the same public inputs the served model takes, every output named in
    ``checks``, as the original framework computes it."""
    examples: dict[str, Array]
    """Public inputs for the parity check, batch-major, at least one row: the caller's
    ``example_inputs`` or what the source drew or derived."""
    checks: dict[str, Check]
    """The public outputs to compare, and how. At least one."""
    labels: tuple[str, ...] | None = None
    """Class names; the writer stores them as ``labels.txt`` beside ``model.yaml`` and points
    the classification settings at it."""
    notes: list[str] = field(default_factory=list)
    """Lines for the report: what was chosen and why (a fallback format, a batch size of 1)."""
    framework: str = ""
    """What the original was, for the report: ``scikit-learn 1.9.1 Pipeline``."""


class Source(ABC):
    """One framework's importer."""

    name: str
    """Short name, as ``--from`` takes it: ``sklearn``, ``torch``, ``keras``, ..."""
    extra: str
    """The ``pip install 'infership[EXTRA]'`` extra that brings its converter."""

    @abstractmethod
    def accepts(self, model: object) -> bool:
        """Whether ``model`` (a live Python object) is this framework's. Must not import the
        framework: look at ``type(model).__module__`` and the like."""

    def accepts_path(self, path: Path) -> bool:
        """Whether ``path`` (a file or folder) holds a model this source can load."""
        return False

    def load(self, path: Path, options: ImportOptions) -> object:
        """Load the model saved at ``path`` (only with loaders that run no code from the file,
        or after the caller's explicit consent in ``options.settings``)."""
        raise ImportFailed(f"{self.name} models cannot be imported from a path")

    @abstractmethod
    def export(self, model: object, options: ImportOptions, version_dir: Path) -> Exported:
        """Write the servable files into ``version_dir`` (empty, existing) and describe them.
        Raises ImportFailed with a message that names what could not be exported, and why."""


def require(module: str, extra: str) -> Any:
    """Import ``module`` (a framework or its converter), or ImportFailed saying which extra
    brings it: sources import their framework only when a model of it is imported."""
    import importlib

    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        raise ImportFailed(
            f"{module.split('.')[0]} is not installed: pip install 'infership[{extra}]'"
        ) from exc


def example_arrays(options: ImportOptions, default_name: str) -> dict[str, Array] | None:
    """``options.example_inputs`` as numpy arrays by input name: one array given alone is
    named ``default_name``; torch tensors and DataFrames become arrays."""
    given = options.example_inputs
    if given is None:
        return None
    named = dict(given) if isinstance(given, Mapping) else {default_name: given}
    arrays = {}
    for key, value in named.items():
        if hasattr(value, "detach"):  # a torch tensor
            value = value.detach().cpu().numpy()
        elif hasattr(value, "to_numpy"):  # a pandas DataFrame or Series
            value = value.to_numpy()
        arrays[str(key)] = np.asarray(value)
    if not arrays:
        raise ImportFailed("example_inputs is empty")
    rows(arrays)
    return arrays


MAX_BATCH_SIZE = 32
"""``batching.max_batch_size`` of an imported model whose batch axis is free. Every source
writes this one but scikit-learn's, whose tabular rows are cheap (``sklearn.py`` says why)."""


def batching(cannot: str | None, notes: list[str], size: int = MAX_BATCH_SIZE) -> dict[str, int]:
    """``model.yaml``'s ``batching``: ``size`` rows a request; or, for a model that cannot batch
    (``cannot`` says why), one row, with a note for the report."""
    if cannot is None:
        return {"max_batch_size": size}
    notes.append(one_row(cannot))
    return {"max_batch_size": 1}


def one_row(why: str) -> str:
    """The report's note for a model served one row a request, and why."""
    return f"max_batch_size 1: {why}"


FREE_DIMENSION = 4
"""What a -1 dimension other than the batch axis becomes in a drawn sample."""


def sample_inputs(specs: tuple[TensorSpec, ...], count: int = 8, seed: int = 0) -> dict[str, Array]:
    """``count`` rows drawn from a signature, for a model imported without examples: standard
    normal floats, small non-negative integers, booleans. BYTES inputs cannot be drawn
    (ImportFailed asks for examples)."""
    rng = np.random.default_rng(seed)
    drawn: dict[str, Array] = {}
    for spec in specs:
        shape = (count, *(d if d > 0 else FREE_DIMENSION for d in spec.shape[1:]))
        if spec.datatype == "BYTES":
            raise ImportFailed(
                f"input {spec.name!r} is BYTES (strings or encoded files): give example_inputs"
            )
        dtype = numpy_dtype(spec.datatype)
        if dtype.kind == "f":
            drawn[spec.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind == "b":
            drawn[spec.name] = rng.integers(0, 2, shape).astype(bool)
        else:
            drawn[spec.name] = rng.integers(0, 10, shape).astype(dtype)
    return drawn


def consents(options: ImportOptions, key: str) -> bool:
    """Whether the caller said yes to ``key`` (``trust_pickle``, ...): only True, or the text
    true/yes/1 from ``--set``; "no", "false" or any other value is not consent."""
    value = options.settings.get(key, False)
    if isinstance(value, str):
        return value.strip().lower() in ("true", "yes", "1")
    return value is True


def rows(examples: Mapping[str, Array]) -> int:
    """The number of rows of a batch-major set of inputs (ImportFailed when they disagree)."""
    counts = {len(np.asarray(v)) for v in examples.values()}
    if len(counts) != 1:
        raise ImportFailed(f"example inputs disagree on the number of rows: {sorted(counts)}")
    count = counts.pop()
    if count == 0:
        raise ImportFailed("the example inputs hold no rows")
    return count
