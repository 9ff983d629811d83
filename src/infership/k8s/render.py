"""Kubernetes objects as YAML text: one stream, or one file per object with stable names.

Keys keep the order the objects were built in (apiVersion, kind, metadata, then the spec, as
kubectl users read them), so the text is stable and diffs in review stay small.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# The monitoring package already renders YAML this way (built key order, no aliases, literal
# blocks for multi-line strings); one renderer keeps the two outputs alike.
from infership.monitoring.render import _yaml


def render_stream(objects: Sequence[dict[str, Any]]) -> str:
    """Every object in one YAML stream, ``---`` between documents, in the given order."""
    return _yaml(list(objects))


def render_document(obj: Any) -> str:
    """One document (an object, a kustomization or a patch)."""
    return _yaml([obj])


def file_name(obj: dict[str, Any], instance: str) -> str:
    """``<kind>[-<rest of the name>].yaml``: ``deployment.yaml`` for ``<instance>``,
    ``configmap-config.yaml`` for ``<instance>-config``; the same whatever the instance."""
    kind = str(obj["kind"]).lower()
    name = str(obj["metadata"]["name"])
    if kind == "namespace" or name == instance:
        return f"{kind}.yaml"
    rest = name.removeprefix(f"{instance}-")
    return f"{kind}-{rest}.yaml"
