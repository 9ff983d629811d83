"""Waiting for rollouts and rolling back, against the fake API server and the test controller."""

from __future__ import annotations

import time
from typing import Any

import pytest

from infership.errors import DeployError, RolloutFailed
from infership.k8s.apply import apply_objects
from infership.k8s.kube import KubeCluster
from infership.k8s.rollout import (
    RolloutStatus,
    evaluate,
    hopeless,
    pod_problems,
    revisions,
    rollback,
    wait_for_rollout,
)
from k8s.conftest import NAMESPACE, Controller, FakeCluster
from k8s.test_apply import deployment, namespace

V1, V2, V3 = (f"registry.example/clf:{n}" for n in (1, 2, 3))
FAST = {"poll_s": 0.05}


def deploy(cluster: FakeCluster, image: str, *, timeout_s: float = 5.0) -> RolloutStatus:
    with cluster.api() as api:
        apply_objects(api, [namespace(), deployment(image)])
        return wait_for_rollout(KubeCluster(api), NAMESPACE, "clf", timeout_s=timeout_s, **FAST)


def test_wait_returns_once_every_replica_is_updated_and_available(
    fake_apiserver: FakeCluster, controller: Controller
) -> None:
    seen: list[RolloutStatus] = []
    with fake_apiserver.api() as api:
        apply_objects(api, [namespace(), deployment(V1)])
        status = wait_for_rollout(
            KubeCluster(api), NAMESPACE, "clf", timeout_s=5, on_progress=seen.append, **FAST
        )

    assert status.done
    assert (status.desired, status.updated, status.ready, status.available) == (2, 2, 2, 2)
    assert status.revision == "1"
    assert seen[-1] == status
    assert "2/2 updated, 2 ready, 2 available" in status.line()


def test_wait_is_woken_by_the_watch_not_the_poll_interval(
    fake_apiserver: FakeCluster, controller: Controller
) -> None:
    with fake_apiserver.api() as api:
        apply_objects(api, [namespace(), deployment(V1)])
        started = time.monotonic()
        status = wait_for_rollout(KubeCluster(api), NAMESPACE, "clf", timeout_s=20, poll_s=10)

    assert status.done
    assert time.monotonic() - started < 5  # a poll alone would have taken 10 s
    watches = [r for r in fake_apiserver.requests("GET") if r.params.get("watch") == "true"]
    assert watches
    assert watches[0].params["fieldSelector"] == "metadata.name=clf"


def test_a_rollout_that_never_becomes_ready_fails_at_the_timeout_with_the_pods_reasons(
    fake_apiserver: FakeCluster, controller: Controller
) -> None:
    controller.unready_images.add(V2)
    deploy(fake_apiserver, V1)

    with pytest.raises(RolloutFailed) as caught:
        deploy(fake_apiserver, V2, timeout_s=1.5)

    reasons = "\n".join(caught.value.reasons)
    assert "was not ready after 1.5s" in str(caught.value)
    assert "timeout after 1.5s" in caught.value.reasons[0]
    assert "Unhealthy: Readiness probe failed" in reasons
    assert "Pod clf-" in reasons


def test_an_image_that_cannot_be_pulled_fails_at_once_not_at_the_timeout(
    fake_apiserver: FakeCluster, controller: Controller
) -> None:
    controller.broken_images.add(V2)
    deploy(fake_apiserver, V1)

    started = time.monotonic()
    with pytest.raises(RolloutFailed) as caught:
        deploy(fake_apiserver, V2, timeout_s=300)

    assert time.monotonic() - started < 10
    reasons = "\n".join(caught.value.reasons)
    assert "cannot become ready: its new pods will not start" in str(caught.value)
    assert f'ImagePullBackOff: Back-off pulling image "{V2}"' in reasons
    assert f"Failed: Failed to pull image '{V2}'" in reasons
    assert "Pod clf-" in reasons


def test_a_healthy_revision_after_a_stuck_one_is_not_failed_for_the_old_pods(
    fake_apiserver: FakeCluster, controller: Controller
) -> None:
    controller.broken_images.add(V2)
    deploy(fake_apiserver, V1)
    with pytest.raises(RolloutFailed):
        deploy(fake_apiserver, V2, timeout_s=300)  # left in place, as --no-rollback does

    status = deploy(fake_apiserver, V3)

    assert status.done
    assert fake_apiserver.deployed_image("clf") == V3


def _pod(reason: str | None, restarts: int = 0, *, init: bool = False) -> dict[str, Any]:
    state = {"waiting": {"reason": reason}} if reason else {"running": {}}
    container = {"name": "server", "state": state, "restartCount": restarts}
    key = "initContainerStatuses" if init else "containerStatuses"
    return {"metadata": {"name": "p"}, "status": {key: [container]}}


@pytest.mark.parametrize(
    ("pod", "expected"),
    [
        (_pod("ImagePullBackOff"), True),
        (_pod("InvalidImageName"), True),
        (_pod("ErrImageNeverPull"), True),
        (_pod("ImagePullBackOff", init=True), True),
        (_pod("ErrImagePull"), False),  # the first failure: the kubelet has not backed off yet
        (_pod("CrashLoopBackOff", restarts=0), False),  # crashed once
        (_pod("CrashLoopBackOff", restarts=1), False),  # twice
        (_pod("CrashLoopBackOff", restarts=2), True),  # three times
        (_pod("ContainerCreating"), False),
        (_pod(None), False),
        ({"metadata": {"name": "p"}}, False),  # no status yet
    ],
)
def test_a_pod_is_hopeless_only_once_the_kubelet_is_backing_off_for_good(
    pod: dict[str, Any], expected: bool
) -> None:
    assert hopeless(pod) is expected


