"""Classification post-processing: softmax, ordered top-k, labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from infership.errors import ConfigError
from infership.processing.classify import Classifier
from infership.repository.manifest import Classification


def test_top_k_is_sorted_with_labels_and_probabilities(tmp_path: Path) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\nc\nd\n")
    classify = Classifier(Classification(output="y", top_k=3, labels="labels.txt"), labels, 4)
    out = classify.top(np.array([[0.0, 3.0, 1.0, 2.0], [5.0, 0.0, 0.0, 0.0]], dtype=np.float32))
    assert out["label"].tolist() == [[b"b", b"d", b"c"], [b"a", b"b", b"c"]]
    assert out["class_index"].tolist() == [[1, 3, 2], [0, 1, 2]]
    probabilities = out["probability"]
    assert probabilities.dtype == np.float32
    assert np.all(np.diff(probabilities, axis=1) <= 0)
    expected = np.exp([3.0, 2.0, 1.0]) / np.exp([0.0, 1.0, 2.0, 3.0]).sum()
    np.testing.assert_allclose(probabilities[0], expected, rtol=1e-6)


def test_without_softmax_scores_pass_through_and_labels_default_to_indices() -> None:
    classify = Classifier(Classification(output="y", top_k=2, softmax=False), None, 3)
    out = classify.top(np.array([[0.1, 0.7, 0.2]], dtype=np.float32))
    assert out["label"].tolist() == [[b"1", b"2"]]
    np.testing.assert_allclose(out["probability"], [[0.7, 0.2]])


def test_top_k_is_capped_at_the_number_of_classes() -> None:
    classify = Classifier(Classification(output="y", top_k=10), None, 3)
    assert classify.top_k == 3
    assert classify.top(np.zeros((1, 3), dtype=np.float32))["label"].shape == (1, 3)


def test_label_count_must_match_classes(tmp_path: Path) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\n")
    with pytest.raises(ConfigError, match="has 2 labels but output 'y' has 3 classes"):
        Classifier(Classification(output="y", labels="labels.txt"), labels, 3)
