"""The unmodified ``tritonclient.http`` (and ``.aio``) against a real server on loopback."""

from __future__ import annotations

import asyncio
import json
import struct
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient
import tritonclient.http.aio as aiohttpclient
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from conftest import RunningServer, reference_preprocess, start_server, stop_server

pytestmark = pytest.mark.e2e

MODEL = "efficientnet-lite0"
IMAGES = Path(__file__).parents[1] / "testdata" / "images"
CLASSIFIER_OUTPUTS = ("label", "probability", "class_index")


def _address(server: RunningServer) -> str:
    return server.url.removeprefix("http://")


def image_input(*images: bytes) -> httpclient.InferInput:
    tensor = httpclient.InferInput("image", [len(images)], "BYTES")
    tensor.set_data_from_numpy(np.array(images, dtype=object), binary_data=True)
    return tensor


def binary_outputs() -> list[httpclient.InferRequestedOutput]:
    return [httpclient.InferRequestedOutput(n, binary_data=True) for n in CLASSIFIER_OUTPUTS]


@pytest.fixture
def triton(example_server: RunningServer) -> Iterator[httpclient.InferenceServerClient]:
    client = httpclient.InferenceServerClient(_address(example_server))
    yield client
    client.close()


def _successes(server: RunningServer) -> float:
    text = httpx.get(f"{server.url}/metrics").text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "infership_requests_total"
        and sample.labels.get("model") == MODEL
        and sample.labels.get("outcome") == "success"
    )


# -- health and metadata ----------------------------------------------------------------------


def test_health(triton: httpclient.InferenceServerClient) -> None:
    assert triton.is_server_live()
    assert triton.is_server_ready()
    assert triton.is_model_ready(MODEL)
    assert triton.is_model_ready(MODEL, "1")
    assert not triton.is_model_ready("no-such-model")
    assert not triton.is_model_ready(MODEL, "7")


def test_server_metadata(triton: httpclient.InferenceServerClient) -> None:
    metadata = triton.get_server_metadata()
    assert metadata["name"] == "infership"
    assert isinstance(metadata["version"], str)
    assert "binary_tensor_data" in metadata["extensions"]


@pytest.mark.parametrize("version", ["", "1"], ids=["latest", "version-1"])
def test_model_metadata(triton: httpclient.InferenceServerClient, version: str) -> None:
    metadata = triton.get_model_metadata(MODEL, model_version=version)
    assert metadata["name"] == MODEL
    assert metadata["versions"] == ["1"]
    inputs = {t["name"]: t for t in metadata["inputs"]}
    outputs = {t["name"]: t for t in metadata["outputs"]}
    assert inputs["image"] == {"name": "image", "datatype": "BYTES", "shape": [-1]}
    assert outputs["label"]["datatype"] == "BYTES"
    assert outputs["probability"]["datatype"] == "FP32"
    assert outputs["class_index"]["datatype"] == "INT64"
    assert outputs["logits"] == {"name": "logits", "datatype": "FP32", "shape": [-1, 1000]}


# -- inference --------------------------------------------------------------------------------


def test_json_tensors(triton: httpclient.InferenceServerClient) -> None:
    tensor = httpclient.InferInput("input", [1, 3, 224, 224], "FP32")
    tensor.set_data_from_numpy(
        reference_preprocess((IMAGES / "chelsea.jpg").read_bytes()), binary_data=False
    )
    outputs = [httpclient.InferRequestedOutput(n, binary_data=False) for n in CLASSIFIER_OUTPUTS]
    result = triton.infer(MODEL, [tensor], outputs=outputs)
    response = result.get_response()
    assert response["model_name"] == MODEL
    assert response["model_version"] == "1"
    assert all("data" in o for o in response["outputs"]), "JSON outputs were asked for"
    labels = result.as_numpy("label")
    assert labels.shape == (1, 5)
    assert labels[0, 0] == "Egyptian cat"  # JSON BYTES come back as str
    assert result.as_numpy("class_index")[0, 0] == 285
    probabilities = result.as_numpy("probability")
    assert probabilities.dtype == np.float32
    assert 0.0 < probabilities[0, 0] <= 1.0
    assert np.all(np.diff(probabilities[0]) <= 0), "top-k is sorted by probability"


