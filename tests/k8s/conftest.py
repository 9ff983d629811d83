"""The fake API server on 127.0.0.1, a kubeconfig pointing at it, and a stand-in controller.

``fake_apiserver`` runs ``FakeApiServer`` (tests/k8s/fakeapi.py) on its own event loop in a
thread, since the official client is synchronous. ``Controller`` plays the Deployment
controller over HTTP, like the real one would: it turns each new Deployment template into a
ReplicaSet with the next ``deployment.kubernetes.io/revision`` (reusing the ReplicaSet whose
template matches, as a rollback does; a change of ``replicas`` alone keeps the revision),
creates its pods, writes the Deployment's status and, for images marked broken, leaves a pod in
ImagePullBackOff with a Warning event.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kmock
import pytest
import yaml
from kubernetes import client, config
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ConflictError

from k8s.fakeapi import FakeApiServer

NAMESPACE = "ml"

LIVE_MEASUREMENTS = pytest.StashKey[list[str]]()
"""Lines test_live_cluster.py measured, shown in the run's summary."""


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    lines = config.stash.get(LIVE_MEASUREMENTS, [])
    if lines:
        terminalreporter.section("live cluster")
        for line in lines:
            terminalreporter.write_line(line)


@dataclass
class FakeCluster:
    """The running fake: its emulator (requests recorded, objects stored), URL and kubeconfig."""

    server: FakeApiServer
    url: str
    kubeconfig: Path

    def api(self) -> client.ApiClient:
        return config.new_client_from_config(str(self.kubeconfig), persist_config=False)

    def stored(self, plural: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The object as stored, or None when absent or deleted."""
        for (resource, ns, n), obj in self.server.objects.items():
            if resource.plural == plural and ns == namespace and n == name and not obj.deleted:
                return dict(obj.raw)
        return None

    def requests(self, method: str) -> list[Any]:
        return [r for r in list(self.server) if str(r.method.value).upper() == method.upper()]

    def deployed_image(self, name: str, namespace: str = NAMESPACE) -> str:
        """The first container's image of the stored Deployment ``name``."""
        stored = self.stored("deployments", namespace, name)
        assert stored is not None, f"no Deployment {namespace}/{name}"
        return str(stored["spec"]["template"]["spec"]["containers"][0]["image"])


def write_kubeconfig(path: Path, url: str, *, namespace: str = NAMESPACE) -> Path:
    """A kubeconfig with context "fake" (current, namespace ``namespace``) at ``url`` and a
    context "elsewhere" whose server refuses connections (a closed port)."""
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "fake",
                "clusters": [
                    {"name": "fake", "cluster": {"server": url}},
                    {"name": "closed", "cluster": {"server": "http://127.0.0.1:9"}},
                ],
                "users": [{"name": "tester", "user": {"token": "not-checked"}}],
                "contexts": [
                    {
                        "name": "fake",
                        "context": {"cluster": "fake", "user": "tester", "namespace": namespace},
                    },
                    {
                        "name": "elsewhere",
                        "context": {"cluster": "closed", "user": "tester", "namespace": "team"},
                    },
                ],
            }
        )
    )
    return path


@pytest.fixture
def fake_apiserver(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FakeCluster]:
    """The fake on 127.0.0.1. ``@pytest.mark.parametrize("fake_apiserver", [{...}],
    indirect=True)`` passes keyword arguments to FakeApiServer (``without_groups``)."""
    options: dict[str, Any] = getattr(request, "param", {})
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def serve() -> None:
        box["stop"] = asyncio.Event()
        async with FakeApiServer(**options) as emulator, kmock.Server(emulator) as server:
            box["server"], box["url"] = emulator, str(server.url).rstrip("/")
            ready.set()
            await box["stop"].wait()

    def run() -> None:
        try:
            loop.run_until_complete(serve())
        except BaseException as exc:  # shown by the assertion below instead of lost in a thread
            box["error"] = exc
            ready.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(10), "the fake API server did not start"
    if "error" in box:
        loop.close()
        raise AssertionError("the fake API server failed to start") from box["error"]
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", box["url"])
    try:
        yield FakeCluster(box["server"], box["url"], kubeconfig)
    finally:
        loop.call_soon_threadsafe(box["stop"].set)
        thread.join(10)
        loop.close()


