"""Waiting for a Deployment's rollout, explaining why it is stuck, and rolling it back.

``wait_for_rollout`` follows the rule ``kubectl rollout status`` uses: the controller has seen
the latest spec (``status.observedGeneration >= metadata.generation``), every desired replica
runs the new template (``updatedReplicas``), no old replica is left (``replicas``), and every
updated replica is available. A ``Progressing`` condition with reason
``ProgressDeadlineExceeded`` (the rendered Deployment sets ``progressDeadlineSeconds``) fails
at once, and so does a new revision whose every pod is backing off from an image it cannot pull
or from crashing again and again: the kubelet would only retry, slower each time. Otherwise the
wait ends at ``timeout_s``. While waiting it reads the Deployment's pods
and recent Warning events, so a failure says *why*: ImagePullBackOff, CrashLoopBackOff,
Unschedulable, ...

It is woken by the cluster's ``wait_for_change`` (a watch on the Deployment), so it reacts as
soon as the controller writes, and falls back to polling every ``poll_s`` when the watch cannot
be used; pods are re-read at that pace too, since their changes do not touch the Deployment.

Everything here talks to the cluster through ``cluster.Cluster`` only.

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

from infership.errors import DeployError, RolloutFailed
from infership.k8s.cluster import Cluster

REVISION = "deployment.kubernetes.io/revision"
# Waiting reasons that mean the container will not start without a change from someone.
_BAD_WAITING = {
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
}
# Of those, the states in which the kubelet has already failed and now only retries with a
# growing back-off (or never can): a new revision whose every pod is in one fails at once rather
# than at --timeout. A crash loop counts once the container has failed ``_CRASHES`` times, so an
# app that exits while a dependency comes up gets a few tries first.
_HOPELESS = {"ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull", "CrashLoopBackOff"}
_CRASHES = 3
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


def read_deployment(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    """The Deployment as a dict; DeployError when it does not exist."""
    found = cluster.get("Deployment", namespace, name)
    if found is None:
        raise DeployError(f"there is no Deployment {name} in namespace {namespace}")
    return found


def images(cluster: Cluster, namespace: str, name: str) -> str:
    """The images of the Deployment's pod template, comma-separated (for messages)."""
    template = read_deployment(cluster, namespace, name)["spec"]["template"]
    return ", ".join(str(c.get("image")) for c in template["spec"]["containers"])


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
    for container in _containers(pod):
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


def _containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    status = pod.get("status") or {}
    return (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or [])


def hopeless(pod: dict[str, Any]) -> bool:
    """Whether a pod will not start without someone changing something: a container that
    cannot pull its image and is backing off, or one that keeps crashing."""
    for container in _containers(pod):
        reason = ((container.get("state") or {}).get("waiting") or {}).get("reason")
        if reason == "CrashLoopBackOff":
            if int(container.get("restartCount", 0)) + 1 >= _CRASHES:
                return True
        elif reason in _HOPELESS:
            return True
    return False


def stuck_revision(cluster: Cluster, deployment: dict[str, Any]) -> list[str]:
    """The problems of the newest ReplicaSet's pods when it has some and every one of them is
    hopeless; otherwise none."""
    sets = _replica_sets(cluster, deployment)
    if not sets:
        return []
    newest = max(sets, key=lambda rs: _revision_number(rs) or 0)
    template_hash = (newest["metadata"].get("labels") or {}).get("pod-template-hash")
    if template_hash is None:
        return []
    pods = cluster.list_objects(
        "Pod",
        deployment["metadata"].get("namespace", ""),
        labels=f"{selector_string(deployment)},pod-template-hash={template_hash}".lstrip(","),
    )
    if not pods or not all(hopeless(pod) for pod in pods):
        return []
    return [problem for pod in pods for problem in pod_problems(pod)]


def failing_reasons(
    cluster: Cluster, deployment: dict[str, Any], since: float | None = None
) -> list[str]:
    """What the Deployment's pods and the namespace's Warning events about them say."""
    meta = deployment.get("metadata") or {}
    namespace = meta.get("namespace", "")
    items = cluster.list_objects("Pod", namespace, labels=selector_string(deployment))
    reasons: list[str] = []
    for pod in items:
        for problem in pod_problems(pod):
            if problem not in reasons:
                reasons.append(problem)
    involved = {meta.get("name")} | {p.get("metadata", {}).get("name") for p in items}
    involved |= {
        rs.get("metadata", {}).get("name", "") for rs in _replica_sets(cluster, deployment)
    }
    try:
        events = cluster.list_objects("Event", namespace, fields="type=Warning")
    except DeployError:
        events = []  # events only add detail; a user who may not read them still gets the rest
    for event in events:
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


def _revision_number(replica_set: dict[str, Any]) -> int | None:
    """A ReplicaSet's revision annotation as a number; None when missing or not a number (a
    hand-edited annotation must not stop a rollout)."""
    number = ((replica_set.get("metadata") or {}).get("annotations") or {}).get(REVISION)
    return int(number) if number is not None and str(number).isdigit() else None


