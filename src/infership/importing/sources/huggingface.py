"""Hugging Face models: transformers and sentence-transformers, exported to ONNX with torch's
exporter, their tokenizer or image processor mapped onto the server's own pre-processing.

Three tasks, each read from the model's class (or a pipeline's task):

- **text classification** (``*ForSequenceClassification``): the graph takes ``input_ids``,
  ``attention_mask`` (and ``token_type_ids`` when the tokenizer makes them) with free batch
  and sequence axes and gives ``logits``; the tokenizer's ``tokenizer.json`` goes into the
  version folder for ``preprocess.text`` (public input ``text``), ``config.id2label`` becomes
  the labels and ``postprocess.classification`` turns the logits into top-k labels;
- **sentence embeddings** (a ``SentenceTransformer``, or a bare encoder such as ``BertModel``):
  the encoder, then pooling and normalisation inside the graph, one ``embedding`` row per
  text, as scripts/export_embeddings.py exports the bundled MiniLM example;
- **image classification** (``*ForImageClassification``): the graph takes ``pixel_values``;
  the image processor's settings (resize, centre crop, rescale, normalise) become
  ``preprocess.image`` (public input ``image``, encoded files), and a setting the server's
  pipeline cannot reproduce is refused by name.

The original each export is checked against is the framework itself on the same public
inputs: the tokenizer and the model on each text, or Pillow's decode, the image processor and
the model on each image.

Nothing is downloaded: a model comes in as a live object (``save_model``) or a local folder
saved by ``save_pretrained`` (``infership import``), whose weights are read from
``model.safetensors``; pickled ``pytorch_model.bin`` weights are loaded only with
``settings={"trust_pickle": True}``, and code shipped with a model (``auto_map``) never runs.
"""

from __future__ import annotations

import inspect
import io
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from infership.errors import ImportFailed
from infership.importing.source import MAX_BATCH_SIZE, Exported, ImportOptions, Source, consents
from infership.types import Array

ARTIFACT = "model.onnx"
TOKENIZER = "tokenizer.json"
OPSET = 17
PAD_TO_MULTIPLE_OF = 16

TEXT_CLASSIFICATION = "text-classification"
FEATURE_EXTRACTION = "feature-extraction"
IMAGE_CLASSIFICATION = "image-classification"
TASKS = (TEXT_CLASSIFICATION, FEATURE_EXTRACTION, IMAGE_CLASSIFICATION)
_TASK_ALIASES = {"sentiment-analysis": TEXT_CLASSIFICATION}
"""Pipelines keep the task name they were made with."""

SAMPLE_TEXTS = (
    "A man is eating food.",
    "The new movie is awesome, I loved every minute of it.",
    "The service was slow and the food arrived cold.",
    "A monkey is playing drums.",
    "Schnell, bitte!",
    "",
    # Longer than most models' max_length once repeated: the truncation is checked too.
    "A long review that goes on and on about the plot, the actors and the music. " * 40,
    "Two men pushed carts through the woods.",
)
"""Texts the parity check runs when the caller gives none."""

_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
_PICKLED = ("pytorch_model.bin", "pytorch_model.bin.index.json")

_ST_HEAD_MODULES = ("Pooling", "Dense", "Normalize", "LayerNorm", "Dropout")
"""sentence-transformers modules after the encoder that are plain tensor code, traced into the
graph as they are; any other module is refused by name."""


@dataclass(frozen=True)
class Loaded:
    """A model read from a folder, with the pre-processing saved beside it."""

    model: Any
    """A transformers ``PreTrainedModel`` or a ``SentenceTransformer``."""
    preprocess: Any = None
    """The tokenizer or image processor saved with it."""


