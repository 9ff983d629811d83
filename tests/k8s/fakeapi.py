"""A stand-in Kubernetes API server for the deploy tests: kmock's emulator, made closer to the
real apiserver where our client code depends on it.

kmock 0.8 stores objects and serves list / watch / get / create / patch / delete over HTTP on
127.0.0.1. What it lacks, and what this subclass adds (it uses kmock's private hooks, hence the
exact pin in pyproject.toml):

- server-side apply on a missing object creates it (kmock answers 404);
- ``metadata.uid``, ``resourceVersion``, ``generation`` (bumped when ``spec`` changes, JSON
  patches included) and ``creationTimestamp``;
- ``dryRun=All`` answers without storing anything;
- ``labelSelector`` (equality form, ``a=b,c=d``) and ``fieldSelector=metadata.name=X`` on lists
  and watches, so listing a Deployment's pods returns only its pods;
- the discovery endpoints the official client reads (``/version/``, ``/api/``, ``/apis/``), and
  list responses with ``kind``/``apiVersion``;
- paths of Namespace objects themselves (``/api/v1/namespaces[/NAME]``), which kmock reads as
  "namespace NAME, no resource";
- ``deny``: answer 403 to chosen (verb, plural) pairs, to test how refusals are reported.

No controllers run here: tests play the Deployment controller themselves (conftest.Controller).
"""

from __future__ import annotations

import copy
import datetime
import itertools
import re
import uuid
import warnings
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp.web
import attrs
import jsonpatch
import kmock
from kmock._internal import parsing

_resource_versions = itertools.count(1)
_NAMESPACE_PATH = re.compile(
    r"/api/v1/namespaces(?:/(?P<name>[^/]+)(?:/(?P<sub>status|finalize))?)?/?"
)
_kmock_parse_path = parsing.parse_path


def _parse_path(path: str) -> parsing.ParsedPath:
    """kmock's path parser, except that Namespace objects are a resource, not a scope."""
    match = _NAMESPACE_PATH.fullmatch(path)
    if match is None:
        return _kmock_parse_path(path)
    return parsing.ParsedPath("", "v1", "namespaces", None, match["name"], match["sub"])


# kmock's Request._parse looks the parser up on the module at each request.
parsing.parse_path = _parse_path


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _selector_matches(params: Mapping[str, str], obj: Mapping[str, Any]) -> bool:
    """Whether ``obj`` passes the request's equality label selector and name field selector."""
    metadata = obj.get("metadata") or {}
    labels = metadata.get("labels") or {}
    for term in filter(None, params.get("labelSelector", "").split(",")):
        key, _, value = term.partition("=")
        if labels.get(key.strip()) != value.lstrip("=").strip():
            return False
    for term in filter(None, params.get("fieldSelector", "").split(",")):
        key, _, value = term.partition("=")
        if key.strip() == "metadata.name" and metadata.get("name") != value.lstrip("=").strip():
            return False
    return True