def _replica_sets(cluster: Cluster, deployment: dict[str, Any]) -> list[dict[str, Any]]:
    """The Deployment's ReplicaSets: matched by its selector and owned by its uid."""
    meta = deployment.get("metadata") or {}
    listing = cluster.list_objects(
        "ReplicaSet", meta.get("namespace", ""), labels=selector_string(deployment)
    )
    uid = meta.get("uid")
    return [
        rs
        for rs in listing
        if any(
            ref.get("uid") == uid and ref.get("kind") == "Deployment"
            for ref in rs.get("metadata", {}).get("ownerReferences") or []
        )
    ]


def wait_for_rollout(
    cluster: Cluster,
    namespace: str,
    name: str,
    *,
    timeout_s: float,
    on_progress: Callable[[RolloutStatus], None] | None = None,
    poll_s: float = 2.0,
) -> RolloutStatus:
    """Block until the Deployment ``namespace/name`` is rolled out; return its last status.

    Raises RolloutFailed (with ``reasons``) on ``ProgressDeadlineExceeded``, as soon as every
    pod of the new revision is hopeless (an image it cannot pull, a crash loop), or when
    ``timeout_s`` passes, and DeployError when the Deployment does not exist.
    ``on_progress`` gets every status seen, for a live display.
    """
    started = time.monotonic()
    wall_started = time.time()
    while True:
        deployment = read_deployment(cluster, namespace, name)
        elapsed = time.monotonic() - started
        status = evaluate(deployment, elapsed)
        reasons: list[str] = []
        if not status.done and status.observed_generation >= status.generation:
            reasons = failing_reasons(cluster, deployment, since=wall_started)
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
        stuck = stuck_revision(cluster, deployment) if reasons else []
        if stuck:
            raise RolloutFailed(
                f"Deployment {namespace}/{name} cannot become ready: its new pods will not start "
                f"without a change ({stuck[0]})",
                [*stuck, *(reason for reason in reasons if reason not in stuck)],
            )
        if elapsed >= timeout_s:
            raise RolloutFailed(
                f"Deployment {namespace}/{name} was not ready after {timeout_s:g}s "
                f"({status.message})",
                [f"timeout after {timeout_s:g}s: {status.message}", *reasons],
            )
        rv = str(deployment.get("metadata", {}).get("resourceVersion", ""))
        cluster.wait_for_change("Deployment", namespace, name, rv, min(poll_s, timeout_s - elapsed))


def _with_reasons(status: RolloutStatus, reasons: list[str]) -> RolloutStatus:
    return dataclasses.replace(status, reasons=tuple(reasons))


@dataclass(frozen=True)
class Revision:
    """One ReplicaSet of a Deployment: its revision number, images and pod template."""

    number: int
    replica_set: str
    images: tuple[str, ...]
    template: dict[str, Any]


def revisions(cluster: Cluster, namespace: str, name: str) -> list[Revision]:
    """The Deployment's revisions, oldest first (what ``kubectl rollout history`` lists)."""
    deployment = read_deployment(cluster, namespace, name)
    found: list[Revision] = []
    for rs in _replica_sets(cluster, deployment):
        meta = rs.get("metadata") or {}
        number = _revision_number(rs)
        if number is None:
            continue
        template = (rs.get("spec") or {}).get("template") or {}
        containers = (template.get("spec") or {}).get("containers") or []
        found.append(
            Revision(
                number,
                meta.get("name", ""),
                tuple(str(c.get("image")) for c in containers),
                template,
            )
        )
    return sorted(found, key=lambda r: r.number)


def rollback(cluster: Cluster, namespace: str, name: str, *, to_revision: int | None = None) -> int:
    """Put back the pod template of the previous revision (or ``to_revision``); return its
    number. Does not wait: call ``wait_for_rollout`` after it.

    Raises DeployError when there is no earlier revision, or no such revision.
    """
    deployment = read_deployment(cluster, namespace, name)
    history = revisions(cluster, namespace, name)
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
    cluster.patch(
        "Deployment",
        namespace,
        name,
        [{"op": "replace", "path": "/spec/template", "value": template}],
    )
    return target.number


def describe(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    """What ``infership status`` shows, as JSON-ready data: the Deployment's revision, images,
    replica counts and conditions, its pods (phase, restarts, problems), the autoscaler, and
    the canary Deployment ``<name>-canary`` when one runs."""
    deployment = read_deployment(cluster, namespace, name)
    result = _summary(cluster, deployment)
    result["autoscaler"] = _autoscaler(cluster, namespace, name)
    canary = cluster.get("Deployment", namespace, f"{name}-canary")
    result["canary"] = None if canary is None else _summary(cluster, canary)
    return result


def _summary(cluster: Cluster, deployment: dict[str, Any]) -> dict[str, Any]:
    status = evaluate(deployment, 0.0)
    template = deployment.get("spec", {}).get("template") or {}
    containers = (template.get("spec") or {}).get("containers") or []
    pods = cluster.list_objects("Pod", status.namespace, labels=selector_string(deployment))
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
        "pods": [_pod_summary(p) for p in pods],
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


def _autoscaler(cluster: Cluster, namespace: str, name: str) -> dict[str, Any] | None:
    # At the version the cluster serves: autoscaling/v2, or v2beta2 before 1.23 (its status
    # has the same fields).
    hpa = cluster.get("HorizontalPodAutoscaler", namespace, name)
    if hpa is None:
        return None
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
