"""The OpenAPI document describes what the server answers: every status code a request gets is
listed for its operation, and every JSON body validates against the schema listed for it."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from infership.app import Application
from infership.protocols.rest.openapi import OPENAPI
from infership.settings import ServerSettings

BENCH_MODELS = Path(__file__).parents[2] / "bench" / "models"
ADD = {"name": "x", "datatype": "FP32", "shape": [1, 16], "data": [0.0] * 16}


def operation(method: str, template: str) -> dict[str, Any]:
    op: dict[str, Any] = OPENAPI["paths"][template][method.lower()]
    return op


def resolve(item: dict[str, Any]) -> dict[str, Any]:
    ref = item.get("$ref")
    if ref is None:
        return item
    node: Any = OPENAPI
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return resolve(node)


def schema_for(method: str, template: str, status: int, media: str) -> dict[str, Any] | None:
    responses = operation(method, template)["responses"]
    assert str(status) in responses, f"{method} {template}: {status} is not documented"
    content = resolve(responses[str(status)]).get("content", {})
    assert media in content, f"{method} {template} {status}: {media} is not documented"
    schema: dict[str, Any] | None = content[media].get("schema")
    return schema


def assert_documented(response: httpx.Response, template: str) -> None:
    """The response's status and media type are listed, and a JSON body fits its schema."""
    method = response.request.method
    media = response.headers["content-type"].split(";")[0].strip()
    schema = schema_for(method, template, response.status_code, media)
    if media == "application/json" and schema is not None:
        # $refs in the fragment resolve against the whole document's components.
        jsonschema.validate(response.json(), {**schema, "components": OPENAPI["components"]})


def request_fits(body: Any, method: str, template: str) -> bool:
    schema = operation(method, template)["requestBody"]["content"]["application/json"]["schema"]
    try:
        jsonschema.validate(body, {**schema, "components": OPENAPI["components"]})
    except jsonschema.ValidationError:
        return False
    return True


