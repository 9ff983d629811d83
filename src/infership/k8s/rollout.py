"""Waiting for a Deployment's rollout, explaining why it is stuck, and rolling it back.

``wait_for_rollout`` follows the rule ``kubectl rollout status`` uses: the controller has seen
the latest spec (``status.observedGeneration >= metadata.generation``), every desired replica
runs the new template (``updatedReplicas``), no old replica is left (``replicas``), and every
updated replica is available. A ``Progressing`` condition with reason
``ProgressDeadlineExceeded`` (the rendered Deployment sets ``progressDeadlineSeconds``) fails
at once; otherwise the wait ends at ``timeout_s``. While waiting it reads the Deployment's pods
and recent Warning events, so a failure says *why*: ImagePullBackOff, CrashLoopBackOff,
Unschedulable, ...

It is woken by a watch on the Deployment, so it reacts as soon as the controller writes, and
falls back to polling every ``poll_s`` when the watch cannot be used; pods are re-read at that
pace too, since their changes do not touch the Deployment.

``rollback`` does what ``kubectl rollout undo`` does: it finds the Deployment's ReplicaSets
(owned by its uid), takes the one with the previous ``deployment.kubernetes.io/revision`` (or
the one asked for), and writes that ReplicaSet's pod template back into the Deployment. The
controller then scales that ReplicaSet up again under a new revision number.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import urllib3.exceptions
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from infership.errors import DeployError, RolloutFailed
from infership.k8s.client import api_errors, read_json

REVISION = "deployment.kubernetes.io/revision"
# Waiting reasons that mean the container will not start without a change from someone.
_BAD_WAITING = {
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
}
_MAX_REASONS = 8


@dataclass(frozen=True)
class RolloutStatus:
    """One look at a rollout: the replica counts, whether it is done, and what is wrong."""

    namespace: str
    name: str
    desired: int
    updated: int
    ready: int
    available: int
    generation: int
    observed_generation: int
    elapsed_s: float
    done: bool
    message: str
    revision: str | None = None
    reasons: tuple[str, ...] = field(default=())

    def line(self) -> str:
        """One line for a live display: counts of desired, elapsed time, and the first reason."""
        text = (
            f"{self.name}: {self.updated}/{self.desired} updated, {self.ready} ready, "
            f"{self.available} available ({self.elapsed_s:.0f}s)"
        )
        return f"{text} - {self.reasons[0]}" if self.reasons else text


def _json(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return read_json(call(*args, _preload_content=False, **kwargs))


def read_deployment(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    """The Deployment as a dict; DeployError when it does not exist."""
    apps = client.AppsV1Api(api)
    with api_errors(api, "get", f"Deployment {namespace}/{name}"):
        try:
            result: dict[str, Any] = _json(apps.read_namespaced_deployment, name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                raise DeployError(
                    f"there is no Deployment {name} in namespace {namespace}"
                ) from exc
            raise
    return result


def selector_string(deployment: dict[str, Any]) -> str:
    """The Deployment's ``matchLabels`` as a label selector (``a=b,c=d``)."""
    labels = deployment.get("spec", {}).get("selector", {}).get("matchLabels") or {}
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def evaluate(deployment: dict[str, Any], elapsed_s: float) -> RolloutStatus:
    """Where the rollout stands, from the Deployment alone (no pod reasons yet)."""
    meta, spec, status = (deployment.get(k) or {} for k in ("metadata", "spec", "status"))
    desired = int(spec.get("replicas", 1))
    generation = int(meta.get("generation", 0))
    observed = int(status.get("observedGeneration", 0))
    updated = int(status.get("updatedReplicas", 0))
    total = int(status.get("replicas", 0))
    available = int(status.get("availableReplicas", 0))
    done = False
    if observed < generation:
        message = "waiting for the controller to see the new spec"
    elif updated < desired:
        message = f"{updated} of {desired} replicas updated"
    elif total > updated:
        message = f"{total - updated} old replicas pending termination"
    elif available < updated:
        message = f"{available} of {updated} updated replicas available"
    else:
        done, message = True, "rolled out"
    return RolloutStatus(
        namespace=meta.get("namespace", ""),
        name=meta.get("name", ""),
        desired=desired,
        updated=updated,
        ready=int(status.get("readyReplicas", 0)),
        available=available,
        generation=generation,
        observed_generation=observed,
        elapsed_s=elapsed_s,
        done=done,
        message=message,
        revision=(meta.get("annotations") or {}).get(REVISION),
    )