class HuggingFaceSource(Source):
    name = "huggingface"
    extra = "huggingface"

    def accepts(self, model: object) -> bool:
        return isinstance(model, Loaded) or _kind(model) is not None

    def accepts_path(self, path: Path) -> bool:
        if not path.is_dir() or not (path / "config.json").is_file():
            return False
        weights = any((path / name).is_file() for name in (*_WEIGHTS, *_PICKLED))
        processing = any(
            (path / name).is_file() for name in (TOKENIZER, "preprocessor_config.json")
        )
        return weights and processing

    def load(self, path: Path, options: ImportOptions) -> object:
        _refuse_pickle(path, options)
        # safetensors whenever they are there; None lets transformers fall back to the pickle,
        # which _refuse_pickle allowed only with the caller's consent.
        safetensors = True if _has_safetensors(path) else None
        if (path / "modules.json").is_file():
            from sentence_transformers import SentenceTransformer

            model = SentenceTransformer(
                str(path),
                device="cpu",
                local_files_only=True,
                trust_remote_code=False,
                model_kwargs={"use_safetensors": safetensors},
            )
            return Loaded(model)
        import transformers

        # trust_remote_code=False: never run (or ask at a terminal whether to run) model code.
        config = transformers.AutoConfig.from_pretrained(
            str(path), local_files_only=True, trust_remote_code=False
        )
        if getattr(config, "auto_map", None):
            raise ImportFailed(
                f"{path}/config.json: auto_map names code shipped with the model "
                f"({sorted(config.auto_map)}), which this importer never runs"
            )
        architecture = (getattr(config, "architectures", None) or [""])[0]
        model_class = getattr(transformers, architecture, None) if architecture else None
        if model_class is None:
            raise ImportFailed(
                f"{path}/config.json: architecture {architecture or '(none)'!r} is not a "
                "transformers class"
            )
        _task_of_class(model_class)  # refuse an unsupported architecture before loading it
        model = model_class.from_pretrained(
            str(path), local_files_only=True, use_safetensors=safetensors
        )
        if (path / TOKENIZER).is_file():
            preprocess = transformers.AutoTokenizer.from_pretrained(
                str(path), local_files_only=True, trust_remote_code=False
            )
        else:
            preprocess = transformers.AutoImageProcessor.from_pretrained(
                str(path), local_files_only=True, trust_remote_code=False
            )
        return Loaded(model, preprocess)

    def export(self, model: object, options: ImportOptions, version_dir: Path) -> Exported:
        if options.format not in (None, "onnx"):
            raise ImportFailed(
                f"format {options.format!r}: Hugging Face models are exported as ONNX only"
            )
        parts = _parts(model, options)
        parts.model.eval()  # dropout off, for the export and the original alike
        if parts.task == TEXT_CLASSIFICATION:
            return _text_classification(parts, options, version_dir)
        if parts.task == FEATURE_EXTRACTION:
            return _sentence_embeddings(parts, options, version_dir)
        return _image_classification(parts, options, version_dir)


# --- What was given ---------------------------------------------------------------------------


def _classes(obj: object) -> list[tuple[str, str]]:
    return [(c.__module__, c.__name__) for c in type(obj).__mro__]


def _is(obj: object, package: str, name: str) -> bool:
    """Whether ``obj`` is an instance of a class ``name`` from ``package``, by its MRO: the
    framework need not be (and is not) imported to ask."""
    return any(n == name and m.split(".")[0] == package for m, n in _classes(obj))


def _kind(model: object) -> str | None:
    if _is(model, "sentence_transformers", "SentenceTransformer"):
        return "sentence-transformers"
    if _is(model, "transformers", "Pipeline"):
        return "pipeline"
    if _is(model, "transformers", "PreTrainedModel"):
        return "model"
    return None


@dataclass
class _Parts:
    task: str
    model: Any
    """The torch module whose answers are checked: a PreTrainedModel or a SentenceTransformer."""
    preprocess: Any
    """The tokenizer (text tasks) or the image processor."""
    sentence_transformer: bool = False
    pooling: str = "mean"
    """Bare encoders' pooling (``settings.pooling``)."""
    normalize: bool = True


def _parts(given: object, options: ImportOptions) -> _Parts:
    model: Any = given
    preprocess: Any = None
    if isinstance(given, Loaded):
        model, preprocess = given.model, given.preprocess
    kind = _kind(model)
    if kind == "pipeline":
        task = _TASK_ALIASES.get(str(model.task), str(model.task))
        if task not in TASKS:
            raise ImportFailed(
                f"a {task!r} pipeline: this importer exports {', '.join(TASKS)} pipelines"
            )
        wanted = "image_processor" if task == IMAGE_CLASSIFICATION else "tokenizer"
        preprocess = getattr(model, wanted, None)
        model = model.model
    if options.preprocess is not None:
        preprocess = options.preprocess
    if kind == "sentence-transformers":
        return _Parts(FEATURE_EXTRACTION, model, preprocess or model.tokenizer, True)
    if _kind(model) != "model":
        raise ImportFailed(f"not a Hugging Face model: {type(model).__qualname__}")
    task = _task_of_class(type(model))
    if isinstance(preprocess, Mapping):
        raise ImportFailed(
            "preprocess: give the model's tokenizer or image processor object, whose "
            "settings are mapped and checked, not a model.yaml mapping"
        )
    preprocess = _pick_preprocess(task, preprocess, model)
    pooling = str(options.settings.get("pooling", "mean"))
    if pooling not in ("mean", "cls"):
        raise ImportFailed(f"setting pooling={pooling!r}: give 'mean' or 'cls'")
    normalize = bool(options.settings.get("normalize", True))
    return _Parts(task, model, preprocess, pooling=pooling, normalize=normalize)