def test_binary_tensors(
    triton: httpclient.InferenceServerClient, chelsea: bytes, coffee: bytes
) -> None:
    result = triton.infer(MODEL, [image_input(chelsea)], outputs=binary_outputs())
    assert result.as_numpy("label")[0, 0] == b"Egyptian cat"
    assert result.as_numpy("class_index")[0, 0] == 285

    result = triton.infer(MODEL, [image_input(coffee)], outputs=binary_outputs())
    assert result.as_numpy("label")[0, 0] == b"espresso"
    assert result.as_numpy("class_index")[0, 0] == 967

    result = triton.infer(MODEL, [image_input(chelsea, coffee)], outputs=binary_outputs())
    assert result.as_numpy("label")[:, 0].tolist() == [b"Egyptian cat", b"espresso"]
    assert result.as_numpy("class_index")[:, 0].tolist() == [285, 967]
    assert result.as_numpy("probability").shape == (2, 5)


def test_raw_logits_output(triton: httpclient.InferenceServerClient, chelsea: bytes) -> None:
    outputs = [httpclient.InferRequestedOutput("logits", binary_data=True)]
    result = triton.infer(MODEL, [image_input(chelsea)], outputs=outputs)
    logits = result.as_numpy("logits")
    assert logits.shape == (1, 1000)
    assert int(np.argmax(logits[0])) == 285
    assert result.as_numpy("label") is None


def test_default_outputs_and_request_id(
    triton: httpclient.InferenceServerClient, chelsea: bytes
) -> None:
    result = triton.infer(MODEL, [image_input(chelsea)], request_id="req-42")
    response = result.get_response()
    assert response["id"] == "req-42"
    assert {o["name"] for o in response["outputs"]} == set(CLASSIFIER_OUTPUTS)
    assert result.as_numpy("label")[0, 0] == b"Egyptian cat"
    assert result.as_numpy("class_index")[0, 0] == 285


@pytest.mark.parametrize(
    ("request_compression", "response_compression"),
    [("gzip", None), (None, "gzip"), (None, "deflate"), ("deflate", "gzip")],
)
def test_compression(
    triton: httpclient.InferenceServerClient,
    chelsea: bytes,
    request_compression: str | None,
    response_compression: str | None,
) -> None:
    result = triton.infer(
        MODEL,
        [image_input(chelsea)],
        outputs=binary_outputs(),
        request_compression_algorithm=request_compression,
        response_compression_algorithm=response_compression,
    )
    assert result.as_numpy("label")[0, 0] == b"Egyptian cat"
    assert result.as_numpy("class_index")[0, 0] == 285


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_server_compresses_infer_only_when_asked(
    example_server: RunningServer, chelsea: bytes, algorithm: str
) -> None:
    """What tritonclient cannot show: the answer really is compressed, and only /infer's."""
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "image",
                    "datatype": "BYTES",
                    "shape": [1],
                    "parameters": {"binary_data_size": 4 + len(chelsea)},
                }
            ],
            "outputs": [{"name": "label", "parameters": {"binary_data": False}}],
        }
    ).encode()
    response = httpx.post(
        f"{example_server.url}/v2/models/{MODEL}/infer",
        content=header + struct.pack("<I", len(chelsea)) + chelsea,
        headers={"Inference-Header-Content-Length": str(len(header)), "Accept-Encoding": algorithm},
    )
    assert response.status_code == 200, response.text
    assert response.headers.get("content-encoding") == algorithm
    assert response.json()["outputs"][0]["data"][0] == "Egyptian cat"

    metadata = httpx.get(f"{example_server.url}/v2", headers={"Accept-Encoding": algorithm})
    assert "content-encoding" not in metadata.headers


async def test_aio_client(example_server: RunningServer, chelsea: bytes, coffee: bytes) -> None:
    client = aiohttpclient.InferenceServerClient(_address(example_server))
    try:
        assert await client.is_server_ready()
        assert await client.is_model_ready(MODEL)
        assert (await client.get_model_metadata(MODEL))["name"] == MODEL
        result = await client.infer(
            MODEL, [image_input(chelsea, coffee)], outputs=binary_outputs(), request_id="aio"
        )
        assert result.get_response()["id"] == "aio"
        assert result.as_numpy("label")[:, 0].tolist() == [b"Egyptian cat", b"espresso"]
        results = await asyncio.gather(
            *(
                client.infer(MODEL, [image_input(chelsea)], outputs=binary_outputs())
                for _ in range(8)
            )
        )
        assert [int(r.as_numpy("class_index")[0, 0]) for r in results] == [285] * 8
    finally:
        await client.close()