def test_progress_deadline_exceeded_fails_at_once_with_the_readiness_reason(
    fake_apiserver: FakeCluster, controller: Controller
) -> None:
    controller.unready_images.add(V2)
    controller.deadline_s = 0.2
    deploy(fake_apiserver, V1)

    started = time.monotonic()
    with pytest.raises(RolloutFailed) as caught:
        deploy(fake_apiserver, V2, timeout_s=30)

    assert time.monotonic() - started < 10
    assert "exceeded its progress deadline" in str(caught.value)
    assert caught.value.reasons[0].startswith("ProgressDeadlineExceeded")
    assert any("Unhealthy: Readiness probe failed" in r for r in caught.value.reasons)


def test_rollback_restores_the_previous_revision_after_a_failed_rollout(
    fake_apiserver: FakeCluster, controller: Controller
) -> None:
    controller.broken_images.add(V2)
    deploy(fake_apiserver, V1)
    with pytest.raises(RolloutFailed):
        deploy(fake_apiserver, V2, timeout_s=0.3)

    with fake_apiserver.api() as api:
        restored = rollback(KubeCluster(api), NAMESPACE, "clf")
        status = wait_for_rollout(KubeCluster(api), NAMESPACE, "clf", timeout_s=5, **FAST)
        history = revisions(KubeCluster(api), NAMESPACE, "clf")

    assert restored == 1
    assert status.done
    assert fake_apiserver.deployed_image("clf") == V1
    # Like the real controller, the old ReplicaSet comes back under the next revision number.
    assert status.revision == "3"
    assert [(r.number, r.images) for r in history] == [(2, (V2,)), (3, (V1,))]
    # The patch replaced the template (a JSON patch), without the ReplicaSet's hash label.
    patches = [
        p
        for p in fake_apiserver.requests("PATCH")
        if p.headers["Content-Type"] == "application/json-patch+json"
    ]
    assert [p.url.path for p in patches] == [
        f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/clf"
    ]
    assert patches[0].data[0]["op"] == "replace"
    assert patches[0].data[0]["path"] == "/spec/template"
    assert "pod-template-hash" not in patches[0].data[0]["value"]["metadata"]["labels"]


def test_rollback_to_a_given_revision(fake_apiserver: FakeCluster, controller: Controller) -> None:
    for image in (V1, V2, V3):
        deploy(fake_apiserver, image)

    with fake_apiserver.api() as api:
        assert rollback(KubeCluster(api), NAMESPACE, "clf", to_revision=1) == 1
        wait_for_rollout(KubeCluster(api), NAMESPACE, "clf", timeout_s=5, **FAST)
        assert fake_apiserver.deployed_image("clf") == V1

        with pytest.raises(DeployError, match=r"has no revision 9 \(it has: 2, 3, 4\)"):
            rollback(KubeCluster(api), NAMESPACE, "clf", to_revision=9)


def test_rollback_of_a_first_revision_says_there_is_nothing_before_it(
    fake_apiserver: FakeCluster, controller: Controller
) -> None:
    deploy(fake_apiserver, V1)
    with fake_apiserver.api() as api, pytest.raises(DeployError, match="no revision before 1"):
        rollback(KubeCluster(api), NAMESPACE, "clf")


def test_waiting_for_a_missing_deployment_names_it(fake_apiserver: FakeCluster) -> None:
    with fake_apiserver.api() as api, pytest.raises(DeployError, match="no Deployment clf in"):
        wait_for_rollout(KubeCluster(api), NAMESPACE, "clf", timeout_s=1, **FAST)


def _deployment_with(
    *, generation: int = 2, observed: int = 2, desired: int = 3, **status: int
) -> dict[str, Any]:
    return {
        "metadata": {"name": "clf", "namespace": NAMESPACE, "generation": generation},
        "spec": {"replicas": desired},
        "status": {"observedGeneration": observed, **status},
    }


@pytest.mark.parametrize(
    ("deployment_", "message"),
    [
        (_deployment_with(observed=1), "waiting for the controller to see the new spec"),
        (_deployment_with(updatedReplicas=1, replicas=3), "1 of 3 replicas updated"),
        (_deployment_with(updatedReplicas=3, replicas=4), "1 old replicas pending termination"),
        (
            _deployment_with(updatedReplicas=3, replicas=3, availableReplicas=2),
            "2 of 3 updated replicas available",
        ),
    ],
)
def test_evaluate_is_not_done_until_the_rule_of_kubectl_holds(
    deployment_: dict[str, Any], message: str
) -> None:
    status = evaluate(deployment_, 1.0)
    assert not status.done
    assert status.message == message


def test_evaluate_is_done_when_all_replicas_are_updated_and_available() -> None:
    status = evaluate(_deployment_with(updatedReplicas=3, replicas=3, availableReplicas=3), 1.0)
    assert status.done


def test_unschedulable_pods_are_reported_with_the_schedulers_message() -> None:
    pod = {
        "metadata": {"name": "clf-abc-0"},
        "status": {
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
                }
            ]
        },
    }
    assert pod_problems(pod) == [
        "pod clf-abc-0: Unschedulable: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
    ]