def _task_of_class(model_class: type) -> str:
    name = model_class.__name__
    if name.endswith("ForSequenceClassification"):
        return TEXT_CLASSIFICATION
    if "ForImageClassification" in name:
        return IMAGE_CLASSIFICATION
    if name.endswith("Model") and "For" not in name and "LMHead" not in name:
        return FEATURE_EXTRACTION  # a bare encoder: BertModel, MPNetModel, ...
    raise ImportFailed(
        f"architecture {name}: this importer exports *ForSequenceClassification (text "
        "classification), *ForImageClassification (image classification) and bare encoders "
        "or SentenceTransformers (sentence embeddings); for other heads export the model with "
        "torch.onnx yourself and import the .onnx file"
    )


def _pick_preprocess(task: str, given: Any, model: Any) -> Any:
    """The tokenizer or image processor out of what was given (a processor bundling both
    counts), or ImportFailed saying what to pass."""
    image = task == IMAGE_CLASSIFICATION
    wanted = "image_processor" if image else "tokenizer"
    if given is not None and not _is_preprocessor(given, image):
        given = getattr(given, wanted, None)
    if given is None:
        what = "image processor" if image else "tokenizer"
        raise ImportFailed(
            f"{type(model).__name__} needs its {what} to be served: pass "
            f"preprocess=<the {what}> (e.g. Auto{'ImageProcessor' if image else 'Tokenizer'}"
            ".from_pretrained(...))"
        )
    return given


def _is_preprocessor(obj: object, image: bool) -> bool:
    if image:
        return _is(obj, "transformers", "ImageProcessingMixin")
    return _is(obj, "transformers", "PreTrainedTokenizerBase")


def _folders(path: Path) -> list[Path]:
    """The folder and its subfolders: a SentenceTransformer may keep its encoder in one."""
    return [path, *(p for p in path.iterdir() if p.is_dir())]


def _has_safetensors(path: Path) -> bool:
    return any((f / n).is_file() for f in _folders(path) for n in _WEIGHTS)


def _refuse_pickle(path: Path, options: ImportOptions) -> None:
    # Folder by folder: safetensors in one folder do not vouch for a pickle in another.
    pickled = [
        f / n
        for f in _folders(path)
        for n in _PICKLED
        if (f / n).is_file() and not any((f / w).is_file() for w in _WEIGHTS)
    ]
    if pickled and not consents(options, "trust_pickle"):
        raise ImportFailed(
            f"{pickled[0]}: pickled weights run code when loaded; re-save the model with "
            "save_pretrained(..., safe_serialization=True) for model.safetensors, or pass "
            "settings={'trust_pickle': True} (--set trust_pickle=true) if you trust the file"
        )


# --- Text: tokenizer.json and the examples ------------------------------------------------------


def _tokenizer_inputs(tokenizer: Any, model: Any) -> tuple[str, ...]:
    """The graph's inputs: what the tokenizer makes and the model's forward takes, in the
    order TextPreprocess feeds them."""
    made = set(getattr(tokenizer, "model_input_names", ("input_ids", "attention_mask")))
    taken = set(inspect.signature(model.forward).parameters)
    names = ("input_ids", "attention_mask", "token_type_ids")
    return tuple(n for n in names if n == "input_ids" or (n in made and n in taken))


def _max_length(tokenizer: Any, config: Any, options: ImportOptions) -> int:
    """Tokens per text: the caller's setting, else the tokenizer's and the position table's
    limit, whichever is smaller (tokenizers without one say 1e30)."""
    given = options.settings.get("max_length")
    if given is not None:
        return int(given)
    limits = [getattr(tokenizer, "model_max_length", None)]
    limits.append(getattr(config, "max_position_embeddings", None))
    usable = [int(n) for n in limits if isinstance(n, int | float) and 0 < n < 1_000_000]
    if not usable:
        raise ImportFailed("the tokenizer and config name no maximum length: set max_length")
    return min(usable)


