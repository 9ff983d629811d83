"""The v1 protocol (TF Serving / KServe v1) served in-process: requests written as TF Serving's
and KServe's documentation writes them, images as b64, every error in the v1 shape, and the
same limits, keys, batching and metrics as ``/infer``."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import shutil
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import yaml
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from infership.app import Application
from infership.auth import digest, new_key
from infership.errors import QueueFull
from infership.protocols.rest.openapi import OPENAPI
from infership.settings import ServerSettings

BENCH_MODELS = Path(__file__).parents[3] / "bench" / "models"
EXAMPLE = "efficientnet-lite0"
CAT, ESPRESSO = 285, 967
PREDICT = "/v1/models/{name}:predict"

# TF Serving's multi-input example (tag, signal, sensor), as a Python model. It answers how
# many rows its batch had, so the tests can see requests batched together.
MULTI = """
import time
import numpy as np
from infership.python import Tensor

class Model:
    inputs = [
        Tensor("tag", "BYTES", [-1]),
        Tensor("signal", "INT32", [-1, 5]),
        Tensor("sensor", "FP32", [-1, 2, 2]),
    ]
    outputs = [
        Tensor("echo", "BYTES", [-1]),
        Tensor("total", "FP64", [-1]),
        Tensor("batch", "INT64", [-1]),
    ]

    def __init__(self, folder, options):
        pass

    def predict(self, batch):
        time.sleep(0.02)  # long enough for concurrent requests to queue behind a batch
        rows = len(batch["tag"])
        total = batch["signal"].sum(axis=1) + batch["sensor"].reshape(rows, -1).sum(axis=1)
        return {
            "echo": batch["tag"],
            "total": total.astype(np.float64),
            "batch": np.full(rows, rows, dtype=np.int64),
        }
"""
RECIPROCAL = """
import numpy as np
from infership.python import Tensor

class Model:
    inputs = [Tensor("x", "FP32", [-1])]
    outputs = [Tensor("y", "FP32", [-1])]

    def __init__(self, folder, options):
        pass

    def predict(self, batch):
        with np.errstate(divide="ignore", invalid="ignore"):
            return {"y": (1 / batch["x"]).astype(np.float32)}
"""


def write_python_model(root: Path, name: str, code: str) -> None:
    (root / name / "1").mkdir(parents=True)
    (root / name / "1" / "model.py").write_text(textwrap.dedent(code))
    (root / name / "model.yaml").write_text(
        "runtime: python\npython: {execution: thread}\n"
        "batching: {max_batch_size: 8, max_queue_delay_ms: 0}\n"
    )


def repository(root: Path) -> Path:
    shutil.copytree(BENCH_MODELS / "add", root / "add")
    write_python_model(root, "multi", MULTI)
    write_python_model(root, "reciprocal", RECIPROCAL)
    return root


@pytest.fixture(scope="module")
async def app(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Application]:
    root = repository(tmp_path_factory.mktemp("v1") / "models")
    served = Application(
        ServerSettings(model_repository=root, http={"max_body_bytes": 16 * 1024 * 1024})
    )
    served.check()
    await served.start()
    yield served
    await served.stop()


@pytest.fixture
async def v1(app: Application) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app.rest)
    async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=60) as c:
        yield c


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def documented(response: httpx.Response, template: str) -> None:
    """The answer's status is listed for its route in the OpenAPI document, and its JSON body
    fits the schema listed there."""
    operation = OPENAPI["paths"][template][response.request.method.lower()]
    answer = operation["responses"][str(response.status_code)]
    if "$ref" in answer:
        answer = OPENAPI["components"]["responses"][answer["$ref"].rsplit("/", 1)[1]]
    schema = answer["content"]["application/json"]["schema"]
    jsonschema.validate(response.json(), {**schema, "components": OPENAPI["components"]})


def error(response: httpx.Response, status: int) -> str:
    """The v1 error shape: ``{"error": "..."}``, JSON, with ``status``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["error"]
    message: str = body["error"]
    return message


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