def test_concurrent_clients(example_server: RunningServer, chelsea: bytes) -> None:
    clients = 16
    before = _successes(example_server)
    start = threading.Barrier(clients)

    def one() -> int:
        client = httpclient.InferenceServerClient(_address(example_server))
        try:
            start.wait(timeout=30)
            result = client.infer(MODEL, [image_input(chelsea)], outputs=binary_outputs())
            return int(result.as_numpy("class_index")[0, 0])
        finally:
            client.close()

    with ThreadPoolExecutor(clients) as pool:
        indices = list(pool.map(lambda _: one(), range(clients)))
    assert indices == [285] * clients

    assert _successes(example_server) - before >= clients
    metrics = httpx.get(f"{example_server.url}/metrics").text
    assert "infership_batch_size_count" in metrics
    # Whether several requests shared a batch depends on timing; it is allowed, not required.


# -- errors -----------------------------------------------------------------------------------


def test_unknown_model_is_404(triton: httpclient.InferenceServerClient, chelsea: bytes) -> None:
    with pytest.raises(InferenceServerException) as info:
        triton.infer("no-such-model", [image_input(chelsea)])
    assert info.value.status() == "404"
    assert "no-such-model" in info.value.message()

    with pytest.raises(InferenceServerException) as info:
        triton.get_model_metadata("no-such-model")
    assert info.value.status() == "404"
    assert "no-such-model" in info.value.message()


def test_unknown_version_is_404(triton: httpclient.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as info:
        triton.get_model_metadata(MODEL, model_version="7")
    assert info.value.status() == "404"
    assert "7" in info.value.message()


def test_wrong_shape_is_400(triton: httpclient.InferenceServerClient) -> None:
    tensor = httpclient.InferInput("input", [1, 3, 32, 32], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 3, 32, 32), np.float32), binary_data=True)
    with pytest.raises(InferenceServerException) as info:
        triton.infer(MODEL, [tensor], outputs=binary_outputs())
    assert info.value.status() == "400"
    assert "shape" in info.value.message()
    assert "[1, 3, 32, 32]" in info.value.message()


def test_unknown_output_is_400(triton: httpclient.InferenceServerClient, chelsea: bytes) -> None:
    outputs = [httpclient.InferRequestedOutput("nope")]
    with pytest.raises(InferenceServerException) as info:
        triton.infer(MODEL, [image_input(chelsea)], outputs=outputs)
    assert info.value.status() == "400"
    assert "nope" in info.value.message()


def test_not_an_image_is_400(triton: httpclient.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as info:
        triton.infer(MODEL, [image_input(b"definitely not a jpeg")])
    assert info.value.status() == "400"


# -- model repository extension ---------------------------------------------------------------


def test_repository_index(triton: httpclient.InferenceServerClient) -> None:
    index = triton.get_model_repository_index()
    assert {"name": MODEL, "version": "1", "state": "READY"} in index


def test_load_unload_forbidden_without_model_control(
    triton: httpclient.InferenceServerClient,
) -> None:
    for call in (triton.load_model, triton.unload_model):
        with pytest.raises(InferenceServerException) as info:
            call(MODEL)
        assert info.value.status() == "403"
        assert "--model-control" in info.value.message()
    assert triton.is_model_ready(MODEL)


def test_load_and_unload_with_model_control(repository: Path, chelsea: bytes) -> None:
    server = start_server(str(repository), "--model-control")
    client = httpclient.InferenceServerClient(_address(server))
    try:
        assert client.is_model_ready(MODEL)

        client.unload_model(MODEL)
        assert not client.is_model_ready(MODEL)
        assert client.is_server_live()
        states = {e["name"]: e["state"] for e in client.get_model_repository_index()}
        assert states[MODEL] == "UNAVAILABLE"
        with pytest.raises(InferenceServerException) as info:
            client.infer(MODEL, [image_input(chelsea)])
        assert info.value.status() == "503"

        client.load_model(MODEL)
        assert client.is_model_ready(MODEL)
        assert client.is_server_ready()
        assert {"name": MODEL, "version": "1", "state": "READY"} in (
            client.get_model_repository_index()
        )
        result = client.infer(MODEL, [image_input(chelsea)], outputs=binary_outputs())
        assert result.as_numpy("class_index")[0, 0] == 285

        with pytest.raises(InferenceServerException) as info:
            client.load_model("no-such-model")
        assert info.value.status() == "404"
    finally:
        client.close()
        stop_server(server)
