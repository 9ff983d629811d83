"""The OpenAPI 3.1 description of the REST API, served at ``/openapi.json``.

It describes what the server answers, not what the protocol allows: each operation lists the
status codes its route can give, and each body the shape the route really sends (a readiness
503 is ``{"ready": false}``, not an error). ``tests/protocols/test_openapi_matches_server.py``
holds the two to each other; schemathesis generates requests from it.
"""

from __future__ import annotations

from typing import Any

from infership import __version__
from infership.types import DATATYPES


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _answer(code: int) -> dict[str, str]:
    return {"$ref": f"#/components/responses/E{code}"}


_RETRY_AFTER = {
    "description": "Whole seconds after which a retry may succeed",
    "schema": {"type": "integer", "minimum": 1},
}
_ERROR_ANSWERS: dict[int, tuple[str, dict[str, Any]]] = {
    400: ("Bad input: the body, a tensor, an image or a parameter (or a malformed request)", {}),
    401: (
        "Missing or invalid API key (only when the server has keys)",
        {"WWW-Authenticate": {"schema": {"type": "string"}}},
    ),
    403: ("A switched-off API (--model-control), or a key without the scope", {}),
    404: ("Unknown model or version", {}),
    408: ("The request arrived too slowly", {}),
    413: ("Over a limit: body, tensor, pixels or images per request", {}),
    415: ("Not an image upload", {}),
    429: ("The key is over its rate", {"Retry-After": _RETRY_AFTER}),
    431: ("Request headers too large", {}),
    500: ("The model failed while computing; the server log says why", {}),
    503: (
        "Queue full, model not ready, or the server at its connection limit",
        {"Retry-After": _RETRY_AFTER},
    ),
    504: ("The request's deadline passed before it was computed; it was not computed", {}),
}
_RESPONSES = {
    f"E{code}": {**_json(_ref("Error"), description), **({"headers": h} if h else {})}
    for code, (description, h) in _ERROR_ANSWERS.items()
}

_CONNECTION = (400, 408, 431, 503)
"""What any request can get before it reaches a route: the HTTP layer's own answers."""
_AUTH = (401, 403, 429)
"""What any request needing a key can get (health and metrics only when protected)."""