def _write_tokenizer(tokenizer: Any, max_length: int, path: Path) -> None:
    """The tokenizer's own ``tokenizer.json``, padding and truncation set as the server uses
    them (it pads with the file's pad token and truncates on the right)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ImportFailed(
            f"{type(tokenizer).__name__} is a Python (slow) tokenizer with no tokenizer.json; "
            "the server tokenises with the tokenizers library: load the fast tokenizer"
        )
    if getattr(tokenizer, "truncation_side", "right") != "right":
        raise ImportFailed(
            f"the tokenizer's truncation_side is {tokenizer.truncation_side!r}; the server "
            "truncates long texts on the right"
        )
    if tokenizer.pad_token is None or tokenizer.pad_token_id is None:
        raise ImportFailed(
            "the tokenizer has no pad_token; the server pads the texts of a batch to one "
            "length: set tokenizer.pad_token (e.g. to its eos_token) first"
        )
    from tokenizers import Tokenizer

    copy = Tokenizer.from_str(backend.to_str())
    copy.enable_padding(pad_id=int(tokenizer.pad_token_id), pad_token=str(tokenizer.pad_token))
    copy.enable_truncation(max_length=max_length)
    copy.save(str(path))


def _text_preprocess(inputs: Sequence[str], max_length: int) -> dict[str, Any]:
    return {
        "tokenizer": TOKENIZER,
        "public_input": "text",
        "input_ids": "input_ids",
        "attention_mask": "attention_mask" if "attention_mask" in inputs else None,
        "token_type_ids": "token_type_ids" if "token_type_ids" in inputs else None,
        "max_length": max_length,
        "pad_to_multiple_of": PAD_TO_MULTIPLE_OF,
    }


def _byte_rows(values: Any, what: str) -> Array:
    """Strings or encoded files as an object array of bytes, one per row (numpy's fixed-width
    bytes would drop trailing NULs)."""
    if isinstance(values, str | bytes):
        values = [values]
    rows = [v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in values]
    if not rows:
        raise ImportFailed(f"example_inputs: no {what}")
    return np.array(rows, dtype=object)


def _examples(options: ImportOptions, name: str, what: str) -> Array | None:
    given = options.example_inputs
    if given is None:
        return None
    if isinstance(given, Mapping):
        if set(given) != {name}:
            raise ImportFailed(
                f"example_inputs: the served model takes one input, {name!r} ({what}); "
                f"got {sorted(given)}"
            )
        given = given[name]
    return _byte_rows(given, what)


def _texts(feed: Mapping[str, Array]) -> list[str]:
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in feed["text"]]


def _export_text_graph(
    module: Any,
    tokenizer: Any,
    inputs: Sequence[str],
    output: str,
    max_length: int,
    folder: Path,
    options: ImportOptions,
) -> None:
    """``tokenizer.json`` for ``preprocess.text``, and the graph traced on padded texts with
    free batch and sequence axes."""
    _write_tokenizer(tokenizer, max_length, folder / TOKENIZER)
    _onnx_export(
        module,
        _trace_batch(tokenizer, inputs, max_length),
        inputs,
        output,
        _token_axes(inputs, output),
        folder / ARTIFACT,
        options,
    )


def _text_examples(
    options: ImportOptions, inputs: Sequence[str], max_length: int, notes: list[str]
) -> Array:
    """The caller's example texts, or the sample sentences (with notes for the report)."""
    examples = _examples(options, "text", "texts")
    notes.append(f"tokenizer.json: max_length {max_length}, inputs {', '.join(inputs)}")
    if examples is None:
        examples = _byte_rows(SAMPLE_TEXTS, "texts")
        notes.append(f"no example texts given: checked on {len(SAMPLE_TEXTS)} sample sentences")
    return examples


def _trace_batch(tokenizer: Any, inputs: Sequence[str], max_length: int) -> tuple[Any, ...]:
    """Two texts of different lengths: the traced graph sees real padding in the mask."""
    encoded = tokenizer(
        ["a short text", "a somewhat longer text, which makes the other one padded"],
        padding=True,
        truncation=True,
        max_length=max_length,
        return_tensors="pt",
    )
    return tuple(encoded[n] for n in inputs)


def _token_axes(inputs: Sequence[str], output: str) -> dict[str, dict[int, str]]:
    axes = {name: {0: "batch", 1: "sequence"} for name in inputs}
    return {**axes, output: {0: "batch"}}


# --- Text classification ------------------------------------------------------------------------


def _text_classification(parts: _Parts, options: ImportOptions, folder: Path) -> Exported:
    model, tokenizer = parts.model, parts.preprocess
    labels = _labels(model.config, options)
    max_length = _max_length(tokenizer, model.config, options)
    inputs = _tokenizer_inputs(tokenizer, model)
    _export_text_graph(
        _logits_module(model, inputs), tokenizer, inputs, "logits", max_length, folder, options
    )
    taken = set(inspect.signature(model.forward).parameters)

    def original(feed: dict[str, Array]) -> dict[str, Array]:
        import torch

        rows = []
        with torch.inference_mode():
            for text in _texts(feed):  # one at a time: no padding between the user and it
                encoded = tokenizer(
                    text, truncation=True, max_length=max_length, return_tensors="pt"
                )
                given = {k: v for k, v in encoded.items() if k in taken}
                rows.append(model(**given).logits[0].float().numpy())
        return {"logits": np.stack(rows)}

    notes: list[str] = []
    examples = _text_examples(options, inputs, max_length, notes)
    return Exported(
        manifest=_manifest({"text": _text_preprocess(inputs, max_length)}, classifier=True),
        original=original,
        examples={"text": examples},
        checks={"logits": "top1"},
        labels=labels,
        notes=notes,
        framework=_framework(model),
    )