@attrs.define(kw_only=True)
class FakeApiServer(kmock.KubernetesEmulator):
    """kmock's emulator with the apiserver behaviours listed in the module docstring."""

    deny: set[tuple[str, str]] = attrs.field(factory=set)
    without_groups: frozenset[str] = frozenset()
    """API groups to leave out of discovery, like a cluster without those CRDs."""
    kube_version: str = "1.33"
    """What ``/version`` answers, ``major.minor``."""
    without_versions: frozenset[str] = frozenset()
    """Group/versions (``policy/v1``) to leave out of discovery, like an older cluster."""
    extra_resources: Mapping[str, Any] = attrs.field(factory=dict)
    """``group/version/plural`` → kmock.ResourceInfo served besides the bundled ones."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        with warnings.catch_warnings():
            # kmock 0.8 reads its bundled discovery data with importlib.resources.read_binary,
            # deprecated since Python 3.11; that is kmock's business, not a failure of ours.
            warnings.simplefilter("ignore", DeprecationWarning)
            self.resources.load_bundled()
        for resource in list(self.resources):
            group_version = f"{resource.group}/{resource.version}".lstrip("/")
            if resource.group in self.without_groups or group_version in self.without_versions:
                del self.resources[resource]
        for key, info in self.extra_resources.items():
            self.resources[key] = info
        # The official client asks for "/version/" with a trailing slash; kmock serves "/version".
        major, minor = self.kube_version.split(".")
        self["get /version/"] << {
            "major": major,
            "minor": minor,
            "gitVersion": f"v{self.kube_version}.0-fake",
            "platform": "linux/amd64",
        }
        self["get /api/"] << {"kind": "APIVersions", "versions": ["v1"]}
        self["get /apis/"] << self._serve_apis

    async def _handle(self, request: Any) -> aiohttp.web.StreamResponse:
        if request.resource is not None and request.action is not None:
            verb = {"UPDATE": "patch", "FETCH": "get"}.get(str(request.action.value), "")
            verb = verb or str(request.action.value).lower()
            if (verb, request.resource.plural) in self.deny:
                return aiohttp.web.json_response(
                    {
                        "apiVersion": "v1",
                        "kind": "Status",
                        "status": "Failure",
                        "reason": "Forbidden",
                        "code": 403,
                        "message": f'{request.resource.plural} is forbidden: User "test" cannot '
                        f"{verb} resource {request.resource.plural!r}",
                    },
                    status=403,
                    content_type="application/json",
                )
            dry_run = request.params.get("dryRun") == "All"
            if dry_run and request.action in (kmock.action.CREATE, kmock.action.UPDATE):
                body = request.data if isinstance(request.data, dict) else {}
                return aiohttp.web.json_response(body, content_type="application/json")
            if request.action == kmock.action.CREATE and isinstance(request.data, dict):
                self._stamp_new(request.data, request.resource.plural)
            elif request.action == kmock.action.UPDATE and request.name:
                await self._prepare_update(request)
        response = await super()._handle(request)
        if isinstance(response, aiohttp.web.Response) and response.content_type == (
            "application/json"
        ):
            response.charset = None
        return response

    @staticmethod
    def _stamp_new(body: dict[str, Any], plural: str) -> None:
        meta = body.setdefault("metadata", {})
        meta.update(
            uid=str(uuid.uuid4()),
            generation=1,
            resourceVersion=str(next(_resource_versions)),
            creationTimestamp=_now(),
        )
        if plural == "deployments":
            body.setdefault("status", {})

    async def _prepare_update(self, request: Any) -> None:
        """Create on apply when missing; bump resourceVersion, and generation on spec changes."""
        key = (request.resource, request.namespace, request.name)
        is_apply = "apply-patch" in request.headers.get("Content-Type", "")
        async with self._lock:
            exists = key in self.objects and not self.objects[key].deleted
            if not exists and is_apply and isinstance(request.data, dict):
                # The real apiserver creates the object on apply; seed an empty one to patch.
                request.data.setdefault("metadata", {})["namespace"] = request.namespace
                self._stamp_new(request.data, request.resource.plural)
                self.objects[key] = (
                    {"status": {}} if request.resource.plural == "deployments" else {}
                )
                return
            if not exists:
                return
            old = copy.deepcopy(self.objects[key].raw)
        rv = str(next(_resource_versions))
        generation = int(old.get("metadata", {}).get("generation", 0))
        if isinstance(request.data, list):  # a JSON patch: append our own ops to it
            new = jsonpatch.apply_patch(old, request.data, in_place=False)
            request.data.append({"op": "replace", "path": "/metadata/resourceVersion", "value": rv})
            if request.subresource is None and new.get("spec") != old.get("spec"):
                request.data.append(
                    {"op": "replace", "path": "/metadata/generation", "value": generation + 1}
                )
        elif isinstance(request.data, dict):
            meta = request.data.setdefault("metadata", {})
            meta["resourceVersion"] = rv
            spec = request.data.get("spec")
            # kmock merges patches recursively; compare the spec it is about to store.
            if (
                request.subresource is None
                and spec is not None
                and _merge(old.get("spec", {}), spec) != old.get("spec", {})
            ):
                meta["generation"] = generation + 1

    async def _serve_list(self, request: Any) -> dict[str, Any]:
        payload = await super()._serve_list(request)
        payload["items"] = [o for o in payload["items"] if _selector_matches(request.params, o)]
        resource = request.resource
        info = self.resources.get(resource, None)
        kind = info.kind if info is not None and info.kind else resource.plural.capitalize()
        group_version = f"{resource.group}/{resource.version}" if resource.group else "v1"
        payload.update(
            apiVersion=group_version,
            kind=f"{kind}List",
            metadata={"resourceVersion": str(next(_resource_versions))},
        )
        return payload

    async def _serve_watch(self, request: Any) -> AsyncIterator[Any]:
        async for event in super()._serve_watch(request):
            if isinstance(event, dict) and not _selector_matches(
                request.params, event.get("object") or {}
            ):
                continue
            yield event

    async def _serve_version(self, request: Any) -> dict[str, Any]:
        payload = await super()._serve_version(request)
        if payload.get("groupVersion") == "/v1":  # kmock names the core group "/v1"
            payload["groupVersion"] = "v1"
        return payload

    async def _render_error(self, exc: Exception) -> aiohttp.web.StreamResponse:
        response = await super()._render_error(exc)
        response.charset = None
        return response


def _merge(base: Any, patch: Any) -> Any:
    """kmock's recursive dict merge (lists and scalars replace), returned as a new value."""
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for key, value in patch.items():
            merged[key] = _merge(base.get(key), value)
        return merged
    return copy.deepcopy(patch)