def deadline_exceeded(deployment: dict[str, Any]) -> str | None:
    """The Progressing condition's message when the progress deadline has passed."""
    meta, status = deployment.get("metadata") or {}, deployment.get("status") or {}
    if int(status.get("observedGeneration", 0)) < int(meta.get("generation", 0)):
        return None  # the condition still describes the previous spec
    for condition in status.get("conditions") or []:
        if (
            condition.get("type") == "Progressing"
            and condition.get("reason") == "ProgressDeadlineExceeded"
        ):
            return str(condition.get("message") or "ProgressDeadlineExceeded")
    return None


def pod_problems(pod: dict[str, Any]) -> list[str]:
    """Why one pod is not running: bad container waiting reasons and scheduling failures."""
    name = pod.get("metadata", {}).get("name", "?")
    status = pod.get("status") or {}
    problems: list[str] = []
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            reason = condition.get("reason") or "Unschedulable"
            problems.append(f"pod {name}: {reason}: {condition.get('message', '')}".rstrip(": "))
    statuses = (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or [])
    for container in statuses:
        waiting = (container.get("state") or {}).get("waiting") or {}
        reason = waiting.get("reason")
        if reason in _BAD_WAITING:
            detail = waiting.get("message") or ""
            restarts = int(container.get("restartCount", 0))
            if restarts:
                last = (container.get("lastState") or {}).get("terminated") or {}
                exit_info = f"exit code {last.get('exitCode')}" if last else "restarting"
                detail = f"{detail} ({restarts} restarts, {exit_info})".strip()
            text = f"pod {name} container {container.get('name')}: {reason}"
            problems.append(f"{text}: {detail}" if detail else text)
    return problems


def failing_reasons(
    api: client.ApiClient, deployment: dict[str, Any], since: float | None = None
) -> list[str]:
    """What the Deployment's pods and the namespace's Warning events about them say."""
    meta = deployment.get("metadata") or {}
    namespace = meta.get("namespace", "")
    selector = selector_string(deployment)
    core = client.CoreV1Api(api)
    with api_errors(api, "list", f"pods in namespace {namespace}"):
        pods = _json(core.list_namespaced_pod, namespace, label_selector=selector)
    items = pods.get("items") or []
    reasons: list[str] = []
    for pod in items:
        for problem in pod_problems(pod):
            if problem not in reasons:
                reasons.append(problem)
    involved = {meta.get("name")} | {p.get("metadata", {}).get("name") for p in items}
    involved |= set(_replica_set_names(api, deployment))
    try:
        with api_errors(api, "list", f"events in namespace {namespace}"):
            events = _json(core.list_namespaced_event, namespace, field_selector="type=Warning")
    except (DeployError, ApiException):
        events = {}  # events only add detail; a user who may not read them still gets the rest
    for event in events.get("items") or []:
        if event.get("type") != "Warning":
            continue
        subject = event.get("involvedObject") or {}
        if subject.get("name") not in involved:
            continue
        if since is not None and not _recent(event, since):
            continue
        text = f"{subject.get('kind')} {subject.get('name')}: {event.get('reason')}: "
        text += str(event.get("message", "")).strip()
        if text not in reasons:
            reasons.append(text)
    return reasons[:_MAX_REASONS]