ROW = [float(i) for i in range(16)]
PLUS_ONE = [v + 1 for v in ROW]


# --- status, metadata and the model list ------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/models/add", "/v1/models/add/versions/1"])
async def test_model_status_is_tf_servings_answer(v1: httpx.AsyncClient, path: str) -> None:
    response = await v1.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "name": "add",
        "ready": True,
        "model_version_status": [
            {
                "version": "1",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ],
    }
    template = "/v1/models/{name}" + ("/versions/{version}" if "versions" in path else "")
    documented(response, template)


async def test_the_model_list_is_kserves(v1: httpx.AsyncClient) -> None:
    response = await v1.get("/v1/models")
    assert response.json() == {"models": ["add", "multi", "reciprocal"]}
    documented(response, "/v1/models")


async def test_model_metadata_is_the_public_signature_as_serving_default(
    v1: httpx.AsyncClient,
) -> None:
    response = await v1.get("/v1/models/multi/metadata")
    assert response.status_code == 200
    documented(response, "/v1/models/{name}/metadata")
    doc = response.json()
    assert doc["model_spec"] == {"name": "multi", "signature_name": "", "version": "1"}
    signature = doc["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert {name: info["dtype"] for name, info in signature["inputs"].items()} == {
        "tag": "DT_STRING",
        "signal": "DT_INT32",
        "sensor": "DT_FLOAT",
    }
    assert signature["inputs"]["sensor"]["tensor_shape"] == {
        "dim": [{"size": "-1"}, {"size": "2"}, {"size": "2"}]
    }
    assert list(signature["outputs"]) == ["echo", "total", "batch"]
    by_version = await v1.get("/v1/models/multi/versions/1/metadata")
    assert by_version.json() == doc


@pytest.mark.parametrize(
    ("path", "template"),
    [
        ("/v1/models/nope", "/v1/models/{name}"),
        ("/v1/models/add/versions/2", "/v1/models/{name}/versions/{version}"),
        ("/v1/models/add/versions/x", "/v1/models/{name}/versions/{version}"),
        ("/v1/models/nope/metadata", "/v1/models/{name}/metadata"),
        ("/v1/models/add/versions/7/metadata", "/v1/models/{name}/versions/{version}/metadata"),
    ],
)
async def test_unknown_models_and_versions_are_404(
    v1: httpx.AsyncClient, path: str, template: str
) -> None:
    error(await v1.get(path), 404)
    documented(await v1.get(path), template)


# --- predict: tensors, as TF Serving's documentation writes them ---------------------------------


async def test_rows_of_the_single_input_model(v1: httpx.AsyncClient) -> None:
    response = await v1.post("/v1/models/add:predict", json={"instances": [ROW, ROW[::-1]]})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"predictions": [PLUS_ONE, [v + 1 for v in ROW[::-1]]]}
    documented(response, PREDICT)


async def test_curl_d_as_tf_servings_example_sends_it(v1: httpx.AsyncClient) -> None:
    # curl -d '{"instances": [1.0,2.0,5.0]}' -X POST .../v1/models/reciprocal:predict
    body = b'{"instances": [1.0,2.0,5.0]}'
    headers = {"content-type": "application/x-www-form-urlencoded"}  # what curl -d says
    response = await v1.post("/v1/models/reciprocal:predict", content=body, headers=headers)
    assert response.json() == {"predictions": [1.0, 0.5, 0.2]}