def _op(
    summary: str,
    ok: dict[str, Any],
    errors: tuple[int, ...],
    method: str = "get",
    body: dict[str, Any] | None = None,
    public: bool = False,
    unavailable: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One operation. ``errors``: the route's own error codes, beside those any request can
    get; ``unavailable``: the body of the route's own 503 when it is not an error (readiness)."""
    codes = sorted({*errors, *_CONNECTION, *(() if public else _AUTH)})
    responses: dict[str, Any] = {"200": ok, **{str(c): _answer(c) for c in codes}}
    if unavailable is not None:
        responses["503"] = _status_or_error(unavailable)
    operation: dict[str, Any] = {"summary": summary, "responses": responses, **extra}
    if public:
        operation["security"] = []
    if body is not None:
        operation["requestBody"] = body
    return {method: operation}


def _status_or_error(schema: dict[str, Any]) -> dict[str, Any]:
    """A 503 that is either the route's own answer (``schema``) or the HTTP layer's error."""
    return _json(
        {"anyOf": [schema, _ref("Error")]},
        "Not ready (the route's answer), or the server at its connection limit (an error)",
    )


_NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
_VERSION = {"name": "version", "in": "path", "required": True, "schema": {"type": "string"}}


def _model_paths(suffix: str, op: dict[str, Any]) -> dict[str, Any]:
    def with_params(params: list[dict[str, Any]]) -> dict[str, Any]:
        return {m: {**o, "parameters": params + o.get("parameters", [])} for m, o in op.items()}

    return {
        f"/v2/models/{{name}}{suffix}": with_params([_NAME]),
        f"/v2/models/{{name}}/versions/{{version}}{suffix}": with_params([_NAME, _VERSION]),
    }


def _v1_paths(suffix: str, op: dict[str, Any]) -> dict[str, Any]:
    """The v1 protocol's model paths: latest version and ``/versions/{version}``."""

    def with_params(params: list[dict[str, Any]]) -> dict[str, Any]:
        return {m: {**o, "parameters": params} for m, o in op.items()}

    return {
        f"/v1/models/{{name}}{suffix}": with_params([_NAME]),
        f"/v1/models/{{name}}/versions/{{version}}{suffix}": with_params([_NAME, _VERSION]),
    }


_V1_PREDICT_BODY = {
    "required": True,
    "description": "TF Serving's predict request: rows (instances) or columns (inputs), values "
    'converted to the model\'s input datatypes; binary values as {"b64": "<base64>"}',
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/V1Predict"}}},
}
_ANY_JSON_BUT_NULL = {"type": ["array", "object", "string", "number", "boolean"]}

_INFER_HEADERS = [
    {
        "name": "Inference-Header-Content-Length",
        "in": "header",
        "description": "Length of the JSON header when binary tensor data follows it",
        "schema": {"type": "integer", "minimum": 0},
    },
    {
        "name": "Content-Encoding",
        "in": "header",
        "schema": {"type": "string", "enum": ["gzip", "x-gzip", "deflate", "identity"]},
    },
]
_INFER_BODY = {
    "required": True,
    "description": "JSON inference request, or JSON header + binary tensors "
    "(Inference-Header-Content-Length gives the JSON length). The Content-Type is not read.",
    "content": {
        "application/json": {"schema": _ref("InferenceRequest")},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    },
}
_INFER_OK = {
    "description": "OK: JSON, or a JSON header + binary outputs when any was asked for binary",
    "headers": {
        "Inference-Header-Content-Length": {
            "description": "Length of the JSON header (binary answers only)",
            "schema": {"type": "integer", "minimum": 0},
        },
        "Content-Encoding": {"schema": {"type": "string", "enum": ["gzip", "deflate"]}},
    },
    "content": {
        "application/json": {"schema": _ref("InferenceResponse")},
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
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    },
}
_TOP_K = {
    "name": "top_k",
    "in": "query",
    "description": "How many classes per image (at most the model's top_k)",
    "schema": {"type": "integer", "minimum": 1, "maximum": 99999},
}


def _repository_body(properties: dict[str, Any]) -> dict[str, Any]:
    """Triton's repository request bodies; an empty body means ``{}``."""
    schema = {"type": "object", "additionalProperties": False, "properties": properties}
    return {"required": False, "content": {"application/json": {"schema": schema}}}


_NO_PARAMETERS = {
    "type": "object",
    "maxProperties": 0,
    "description": "Triton's config and file overrides are refused (400): a model's files and "
    "model.yaml come from the repository",
}
_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "additionalProperties": {"type": ["string", "number", "boolean"]},
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
_TENSOR_IN = {
    "type": "object",
    "required": ["name", "datatype", "shape"],
    "description": "Values in data, or parameters.binary_data_size bytes after the JSON",
    "properties": {
        "name": {"type": "string"},
        "datatype": {"type": "string", "enum": sorted(DATATYPES)},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "parameters": _PARAMETERS,
        "data": {"type": "array"},
    },
}
_TENSOR_OUT = {
    **_TENSOR_META,
    "properties": {**_TENSOR_META["properties"], "parameters": _PARAMETERS, "data": {}},
}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "infership",
        "version": __version__,
        "description": "Open Inference Protocol (KServe v2) over REST, with the binary tensor "
        "extension, the TF Serving / KServe v1 protocol, image uploads and Prometheus metrics. "
        "Errors are "
        '{"error": "<what went wrong>"} with Content-Type application/json.',
    },
    "security": [{}, {"bearer": []}],
    "paths": {
        "/": _op(
            "JSON summary of the server (a web page for browsers when it is on)",
            {
                "description": "OK",
                "content": {"application/json": {"schema": _ref("Summary")}, "text/html": {}},
            },
            (),
            public=True,
        ),
        "/v2/health/live": _op(
            "Server liveness", _json(_ref("Live")), (), unavailable=_ref("Live")
        ),
        "/v2/health/ready": _op(
            "Server readiness: every model loaded and warmed",
            _json(_ref("Ready")),
            (),
            unavailable=_ref("Ready"),
        ),
        "/v2": _op("Server metadata", _json(_ref("ServerMetadata")), ()),
        **_model_paths("", _op("Model metadata", _json(_ref("ModelMetadata")), (404, 503))),
        **_model_paths(
            "/ready",
            _op(
                "Model readiness",
                _json(_ref("ModelReady")),
                (404,),
                unavailable=_ref("ModelReady"),
            ),
        ),
        **_model_paths(
            "/infer",
            _op(
                "Inference",
                _INFER_OK,
                (404, 413, 500, 504),
                "post",
                _INFER_BODY,
                parameters=_INFER_HEADERS,
            ),
        ),
        **_model_paths(
            "/predict",
            _op(
                "Classify uploaded images",
                _json(_ref("Predictions")),
                (404, 413, 415, 500, 504),
                "post",
                _UPLOAD_BODY,
                parameters=[_TOP_K],
            ),
        ),
        "/predict": _op(
            "Classify uploaded images with the only model",
            _json(_ref("Predictions")),
            (404, 413, 415, 500, 504),
            "post",
            _UPLOAD_BODY,
            parameters=[_TOP_K],
        ),
        "/v1/models": _op("Models served (KServe v1)", _json(_ref("V1Models")), ()),
        **_v1_paths(
            "",
            _op(
                "Model status (TF Serving), with KServe v1's name and ready",
                _json(_ref("V1ModelStatus")),
                (404,),
            ),
        ),
        **_v1_paths(
            "/metadata",
            _op(
                "Model metadata (TF Serving): the public signature as serving_default",
                _json(_ref("V1ModelMetadata")),
                (404, 503),
            ),
        ),
        **_v1_paths(
            ":predict",
            _op(
                "Inference, TF Serving / KServe v1 (instances or inputs)",
                _json(_ref("V1Prediction")),
                (404, 413, 415, 500, 504),
                "post",
                _V1_PREDICT_BODY,
            ),
        ),
        "/v2/repository/index": _op(
            "Models in the repository and their state",
            _json({"type": "array", "items": _ref("RepositoryEntry")}),
            (413,),
            "post",
            _repository_body({"ready": {"type": "boolean"}}),
        ),
        "/v2/repository/models/{name}/load": _op(
            "Load or reload a model (needs --model-control); the old version serves until the "
            "new one is ready, and keeps serving if it fails to load",
            _json(_ref("LoadAnswer")),
            (404, 413),
            "post",
            _repository_body({"parameters": _NO_PARAMETERS}),
            parameters=[_NAME],
        ),
        "/v2/repository/models/{name}/unload": _op(
            "Unload a model (needs --model-control)",
            _json(_ref("UnloadAnswer")),
            (404, 413),
            "post",
            _repository_body(
                {
                    "parameters": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {"unload_dependents": {"type": "boolean"}},
                    }
                }
            ),
            parameters=[_NAME],
        ),
        "/metrics": _op(
            "Prometheus metrics",
            {"description": "OK", "content": {"text/plain": {"schema": {"type": "string"}}}},
            (),
        ),
        "/openapi.json": _op("This document", _json({"type": "object"}), (), public=True),
    },
    "components": {
        "securitySchemes": {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "An API key, when the server has keys (Authorization: Bearer)",
            }
        },
        "responses": _RESPONSES,
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {"error": {"type": "string"}},
            },
            "Live": {
                "type": "object",
                "required": ["live"],
                "properties": {"live": {"type": "boolean"}},
            },
            "Ready": {
                "type": "object",
                "required": ["ready"],
                "properties": {"ready": {"type": "boolean"}},
            },
            "ModelReady": {
                "type": "object",
                "required": ["name", "ready"],
                "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"}},
            },
            "Summary": {
                "type": "object",
                "required": ["name", "models", "ready", "docs"],
                "properties": {
                    "name": {"type": "string"},
                    "status": {"const": "alive"},
                    "models": {"type": "array", "items": {"type": "string"}},
                    "ready": {"type": "boolean"},
                    "docs": {"type": "object", "additionalProperties": {"type": "string"}},
                },
            },
            "ServerMetadata": {
                "type": "object",
                "required": ["name", "version", "extensions"],
                "properties": {
                    "name": {"type": "string"},
                    "version": {"type": "string"},
                    "extensions": {"type": "array", "items": {"type": "string"}},
                },
            },
            "ModelMetadata": {
                "type": "object",
                "required": ["name", "versions", "platform", "inputs", "outputs"],
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
                    "parameters": _PARAMETERS,
                    "inputs": {"type": "array", "minItems": 1, "items": _TENSOR_IN},
                    "outputs": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["name"],
                            "properties": {
                                "name": {"type": "string"},
                                "parameters": _PARAMETERS,
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
                    "parameters": {"type": "object"},
                    "outputs": {"type": "array", "items": _TENSOR_OUT},
                },
            },
            "Predictions": {
                "type": "object",
                "required": ["model_name", "model_version", "predictions"],
                "properties": {
                    "model_name": {"type": "string"},
                    "model_version": {"type": "string"},
                    "predictions": {"type": "array", "items": _ref("Prediction")},
                },
            },
            "Prediction": {
                "type": "object",
                "required": ["filename", "top_k"],
                "properties": {
                    "filename": {"type": ["string", "null"]},
                    "top_k": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["label", "probability", "class_index"],
                            "properties": {
                                "label": {"type": "string"},
                                "probability": {"type": "number"},
                                "class_index": {"type": "integer"},
                            },
                        },
                    },
                },
            },
            "RepositoryEntry": {
                "type": "object",
                "required": ["name", "state"],
                "properties": {
                    "name": {"type": "string"},
                    "version": {"type": "string"},
                    "state": {"type": "string", "enum": ["LOADING", "READY", "UNAVAILABLE"]},
                    "reason": {"type": "string"},
                },
            },
            "V1Predict": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "signature_name": {"enum": ["serving_default", ""]},
                    "instances": {"type": "array", "minItems": 1},
                    "inputs": _ANY_JSON_BUT_NULL,
                },
                "oneOf": [{"required": ["instances"]}, {"required": ["inputs"]}],
            },
            "V1Prediction": {
                "type": "object",
                "description": "predictions for instances (a list, one element per row), "
                "outputs for inputs; one output unnamed, several keyed by output name",
                "oneOf": [
                    {"required": ["predictions"], "properties": {"predictions": {}}},
                    {"required": ["outputs"], "properties": {"outputs": {}}},
                ],
            },
            "V1Models": {
                "type": "object",
                "required": ["models"],
                "properties": {"models": {"type": "array", "items": {"type": "string"}}},
            },
            "V1ModelStatus": {
                "type": "object",
                "required": ["name", "ready", "model_version_status"],
                "properties": {
                    "name": {"type": "string"},
                    "ready": {"type": "boolean"},
                    "model_version_status": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["state", "status"],
                            "properties": {
                                "version": {"type": "string"},
                                "state": {"enum": ["AVAILABLE", "LOADING", "END"]},
                                "status": {
                                    "type": "object",
                                    "required": ["error_code", "error_message"],
                                    "properties": {
                                        "error_code": {"enum": ["OK", "UNKNOWN"]},
                                        "error_message": {"type": "string"},
                                    },
                                },
                            },
                        },
                    },
                },
            },
            "V1ModelMetadata": {
                "type": "object",
                "required": ["model_spec", "metadata"],
                "properties": {
                    "model_spec": {
                        "type": "object",
                        "required": ["name", "signature_name", "version"],
                        "properties": {
                            "name": {"type": "string"},
                            "signature_name": {"type": "string"},
                            "version": {"type": "string"},
                        },
                    },
                    "metadata": {
                        "type": "object",
                        "required": ["signature_def"],
                        "properties": {"signature_def": {"type": "object"}},
                    },
                },
            },
            "LoadAnswer": {
                "type": "object",
                "required": ["name", "load"],
                "properties": {"name": {"type": "string"}, "load": {"const": True}},
            },
            "UnloadAnswer": {
                "type": "object",
                "required": ["name", "unload"],
                "properties": {"name": {"type": "string"}, "unload": {"const": True}},
            },
        },
    },
}
