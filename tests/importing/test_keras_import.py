"""Keras 3 models through Keras' own ONNX export: trained here on a small array with the torch
backend (infership's own environment), imported live and from ``.keras`` files, served and
asked with tritonclient, answers compared with ``model.predict``. The TensorFlow backend's path
(tf2onnx) runs in TensorFlow's virtualenv (tensorflow_venv.py). Refusals: a custom layer whose
op has no ONNX equivalent, a Lambda layer in a file, a layer computing in numpy.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from infership.errors import ImportFailed
from infership.importing import import_path, save_model
from infership.importing.registry import for_object, for_path
from infership.repository.manifest import load_manifest

from .conftest import require, served_outputs
from .tensorflow_venv import tensorflow_results

os.environ.setdefault("KERAS_BACKEND", "torch")  # before Keras is imported: no TensorFlow here
keras = require("keras")

SPECIES = ["setosa", "versicolor", "virginica"]

# Keras' torch backend hands torch tensors to numpy 2, which warns that torch's __array__ takes
# no copy keyword (on every predict); the importer silences it around its own calls.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)


def data() -> tuple[np.ndarray, np.ndarray]:
    """Three classes of points in four dimensions, separable enough to learn in a few epochs."""
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 3, 240)
    centres = np.array([[0, 0, 1, 1], [2, 1, 0, 0], [0, 2, 2, 0]], dtype=np.float32)
    return (centres[labels] + rng.normal(0, 0.5, (240, 4))).astype(np.float32), labels


ROWS, LABELS = data()


@pytest.fixture(scope="module")
def classifier() -> Any:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,), name="features")
    hidden = keras.layers.Dense(16, activation="relu")(inputs)
    outputs = keras.layers.Dense(3, activation="softmax")(hidden)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(0.02), loss="sparse_categorical_crossentropy")
    model.fit(ROWS, LABELS, epochs=10, batch_size=32, verbose=0)
    return model


@pytest.mark.e2e
def test_a_keras_classifier_is_served_with_its_probabilities_and_labels(
    classifier: Any, tmp_path: Path
) -> None:
    report = save_model(classifier, tmp_path, "species", example_inputs=ROWS[:32], labels=SPECIES)

    served = served_outputs(tmp_path, "species", {"features": ROWS[:8]}, ["probabilities", "label"])

    expected = classifier.predict(ROWS[:8], verbose=0)
    np.testing.assert_allclose(served["probabilities"], expected, atol=1e-5)
    assert [r[0].decode() for r in served["label"]] == [SPECIES[i] for i in expected.argmax(1)]
    assert report.source == "keras"
    assert report.parity.passed
    assert [(o.name, o.check, o.top1_agreement) for o in report.parity.outputs] == [
        ("probabilities", "top1", 1.0)
    ]
    manifest = load_manifest(tmp_path / "species" / "model.yaml")
    assert manifest.batching.max_batch_size == 32
    assert manifest.postprocess.classification is not None
    assert manifest.postprocess.classification.softmax is False
    accuracy = (classifier.predict(ROWS, verbose=0).argmax(1) == LABELS).mean()
    assert accuracy > 0.9, "the classifier learnt the three classes"


def two_headed() -> Any:
    """Two named inputs; one output its layer's user-given name, one Keras' own (``dense_1``)."""
    measurements = keras.Input((4,), name="measurements")
    scale = keras.Input((1,), name="scale")
    joined = keras.layers.Concatenate()([measurements, scale])
    hidden = keras.layers.Dense(8, activation="tanh")(joined)
    price = keras.layers.Dense(1, name="price")(hidden)
    embedding = keras.layers.Dense(2)(hidden)
    return keras.Model([measurements, scale], [price, embedding])


@pytest.mark.e2e
def test_a_keras_file_keeps_the_names_its_user_gave(tmp_path: Path) -> None:
    model = two_headed()
    model.compile(optimizer="adam", loss="mse")
    scale = np.linspace(0.5, 2, len(ROWS), dtype=np.float32)[:, None]
    model.fit([ROWS, scale], [ROWS[:, :1] * scale, ROWS[:, 1:3]], epochs=2, verbose=0)
    model.save(tmp_path / "two_headed.keras")

    assert for_path(tmp_path / "two_headed.keras").name == "keras"
    report = import_path(tmp_path / "two_headed.keras", tmp_path / "models")
    feed = {"measurements": ROWS[:8], "scale": scale[:8]}
    served = served_outputs(tmp_path / "models", "two_headed", feed, ["price", "output_1"])

    price, embedding = model.predict([ROWS[:8], scale[:8]], verbose=0)
    np.testing.assert_allclose(served["price"], price, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(served["output_1"], embedding, rtol=1e-4, atol=1e-5)
    assert {o.name for o in report.parity.outputs} == {"price", "output_1"}
    assert "postprocess" not in report.manifest, "no softmax, no labels: not a classifier"


class Spectrum(keras.layers.Layer):
    """Singular values: torch's ONNX exporter has no translation for linalg_svdvals."""

    def call(self, x: Any) -> Any:
        return keras.ops.linalg.svd(keras.ops.reshape(x, (-1, 2, 2)), compute_uv=False)