@pytest.mark.parametrize(
    "body",
    [
        {"inputs": [ROW]},
        {"inputs": {"x": [ROW]}},
        {"instances": [{"x": ROW}]},
        {"signature_name": "serving_default", "instances": [ROW]},
    ],
)
async def test_the_single_input_named_or_not_in_rows_or_columns(
    v1: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    response = await v1.post("/v1/models/add/versions/1:predict", json=body)
    assert response.status_code == 200, response.text
    key = "outputs" if "inputs" in body else "predictions"
    assert response.json() == {key: [PLUS_ONE]}
    documented(response, "/v1/models/{name}/versions/{version}:predict")


TF_ROWS = {
    "instances": [
        {"tag": "foo", "signal": [1, 2, 3, 4, 5], "sensor": [[1, 2], [3, 4]]},
        {"tag": "bar", "signal": [3, 4, 1, 2, 5], "sensor": [[4, 5], [6, 8]]},
    ]
}
TF_COLUMNS = {
    "inputs": {
        "tag": ["foo", "bar"],
        "signal": [[1, 2, 3, 4, 5], [3, 4, 1, 2, 5]],
        "sensor": [[[1, 2], [3, 4]], [[4, 5], [6, 8]]],
    }
}


async def test_rows_of_several_inputs_answer_an_object_per_row(v1: httpx.AsyncClient) -> None:
    response = await v1.post("/v1/models/multi:predict", json=TF_ROWS)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "predictions": [
            {"echo": "foo", "total": 25.0, "batch": 2},
            {"echo": "bar", "total": 38.0, "batch": 2},
        ]
    }


async def test_columns_of_several_inputs_answer_an_object_of_tensors(
    v1: httpx.AsyncClient,
) -> None:
    response = await v1.post("/v1/models/multi:predict", json=TF_COLUMNS)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "outputs": {"echo": ["foo", "bar"], "total": [25.0, 38.0], "batch": [2, 2]}
    }
    documented(response, PREDICT)


async def test_binary_values_go_in_and_come_back_as_b64(v1: httpx.AsyncClient) -> None:
    blob = b"\xff\x00\xfe"
    row = {"tag": {"b64": b64(blob)}, "signal": [0] * 5, "sensor": [[0, 0], [0, 0]]}
    response = await v1.post("/v1/models/multi:predict", json={"instances": [row]})
    assert response.status_code == 200, response.text
    assert response.json()["predictions"][0]["echo"] == {"b64": b64(blob)}


async def test_non_finite_numbers_travel_as_tf_serving_writes_them(v1: httpx.AsyncClient) -> None:
    response = await v1.post(
        "/v1/models/reciprocal:predict", content=b'{"instances": [0, -0.0, NaN, Infinity, 4]}'
    )
    assert response.status_code == 200, response.text
    assert response.text == '{"predictions":[Infinity,-Infinity,NaN,0.0,0.25]}'
    values = json.loads(response.text)["predictions"]  # Python's json reads them
    assert values[0] == float("inf")


async def test_concurrent_v1_requests_are_batched_together(v1: httpx.AsyncClient) -> None:
    row = TF_ROWS["instances"][0]
    responses = await asyncio.gather(
        *(v1.post("/v1/models/multi:predict", json={"instances": [row]}) for _ in range(12))
    )
    assert all(r.status_code == 200 for r in responses)
    batches = [r.json()["predictions"][0]["batch"] for r in responses]
    assert max(batches) > 1, batches  # the scheduler put several requests in one batch
    assert all(r.json()["predictions"][0]["total"] == 25.0 for r in responses)


# --- predict: images, as TF Serving and KServe clients send them --------------------------------


async def test_a_b64_jpeg_is_classified_as_an_upload_is(
    client: httpx.AsyncClient, chelsea: bytes
) -> None:
    body = {"instances": [{"b64": b64(chelsea)}]}
    response = await client.post(f"/v1/models/{EXAMPLE}:predict", json=body)
    assert response.status_code == 200, response.text
    (prediction,) = response.json()["predictions"]
    assert list(prediction) == ["label", "probability", "class_index"]
    assert prediction["label"][0] == "Egyptian cat"
    assert prediction["class_index"][0] == CAT
    # The same numbers as the upload route, which feeds the same preprocessing.
    upload = await client.post("/predict", files={"img": ("chelsea.jpg", chelsea, "image/jpeg")})
    top = upload.json()["predictions"][0]["top_k"]
    assert prediction["class_index"] == [c["class_index"] for c in top]
    assert prediction["probability"] == pytest.approx([c["probability"] for c in top], abs=1e-6)


