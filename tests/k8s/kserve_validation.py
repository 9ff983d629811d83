"""Validate KServe objects offline, as an API server with KServe installed would.

Two layers:

1. ``schema_errors(obj)``: the CRD's ``openAPIV3Schema`` (vendored in ``schemas/kserve/``, see its
   README) with what the API server adds to JSON Schema for structural schemas:

   - unknown fields are errors, as with ``kubectl apply`` (server-side field validation Strict),
     except under ``x-kubernetes-preserve-unknown-fields: true``;
   - ``x-kubernetes-int-or-string``: an integer or a string;
   - ``x-kubernetes-list-type: map``: no two items with the same ``x-kubernetes-list-map-keys``
     (two container ports 8080/TCP, two env vars of one name); ``set``: no duplicate items;
   - ``nullable``; the formats ``int32``, ``int64`` and ``date-time``;
   - ``metadata``: a DNS-1123 subdomain name and a namespace (the CRDs say only "object").

   The two CRDs have no ``x-kubernetes-validations`` (CEL) rules; ``check_no_cel`` makes sure a
   schema update that brings some fails loudly rather than passing unchecked.

2. ``kserve_errors(runtime, services)``: rules that KServe's Go types, webhook and controller
   apply and the schema does not say: protocol versions are ``v1``, ``v2``, ``grpc-v1`` or
   ``grpc-v2``; an InferenceService's name is DNS-1035; the runtime it names exists, supports
   its protocol version and its model format (KServe's ``IsProtocolVersionSupported`` and
   ``RuntimeSupportsModel``); the runtime has a ``kserve-container``; no ``PYTHONPATH``.
"""

from __future__ import annotations

import datetime
import functools
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema import Draft4Validator, FormatChecker
from jsonschema.exceptions import ValidationError

SCHEMAS = Path(__file__).parent / "schemas" / "kserve"
SCHEMA_FILES = {
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): "servingruntimes-v1alpha1.json",
    ("serving.kserve.io/v1beta1", "InferenceService"): "inferenceservices-v1beta1.json",
}
PROTOCOLS = {"v1", "v2", "grpc-v1", "grpc-v2"}
"""KServe's InferenceServiceProtocol values (pkg/constants); the CRDs type them as strings."""
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DNS_1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")


def _list_type(
    validator: Any, list_type: str, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    if not isinstance(instance, list):
        return
    seen: dict[str, int] = {}
    for index, item in enumerate(instance):
        if list_type == "map":
            keys = schema.get("x-kubernetes-list-map-keys", [])
            key = json.dumps([item.get(k, _default(schema, k)) for k in keys])
        elif list_type == "set":
            key = json.dumps(item, sort_keys=True)
        else:  # atomic: no rule on the items
            continue
        if key in seen:
            yield ValidationError(
                f"items {seen[key]} and {index} are duplicates ({list_type} list, key {key})"
            )
        seen[key] = index


def _default(schema: dict[str, Any], key: str) -> Any:
    # A list-map key may be left out when the item schema gives it a default (protocol: TCP).
    return schema.get("items", {}).get("properties", {}).get(key, {}).get("default")


_Validator = jsonschema.validators.extend(Draft4Validator, {"x-kubernetes-list-type": _list_type})

_FORMATS = FormatChecker([])


@_FORMATS.checks("int32")
def _int32(value: object) -> bool:
    return not isinstance(value, int) or -(2**31) <= value < 2**31


@_FORMATS.checks("int64")
def _int64(value: object) -> bool:
    return not isinstance(value, int) or -(2**63) <= value < 2**63


@_FORMATS.checks("date-time", raises=ValueError)
def _date_time(value: object) -> bool:
    if isinstance(value, str):
        datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return True


def structural(node: Any) -> Any:
    """``node`` with the API server's structural-schema rules spelt out in JSON Schema."""
    if isinstance(node, list):
        return [structural(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: structural(value) for key, value in node.items()}
    if out.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if out.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if out.get("x-kubernetes-embedded-resource"):
        for field in ("apiVersion", "kind"):
            out.setdefault("properties", {}).setdefault(field, {"type": "string"})
        out["properties"].setdefault("metadata", {"type": "object"})
    is_object = out.get("type") in ("object", ["object", "null"])
    if (
        is_object
        and "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def check_no_cel(node: Any, path: str = "") -> None:
    """Raise when the schema has CEL rules, which this module does not evaluate."""
    if isinstance(node, dict):
        assert "x-kubernetes-validations" not in node, f"CEL rules at {path}: evaluate them"
        for key, value in node.items():
            check_no_cel(value, f"{path}/{key}")
    elif isinstance(node, list):
        for item in node:
            check_no_cel(item, path)


@functools.cache
def validator(api_version: str, kind: str) -> Any:
    """The strict validator of one vendored CRD version."""
    schema = json.loads((SCHEMAS / SCHEMA_FILES[api_version, kind]).read_text())
    check_no_cel(schema)
    return _Validator(structural(schema), format_checker=_FORMATS)


def schema_errors(obj: dict[str, Any]) -> list[str]:
    """Every schema error of ``obj`` as ``path: message``; empty when the API server would
    accept it."""
    errors = [
        f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
        for e in validator(obj["apiVersion"], obj["kind"]).iter_errors(obj)
    ]
    meta = obj.get("metadata", {})
    if not _DNS_SUBDOMAIN.fullmatch(str(meta.get("name", ""))) or len(meta["name"]) > 253:
        errors.append(f"metadata/name: {meta.get('name')!r} is not a DNS-1123 subdomain")
    if not meta.get("namespace"):
        errors.append("metadata/namespace: missing (both kinds are namespaced)")
    return errors


def kserve_errors(runtime: dict[str, Any], services: list[dict[str, Any]]) -> list[str]:
    """What KServe itself would refuse, or fail to reconcile, in ``runtime`` and ``services``."""
    errors = []
    spec = runtime["spec"]
    versions = spec.get("protocolVersions", [])
    errors += [
        f"ServingRuntime: unknown protocol version {v!r}" for v in versions if v not in PROTOCOLS
    ]
    if "kserve-container" not in [c.get("name") for c in spec["containers"]]:
        errors.append("ServingRuntime: no kserve-container among its containers")
    for container in spec["containers"]:
        errors += [
            f"ServingRuntime: env {e['name']} is blocked"
            for e in container.get("env", [])
            if e["name"] == "PYTHONPATH"
        ]
    for isvc in services:
        name = isvc["metadata"]["name"]
        model = isvc["spec"]["predictor"]["model"]
        protocol = model.get("protocolVersion", "v1")
        if not _DNS_1035.fullmatch(name):
            errors.append(f"{name}: not a DNS-1035 name (KServe's webhook refuses it)")
        if protocol not in PROTOCOLS:
            errors.append(f"{name}: unknown protocol version {protocol!r}")
        if model.get("runtime") != runtime["metadata"]["name"]:
            errors.append(f"{name}: names runtime {model.get('runtime')!r}, not this one")
            continue
        # IsProtocolVersionSupported: an empty list supports every version.
        if versions and protocol not in versions:
            errors.append(f"{name}: the runtime does not support protocol {protocol}")
        # RuntimeSupportsModel with the runtime named: every listed format counts.
        wanted = model["modelFormat"]
        offered = {(f["name"], f.get("version")) for f in spec.get("supportedModelFormats", [])}
        offered |= {(n, None) for n, _ in offered}
        if (wanted["name"], wanted.get("version")) not in offered:
            errors.append(f"{name}: the runtime does not support model format {wanted}")
    return errors