def test_a_custom_layer_the_exporter_refuses_is_named_with_its_class(tmp_path: Path) -> None:
    inputs = keras.Input((4,), name="x")
    spectrum = Spectrum(name="spectrum")(keras.layers.Dense(4)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2)(spectrum))

    assert for_object(model).name == "keras"
    with pytest.raises(ImportFailed) as refused:
        save_model(model, tmp_path, "spectral", example_inputs=ROWS[:4])

    message = str(refused.value)
    assert "Keras layer 'spectrum' (Spectrum, a custom layer)" in message
    assert "aten::linalg_svdvals" in message
    assert not (tmp_path / "spectral").exists()


class InNumpy(keras.layers.Layer):
    """Leaves Keras' ops for numpy: the exporter traces a constant."""

    def call(self, x: Any) -> Any:
        return keras.ops.convert_to_tensor(np.sin(keras.ops.convert_to_numpy(x)))


def test_a_layer_computing_in_numpy_is_refused_as_the_constant_it_exports(tmp_path: Path) -> None:
    inputs = keras.Input((4,), name="x")
    model = keras.Model(inputs, InNumpy()(inputs))

    with pytest.raises(ImportFailed, match=r"never reads input 'x'.*numpy"):
        save_model(model, tmp_path, "numpy", example_inputs=ROWS[:4])


def test_a_lambda_layer_in_a_keras_file_is_refused_in_safe_mode(tmp_path: Path) -> None:
    inputs = keras.Input((4,))
    doubled = keras.Model(inputs, keras.layers.Lambda(lambda t: t * 2)(inputs))
    doubled.save(tmp_path / "l.keras")
    doubled.save(tmp_path / "legacy.h5")  # Keras' legacy format is loaded in safe mode too

    for saved in ("l.keras", "legacy.h5"):
        with pytest.raises(ImportFailed, match=r"Lambda layer.*--set safe_mode=false"):
            import_path(tmp_path / saved, tmp_path / "models")

    report = import_path(tmp_path / "l.keras", tmp_path / "models", settings={"safe_mode": "false"})
    assert report.parity.passed
    assert report.manifest["runtime"] == "onnx"


def test_a_subclassed_model_is_exported_once_it_has_seen_the_examples(tmp_path: Path) -> None:
    class Doubler(keras.Model):
        def __init__(self) -> None:
            super().__init__()
            self.dense = keras.layers.Dense(3)

        def call(self, x: Any) -> Any:
            return self.dense(x) * 2

    with pytest.raises(ImportFailed, match=r"never been called.*example_inputs"):
        save_model(Doubler(), tmp_path, "doubler")
    report = save_model(Doubler(), tmp_path, "doubler", example_inputs=ROWS[:8])

    assert report.parity.passed
    assert [o.name for o in report.parity.outputs] == ["output"]
    assert not (tmp_path / "doubler" / "2").exists()


def test_labels_for_an_output_of_logits_make_it_a_classifier_with_softmax(tmp_path: Path) -> None:
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="logits")])

    report = save_model(model, tmp_path, "logits", labels=SPECIES)

    assert report.manifest["postprocess"] == {
        "classification": {"output": "logits", "softmax": True, "labels": "labels.txt"}
    }
    assert [(o.name, o.check) for o in report.parity.outputs] == [("logits", "top1")]
    with pytest.raises(ImportFailed, match="2 labels given"):
        save_model(model, tmp_path, "logits", labels=SPECIES[:2])


def test_a_keras_file_with_a_custom_class_unknown_here_says_where_to_import_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    @keras.saving.register_keras_serializable(package="tests")
    class Twice(keras.layers.Layer):
        def call(self, x: Any) -> Any:
            return x * 2

    inputs = keras.Input((4,))
    keras.Model(inputs, Twice()(inputs)).save(tmp_path / "twice.keras")
    monkeypatch.delitem(keras.saving.get_custom_objects(), "tests>Twice")

    with pytest.raises(ImportFailed, match=r"holds 'Twice', a custom class.*save_model"):
        import_path(tmp_path / "twice.keras", tmp_path / "models")


@pytest.mark.e2e
def test_the_tensorflow_backend_exports_through_tf2onnx() -> None:
    out = tensorflow_results()
    reports = json.loads((out / "results.json").read_text())
    with np.load(out / "answers.npz") as answers:
        query, expected = answers["query"], answers["keras-tf/probabilities"]

    served = served_outputs(out / "repository", "keras-tf", {"features": query}, ["probabilities"])

    np.testing.assert_allclose(served["probabilities"], expected, atol=1e-5)
    assert "(tensorflow backend)" in reports["keras-tf"]["framework"]
    assert "tf2onnx" in " ".join(reports["keras-tf"]["notes"])
    assert "Keras layer 'spectrum' (KerasSpectrum, a custom layer)" in reports["keras-svd"]
    assert "op 'Svd'" in reports["keras-svd"]
