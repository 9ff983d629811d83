"""The REST API end to end, in-process: health, metadata, infer (JSON, binary, gzip), predict,
the repository extension, metrics and the OpenAPI document."""

from __future__ import annotations

import asyncio
import gzip
import shutil
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
import tritonclient.http
from openapi_spec_validator import validate
from prometheus_client.parser import text_string_to_metric_families

from conftest import reference_preprocess
from infership.app import Application
from infership.errors import QueueFull
from infership.settings import ServerSettings

MODEL = "efficientnet-lite0"
INFER = f"/v2/models/{MODEL}/infer"
CAT, ESPRESSO = 285, 967


def binary_image_body(
    *images: bytes, outputs: list[dict[str, Any]] | None = None, **parameters: Any
) -> tuple[bytes, dict[str, str]]:
    """An infer body with the images as one BYTES tensor in the binary section, by hand."""
    blob = b"".join(struct.pack("<I", len(image)) + image for image in images)
    doc: dict[str, Any] = {
        "inputs": [
            {
                "name": "image",
                "datatype": "BYTES",
                "shape": [len(images)],
                "parameters": {"binary_data_size": len(blob)},
            }
        ]
    }
    if outputs is not None:
        doc["outputs"] = outputs
    if parameters:
        doc["parameters"] = parameters
    header = orjson.dumps(doc)
    return header + blob, {"Inference-Header-Content-Length": str(len(header))}


