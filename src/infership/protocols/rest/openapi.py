"""The OpenAPI 3.1 description of the REST API, served at ``/openapi.json``."""

from __future__ import annotations

from typing import Any

from infership import __version__


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERROR = _json(_ref("Error"), "Error: the message says what went wrong")
_ERRORS = {str(code): _ERROR for code in (400, 404, 413, 415, 503, 504)}
_NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
_VERSION = {"name": "version", "in": "path", "required": True, "schema": {"type": "string"}}


def _op(
    summary: str, ok: dict[str, Any], method: str = "get", body: Any = None, **extra: Any
) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": summary, "responses": {"200": ok, **_ERRORS}, **extra}
    if body is not None:
        operation["requestBody"] = body
    return {method: operation}


def _model_paths(suffix: str, op: dict[str, Any]) -> dict[str, Any]:
    def with_params(params: list[dict[str, Any]]) -> dict[str, Any]:
        return {m: {**o, "parameters": params} for m, o in op.items()}

    return {
        f"/v2/models/{{name}}{suffix}": with_params([_NAME]),
        f"/v2/models/{{name}}/versions/{{version}}{suffix}": with_params([_NAME, _VERSION]),
    }


_INFER_BODY = {
    "required": True,
    "description": "JSON inference request, or JSON header + binary tensors "
    "(Inference-Header-Content-Length gives the JSON length)",
    "content": {
        "application/json": {"schema": _ref("InferenceRequest")},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    },
}
_UPLOAD_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "additionalProperties": {"type": "string", "format": "binary"},
            }
        },
        "image/*": {"schema": {"type": "string", "format": "binary"}},
    },
}
_TENSOR_META: dict[str, Any] = {
    "type": "object",
    "required": ["name", "datatype", "shape"],
    "properties": {
        "name": {"type": "string"},
        "datatype": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer"}},
    },
}
_TENSOR = {
    **_TENSOR_META,
    "properties": {
        **_TENSOR_META["properties"],
        "parameters": {"type": "object"},
        "data": {"type": "array"},
    },
}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "infership",
        "version": __version__,
        "description": "Open Inference Protocol (KServe v2) over REST, with the binary tensor "
        "extension, plus image uploads and Prometheus metrics.",
    },
    "paths": {
        "/v2/health/live": _op(
            "Server liveness",
            _json({"type": "object", "properties": {"live": {"type": "boolean"}}}),
        ),
        "/v2/health/ready": _op(
            "Server readiness: every model loaded and warmed",
            _json({"type": "object", "properties": {"ready": {"type": "boolean"}}}),
        ),
        "/v2": _op("Server metadata", _json(_ref("ServerMetadata"))),
        **_model_paths("", _op("Model metadata", _json(_ref("ModelMetadata")))),
        **_model_paths("/ready", _op("Model readiness", _json({"type": "object"}))),
        **_model_paths(
            "/infer", _op("Inference", _json(_ref("InferenceResponse")), "post", _INFER_BODY)
        ),
        **_model_paths(
            "/predict",
            _op("Classify uploaded images", _json(_ref("Predictions")), "post", _UPLOAD_BODY),
        ),
        "/predict": _op(
            "Classify uploaded images with the only model",
            _json(_ref("Predictions")),
            "post",
            _UPLOAD_BODY,
        ),
        "/v2/repository/index": _op(
            "Models in the repository and their state",
            _json({"type": "array", "items": _ref("RepositoryEntry")}),
            "post",
        ),
        "/v2/repository/models/{name}/load": _op(
            "Load or reload a model (needs --model-control)",
            _json({"type": "object"}),
            "post",
            parameters=[_NAME],
        ),
        "/v2/repository/models/{name}/unload": _op(
            "Unload a model (needs --model-control)",
            _json({"type": "object"}),
            "post",
            parameters=[_NAME],
        ),
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {"200": {"description": "OK", "content": {"text/plain": {}}}},
            }
        },
    },
    "components": {
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {"error": {"type": "string"}},
            },
            "ServerMetadata": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "version": {"type": "string"},
                    "extensions": {"type": "array", "items": {"type": "string"}},
                },
            },
            "ModelMetadata": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "versions": {"type": "array", "items": {"type": "string"}},
                    "platform": {"type": "string"},
                    "inputs": {"type": "array", "items": _TENSOR_META},
                    "outputs": {"type": "array", "items": _TENSOR_META},
                },
            },
            "InferenceRequest": {
                "type": "object",
                "required": ["inputs"],
                "properties": {
                    "id": {"type": "string"},
                    "parameters": {"type": "object"},
                    "inputs": {"type": "array", "items": _TENSOR},
                    "outputs": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "name": {"type": "string"},
                                "parameters": {"type": "object"},
                            },
                        },
                    },
                },
            },
            "InferenceResponse": {
                "type": "object",
                "required": ["model_name", "outputs"],
                "properties": {
                    "model_name": {"type": "string"},
                    "model_version": {"type": "string"},
                    "id": {"type": "string"},
                    "outputs": {"type": "array", "items": _TENSOR},
                },
            },
            "Predictions": {
                "type": "object",
                "properties": {"model_name": {"type": "string"}, "predictions": {"type": "array"}},
            },
            "RepositoryEntry": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "version": {"type": "string"},
                    "state": {"type": "string"},
                    "reason": {"type": "string"},
                },
            },
        }
    },
}