@pytest.mark.parametrize(
    "body",
    [
        lambda a, b: {"instances": [{"b64": a}, {"b64": b}]},
        lambda a, b: {"instances": [{"image": {"b64": a}}, {"image": {"b64": b}}]},  # KServe
        lambda a, b: {"inputs": [{"b64": a}, {"b64": b}]},
        lambda a, b: {"inputs": {"image": [{"b64": a}, {"b64": b}]}},
    ],
)
async def test_several_images_in_rows_or_columns(
    client: httpx.AsyncClient, chelsea: bytes, coffee: bytes, body: Any
) -> None:
    # Over 64 KiB of JSON: parsed in the decode thread (one image alone is parsed inline).
    response = await client.post(
        f"/v1/models/{EXAMPLE}/versions/1:predict", json=body(b64(chelsea), b64(coffee))
    )
    assert response.status_code == 200, response.text
    doc = response.json()
    if "predictions" in doc:
        indices = [row["class_index"][0] for row in doc["predictions"]]
    else:
        indices = [row[0] for row in doc["outputs"]["class_index"]]
    assert indices == [CAT, ESPRESSO]


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("1", (width, height)).save(out, "PNG", optimize=True)
    return out.getvalue()


@pytest.mark.parametrize(
    ("image", "status", "says"),
    [
        (b"", 400, "image 0"),
        (b"GIF89a not really", 400, "image 0"),
        (b"\xff\xd8\xff\xe0" + b"\x00" * 64, 400, "image 0"),
        (png(3000, 3000), 413, "pixels"),  # a 9-megapixel bomb in a few kilobytes
        (png(40_000, 1), 413, "side"),
    ],
)
async def test_b64_images_that_are_not_images_or_too_large_are_refused_as_uploads_are(
    client: httpx.AsyncClient, image: bytes, status: int, says: str
) -> None:
    response = await client.post(
        f"/v1/models/{EXAMPLE}:predict", json={"instances": [{"b64": b64(image)}]}
    )
    assert says in error(response, status)


async def test_more_images_than_a_request_may_hold_is_413(
    client: httpx.AsyncClient, chelsea: bytes
) -> None:
    tiny = b64(png(8, 8))
    response = await client.post(
        f"/v1/models/{EXAMPLE}:predict", json={"instances": [{"b64": tiny}] * 200}
    )
    error(response, 413)