def outputs_by_name(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {output["name"]: output for output in doc["outputs"]}


def metric_samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


# --- health and metadata --------------------------------------------------------------------


@pytest.mark.parametrize(("path", "body"), [("live", {"live": True}), ("ready", {"ready": True})])
async def test_health_endpoints_answer_json_bodies(
    client: httpx.AsyncClient, path: str, body: dict[str, bool]
) -> None:
    response = await client.get(f"/v2/health/{path}")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == body


async def test_server_metadata_names_the_server_and_its_extensions(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/v2")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    doc = response.json()
    assert doc["name"] == "infership"
    assert isinstance(doc["version"], str)
    assert {"binary_tensor_data", "model_repository"} <= set(doc["extensions"])


@pytest.mark.parametrize("path", [f"/v2/models/{MODEL}", f"/v2/models/{MODEL}/versions/1"])
async def test_model_metadata_describes_the_public_signature(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    doc = response.json()
    assert doc["name"] == MODEL
    assert doc["versions"] == ["1"]
    assert doc["platform"] == "onnxruntime_onnx"
    inputs = {i["name"]: i for i in doc["inputs"]}
    assert inputs["image"] == {"name": "image", "datatype": "BYTES", "shape": [-1]}
    assert [o["name"] for o in doc["outputs"]] == ["label", "probability", "class_index", "logits"]
    outputs = outputs_by_name(doc)
    assert outputs["label"]["datatype"] == "BYTES"
    assert outputs["probability"]["datatype"] == "FP32"
    assert outputs["class_index"]["datatype"] == "INT64"
    assert outputs["logits"] == {"name": "logits", "datatype": "FP32", "shape": [-1, 1000]}


@pytest.mark.parametrize(
    "path", [f"/v2/models/{MODEL}/ready", f"/v2/models/{MODEL}/versions/1/ready"]
)
async def test_model_ready(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"name": MODEL, "ready": True}


async def test_unknown_model_is_not_ready(client: httpx.AsyncClient) -> None:
    response = await client.get("/v2/models/no-such-model/ready")
    assert not response.is_success
    assert response.headers["content-type"] == "application/json"


# --- infer ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [INFER, f"/v2/models/{MODEL}/versions/1/infer"])
async def test_infer_binary_bytes_image_gives_json_outputs(
    client: httpx.AsyncClient, chelsea: bytes, path: str
) -> None:
    body, headers = binary_image_body(chelsea)
    response = await client.post(path, content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert "inference-header-content-length" not in response.headers
    doc = response.json()
    assert doc["model_name"] == MODEL
    assert doc["model_version"] == "1"
    outputs = outputs_by_name(doc)
    assert list(outputs) == ["label", "probability", "class_index"]
    assert outputs["label"]["shape"] == [1, 5]
    assert outputs["label"]["data"][0] == "Egyptian cat"
    assert outputs["class_index"]["data"][0] == CAT
    probabilities = outputs["probability"]["data"]
    assert probabilities == sorted(probabilities, reverse=True)
    assert 0 < sum(probabilities) <= 1 + 1e-6


async def test_infer_binary_outputs_parse_with_tritonclient(
    client: httpx.AsyncClient, chelsea: bytes
) -> None:
    body, headers = binary_image_body(chelsea, binary_data_output=True)
    response = await client.post(
        INFER, content=body, headers={**headers, "Accept-Encoding": "identity"}
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    header_length = int(response.headers["inference-header-content-length"])
    result = tritonclient.http.InferResult.from_response_body(
        response.content, verbose=False, header_length=header_length
    )
    assert result.get_response()["model_name"] == MODEL
    labels = result.as_numpy("label")
    assert labels.shape == (1, 5)
    assert labels[0, 0] == b"Egyptian cat"
    assert result.as_numpy("class_index")[0, 0] == CAT
    probability = result.as_numpy("probability")
    assert probability.dtype == np.float32
    assert probability.shape == (1, 5)


async def test_infer_json_fp32_tensor_of_the_model_input(
    client: httpx.AsyncClient, chelsea: bytes
) -> None:
    tensor = reference_preprocess(chelsea)
    doc = {
        "inputs": [
            {
                "name": "input",
                "datatype": "FP32",
                "shape": list(tensor.shape),
                "data": tensor.ravel().tolist(),
            }
        ]
    }
    response = await client.post(INFER, content=orjson.dumps(doc))
    assert response.status_code == 200, response.text
    outputs = outputs_by_name(response.json())
    assert outputs["class_index"]["data"][0] == CAT


async def test_infer_two_images_in_one_request(
    client: httpx.AsyncClient, chelsea: bytes, coffee: bytes
) -> None:
    body, headers = binary_image_body(chelsea, coffee)
    response = await client.post(INFER, content=body, headers=headers)
    assert response.status_code == 200, response.text
    index = outputs_by_name(response.json())["class_index"]
    assert index["shape"] == [2, 5]
    top1 = np.array(index["data"]).reshape(index["shape"])[:, 0]
    assert top1.tolist() == [CAT, ESPRESSO]


async def test_infer_returns_only_the_requested_output(
    client: httpx.AsyncClient, chelsea: bytes
) -> None:
    body, headers = binary_image_body(chelsea, outputs=[{"name": "probability"}])
    response = await client.post(INFER, content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert [o["name"] for o in response.json()["outputs"]] == ["probability"]


async def test_infer_logits_output_holds_every_score(
    client: httpx.AsyncClient, chelsea: bytes
) -> None:
    body, headers = binary_image_body(chelsea, outputs=[{"name": "logits"}])
    response = await client.post(INFER, content=body, headers=headers)
    assert response.status_code == 200, response.text
    (logits,) = response.json()["outputs"]
    assert logits["name"] == "logits"
    assert logits["datatype"] == "FP32"
    assert logits["shape"] == [1, 1000]
    assert int(np.argmax(logits["data"])) == CAT


async def test_infer_echoes_the_request_id(client: httpx.AsyncClient, chelsea: bytes) -> None:
    blob = struct.pack("<I", len(chelsea)) + chelsea
    header = orjson.dumps(
        {
            "id": "req-42",
            "inputs": [
                {
                    "name": "image",
                    "datatype": "BYTES",
                    "shape": [1],
                    "parameters": {"binary_data_size": len(blob)},
                }
            ],
        }
    )
    response = await client.post(
        INFER,
        content=header + blob,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert response.status_code == 200, response.text
    assert response.json()["id"] == "req-42"


async def test_infer_accepts_a_gzip_request_body(client: httpx.AsyncClient, chelsea: bytes) -> None:
    # The header length counts the uncompressed JSON; the whole body is compressed.
    body, headers = binary_image_body(chelsea)
    response = await client.post(
        INFER,
        content=gzip.compress(body),
        headers={**headers, "Content-Encoding": "gzip", "Accept-Encoding": "identity"},
    )
    assert response.status_code == 200, response.text
    assert "content-encoding" not in response.headers
    assert outputs_by_name(response.json())["class_index"]["data"][0] == CAT


async def test_infer_response_is_gzipped_when_the_client_accepts_it(
    client: httpx.AsyncClient, chelsea: bytes
) -> None:
    body, headers = binary_image_body(chelsea)
    request = client.build_request(
        "POST", INFER, content=body, headers={**headers, "Accept-Encoding": "gzip"}
    )
    response = await client.send(request, stream=True)
    try:
        raw = b"".join([chunk async for chunk in response.aiter_raw()])
    finally:
        await response.aclose()
    assert response.status_code == 200
    assert response.headers["content-encoding"] == "gzip"
    doc = orjson.loads(gzip.decompress(raw))
    assert outputs_by_name(doc)["class_index"]["data"][0] == CAT


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v2"),
        ("GET", "/v2/health/ready"),
        ("GET", f"/v2/models/{MODEL}"),
        ("GET", "/metrics"),
        ("GET", "/openapi.json"),
        ("POST", "/v2/repository/index"),
    ],
)
async def test_non_infer_responses_are_never_compressed(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    response = await client.request(method, path, headers={"Accept-Encoding": "gzip, deflate, br"})
    assert response.status_code == 200
    assert "content-encoding" not in response.headers


# --- predict (uploads) ----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/predict", f"/v2/models/{MODEL}/predict"])
async def test_predict_multipart_upload(
    client: httpx.AsyncClient, chelsea: bytes, path: str
) -> None:
    response = await client.post(path, files={"img": ("chelsea.jpg", chelsea, "image/jpeg")})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    doc = response.json()
    assert doc["model_name"] == MODEL
    (prediction,) = doc["predictions"]
    assert prediction["filename"] == "chelsea.jpg"
    assert len(prediction["top_k"]) == 5
    best = prediction["top_k"][0]
    assert best["label"] == "Egyptian cat"
    assert best["class_index"] == CAT
    assert 0 < best["probability"] <= 1


async def test_predict_raw_image_body(client: httpx.AsyncClient, chelsea: bytes) -> None:
    response = await client.post(
        "/predict", content=chelsea, headers={"Content-Type": "image/jpeg"}
    )
    assert response.status_code == 200, response.text
    (prediction,) = response.json()["predictions"]
    assert prediction["top_k"][0]["label"] == "Egyptian cat"


async def test_predict_two_files_answer_in_order(
    client: httpx.AsyncClient, chelsea: bytes, coffee: bytes
) -> None:
    files = [
        ("a", ("chelsea.jpg", chelsea, "image/jpeg")),
        ("b", ("coffee.jpg", coffee, "image/jpeg")),
    ]
    response = await client.post("/predict", files=files)
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert [p["filename"] for p in predictions] == ["chelsea.jpg", "coffee.jpg"]
    assert [p["top_k"][0]["class_index"] for p in predictions] == [CAT, ESPRESSO]


async def test_predict_top_k_query_parameter(client: httpx.AsyncClient, chelsea: bytes) -> None:
    response = await client.post(
        "/predict?top_k=2", files={"img": ("chelsea.jpg", chelsea, "image/jpeg")}
    )
    assert response.status_code == 200, response.text
    top_k = response.json()["predictions"][0]["top_k"]
    assert len(top_k) == 2
    assert top_k[0]["label"] == "Egyptian cat"
    assert top_k[0]["probability"] >= top_k[1]["probability"]


# --- repository extension -------------------------------------------------------------------


async def test_repository_index_lists_the_model_ready(client: httpx.AsyncClient) -> None:
    response = await client.post("/v2/repository/index")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    entries = [entry for entry in response.json() if entry["name"] == MODEL]
    assert entries == [{"name": MODEL, "state": "READY", "version": "1"}]


async def index_entry(client: httpx.AsyncClient, name: str) -> dict[str, Any] | None:
    response = await client.post("/v2/repository/index")
    assert response.status_code == 200
    entries = [entry for entry in response.json() if entry["name"] == name]
    assert len(entries) <= 1
    return entries[0] if entries else None


async def test_loading_an_unknown_model_is_404_and_leaves_it_unknown(
    client: httpx.AsyncClient,
) -> None:
    name = "never-in-the-repository"
    response = await client.post(f"/v2/repository/models/{name}/load")
    assert response.status_code == 404
    assert name in response.json()["error"]
    # A failed load of a name the repository does not hold must not make the name "known".
    assert await index_entry(client, name) is None
    assert (await client.get(f"/v2/models/{name}")).status_code == 404
    assert (await client.post(f"/v2/repository/models/{name}/unload")).status_code == 404


async def test_unload_makes_the_model_unavailable_and_load_brings_it_back(
    client: httpx.AsyncClient, chelsea: bytes
) -> None:
    body, headers = binary_image_body(chelsea)
    # The app is shared by the whole session: whatever happens, load the model back.
    try:
        response = await client.post(f"/v2/repository/models/{MODEL}/unload")
        assert response.status_code == 200, response.text

        entry = await index_entry(client, MODEL)
        assert entry is not None
        assert entry["state"] == "UNAVAILABLE"

        response = await client.post(INFER, content=body, headers=headers)
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/json"
        assert set(response.json()) == {"error"}
        assert MODEL in response.json()["error"]

        assert (await client.get(f"/v2/models/{MODEL}/ready")).status_code == 503
        assert (await client.get("/v2/health/ready")).status_code == 503
    finally:
        response = await client.post(f"/v2/repository/models/{MODEL}/load")
        assert response.status_code == 200, response.text

    assert await index_entry(client, MODEL) == {"name": MODEL, "state": "READY", "version": "1"}
    response = await client.post(INFER, content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert outputs_by_name(response.json())["class_index"]["data"][0] == CAT
    assert (await client.get("/v2/health/ready")).status_code == 200


# --- metrics and OpenAPI --------------------------------------------------------------------


async def test_metrics_count_requests_and_time_every_stage(
    client: httpx.AsyncClient, chelsea: bytes
) -> None:
    labels = {"model": MODEL, "version": "1"}

    def value(samples: dict[Any, float], name: str, **extra: str) -> float:
        return samples.get((name, frozenset({**labels, **extra}.items())), 0.0)

    before = metric_samples((await client.get("/metrics")).text)
    body, headers = binary_image_body(chelsea)
    for _ in range(3):
        response = await client.post(INFER, content=body, headers=headers)
        assert response.status_code == 200
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    after = metric_samples(response.text)

    success = "infership_requests_total"
    assert value(after, success, outcome="success") - value(before, success, outcome="success") == 3
    for histogram in (
        "infership_batch_size",
        "infership_queue_duration_seconds",
        "infership_inference_duration_seconds",
        "infership_preprocess_duration_seconds",
        "infership_postprocess_duration_seconds",
        "infership_request_duration_seconds",
    ):
        count = f"{histogram}_count"
        assert value(after, count) - value(before, count) >= 3, histogram
    for gauge in ("infership_queue_depth", "infership_inflight_requests"):
        assert (gauge, frozenset(labels.items())) in after, gauge
        assert value(after, gauge) == 0, gauge


async def test_openapi_document(client: httpx.AsyncClient) -> None:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    spec = response.json()
    assert spec["openapi"].startswith("3.1")
    assert spec["info"]["title"] == "infership"
    for path in ("/v2/models/{name}/infer", "/v2/health/ready", "/predict", "/metrics"):
        assert path in spec["paths"], path
    infer = spec["paths"]["/v2/models/{name}/infer"]["post"]
    assert "200" in infer["responses"]
    assert "requestBody" in infer
    validate(spec)  # the OpenAPI 3.1 meta-schema, via openapi-spec-validator


# --- errors outside the routes --------------------------------------------------------------


async def test_unknown_path_is_a_json_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/v2/no/such/thing")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"error": "Not Found"}


async def test_wrong_method_is_a_json_405(client: httpx.AsyncClient) -> None:
    response = await client.get(INFER)
    assert response.status_code == 405
    assert response.headers["content-type"] == "application/json"
    assert set(response.json()) == {"error"}
    assert "POST" in response.headers["allow"]


async def test_failed_reload_keeps_the_serving_version_and_reports_why(
    repository: Path,
) -> None:
    settings = ServerSettings(model_repository=repository, model_control=True)
    app = Application(settings)
    await app.start()
    try:
        (repository / "efficientnet-lite0" / "model.yaml").write_text("colour: red\n")
        transport = httpx.ASGITransport(app=app.rest)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            failed = await c.post("/v2/repository/models/efficientnet-lite0/load")
            assert failed.status_code == 400
            assert "colour" in failed.json()["error"]
            assert (await c.get("/v2/models/efficientnet-lite0/ready")).status_code == 200
            (entry,) = (await c.post("/v2/repository/index")).json()
            assert entry["state"] == "READY"
            assert entry["reason"].startswith("reload failed:")
    finally:
        await app.stop()


async def test_live_but_not_ready_until_models_are_loaded_and_warmed() -> None:
    app = Application(ServerSettings())
    transport = httpx.ASGITransport(app=app.rest)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        assert (await c.get("/v2/health/live")).json() == {"live": True}
        before = await c.get("/v2/health/ready")
        assert (before.status_code, before.json()) == (503, {"ready": False})
        await app.start()
        try:
            assert (await c.get("/v2/health/ready")).json() == {"ready": True}
        finally:
            await app.stop()
        assert (await c.get("/v2/health/ready")).status_code == 503  # draining


async def test_a_model_folder_added_after_start_does_not_make_the_server_unready(
    repository: Path,
) -> None:
    app = Application(ServerSettings(model_repository=repository))
    await app.start()
    try:
        shutil.copytree(repository / MODEL, repository / "another-model")
        transport = httpx.ASGITransport(app=app.rest)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            assert (await c.get("/v2/health/ready")).status_code == 200
    finally:
        await app.stop()


async def test_http_answers_are_counted_and_timed_by_route_template_and_status(
    client: httpx.AsyncClient,
) -> None:
    labels = frozenset(
        {"method": "POST", "route": "/v2/models/{name}/infer", "status": "404"}.items()
    )
    keys = [
        ("infership_http_requests_total", labels),
        ("infership_http_request_duration_seconds_count", labels),
        ("infership_http_request_duration_seconds_bucket", labels | {("le", "+Inf")}),
    ]
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1.0]}]}
    before = metric_samples((await client.get("/metrics")).text)
    assert (await client.post("/v2/models/no-such-model/infer", json=body)).status_code == 404
    after = metric_samples((await client.get("/metrics")).text)
    assert [after[k] for k in keys] == [before.get(k, 0.0) + 1 for k in keys]


@pytest.mark.parametrize("path", ["/predict", INFER])
async def test_a_full_model_refuses_before_reading_the_body(
    client: httpx.AsyncClient, example_app: Application, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    # Under overload most requests are refused: the refusal must not wait for (or parse) the
    # upload. The body below never ends, so reading it would hang the request.
    def full(*, unprepared: bool = False) -> None:
        raise QueueFull(f"model {MODEL!r} is full", retry_after_s=0.5)

    model = example_app.registry.get(MODEL, None)
    monkeypatch.setattr(model.scheduler, "check_capacity", full)
    never = asyncio.Event()

    async def endless_body() -> AsyncIterator[bytes]:
        yield b"--x\r\n"
        await never.wait()

    headers = {"content-type": "multipart/form-data; boundary=x"}
    response = await asyncio.wait_for(client.post(path, content=endless_body(), headers=headers), 5)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert "is full" in response.json()["error"]