def _recent(event: dict[str, Any], since: float) -> bool:
    stamp = event.get("lastTimestamp") or event.get("eventTime")
    if not stamp:
        return True
    try:
        when = time.mktime(time.strptime(str(stamp)[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
    except ValueError:
        return True
    # Clocks differ between us and the cluster; a minute of slack keeps fresh events.
    return when >= since - 60


def _replica_sets(api: client.ApiClient, deployment: dict[str, Any]) -> list[dict[str, Any]]:
    """The Deployment's ReplicaSets: matched by its selector and owned by its uid."""
    meta = deployment.get("metadata") or {}
    apps = client.AppsV1Api(api)
    namespace = meta.get("namespace", "")
    with api_errors(api, "list", f"ReplicaSets in namespace {namespace}"):
        listing = _json(
            apps.list_namespaced_replica_set,
            namespace,
            label_selector=selector_string(deployment),
        )
    uid = meta.get("uid")
    return [
        rs
        for rs in listing.get("items") or []
        if any(
            ref.get("uid") == uid and ref.get("kind") == "Deployment"
            for ref in rs.get("metadata", {}).get("ownerReferences") or []
        )
    ]


def _replica_set_names(api: client.ApiClient, deployment: dict[str, Any]) -> list[str]:
    return [rs.get("metadata", {}).get("name", "") for rs in _replica_sets(api, deployment)]


def _wait_for_change(
    api: client.ApiClient, namespace: str, name: str, resource_version: str, timeout_s: float
) -> None:
    """Return when the Deployment changes past ``resource_version``, or after ``timeout_s``."""
    started = time.monotonic()
    apps = client.AppsV1Api(api)
    response: Any = None
    try:
        response = apps.list_namespaced_deployment(
            namespace,
            field_selector=f"metadata.name={name}",
            watch=True,
            resource_version=resource_version or None,
            timeout_seconds=max(1, int(timeout_s)),
            _preload_content=False,
            _request_timeout=(5, max(timeout_s, 0.01)),
        )
        for line in iter_resp_lines(response):  # type: ignore[no-untyped-call]
            event = json.loads(line)
            obj = event.get("object") or {}
            meta = obj.get("metadata") or {}
            # Servers may replay the current state first; only a newer version is news.
            if meta.get("name") == name and meta.get("resourceVersion") != resource_version:
                return
    except (ApiException, urllib3.exceptions.HTTPError, ValueError, OSError):
        pass  # read timeout, or no watch here: fall through to polling
    finally:
        if response is not None:
            response.close()
            response.release_conn()
    # The watch ended early without news (or could not start): do not spin.
    left = timeout_s - (time.monotonic() - started)
    if left > 0:
        time.sleep(left)


def wait_for_rollout(
    api: client.ApiClient,
    namespace: str,
    name: str,
    *,
    timeout_s: float,
    on_progress: Callable[[RolloutStatus], None] | None = None,
    poll_s: float = 2.0,
) -> RolloutStatus:
    """Block until the Deployment ``namespace/name`` is rolled out; return its last status.

    Raises RolloutFailed (with ``reasons``) on ``ProgressDeadlineExceeded`` or when
    ``timeout_s`` passes, and DeployError when the Deployment does not exist.
    ``on_progress`` gets every status seen, for a live display.
    """
    started = time.monotonic()
    wall_started = time.time()
    while True:
        deployment = read_deployment(api, namespace, name)
        elapsed = time.monotonic() - started
        status = evaluate(deployment, elapsed)
        reasons: list[str] = []
        if not status.done and status.observed_generation >= status.generation:
            reasons = failing_reasons(api, deployment, since=wall_started)
        status = _with_reasons(status, reasons)
        if on_progress is not None:
            on_progress(status)
        if status.done:
            return status
        deadline = deadline_exceeded(deployment)
        if deadline is not None:
            raise RolloutFailed(
                f"Deployment {namespace}/{name} exceeded its progress deadline: {deadline}",
                [f"ProgressDeadlineExceeded: {deadline}", *reasons],
            )
        if elapsed >= timeout_s:
            raise RolloutFailed(
                f"Deployment {namespace}/{name} was not ready after {timeout_s:g}s "
                f"({status.message})",
                [f"timeout after {timeout_s:g}s: {status.message}", *reasons],
            )
        rv = str(deployment.get("metadata", {}).get("resourceVersion", ""))
        _wait_for_change(api, namespace, name, rv, min(poll_s, timeout_s - elapsed))


def _with_reasons(status: RolloutStatus, reasons: list[str]) -> RolloutStatus:
    return dataclasses.replace(status, reasons=tuple(reasons))


@dataclass(frozen=True)
class Revision:
    """One ReplicaSet of a Deployment: its revision number, images and pod template."""

    number: int
    replica_set: str
    images: tuple[str, ...]
    template: dict[str, Any]


def revisions(api: client.ApiClient, namespace: str, name: str) -> list[Revision]:
    """The Deployment's revisions, oldest first (what ``kubectl rollout history`` lists)."""
    deployment = read_deployment(api, namespace, name)
    found: list[Revision] = []
    for rs in _replica_sets(api, deployment):
        meta = rs.get("metadata") or {}
        number = (meta.get("annotations") or {}).get(REVISION)
        if number is None or not str(number).isdigit():
            continue
        template = (rs.get("spec") or {}).get("template") or {}
        containers = (template.get("spec") or {}).get("containers") or []
        found.append(
            Revision(
                int(number),
                meta.get("name", ""),
                tuple(str(c.get("image")) for c in containers),
                template,
            )
        )
    return sorted(found, key=lambda r: r.number)


def rollback(
    api: client.ApiClient, namespace: str, name: str, *, to_revision: int | None = None
) -> int:
    """Put back the pod template of the previous revision (or ``to_revision``); return its
    number. Does not wait: call ``wait_for_rollout`` after it.

    Raises DeployError when there is no earlier revision, or no such revision.
    """
    deployment = read_deployment(api, namespace, name)
    history = revisions(api, namespace, name)
    current = (deployment.get("metadata", {}).get("annotations") or {}).get(REVISION)
    current_number = int(current) if current and str(current).isdigit() else None
    if current_number is None and history:
        current_number = history[-1].number
    if to_revision is not None:
        target = next((r for r in history if r.number == to_revision), None)
        if target is None:
            known = ", ".join(str(r.number) for r in history) or "none"
            raise DeployError(
                f"Deployment {namespace}/{name} has no revision {to_revision} (it has: {known})"
            )
    else:
        earlier = [r for r in history if current_number is None or r.number < current_number]
        if not earlier:
            raise DeployError(
                f"Deployment {namespace}/{name} has no revision before "
                f"{current_number if current_number is not None else 'this one'} to roll back to"
            )
        target = earlier[-1]
    template = json.loads(json.dumps(target.template))
    labels = (template.get("metadata") or {}).get("labels") or {}
    # The controller adds this label to each ReplicaSet's copy; the Deployment's own template
    # never carries it, and keeping it would make a template that matches no ReplicaSet.
    labels.pop("pod-template-hash", None)
    patch = [{"op": "replace", "path": "/spec/template", "value": template}]
    apps = client.AppsV1Api(api)
    with api_errors(api, "patch", f"Deployment {namespace}/{name}"):
        _json(
            apps.patch_namespaced_deployment,
            name,
            namespace,
            patch,
            _content_type="application/json-patch+json",
        )
    return target.number


def describe(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    """What ``infership status`` shows, as JSON-ready data: the Deployment's revision, images,
    replica counts and conditions, its pods (phase, restarts, problems), the autoscaler, and
    the canary Deployment ``<name>-canary`` when one runs."""
    deployment = read_deployment(api, namespace, name)
    result = _summary(api, deployment)
    result["autoscaler"] = _autoscaler(api, namespace, name)
    try:
        canary = read_deployment(api, namespace, f"{name}-canary")
    except DeployError:
        result["canary"] = None
    else:
        result["canary"] = _summary(api, canary)
    return result


def _summary(api: client.ApiClient, deployment: dict[str, Any]) -> dict[str, Any]:
    status = evaluate(deployment, 0.0)
    template = deployment.get("spec", {}).get("template") or {}
    containers = (template.get("spec") or {}).get("containers") or []
    core = client.CoreV1Api(api)
    with api_errors(api, "list", f"pods in namespace {status.namespace}"):
        pods = _json(
            core.list_namespaced_pod, status.namespace, label_selector=selector_string(deployment)
        )
    return {
        "name": status.name,
        "namespace": status.namespace,
        "revision": status.revision,
        "images": [c.get("image") for c in containers],
        "replicas": {
            "desired": status.desired,
            "updated": status.updated,
            "ready": status.ready,
            "available": status.available,
        },
        "rolled_out": status.done,
        "message": status.message,
        "conditions": [
            {k: c.get(k) for k in ("type", "status", "reason", "message")}
            for c in (deployment.get("status") or {}).get("conditions") or []
        ],
        "pods": [_pod_summary(p) for p in pods.get("items") or []],
    }


def _pod_summary(pod: dict[str, Any]) -> dict[str, Any]:
    status = pod.get("status") or {}
    containers = status.get("containerStatuses") or []
    return {
        "name": pod.get("metadata", {}).get("name"),
        "phase": status.get("phase"),
        "ready": bool(containers) and all(c.get("ready") for c in containers),
        "restarts": sum(int(c.get("restartCount", 0)) for c in containers),
        "problems": pod_problems(pod),
    }


def _autoscaler(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any] | None:
    # At the version the cluster serves: autoscaling/v2, or v2beta2 before 1.23 (its status
    # has the same fields).
    from infership.k8s.apply import dynamic_client, resource_for
    from infership.k8s.discovery import discover

    kind = "HorizontalPodAutoscaler"
    target = discover(api)
    try:
        resource = resource_for(dynamic_client(api), target.api_version(kind), kind, target)
    except DeployError:
        return None
    with api_errors(api, "get", f"HorizontalPodAutoscaler {namespace}/{name}"):
        try:
            hpa: dict[str, Any] = resource.get(name=name, namespace=namespace).to_dict()
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
    spec, status = hpa.get("spec") or {}, hpa.get("status") or {}
    return {
        "min": spec.get("minReplicas", 1),
        "max": spec.get("maxReplicas"),
        "current": status.get("currentReplicas", 0),
        "desired": status.get("desiredReplicas", 0),
        "metrics": [_metric_text(m) for m in status.get("currentMetrics") or []],
    }


def _metric_text(metric: dict[str, Any]) -> str:
    """``cpu 45%`` or ``infership_inflight_requests 3`` from an HPA's current metric."""
    kind = metric.get("type", "")
    body = metric.get(kind[:1].lower() + kind[1:]) or {}
    name = body.get("name") or (body.get("metric") or {}).get("name") or kind
    current = body.get("current") or {}
    if "averageUtilization" in current:
        return f"{name} {current['averageUtilization']}%"
    value = current.get("averageValue", current.get("value", "?"))
    return f"{name} {value}"
