"""The TensorFlow side of the import tests, run by .venv/import-tensorflow's Python (as a user's
own TensorFlow environment would run ``save_model``): ``python tensorflow_jobs.py OUT``.

It trains small models on a small array, imports them with infership (the parity check runs
here, beside TensorFlow), and leaves in OUT what the tests in the main virtualenv serve and
compare: ``repository/`` with the imported models, ``answers.npz`` with the originals' answers
on ``QUERY`` rows, and ``results.json`` with the import reports and the refusals' messages.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter
os.environ["KERAS_BACKEND"] = "tensorflow"

import keras
import numpy as np
import tensorflow as tf

from infership.errors import ImportFailed
from infership.importing import import_path, save_model

SPECIES = ("setosa", "versicolor", "virginica")


def data() -> tuple[np.ndarray, np.ndarray]:
    """Three classes of points in four dimensions, separable enough to learn in a few epochs."""
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 3, 240)
    centres = np.array([[0, 0, 1, 1], [2, 1, 0, 0], [0, 2, 2, 0]], dtype=np.float32)
    rows = centres[labels] + rng.normal(0, 0.5, (240, 4)).astype(np.float32)
    return rows.astype(np.float32), labels


ROWS, LABELS = data()
QUERY = ROWS[:8]


class Mlp(tf.Module):
    """A two-layer classifier written in plain TensorFlow, trained with a GradientTape."""

    def __init__(self) -> None:
        init = tf.random.stateless_normal
        self.w1 = tf.Variable(init([4, 16], seed=[1, 2]) * 0.5)
        self.b1 = tf.Variable(tf.zeros([16]))
        self.w2 = tf.Variable(init([16, 3], seed=[3, 4]) * 0.5)
        self.b2 = tf.Variable(tf.zeros([3]))

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="measurements")])
    def __call__(self, measurements: tf.Tensor) -> dict[str, tf.Tensor]:
        hidden = tf.nn.relu(measurements @ self.w1 + self.b1)
        logits = hidden @ self.w2 + self.b2
        return {"logits": logits, "probabilities": tf.nn.softmax(logits)}

    def fit(self, rows: np.ndarray, labels: np.ndarray, steps: int = 150) -> None:
        optimizer = tf.optimizers.Adam(0.05)
        for _ in range(steps):
            with tf.GradientTape() as tape:
                logits = self(rows)["logits"]
                loss = tf.reduce_mean(
                    tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
                )
            variables = [self.w1, self.b1, self.w2, self.b2]
            optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))


class Spectrum(tf.Module):
    """Singular values: tf2onnx has no converter for the Svd op."""

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
    def __call__(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"singular_values": tf.linalg.svd(tf.reshape(x, [-1, 2, 2]), compute_uv=False)}


class KerasSpectrum(keras.layers.Layer):
    """The same op in a custom Keras layer."""

    def call(self, x: Any) -> Any:
        return keras.ops.linalg.svd(keras.ops.reshape(x, (-1, 2, 2)), compute_uv=False)


def keras_classifier() -> keras.Model:
    inputs = keras.Input((4,), name="features")
    hidden = keras.layers.Dense(16, activation="relu")(inputs)
    outputs = keras.layers.Dense(3, activation="softmax")(hidden)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(0.02), loss="sparse_categorical_crossentropy")
    model.fit(ROWS, LABELS, epochs=10, batch_size=32, verbose=0)
    return model


def refusal(call: Any) -> str:
    try:
        call()
    except ImportFailed as exc:
        return str(exc)
    return ""


def main(out: Path) -> None:
    repository = out / "repository"
    started = time.perf_counter()
    results: dict[str, Any] = {}
    answers: dict[str, np.ndarray] = {}

    mlp = Mlp()
    mlp.fit(ROWS, LABELS)
    tf.saved_model.save(mlp, str(out / "mlp"), signatures={"serving_default": mlp.__call__})
    report = import_path(out / "mlp", repository, "mlp", labels=SPECIES, example_inputs=ROWS[:32])
    results["mlp"] = report.as_dict()
    for name, value in mlp(QUERY).items():
        answers[f"mlp/{name}"] = value.numpy()

    report = save_model(mlp, repository, "mlp-live", example_inputs=ROWS[:8])
    results["mlp-live"] = report.as_dict()
    results["no-signature"] = refusal(
        lambda: import_path(out / "mlp", repository, "nope", settings={"signature": "predict"})
    )

    classifier = keras_classifier()
    report = save_model(
        classifier, repository, "keras-tf", labels=SPECIES, example_inputs=ROWS[:32]
    )
    results["keras-tf"] = report.as_dict()
    answers["keras-tf/probabilities"] = classifier.predict(QUERY, verbose=0)

    classifier.export(str(out / "keras-export"))  # Keras' SavedModel export: tf.saved_model
    report = import_path(out / "keras-export", repository, "keras-export")
    results["keras-export"] = report.as_dict()
    answers["keras-export/output_0"] = classifier.predict(QUERY, verbose=0)

    spectrum = Spectrum()
    tf.saved_model.save(
        spectrum, str(out / "svd"), signatures={"serving_default": spectrum.__call__}
    )
    results["svd"] = refusal(lambda: import_path(out / "svd", repository, "svd"))

    inputs = keras.Input((4,), name="x")
    layers = keras.layers.Dense(2)(KerasSpectrum(name="spectrum")(keras.layers.Dense(4)(inputs)))
    custom = keras.Model(inputs, layers)
    results["keras-svd"] = refusal(
        lambda: save_model(custom, repository, "keras-svd", example_inputs=ROWS[:4])
    )

    results["versions"] = {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "seconds": round(time.perf_counter() - started, 1),
    }
    np.savez(out / "answers.npz", query=QUERY, **answers)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