async def test_the_raw_model_tensor_is_not_a_public_input(client: httpx.AsyncClient) -> None:
    response = await client.post(
        f"/v1/models/{EXAMPLE}:predict", json={"inputs": {"input": [[[[0.0]]]]}}
    )
    assert "no input 'input'; its inputs are ['image']" in error(response, 400)


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "status", "says"),
    [
        ("/v1/models/nope:predict", {"instances": [ROW]}, 404, "unknown model 'nope'"),
        ("/v1/models/add/versions/9:predict", {"instances": [ROW]}, 404, "no version '9'"),
        ("/v1/models/add:predict", b"{", 400, "not valid JSON"),
        ("/v1/models/add:predict", b"", 400, "empty request body"),
        ("/v1/models/add:predict", {"instances": [ROW], "inputs": [ROW]}, 400, "not both"),
        ("/v1/models/add:predict", {"examples": [ROW]}, 400, "unknown key(s) 'examples'"),
        ("/v1/models/add:predict", {"signature_name": "x", "inputs": [ROW]}, 400, "signature"),
        ("/v1/models/add:predict", {"instances": [ROW[:15]]}, 400, "expects [-1, 16]"),
        ("/v1/models/add:predict", {"instances": [ROW, ROW[:15]]}, 400, "ragged"),
        ("/v1/models/add:predict", {"instances": ROW}, 400, "expects [-1, 16]"),
        ("/v1/models/add:predict", {"instances": [ROW] * 9}, 413, "at most 8 rows"),
        ("/v1/models/add:predict", {"instances": [[True] * 16]}, 400, "JSON numbers"),
        ("/v1/models/add:predict", {"instances": [{"y": ROW}]}, 400, "no input 'y'"),
        ("/v1/models/multi:predict", {"inputs": {"tag": ["a"]}}, 400, "which is missing"),
        (
            "/v1/models/multi:predict",
            {"inputs": {**TF_COLUMNS["inputs"], "tag": ["foo"]}},
            400,
            "disagree on the batch size",
        ),
        (
            "/v1/models/multi:predict",
            {"inputs": {**TF_COLUMNS["inputs"], "signal": [[1, 2, 3, 4, 5.5]] * 2}},
            400,
            "INT32 data must be JSON integers",
        ),
        ("/v1/models/multi:predict", {"instances": [["foo"]]}, 400, "must name them"),
        ("/v1/models/add:classify", {"examples": []}, 400, "only ':predict'"),
        ("/v1/models/add/versions/1:regress", {"examples": []}, 400, "only ':predict'"),
        ("/v1/models/add:explain", {"instances": [ROW]}, 400, "only ':predict'"),
    ],
)
async def test_each_error_has_its_status_and_says_what_is_wrong(
    v1: httpx.AsyncClient, path: str, body: Any, status: int, says: str
) -> None:
    if isinstance(body, bytes):
        response = await v1.post(path, content=body)
    else:
        response = await v1.post(path, json=body)
    assert says in error(response, status)
    if path.endswith(":predict"):
        template = PREDICT if "versions" not in path else path.replace("add", "{name}")
        documented(response, template.replace("/9:", "/{version}:"))


async def test_a_body_over_the_size_limit_is_413(v1: httpx.AsyncClient) -> None:
    body = b'{"instances": [' + b"1.0," * (5 * 1024 * 1024) + b"1.0]}"
    assert "limit" in error(await v1.post("/v1/models/add:predict", content=body), 413)


async def test_a_body_with_more_json_values_than_the_limit_is_413(v1: httpx.AsyncClient) -> None:
    body = b'{"instances": [' + b"0," * (5 * 1024 * 1024) + b"0]}"  # 10 MB, under the body limit
    message = error(await v1.post("/v1/models/add:predict", content=body), 413)
    assert "values; the limit is" in message


async def test_a_compressed_body_is_415(v1: httpx.AsyncClient) -> None:
    response = await v1.post(
        "/v1/models/add:predict", content=b"\x1f\x8b", headers={"content-encoding": "gzip"}
    )
    assert "Content-Encoding 'gzip'" in error(response, 415)