def _labels(config: Any, options: ImportOptions) -> tuple[str, ...]:
    """Class names in logit order: the caller's, else ``config.id2label``. Only single-label
    classifiers: the server's classification post-processing is a softmax."""
    problem = getattr(config, "problem_type", None)
    count = int(getattr(config, "num_labels", 0))
    if problem not in (None, "single_label_classification") or count < 2:
        raise ImportFailed(
            f"problem_type {problem!r} with {count} label(s): only single-label classifiers "
            "(2 or more classes, softmax over the logits) are exported"
        )
    if options.labels is not None:
        if len(options.labels) != count:
            raise ImportFailed(f"labels: {len(options.labels)} given, the model has {count}")
        return options.labels
    id2label = {int(k): str(v) for k, v in (getattr(config, "id2label", None) or {}).items()}
    return tuple(id2label.get(i, f"LABEL_{i}") for i in range(count))


def _logits_module(model: Any, inputs: Sequence[str]) -> Any:
    """The model taking positional tensors (the exporter's inputs) and giving its logits."""
    import torch

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
            logits: torch.Tensor = self.model(**dict(zip(inputs, tensors, strict=True))).logits
            return logits

    return Logits().eval()


# --- Sentence embeddings ------------------------------------------------------------------------


def _sentence_embeddings(parts: _Parts, options: ImportOptions, folder: Path) -> Exported:
    if parts.sentence_transformer:
        encoder, head, max_length, original = _from_sentence_transformer(parts.model, options)
        tokenizer = parts.preprocess
        notes = [f"pooling and normalisation as the SentenceTransformer's modules: {head}"]
    else:
        encoder, tokenizer = parts.model, parts.preprocess
        head = _pooling_module(parts.pooling, parts.normalize)
        max_length = _max_length(tokenizer, encoder.config, options)
        original = None
        notes = [
            f"a bare encoder: {parts.pooling} pooling over the attention mask"
            + (", then L2 normalisation" if parts.normalize else "")
            + " (settings pooling, normalize)"
        ]
    inputs = _tokenizer_inputs(tokenizer, encoder)
    module = _embedding_module(encoder, head, inputs)
    _export_text_graph(module, tokenizer, inputs, "embedding", max_length, folder, options)
    if original is None:
        original = _embedding_original(module, tokenizer, inputs, max_length)
    examples = _text_examples(options, inputs, max_length, notes)
    return Exported(
        manifest=_manifest({"text": _text_preprocess(inputs, max_length)}, classifier=False),
        original=original,
        examples={"text": examples},
        checks={"embedding": "cosine"},
        notes=notes,
        framework=_framework(parts.model),
    )


def _from_sentence_transformer(
    model: Any, options: ImportOptions
) -> tuple[Any, Any, int, Callable[[dict[str, Array]], dict[str, Array]]]:
    """The encoder, the modules after it (refused unless plain tensor code), the max length
    and ``encode`` as the original."""
    modules = list(model)
    first = modules[0] if modules else None
    if first is None or type(first).__name__ != "Transformer":
        raise ImportFailed(
            f"SentenceTransformer's first module is {type(first).__name__}, not a Transformer "
            "over text: only transformer encoders are exported"
        )
    text = (getattr(first, "modality_config", None) or {}).get("text", {})
    if text and (text.get("method"), text.get("method_output_name")) != (
        "forward",
        "last_hidden_state",
    ):
        raise ImportFailed(
            f"SentenceTransformer's Transformer reads text through {text}; only the encoder's "
            "forward and its last_hidden_state are exported"
        )
    for module in modules[1:]:
        if type(module).__name__ not in _ST_HEAD_MODULES:
            raise ImportFailed(
                f"SentenceTransformer module {type(module).__name__}: not one the exporter "
                f"traces ({', '.join(_ST_HEAD_MODULES)})"
            )
    prompt = getattr(model, "default_prompt_name", None)
    if prompt:
        raise ImportFailed(
            f"the SentenceTransformer prepends its default prompt {prompt!r} to every text; "
            "the server tokenises the text as sent: set default_prompt_name=None (and send "
            "the prompt with the text) to export it"
        )
    max_length = options.settings.get("max_length") or model.max_seq_length
    if not max_length:
        raise ImportFailed("the SentenceTransformer has no max_seq_length: set max_length")
    head = _sentence_transformer_head(modules[1:])

    def original(feed: dict[str, Array]) -> dict[str, Array]:
        encoded = model.encode(_texts(feed), convert_to_numpy=True, show_progress_bar=False)
        return {"embedding": np.asarray(encoded, dtype=np.float32)}

    return first.auto_model, head, int(max_length), original