def _template_hash(template: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]


@dataclass
class Controller:
    """A Deployment controller for the tests, reconciling every ``interval_s`` in a thread.

    Images in ``broken_images`` never pull (ImagePullBackOff); in ``crashing_images`` they
    crash (CrashLoopBackOff); in ``unready_images`` they run but never pass their readiness
    probe. With ``deadline_s``, a rollout stuck that long gets the
    Progressing=False / ProgressDeadlineExceeded condition.
    """

    cluster: FakeCluster
    namespace: str = NAMESPACE
    broken_images: set[str] = field(default_factory=set)
    crashing_images: set[str] = field(default_factory=set)
    unready_images: set[str] = field(default_factory=set)
    deadline_s: float | None = None
    interval_s: float = 0.02
    _seen: dict[str, int] = field(default_factory=dict)
    _stuck_since: dict[str, float] = field(default_factory=dict)
    _error: BaseException | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        self.api = self.cluster.api()
        self.dyn = DynamicClient(self.api)
        self.apps = client.AppsV1Api(self.api)

    def _res(self, api_version: str, kind: str) -> Any:
        return self.dyn.resources.get(api_version=api_version, kind=kind)

    def start(self) -> Controller:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self.api.close()
        if self._error is not None:
            raise AssertionError("the test controller failed") from self._error

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except BaseException as exc:
                self._error = exc
                return
            self._stop.wait(self.interval_s)

    def step(self) -> None:
        """One reconcile pass over the namespace's Deployments."""
        deployments = self._res("apps/v1", "Deployment").get(namespace=self.namespace).to_dict()
        for deployment in deployments.get("items") or []:
            try:
                self._step_one(deployment)
            except Exception as exc:
                if getattr(exc, "status", None) != 404:
                    raise
                # Deleted while this pass worked on it (a canary removed after a quick
                # failure): a real controller drops it too.

    def _step_one(self, deployment: dict[str, Any]) -> None:
        name = deployment["metadata"]["name"]
        generation = int(deployment["metadata"].get("generation", 1))
        if self._seen.get(name) != generation:
            self._seen[name] = generation
            self._reconcile(deployment)
        elif (
            name in self._stuck_since
            and self.deadline_s is not None
            and time.monotonic() - self._stuck_since[name] >= self.deadline_s
        ):
            del self._stuck_since[name]
            self._set_status(
                name,
                {
                    "conditions": [
                        {
                            "type": "Progressing",
                            "status": "False",
                            "reason": "ProgressDeadlineExceeded",
                            "message": f'ReplicaSet "{name}" has timed out progressing.',
                        }
                    ]
                },
            )

    def replica_sets(self, name: str) -> list[dict[str, Any]]:
        items = self._res("apps/v1", "ReplicaSet").get(namespace=self.namespace).to_dict()
        return [
            rs
            for rs in items.get("items") or []
            if any(r.get("name") == name for r in rs["metadata"].get("ownerReferences") or [])
        ]

    def seed_revision(self, deployment: dict[str, Any], revision: int, image: str) -> None:
        """Record an earlier revision: a ReplicaSet scaled to 0 running ``image``."""
        template = json.loads(json.dumps(deployment["spec"]["template"]))
        for container in template["spec"]["containers"]:
            container["image"] = image
        self._write_replica_set(deployment, template, revision, replicas=0)

    def _write_replica_set(
        self, deployment: dict[str, Any], template: dict[str, Any], revision: int, replicas: int
    ) -> str:
        meta = deployment["metadata"]
        pod_hash = _template_hash(template)
        rs_template = json.loads(json.dumps(template))
        rs_template.setdefault("metadata", {}).setdefault("labels", {})["pod-template-hash"] = (
            pod_hash
        )
        rs_name = f"{meta['name']}-{pod_hash}"
        labels = dict(rs_template["metadata"]["labels"])
        body = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": rs_name,
                "namespace": self.namespace,
                "labels": labels,
                "annotations": {"deployment.kubernetes.io/revision": str(revision)},
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "Deployment",
                        "name": meta["name"],
                        "uid": meta["uid"],
                        "controller": True,
                    }
                ],
            },
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": labels},
                "template": rs_template,
            },
        }
        resource = self._res("apps/v1", "ReplicaSet")
        existing = [
            rs for rs in self.replica_sets(meta["name"]) if rs["metadata"]["name"] == rs_name
        ]
        if existing:
            resource.patch(
                body={"metadata": body["metadata"], "spec": body["spec"]},
                name=rs_name,
                namespace=self.namespace,
                content_type="application/merge-patch+json",
            )
        else:
            resource.create(body=body, namespace=self.namespace)
        return rs_name

    def _reconcile(self, deployment: dict[str, Any]) -> None:
        meta, spec = deployment["metadata"], deployment["spec"]
        name = meta["name"]
        template = spec["template"]
        replicas = int(spec.get("replicas", 1))
        pod_hash = _template_hash(template)
        others = [
            rs for rs in self.replica_sets(name) if not rs["metadata"]["name"].endswith(pod_hash)
        ]
        revisions = {
            rs["metadata"]["name"]: int(
                rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
            )
            for rs in self.replica_sets(name)
        }
        current = (meta.get("annotations") or {}).get("deployment.kubernetes.io/revision")
        if current is not None and revisions.get(f"{name}-{pod_hash}") == int(current):
            revision = int(current)  # the same template, scaled: no new revision
        else:
            revision = max(revisions.values(), default=0) + 1
        rs_name = self._write_replica_set(deployment, template, revision, replicas)
        self._res("apps/v1", "Deployment").patch(
            body={
                "metadata": {"annotations": {"deployment.kubernetes.io/revision": str(revision)}}
            },
            name=name,
            namespace=self.namespace,
            content_type="application/merge-patch+json",
        )
        images = {c["image"] for c in template["spec"]["containers"]}
        previous = deployment.get("status") or {}
        old_available = int(previous.get("availableReplicas", 0))
        failing = None
        if images & self.broken_images:
            failing = "ImagePullBackOff"
        elif images & self.crashing_images:
            failing = "CrashLoopBackOff"
        elif images & self.unready_images:
            failing = "Unready"
        if failing is None:
            for rs in others:
                self._delete_pods(rs["metadata"]["name"])
            self._delete_pods(rs_name)  # a rollback brings a ReplicaSet back: fresh pods
            for i in range(replicas):
                self._create_pod(rs_name, template, pod_hash, i, failing=None)
            self._stuck_since.pop(name, None)
            self._set_status(
                name,
                {
                    "observedGeneration": meta["generation"],
                    "replicas": replicas,
                    "updatedReplicas": replicas,
                    "readyReplicas": replicas,
                    "availableReplicas": replicas,
                    "unavailableReplicas": 0,
                    "conditions": [
                        {
                            "type": "Available",
                            "status": "True",
                            "reason": "MinimumReplicasAvailable",
                        },
                        {
                            "type": "Progressing",
                            "status": "True",
                            "reason": "NewReplicaSetAvailable",
                        },
                    ],
                },
            )
            return
        self._delete_pods(rs_name)
        pod = self._create_pod(rs_name, template, pod_hash, 0, failing=failing)
        self._event(pod, failing, images)
        self._stuck_since[name] = time.monotonic()
        self._set_status(
            name,
            {
                "observedGeneration": meta["generation"],
                "replicas": old_available + 1,
                "updatedReplicas": 1,
                "readyReplicas": old_available,
                "availableReplicas": old_available,
                "unavailableReplicas": 1,
                "conditions": [
                    {"type": "Available", "status": str(old_available > 0), "reason": "Seen"},
                    {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"},
                ],
            },
        )

    def _set_status(self, name: str, status: dict[str, Any]) -> None:
        self.apps.patch_namespaced_deployment_status(
            name,
            self.namespace,
            {"status": status},
            _content_type="application/merge-patch+json",
            _preload_content=False,
        ).release_conn()

    def _delete_pods(self, rs_name: str) -> None:
        pods = self._res("v1", "Pod").get(namespace=self.namespace).to_dict()
        for pod in pods.get("items") or []:
            if pod["metadata"]["name"].startswith(f"{rs_name}-"):
                self._res("v1", "Pod").delete(
                    name=pod["metadata"]["name"], namespace=self.namespace
                )

    def _create_pod(
        self,
        rs_name: str,
        template: dict[str, Any],
        pod_hash: str,
        index: int,
        failing: str | None,
    ) -> str:
        name = f"{rs_name}-{index}"
        labels = {**template["metadata"].get("labels", {}), "pod-template-hash": pod_hash}
        statuses = []
        for container in template["spec"]["containers"]:
            if failing == "ImagePullBackOff":
                state = {
                    "waiting": {
                        "reason": "ImagePullBackOff",
                        "message": f'Back-off pulling image "{container["image"]}"',
                    }
                }
                restarts, last = 0, {}
            elif failing == "CrashLoopBackOff":
                state = {
                    "waiting": {
                        "reason": "CrashLoopBackOff",
                        "message": "back-off 40s restarting failed container",
                    }
                }
                restarts, last = 3, {"terminated": {"exitCode": 2, "reason": "Error"}}
            else:  # running; ready only when nothing fails
                state = {"running": {"startedAt": "2026-01-01T00:00:00Z"}}
                restarts, last = 0, {}
            statuses.append(
                {
                    "name": container["name"],
                    "image": container["image"],
                    "ready": failing is None,
                    "restartCount": restarts,
                    "state": state,
                    "lastState": last,
                }
            )
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": self.namespace, "labels": labels},
            "spec": template["spec"],
            "status": {
                "phase": "Running" if failing is None else "Pending",
                "conditions": [
                    {"type": "PodScheduled", "status": "True"},
                    {"type": "Ready", "status": str(failing is None)},
                ],
                "containerStatuses": statuses,
            },
        }
        self._res("v1", "Pod").create(body=body, namespace=self.namespace)
        return name

    def _event(self, pod: str, failing: str, images: set[str]) -> None:
        reason, message = {
            "ImagePullBackOff": (
                "Failed",
                f"Failed to pull image {sorted(images)[0]!r}: not found",
            ),
            "CrashLoopBackOff": ("BackOff", "Back-off restarting failed container"),
            "Unready": (
                "Unhealthy",
                "Readiness probe failed: HTTP probe failed with statuscode: 503",
            ),
        }[failing]
        # Already recorded when the previous pass saw the same template (a scale).
        with contextlib.suppress(ConflictError):
            self._res("v1", "Event").create(
                body={
                    "apiVersion": "v1",
                    "kind": "Event",
                    "metadata": {"name": f"{pod}.event", "namespace": self.namespace},
                    "type": "Warning",
                    "reason": reason,
                    "message": message,
                    "involvedObject": {"kind": "Pod", "name": pod, "namespace": self.namespace},
                },
                namespace=self.namespace,
            )


@pytest.fixture
def controller(fake_apiserver: FakeCluster) -> Iterator[Controller]:
    """A running stand-in Deployment controller for namespace ``ml``."""
    running = Controller(fake_apiserver).start()
    try:
        yield running
    finally:
        running.stop()