async def test_hostile_bodies_never_get_a_500(v1: httpx.AsyncClient) -> None:
    hostile = [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"instances": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"instances": [' + b"NaN," * 1000 + b"}",
        b'{"inputs": {"x": ' + b'{"a":' * 3000 + b"1" + b"}" * 3000 + b"}}",
        b'{"instances": [[' + b"1e308," * 15 + b"1e309]]}",
        b'{"instances": [[' + b"9" * 5000 + b"]]}",
        b'{"instances": [{"b64": "' + b"A" * 100_001 + b'"}]}',
        b'{"instances": [' + b"[]," * 1000 + b"[]]}",
        b'{"inputs": {"x": [[]]}}',
        b'{"inputs": {"x": []}}',
        b'{"inputs": {"x": null}}',
        b'{"inputs": {"__proto__": 1}}',
        '{"instances": [["\u0000\ud800"]]}'.encode("utf-8", "surrogatepass"),
    ]
    for body in hostile:
        for model in ("add", "multi", "reciprocal"):
            response = await v1.post(f"/v1/models/{model}:predict", content=body)
            assert 400 <= response.status_code < 500, (body[:60], response.text)
            error(response, response.status_code)


# --- the same keys, limits, overload answers and metrics as /infer ---------------------------


async def test_keys_and_scopes_apply(tmp_path: Path) -> None:
    keys = {"user": new_key(), "scraper": new_key()}
    entries = [
        {"name": "user", "sha256": digest(keys["user"]), "scopes": ["infer"]},
        {"name": "scraper", "sha256": digest(keys["scraper"]), "scopes": ["metrics"]},
    ]
    keys_file = tmp_path / "keys.yaml"
    keys_file.write_text(yaml.safe_dump({"keys": entries}))
    root = tmp_path / "models"
    shutil.copytree(BENCH_MODELS / "add", root / "add")
    app = Application(ServerSettings(model_repository=root, auth={"keys_file": keys_file}))
    app.check()
    await app.start()
    try:
        transport = httpx.ASGITransport(app=app.rest)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            for method, path, body in [
                ("POST", "/v1/models/add:predict", {"instances": [ROW]}),
                ("GET", "/v1/models/add", None),
                ("GET", "/v1/models/add/metadata", None),
                ("GET", "/v1/models", None),
            ]:
                anonymous = await client.request(method, path, json=body)
                assert "API key" in error(anonymous, 401)
                assert anonymous.headers["www-authenticate"].startswith("Bearer")
                wrong = await client.request(
                    method, path, json=body, headers={"authorization": "Bearer nope"}
                )
                error(wrong, 401)
                scraper = {"authorization": f"Bearer {keys['scraper']}"}
                lacking = await client.request(method, path, json=body, headers=scraper)
                assert "lacks the 'infer' scope" in error(lacking, 403)
                user = {"authorization": f"Bearer {keys['user']}"}
                allowed = await client.request(method, path, json=body, headers=user)
                assert allowed.status_code == 200, allowed.text
    finally:
        await app.stop()


async def test_a_full_model_answers_503_with_retry_after_before_reading_the_body(
    v1: httpx.AsyncClient, app: Application, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(*, unprepared: bool = False) -> None:
        raise QueueFull("model 'add' is full", retry_after_s=1.5)

    monkeypatch.setattr(app.registry.get("add", None).scheduler, "check_capacity", full)
    never = asyncio.Event()

    async def endless_body() -> AsyncIterator[bytes]:
        yield b'{"instances": ['
        await never.wait()

    response = await asyncio.wait_for(v1.post("/v1/models/add:predict", content=endless_body()), 5)
    assert "is full" in error(response, 503)
    assert response.headers["retry-after"] == "2"
    documented(response, PREDICT)


async def test_v1_requests_are_counted_by_route_and_by_model(v1: httpx.AsyncClient) -> None:
    def value(name: str, **labels: str) -> float:
        return current.get((name, frozenset(labels.items())), 0.0)

    route = {"method": "POST", "route": "/v1/models/{name}:predict"}
    model = {"model": "add", "version": "1"}
    current = samples((await v1.get("/metrics")).text)
    before = {
        "ok": value("infership_http_requests_total", **route, status="200"),
        "bad": value("infership_http_requests_total", **route, status="400"),
        "success": value("infership_requests_total", **model, outcome="success"),
        "client_error": value("infership_requests_total", **model, outcome="client_error"),
    }
    for _ in range(3):
        assert (await v1.post("/v1/models/add:predict", json={"inputs": [ROW]})).status_code == 200
    bad = await v1.post("/v1/models/add:predict", json={"inputs": [ROW[:3]]})
    assert bad.status_code == 400
    current = samples((await v1.get("/metrics")).text)
    assert value("infership_http_requests_total", **route, status="200") == before["ok"] + 3
    assert value("infership_http_requests_total", **route, status="400") == before["bad"] + 1
    assert value("infership_requests_total", **model, outcome="success") == before["success"] + 3
    assert (
        value("infership_requests_total", **model, outcome="client_error")
        == before["client_error"] + 1
    )