def _sentence_transformer_head(modules: Sequence[Any]) -> Any:
    """The modules after the encoder, fed token states and mask as sentence-transformers does."""
    import torch

    class Head(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.steps = torch.nn.ModuleList(modules)

        def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            features = {"token_embeddings": states, "attention_mask": mask}
            for step in self.steps:
                features = step(features)
            embedding: torch.Tensor = features["sentence_embedding"]
            return embedding

        def __str__(self) -> str:
            return " → ".join(type(m).__name__ for m in modules) or "none"

    return Head()


def _pooling_module(pooling: str, normalize: bool) -> Any:
    """Mean (over the attention mask) or first-token pooling, then unit length."""
    import torch

    class Pool(torch.nn.Module):
        def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            if pooling == "cls":
                pooled = states[:, 0]
            else:
                weights = mask.unsqueeze(-1).to(states.dtype)
                pooled = (states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
            if normalize:
                pooled = torch.nn.functional.normalize(pooled, p=2.0, dim=1)
            return pooled

    return Pool()


def _embedding_module(encoder: Any, head: Any, inputs: Sequence[str]) -> Any:
    """Encoder → head over the token states, one embedding per text, all in one graph."""
    import torch

    class SentenceEmbedding(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder
            self.head = head

        def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
            feed = dict(zip(inputs, tensors, strict=True))
            states = self.encoder(**feed).last_hidden_state
            mask = feed.get("attention_mask", torch.ones_like(feed["input_ids"]))
            embedding: torch.Tensor = self.head(states, mask)
            return embedding

    return SentenceEmbedding().eval()


def _embedding_original(
    module: Any, tokenizer: Any, inputs: Sequence[str], max_length: int
) -> Callable[[dict[str, Array]], dict[str, Array]]:
    """A bare encoder's original: the tokenizer and the same PyTorch module, text by text."""

    def original(feed: dict[str, Array]) -> dict[str, Array]:
        import torch

        rows = []
        with torch.inference_mode():
            for text in _texts(feed):
                encoded = tokenizer(
                    text, truncation=True, max_length=max_length, return_tensors="pt"
                )
                rows.append(module(*(encoded[n] for n in inputs))[0].float().numpy())
        return {"embedding": np.stack(rows)}

    return original


# --- Image classification -----------------------------------------------------------------------

_BASE_MODULES = (
    "transformers.image_processing_backends",
    "transformers.image_processing_utils",
    "transformers.image_processing_base",
    "transformers.image_processing_utils_fast",
)
_STEPS = ("preprocess", "_preprocess", "resize", "center_crop", "rescale", "normalize")
_KNOWN_STEPS: dict[str, tuple[set[str], set[str]]] = {
    # Its own resize: the shorter side to size/crop_pct, then a centre crop (_geometry).
    "ConvNextImageProcessor": ({"resize", "_preprocess"}, {"crop_pct"}),
    # Their own steps add segmentation maps (do_reduce_labels applies to those only); images
    # go through the standard resize, crop, rescale and normalise.
    "BeitImageProcessor": ({"preprocess", "_preprocess"}, {"do_reduce_labels"}),
    "MobileNetV2ImageProcessor": ({"preprocess", "_preprocess"}, {"do_reduce_labels"}),
}
"""Processor classes with steps of their own whose effect on images is known: the steps
allowed and the extra settings they read."""
_INTERPOLATION = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic"}
"""PIL's resampling filters (``PILImageResampling``) that the server's Pillow resize uses too."""
_IGNORED = {
    "do_convert_rgb",  # the server always converts to the model's colour mode
    "default_to_square",  # already applied to size when the processor was made
    "data_format",
    "input_data_format",
    "device",
    "return_tensors",
    "disable_grouping",
    "image_seq_length",
}
_MAPPED = {
    "do_resize",
    "size",
    "resample",
    "do_center_crop",
    "crop_size",
    "do_rescale",
    "rescale_factor",
    "do_normalize",
    "image_mean",
    "image_std",
}


def _image_classification(parts: _Parts, options: ImportOptions, folder: Path) -> Exported:
    model, processor = parts.model, parts.preprocess
    labels = _labels(model.config, options)
    channels = int(getattr(model.config, "num_channels", 3))
    image, notes = image_preprocess(processor, channels)
    height, width = image["resize"]
    import torch

    trace = torch.zeros(2, channels, height, width)
    _onnx_export(
        _logits_module(model, ("pixel_values",)),
        (trace,),
        ("pixel_values",),
        "logits",
        {"pixel_values": {0: "batch"}, "logits": {0: "batch"}},
        folder / ARTIFACT,
        options,
    )
    color = image["color"]

    def original(feed: dict[str, Array]) -> dict[str, Array]:
        rows = []
        with torch.inference_mode():
            for data in feed["image"]:
                pixels = processor(images=[_decode(bytes(data), color)], return_tensors="pt")
                rows.append(model(pixel_values=pixels["pixel_values"]).logits[0].float().numpy())
        return {"logits": np.stack(rows)}

    examples = _examples(options, "image", "images")
    if examples is None:
        examples = sample_images(height, width, channels)
        notes.append(f"no example images given: checked on {len(examples)} synthetic PNG images")
    return Exported(
        manifest=_manifest({"image": image}, classifier=True),
        original=original,
        examples={"image": examples},
        checks={"logits": "top1"},
        labels=labels,
        notes=notes,
        framework=_framework(model),
    )


def image_preprocess(processor: Any, channels: int = 3) -> tuple[dict[str, Any], list[str]]:
    """A transformers image processor's settings as model.yaml's ``preprocess.image`` (and
    notes for the report); ImportFailed names the setting the server cannot reproduce."""
    kind = type(processor).__name__
    convnext = kind.startswith("ConvNextImageProcessor")
    steps, settings = next(
        (known for prefix, known in _KNOWN_STEPS.items() if kind.startswith(prefix)),
        (set(), set()),
    )
    _refuse_own_steps(processor, allowed=steps)
    _refuse_unmapped(processor, settings)
    if channels not in (1, 3):
        raise ImportFailed(f"num_channels {channels}: images are decoded as RGB or grayscale")
    if not getattr(processor, "do_resize", False):
        raise ImportFailed(
            f"{kind}: do_resize=False; the served model takes one image size, so the server "
            "always resizes: set do_resize and size"
        )
    if getattr(processor, "do_pad", False):
        raise ImportFailed(f"{kind}: do_pad=True; the server's pipeline does not pad images")
    resize, shorter = _geometry(processor, kind, convnext)
    notes = [f"{kind} mapped onto preprocess.image"]
    if getattr(processor, "backend", "pil") != "pil":
        notes.append(
            f"{kind} resizes with {processor.backend}; the server resizes with Pillow, as its "
            "Pil backend does (the parity check measures the difference)"
        )
    mapped: dict[str, Any] = {
        "input": "pixel_values",
        "public_input": "image",
        "color": "RGB" if channels == 3 else "L",
        "resize": list(resize),
        "interpolation": _interpolation(processor, kind),
        "scale": float(processor.rescale_factor) if processor.do_rescale else 1.0,
        "mean": _per_channel(processor, "image_mean", 0.0, channels),
        "std": _per_channel(processor, "image_std", 1.0, channels),
        "layout": "NCHW",
    }
    if shorter is not None:
        mapped["resize_shorter"] = shorter
    return mapped, notes


def _refuse_own_steps(processor: Any, allowed: set[str]) -> None:
    """A processor class that replaces a step of the standard pipeline does something the
    settings do not describe: refused, naming the class and its steps."""
    own = []
    for step in _STEPS:
        for cls in type(processor).__mro__:
            if step in vars(cls):
                if cls.__module__ not in _BASE_MODULES and step not in allowed:
                    own.append(f"{cls.__name__}.{step}")
                break
    if own:
        raise ImportFailed(
            f"{type(processor).__name__} has its own processing steps ({', '.join(own)}) "
            "that preprocess.image cannot reproduce"
        )


def _refuse_unmapped(processor: Any, extra: set[str]) -> None:
    """Settings beyond the standard ones, set to anything but off, are refused by name."""
    names = getattr(getattr(processor, "valid_kwargs", None), "__annotations__", None)
    if names is None:  # transformers 4's processors: no declared settings, read the object
        names = [k for k in vars(processor) if not k.startswith("_")]
    for name in names:
        if name in _MAPPED or name in _IGNORED or name in extra:
            continue
        value = getattr(processor, name, None)
        if value not in (None, False, 0):
            raise ImportFailed(
                f"{type(processor).__name__}: setting {name}={value!r} has no counterpart in "
                "preprocess.image"
            )


def _size(value: Any) -> dict[str, int]:
    """A ``size``/``crop_size`` setting (SizeDict, dict or int) as its set keys."""
    if value is None:
        return {}
    if isinstance(value, int):
        return {"height": value, "width": value}
    items: Iterable[tuple[str, Any]]
    if isinstance(value, Mapping):
        items = value.items()
    else:
        items = ((k, getattr(value, k)) for k in vars(value) if not k.startswith("_"))
    return {k: int(v) for k, v in items if v is not None}


def _geometry(processor: Any, kind: str, convnext: bool) -> tuple[tuple[int, int], int | None]:
    """(height, width) of the model's input and the shorter side resized to first, if any."""
    size = _size(processor.size)
    crop = _size(getattr(processor, "crop_size", None)) if processor.do_center_crop else {}
    other = sorted(set(size) - {"height", "width", "shortest_edge"})
    if other:
        raise ImportFailed(
            f"{kind}: size {size} sets {', '.join(other)}; preprocess.image resizes to a fixed "
            "size, or the shorter side then a centre crop"
        )
    if "height" in size and "width" in size:
        fixed = (size["height"], size["width"])
        if crop and (crop.get("height"), crop.get("width")) != fixed:
            raise ImportFailed(
                f"{kind}: resizes to {fixed[0]}x{fixed[1]} (size) then crops "
                f"{crop.get('height')}x{crop.get('width')} (crop_size); preprocess.image crops "
                "only after resizing the shorter side (size={'shortest_edge': N})"
            )
        return fixed, None
    if "shortest_edge" not in size:
        raise ImportFailed(f"{kind}: size {size} gives no output size")
    edge = size["shortest_edge"]
    if convnext:
        if crop:
            raise ImportFailed(f"{kind}: do_center_crop on top of crop_pct is not mapped")
        if edge >= 384:  # ConvNeXT warps to a square from 384 on, without a crop
            return (edge, edge), None
        return (edge, edge), int(edge / float(processor.crop_pct))
    if not crop:
        raise ImportFailed(
            f"{kind}: size {{'shortest_edge': {edge}}} without do_center_crop keeps each "
            "image's aspect ratio, so images of different shapes give tensors of different "
            "sizes; the served model takes one size: set do_center_crop and crop_size"
        )
    out = (crop["height"], crop["width"])
    if max(out) > edge:
        raise ImportFailed(
            f"{kind}: crop_size {out[0]}x{out[1]} is larger than the resized shorter side "
            f"{edge}, so the processor pads; the server's pipeline does not pad"
        )
    return out, edge


def _interpolation(processor: Any, kind: str) -> str:
    resample = getattr(processor, "resample", None)
    value = int(resample) if isinstance(resample, int) else 2  # an enum or int; bilinear if unset
    if value not in _INTERPOLATION:
        raise ImportFailed(
            f"{kind}: resample={resample!r}; preprocess.image resizes with nearest, bilinear, "
            "bicubic or lanczos"
        )
    return _INTERPOLATION[value]


def _per_channel(processor: Any, name: str, off: float, channels: int) -> list[float]:
    if not processor.do_normalize:
        return [off] * channels
    value = getattr(processor, name)
    values = (
        [float(value)] * channels if isinstance(value, int | float) else list(map(float, value))
    )
    if len(values) != channels:
        raise ImportFailed(
            f"{type(processor).__name__}: {name} has {len(values)} values for a "
            f"{channels}-channel model"
        )
    return values


def _decode(data: bytes, color: str) -> Any:
    """Pillow's decode, upright, in the model's colour mode: what a user feeds the processor."""
    from PIL import Image, ImageOps

    with Image.open(io.BytesIO(data)) as opened:
        upright = ImageOps.exif_transpose(opened)
        return upright.convert(color)


def sample_images(height: int, width: int, channels: int = 3, count: int = 4) -> Array:
    """Smooth random PNG images around the model's input size (no larger than twice it, where
    the server's reduce-then-filter resize is Pillow's plain one), as encoded bytes."""
    from PIL import Image

    rng = np.random.default_rng(0)
    shapes = [(height, width), (height * 3 // 2, width), (height, width * 5 // 4), (height, width)]
    mode = "RGB" if channels == 3 else "L"
    rows = []
    for h, w in shapes[:count]:
        coarse = rng.integers(0, 256, (4, 4, channels), dtype=np.uint8)
        small = Image.fromarray(coarse[:, :, 0] if channels == 1 else coarse, mode)
        buffer = io.BytesIO()
        small.resize((w, h), Image.Resampling.BICUBIC).save(buffer, format="PNG")
        rows.append(buffer.getvalue())
    return np.array(rows, dtype=object)


# --- Shared -------------------------------------------------------------------------------------


def _onnx_export(
    module: Any,
    args: tuple[Any, ...],
    inputs: Sequence[str],
    output: str,
    axes: dict[str, dict[int, str]],
    path: Path,
    options: ImportOptions,
) -> None:
    """torch's TorchScript-based exporter (no onnxscript needed), free batch (and sequence)
    axes; what it cannot export is reported with the exporter's own words."""
    import torch

    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        # The exporter warns about traced Python booleans that do not depend on the input
        # here; the parity check is what counts.
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                module,
                args,
                str(path),
                dynamo=False,
                opset_version=options.opset or OPSET,
                input_names=list(inputs),
                output_names=[output],
                dynamic_axes=axes,
                do_constant_folding=True,
            )
        except Exception as exc:  # the exporter raises many kinds; all mean "cannot export"
            raise ImportFailed(
                f"torch.onnx could not export the model: {type(exc).__name__}: {exc}"
            ) from exc


def _manifest(preprocess: dict[str, Any], classifier: bool) -> dict[str, Any]:
    """``model.yaml``'s settings: the graph behind the server's pre-processing, and for a
    classifier its logits through ``postprocess.classification``'s softmax."""
    manifest: dict[str, Any] = {
        "runtime": "onnx",
        "artifact": ARTIFACT,
        "batching": {"max_batch_size": MAX_BATCH_SIZE},
        "preprocess": preprocess,
    }
    if classifier:
        manifest["postprocess"] = {"classification": {"output": "logits", "softmax": True}}
    return manifest


def _framework(model: Any) -> str:
    from importlib.metadata import version

    package = "sentence-transformers" if _kind(model) == "sentence-transformers" else "transformers"
    return f"{package} {version(package)} {type(model).__name__}"