@pytest.fixture
async def add_client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The trivial model of bench/models, in-process, with model control."""
    repository = tmp_path / "models"
    shutil.copytree(BENCH_MODELS / "add", repository / "add")
    app = Application(ServerSettings(model_repository=repository, model_control=True))
    app.check()
    await app.start()
    transport = httpx.ASGITransport(app=app.rest)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client
    await app.stop()


async def test_a_not_ready_server_answers_the_documented_ready_false_not_an_error(
    add_client: httpx.AsyncClient,
) -> None:
    assert (await add_client.post("/v2/repository/models/add/unload")).status_code == 200
    response = await add_client.get("/v2/health/ready")
    assert response.status_code == 503
    assert response.json() == {"ready": False}
    assert_documented(response, "/v2/health/ready")
    # The document's 503 body is the readiness object; an {"error"} body is only the HTTP
    # layer's (connection limit), which the schema allows beside it.
    ready_503 = schema_for("GET", "/v2/health/ready", 503, "application/json")
    assert ready_503 is not None
    assert {"$ref": "#/components/schemas/Ready"} in ready_503["anyOf"]

    response = await add_client.get("/v2/models/add/ready")
    assert (response.status_code, response.json()) == (503, {"name": "add", "ready": False})
    assert_documented(response, "/v2/models/{name}/ready")


async def test_empty_inputs_are_refused_by_the_server_and_by_the_document(
    add_client: httpx.AsyncClient,
) -> None:
    response = await add_client.post("/v2/models/add/infer", json={"inputs": []})
    assert response.status_code == 400
    assert "non-empty" in response.json()["error"]
    assert_documented(response, "/v2/models/{name}/infer")
    request = OPENAPI["components"]["schemas"]["InferenceRequest"]
    assert request["properties"]["inputs"]["minItems"] == 1
    assert not request_fits({"inputs": []}, "POST", "/v2/models/{name}/infer")
    assert request_fits({"inputs": [ADD]}, "POST", "/v2/models/{name}/infer")


@pytest.mark.parametrize(
    ("method", "path", "template", "body", "status"),
    [
        ("GET", "/", "/", None, 200),
        ("GET", "/openapi.json", "/openapi.json", None, 200),
        ("GET", "/v2/health/live", "/v2/health/live", None, 200),
        ("GET", "/v2/health/ready", "/v2/health/ready", None, 200),
        ("GET", "/v2", "/v2", None, 200),
        ("GET", "/metrics", "/metrics", None, 200),
        ("GET", "/v2/models/add", "/v2/models/{name}", None, 200),
        ("GET", "/v2/models/nope", "/v2/models/{name}", None, 404),
        ("GET", "/v2/models/add/versions/9", "/v2/models/{name}/versions/{version}", None, 404),
        ("GET", "/v2/models/add/ready", "/v2/models/{name}/ready", None, 200),
        ("GET", "/v2/models/nope/ready", "/v2/models/{name}/ready", None, 404),
        ("POST", "/v2/models/add/infer", "/v2/models/{name}/infer", {"inputs": [ADD]}, 200),
        ("POST", "/v2/models/nope/infer", "/v2/models/{name}/infer", {"inputs": [ADD]}, 404),
        ("POST", "/v2/models/add/infer", "/v2/models/{name}/infer", {"inputs": 3}, 400),
        ("POST", "/predict", "/predict", None, 415),
        ("POST", "/v2/repository/index", "/v2/repository/index", {"ready": True}, 200),
        ("POST", "/v2/repository/index", "/v2/repository/index", {"ready": "yes"}, 400),
        ("POST", "/v2/repository/models/nope/load", "/v2/repository/models/{name}/load", {}, 404),
        (
            "POST",
            "/v2/repository/models/add/load",
            "/v2/repository/models/{name}/load",
            {"parameters": {"config": "{}"}},
            400,
        ),
        ("POST", "/v2/repository/models/add/load", "/v2/repository/models/{name}/load", {}, 200),
        (
            "POST",
            "/v2/repository/models/nope/unload",
            "/v2/repository/models/{name}/unload",
            {"parameters": {"unload_dependents": False}},
            404,
        ),
    ],
)
async def test_answers_are_documented_with_their_status_and_body(
    add_client: httpx.AsyncClient,
    method: str,
    path: str,
    template: str,
    body: Any,
    status: int,
) -> None:
    response = await add_client.request(method, path, json=body)
    assert response.status_code == status, response.text
    assert_documented(response, template)


async def test_a_switched_off_repository_api_answers_a_documented_403(tmp_path: Path) -> None:
    shutil.copytree(BENCH_MODELS / "add", tmp_path / "add")
    app = Application(ServerSettings(model_repository=tmp_path))
    app.check()
    await app.start()
    try:
        transport = httpx.ASGITransport(app=app.rest)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.post("/v2/repository/models/add/load")
    finally:
        await app.stop()
    assert response.status_code == 403
    assert_documented(response, "/v2/repository/models/{name}/load")


def test_the_document_refuses_what_the_load_endpoint_refuses() -> None:
    load = "/v2/repository/models/{name}/load"
    assert request_fits({}, "POST", load)
    assert request_fits({"parameters": {}}, "POST", load)
    assert not request_fits({"parameters": {"config": "{}"}}, "POST", load)
    assert not request_fits({"other": 1}, "POST", load)
    assert not request_fits([], "POST", load)
    unload = "/v2/repository/models/{name}/unload"
    assert request_fits({"parameters": {"unload_dependents": True}}, "POST", unload)
    assert not request_fits({"parameters": {"unload_dependents": "x"}}, "POST", unload)


def test_retry_after_is_documented_where_the_server_sends_it() -> None:
    for code in (429, 503):
        assert "Retry-After" in resolve({"$ref": f"#/components/responses/E{code}"})["headers"]
    infer = operation("POST", "/v2/models/{name}/infer")["responses"]
    assert resolve(infer["503"])["headers"]["Retry-After"]["schema"]["minimum"] == 1
