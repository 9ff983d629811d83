"""run_canary over HTTP against the fake API server (tests/k8s/fakeapi.py) on 127.0.0.1.

The stand-in controller (conftest.Controller) turns Deployments into pods; each pod's
``/metrics``, read through the API server's pod proxy, comes from a real ``infership.metrics``
registry that serves a little more traffic every time it is scraped, with the error rate and
latency the test gives that pod's track.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import kmock
import pytest
from prometheus_client import generate_latest

from infership.errors import CanaryFailed, DeployError
from infership.k8s.analysis import CanaryThresholds
from infership.k8s.canary import CanaryProgress, CanaryReport, run_canary
from infership.k8s.kube import KubeCluster
from infership.k8s.manifests import TRACK_LABEL, build_objects
from infership.k8s.rollout import wait_for_rollout
from infership.k8s.spec import DeploySpec
from infership.metrics import Metrics
from k8s.conftest import NAMESPACE, Controller, FakeCluster

STABLE_IMAGE = "registry.example/web@sha256:" + "1" * 64
CANARY_IMAGE = "registry.example/web@sha256:" + "2" * 64
BROKEN_IMAGE = "registry.example/web@sha256:" + "3" * 64
THRESHOLDS = CanaryThresholds(min_requests=100)
Traffic = Literal["ingress", "gateway"]


@dataclass
class Behaviour:
    """What one track's pods serve between two scrapes.

    The default is enough for a verdict after a single scrape, so a slow (loaded) machine
    that fits only one scrape into the short test window still reaches one.
    """

    requests: int = THRESHOLDS.min_requests + 20
    errors: int = 0
    seconds: float = 0.004


@dataclass
class PodMetrics:
    """Every pod's own registry, fed on each scrape by its track's behaviour."""

    cluster: FakeCluster
    tracks: dict[str, Behaviour] = field(
        default_factory=lambda: {"stable": Behaviour(), "canary": Behaviour()}
    )
    registries: dict[str, Metrics] = field(default_factory=dict)
    scrapes: list[str] = field(default_factory=list)
    refuse: dict[str, int] = field(default_factory=dict)
    """Track -> HTTP status the proxy answers instead of the metrics (403: RBAC, 503: the
    pod does not answer)."""

    def serve(self, request: Any) -> bytes | kmock.Response:
        pod = str(request.name).partition(":")[0]
        self.scrapes.append(str(request.name))
        stored = self.cluster.stored("pods", NAMESPACE, pod) or {}
        track = (stored.get("metadata", {}).get("labels") or {}).get(TRACK_LABEL, "stable")
        if track in self.refuse:
            status = self.refuse[track]
            return kmock.Response(
                status=status,
                payload={"kind": "Status", "code": status, "message": f"refused ({status})"},
            )
        metrics = self.registries.setdefault(pod, Metrics())
        model = metrics.model("resnet", "1")
        behaviour = self.tracks[track]
        for i in range(behaviour.requests):
            if i < behaviour.errors:
                model.outcome("server_error")
            else:
                model.request_seconds.observe(behaviour.seconds)
                model.outcome("success")
        model.outcome("client_error")  # a caller's mistake: never counted against a version
        return generate_latest(metrics.registry)


@dataclass
class Setup:
    cluster: FakeCluster
    controller: Controller
    metrics: PodMetrics
    kube: KubeCluster

    def spec(self, image: str, traffic: Traffic = "ingress") -> DeploySpec:
        return DeploySpec(
            name="web",
            namespace=NAMESPACE,
            image=image,
            traffic=traffic,
            host="web.example.com",
            allow_unauthenticated=True,
        )

    def deploy_stable(self, traffic: Traffic = "ingress") -> None:
        self.kube.apply(build_objects(self.spec(STABLE_IMAGE, traffic)))
        wait_for_rollout(self.kube, NAMESPACE, "web", timeout_s=10, poll_s=0.05)

    def image_of(self, name: str) -> str | None:
        stored = self.cluster.stored("deployments", NAMESPACE, name)
        if stored is None:
            return None
        return str(stored["spec"]["template"]["spec"]["containers"][0]["image"])

    def applied_to(self, plural: str, name: str, since: int = 0) -> list[Any]:
        """Server-side applies of one object (the test controller's own patches left out)."""
        return [
            r
            for r in self.cluster.requests("PATCH")[since:]
            if r.resource is not None
            and r.resource.plural == plural
            and r.name == name
            and "apply-patch" in r.headers.get("Content-Type", "")
        ]

    def canary(self, spec: DeploySpec, **kwargs: Any) -> CanaryReport:
        options: dict[str, Any] = {
            "weight": 10,
            "window_s": 0.4,
            "thresholds": THRESHOLDS,
            "interval_s": 0.1,
            "rollout_timeout_s": 5.0,
            "rollout_poll_s": 0.05,
        }
        return run_canary(self.kube, spec, **{**options, **kwargs})


@pytest.fixture
def setup(fake_apiserver: FakeCluster) -> Iterator[Setup]:
    # The bundled discovery has no Gateway API: serve HTTPRoute as a cluster with the CRDs does.
    fake_apiserver.server.resources["gateway.networking.k8s.io/v1/httproutes"] = kmock.ResourceInfo(
        namespaced=True,
        kind="HTTPRoute",
        singular="httproute",
        verbs={"create", "delete", "get", "list", "patch", "update", "watch"},
    )
    metrics = PodMetrics(fake_apiserver)
    fake_apiserver.server[lambda r: r.url.path.endswith("/proxy/metrics")] << metrics.serve
    controller = Controller(fake_apiserver).start()
    api = fake_apiserver.api()
    try:
        yield Setup(fake_apiserver, controller, metrics, KubeCluster(api))
    finally:
        api.close()  # type: ignore[no-untyped-call]
        controller.stop()


def test_healthy_canary_is_promoted_and_removed(setup: Setup) -> None:
    setup.deploy_stable()
    events: list[CanaryProgress] = []

    report = setup.canary(setup.spec(CANARY_IMAGE), on_progress=events.append)

    assert report.promoted
    assert report.comparison.verdict == "pass"
    assert report.comparison.canary.requests >= THRESHOLDS.min_requests
    assert report.comparison.canary.error_rate == 0
    # The stable Deployment now runs the new image; the canary's objects are gone.
    assert setup.image_of("web") == CANARY_IMAGE
    assert setup.cluster.stored("deployments", NAMESPACE, "web-canary") is None
    assert setup.cluster.stored("services", NAMESPACE, "web-canary") is None
    assert setup.cluster.stored("ingresses", NAMESPACE, "web-canary") is None
    assert setup.cluster.stored("ingresses", NAMESPACE, "web") is not None
    # Both tracks were scraped through the pod proxy, on the container port named http.
    assert any(s.startswith("web-canary-") for s in setup.metrics.scrapes)
    assert any(not s.startswith("web-canary-") for s in setup.metrics.scrapes)
    assert all(s.endswith(":8000") for s in setup.metrics.scrapes)
    phases = [e.phase for e in events]
    assert phases.index("deploying") < phases.index("watching") < phases.index("promoting")


def test_canary_objects_go_out_by_server_side_apply_with_the_weight(setup: Setup) -> None:
    setup.deploy_stable()
    before = len(setup.cluster.requests("PATCH"))

    setup.canary(setup.spec(CANARY_IMAGE), weight=25)

    [applied] = setup.applied_to("ingresses", "web-canary", since=before)
    assert applied.headers["Content-Type"] == "application/apply-patch+yaml"
    assert applied.params["fieldManager"] == "infership"
    assert applied.params.get("force", "false") == "false"
    annotations = applied.data["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/canary"] == "true"
    assert annotations["nginx.ingress.kubernetes.io/canary-weight"] == "25"
    [canary_deployment] = setup.applied_to("deployments", "web-canary", since=before)
    template = canary_deployment.data["spec"]["template"]
    assert template["metadata"]["labels"][TRACK_LABEL] == "canary"
    assert template["spec"]["containers"][0]["image"] == CANARY_IMAGE


def test_canary_with_high_error_rate_is_rolled_back_and_stable_untouched(setup: Setup) -> None:
    setup.deploy_stable()
    stable_before = setup.cluster.stored("deployments", NAMESPACE, "web")
    assert stable_before is not None
    setup.metrics.tracks["canary"] = Behaviour(requests=60, errors=12)  # 20 % server errors
    before = len(setup.cluster.requests("PATCH"))

    report = setup.canary(setup.spec(CANARY_IMAGE), window_s=5.0)

    assert not report.promoted
    assert report.comparison.verdict == "fail"
    assert "above the limit" in report.comparison.reasons[0]
    assert report.comparison.canary.error_rate == pytest.approx(12 / 61, rel=0.01)
    assert report.comparison.stable.error_rate == 0
    # Clearly failing after a couple of scrapes: the 5 s window was not sat out.
    assert report.ended_early
    assert report.watched_s < 2.0
    # The stable Deployment was never written to: same image, same generation.
    assert setup.applied_to("deployments", "web", since=before) == []
    stable_after = setup.cluster.stored("deployments", NAMESPACE, "web")
    assert stable_after is not None
    assert setup.image_of("web") == STABLE_IMAGE
    assert stable_after["metadata"]["generation"] == stable_before["metadata"]["generation"]
    # Everything the canary added is gone, and DELETE requests were sent for it.
    for plural in ("deployments", "services", "ingresses"):
        assert setup.cluster.stored(plural, NAMESPACE, "web-canary") is None
    deleted = {
        (r.resource.plural, r.name)
        for r in setup.cluster.requests("DELETE")
        if r.resource is not None
    }
    assert {("deployments", "web-canary"), ("services", "web-canary")} <= deleted
    assert ("ingresses", "web-canary") in deleted


def test_rolled_back_gateway_canary_puts_the_route_back_on_stable(setup: Setup) -> None:
    setup.deploy_stable(traffic="gateway")
    setup.metrics.tracks["canary"] = Behaviour(requests=60, errors=30)

    report = setup.canary(setup.spec(CANARY_IMAGE, traffic="gateway"), weight=20)

    assert not report.promoted
    route = setup.cluster.stored("httproutes", NAMESPACE, "web")
    assert route is not None
    assert route["spec"]["rules"][0]["backendRefs"] == [
        {"name": "web", "port": 8000, "weight": 100}
    ]
    # While the canary ran, the route split 80/20.
    split = [p.data for p in setup.applied_to("httproutes", "web")]
    assert any(
        [b["weight"] for b in d["spec"]["rules"][0]["backendRefs"]] == [80, 20] for d in split
    )
    assert setup.image_of("web") == STABLE_IMAGE


def test_canary_that_never_becomes_ready_is_rolled_back(setup: Setup) -> None:
    setup.deploy_stable()
    setup.controller.broken_images.add(BROKEN_IMAGE)
    setup.controller.deadline_s = 0.2
    before = len(setup.cluster.requests("PATCH"))

    with pytest.raises(CanaryFailed, match="never became ready") as failed:
        setup.canary(setup.spec(BROKEN_IMAGE))

    assert "ImagePullBackOff" in str(failed.value)
    assert setup.cluster.stored("deployments", NAMESPACE, "web-canary") is None
    assert setup.cluster.stored("ingresses", NAMESPACE, "web-canary") is None
    assert setup.applied_to("deployments", "web", since=before) == []
    assert setup.image_of("web") == STABLE_IMAGE
    assert setup.metrics.scrapes == []  # no window was started


def test_too_little_canary_traffic_is_inconclusive_and_rolled_back(setup: Setup) -> None:
    setup.deploy_stable()
    setup.metrics.tracks["canary"] = Behaviour(requests=2)

    report = setup.canary(setup.spec(CANARY_IMAGE))

    assert report.comparison.verdict == "inconclusive"
    assert not report.promoted
    assert 0 < report.comparison.canary.requests < THRESHOLDS.min_requests
    assert setup.image_of("web") == STABLE_IMAGE
    assert setup.cluster.stored("deployments", NAMESPACE, "web-canary") is None


def test_inconclusive_canary_is_promoted_when_told_to(setup: Setup) -> None:
    setup.deploy_stable()
    setup.metrics.tracks["canary"] = Behaviour(requests=2)
    thresholds = CanaryThresholds(min_requests=100, promote_inconclusive=True)

    report = setup.canary(setup.spec(CANARY_IMAGE), thresholds=thresholds)

    assert report.comparison.verdict == "inconclusive"
    assert report.promoted
    assert setup.image_of("web") == CANARY_IMAGE


def test_canary_without_a_stable_deployment_changes_nothing(setup: Setup) -> None:
    with pytest.raises(CanaryFailed, match="deploy without --canary first"):
        setup.canary(setup.spec(CANARY_IMAGE))
    assert setup.cluster.requests("PATCH") == []


def test_slower_canary_is_rolled_back_on_p99(setup: Setup) -> None:
    setup.deploy_stable()
    setup.metrics.tracks["stable"] = Behaviour(seconds=0.02)
    setup.metrics.tracks["canary"] = Behaviour(seconds=0.3)

    # A failing verdict ends the window early, so a long one only guards a slow machine.
    report = setup.canary(setup.spec(CANARY_IMAGE), window_s=5.0)

    assert not report.promoted
    assert any("p99" in reason for reason in report.comparison.reasons)
    assert setup.image_of("web") == STABLE_IMAGE


def test_report_renders_as_text_and_json(setup: Setup) -> None:
    setup.deploy_stable()
    setup.metrics.tracks["canary"] = Behaviour(requests=60, errors=12)

    report = setup.canary(setup.spec(CANARY_IMAGE), window_s=5.0)

    text = report.to_text()
    assert "stable" in text
    assert "canary" in text
    assert "verdict: fail, rolled back" in text
    assert "19.67%" in text  # 12 of 61 requests per scrape (one of them a client error)
    data = report.to_dict()
    assert data["promoted"] is False
    assert data["canary"]["errors"] > 0
    assert data["thresholds"]["min_requests"] == 100
    assert '"verdict": "fail"' in report.to_json()


def test_interrupted_canary_is_rolled_back(setup: Setup) -> None:
    setup.deploy_stable()

    def interrupt(event: CanaryProgress) -> None:
        if event.phase == "watching":
            raise KeyboardInterrupt

    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        setup.canary(setup.spec(CANARY_IMAGE), on_progress=interrupt, window_s=30)

    assert time.monotonic() - started < 10
    assert setup.cluster.stored("deployments", NAMESPACE, "web-canary") is None
    assert setup.image_of("web") == STABLE_IMAGE


def test_forbidden_pod_proxy_stops_and_rolls_back_with_what_to_grant(setup: Setup) -> None:
    setup.deploy_stable()
    setup.metrics.refuse["stable"] = 403

    with pytest.raises(DeployError, match="pods/proxy"):
        setup.canary(setup.spec(CANARY_IMAGE))

    assert setup.cluster.stored("deployments", NAMESPACE, "web-canary") is None
    assert setup.image_of("web") == STABLE_IMAGE


def test_canary_pods_that_cannot_be_scraped_are_inconclusive_and_noted(setup: Setup) -> None:
    setup.deploy_stable()
    setup.metrics.refuse["canary"] = 503

    report = setup.canary(setup.spec(CANARY_IMAGE))

    assert report.comparison.verdict == "inconclusive"
    assert not report.promoted
    assert any("could not be scraped" in note and "503" in note for note in report.notes)
    assert "no canary pod could be scraped" in report.to_text()
