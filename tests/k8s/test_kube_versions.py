"""Rendering for the cluster the user has: 1.20 to 1.37, offline (`--kube-version`) or from a
live API server's version and discovery (`deploy`), and what a missing kind's error says.

kubernetes-validate has schemas from 1.25 on (test_kustomize_validation validates every one of
them); 1.20–1.24 are checked here: by a golden file, by the apiVersions a 1.20 API server
serves (spelled out below from its discovery, not from infership's table), by the oldest
schemas there are for the same API versions, and by the absence of fields added since 1.20.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kmock
import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner

from infership.app import EXAMPLE_REPOSITORY
from infership.cli import main
from infership.errors import ConfigError, DeployError
from infership.k8s.apply import apply_objects
from infership.k8s.deploy import find_instance
from infership.k8s.discovery import discover
from infership.k8s.kube import KubeCluster
from infership.k8s.manifests import build_objects, compatibility_notes, pod_disruption_budget
from infership.k8s.spec import Autoscaling, DeploySpec
from infership.k8s.target import KubeTarget, parse_version
from k8s.conftest import NAMESPACE, Controller, FakeCluster
from k8s.test_manifests import IMAGE, check_golden, one, plan_file, server

__all__ = ["plan_file"]  # the fixture, imported for its use here

ALL_VERSIONS = [f"1.{minor}" for minor in range(20, 38)]

# (HPA, PDB, readiness probe handler) by release: v2 HPA from 1.23, policy/v1 from 1.21,
# gRPC probes from 1.24.
EXPECTED = {
    "1.20": ("autoscaling/v2beta2", "policy/v1beta1", "httpGet"),
    "1.21": ("autoscaling/v2beta2", "policy/v1", "httpGet"),
    "1.22": ("autoscaling/v2beta2", "policy/v1", "httpGet"),
    "1.23": ("autoscaling/v2", "policy/v1", "httpGet"),
    **dict.fromkeys(ALL_VERSIONS[4:], ("autoscaling/v2", "policy/v1", "grpc")),
}

# What a stock 1.20 API server lists under /api and /apis (kubectl api-versions, v1.20.2),
# cut to the groups infership uses.
SERVED_BY_1_20 = {
    "v1",
    "apps/v1",
    "autoscaling/v1",
    "autoscaling/v2beta1",
    "autoscaling/v2beta2",
    "networking.k8s.io/v1",
    "networking.k8s.io/v1beta1",
    "policy/v1beta1",
}

# Fields that Kubernetes added after 1.20 (pod, probe, service, policy and PDB fields).
NEWER_FIELDS = {
    "grpc",  # probes, 1.24
    "os",  # pod, 1.23
    "minDomains",  # topology spread, 1.24
    "matchLabelKeys",  # topology spread, 1.25
    "nodeAffinityPolicy",  # topology spread, 1.25
    "hostUsers",  # pod, 1.25
    "endPort",  # NetworkPolicy port, 1.21
    "internalTrafficPolicy",  # Service, 1.21
    "unhealthyPodEvictionPolicy",  # PDB, 1.26
    "resizePolicy",  # container, 1.27
    "appArmorProfile",  # security context, 1.30
    "trafficDistribution",  # Service, 1.30
}


def spec(version: str = "1.37", **changes: Any) -> DeploySpec:
    values: dict[str, Any] = {
        "name": "classifier",
        "namespace": "ml",
        "image": IMAGE,
        "traffic": "ingress",
        "host": "c.example.com",
        "allow_from_namespaces": ("ingress-nginx",),
        "autoscaling": Autoscaling(min_replicas=2, max_replicas=4),
        "kubernetes": KubeTarget.for_version(version),
    }
    return DeploySpec(**(values | changes))


def keys(value: Any) -> set[str]:
    """Every mapping key anywhere in ``value``."""
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in keys(v)}
    return set()


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_each_release_gets_the_api_versions_and_probes_it_serves(version: str) -> None:
    objects = build_objects(spec(version))
    hpa, pdb, readiness = EXPECTED[version]
    assert one(objects, "HorizontalPodAutoscaler")["apiVersion"] == hpa
    assert one(objects, "PodDisruptionBudget")["apiVersion"] == pdb
    probe = server(objects)["readinessProbe"]
    assert readiness in probe
    if readiness == "httpGet":
        assert probe["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert one(objects, "Ingress")["apiVersion"] == "networking.k8s.io/v1"
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}


def test_the_newest_release_renders_as_before() -> None:
    assert build_objects(spec("1.37")) == build_objects(
        spec().model_copy(update={"kubernetes": KubeTarget()})
    )


def test_1_20_objects_use_only_what_a_1_20_api_server_serves() -> None:
    objects = build_objects(spec("1.20", monitoring=False))
    assert {o["apiVersion"] for o in objects} <= SERVED_BY_1_20
    assert keys(objects) & NEWER_FIELDS == set()
    # Probe-level grace periods came in 1.21; the pod's own is old.
    assert all(
        "terminationGracePeriodSeconds" not in server(objects)[p]
        for p in ("startupProbe", "readinessProbe", "livenessProbe")
    )


@pytest.mark.parametrize("version", ["1.20", "1.21", "1.22", "1.23", "1.24"])
def test_older_renderings_validate_against_the_oldest_schemas_there_are(version: str) -> None:
    # 1.25 is the oldest release kubernetes-validate has; it still serves autoscaling/v2beta2.
    # policy/v1beta1 left in 1.25, so its PDB is checked field by field instead.
    for obj in build_objects(spec(version)):
        if obj["apiVersion"] == "policy/v1beta1":
            assert obj["spec"] == {
                "maxUnavailable": 1,
                "selector": {
                    "matchLabels": {
                        "app.kubernetes.io/name": "infership",
                        "app.kubernetes.io/instance": "classifier",
                        "infership.dev/track": "stable",
                    }
                },
            }
            continue
        kubernetes_validate.validate(obj, "1.25", strict=True)


def test_the_1_20_stream_matches_its_golden_file(plan_file: Path) -> None:
    result = CliRunner().invoke(
        main,
        [
            "manifests", str(EXAMPLE_REPOSITORY), "--image", IMAGE, "--plan", str(plan_file),
            "--traffic", "ingress", "--host", "classify.example.com",
            "--allow-from", "ingress-nginx", "--kube-version", "1.20",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    check_golden("stream-1.20.yaml", result.stdout)
    # 1.20 does not label namespaces by name: ours is labelled, the others the user must label.
    assert "kubectl label namespace ingress-nginx kubernetes.io/metadata.name=ingress-nginx" in (
        result.stderr
    )


def test_allow_from_needs_no_warning_once_the_api_server_labels_namespaces() -> None:
    assert compatibility_notes(spec("1.21")) == []
    assert (
        "kubernetes.io/metadata.name"
        not in one(build_objects(spec("1.21")), "Namespace")["metadata"]["labels"]
    )
    assert len(compatibility_notes(spec("1.20"))) == 1


@pytest.mark.parametrize(
    ("text", "version"),
    [("1.20", (1, 20)), ("v1.27", (1, 27)), ("1.33.2", (1, 33)), ("v1.30.1-eks-abc", (1, 30))],
)
def test_kubernetes_versions_are_read_as_kubectl_prints_them(text: str, version: Any) -> None:
    assert parse_version(text) == version


@pytest.mark.parametrize(
    ("value", "message"),
    [("1.19", "older than infership supports (1.20 to 1.37)"), ("latest", "not a Kubernetes")],
)
def test_an_unsupported_kube_version_exits_2(value: str, message: str) -> None:
    with pytest.raises(ConfigError):
        KubeTarget.for_version(value)
    result = CliRunner().invoke(
        main, ["manifests", str(EXAMPLE_REPOSITORY), "--image", IMAGE, "--kube-version", value]
    )
    assert result.exit_code == 2
    assert message in result.output


def test_a_gateway_api_install_older_than_v1_gets_the_route_it_serves() -> None:
    served = frozenset({"v1", "apps/v1", "gateway.networking.k8s.io/v1beta1"})
    target = KubeTarget(version=(1, 27), served=served)
    route = one(build_objects(spec(kubernetes=target, traffic="gateway", host=None)), "HTTPRoute")
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1beta1"


# Against a live (fake) API server that answers as 1.20 does.

HPA_V2BETA2 = kmock.ResourceInfo(
    namespaced=True,
    kind="HorizontalPodAutoscaler",
    singular="horizontalpodautoscaler",
    verbs={"create", "delete", "get", "list", "patch", "update", "watch"},
)
PDB_V1BETA1 = kmock.ResourceInfo(
    namespaced=True,
    kind="PodDisruptionBudget",
    singular="poddisruptionbudget",
    verbs={"create", "delete", "get", "list", "patch", "update", "watch"},
)
AS_1_20 = pytest.mark.parametrize(
    "fake_apiserver",
    [
        {
            "kube_version": "1.20",
            "without_versions": frozenset({"autoscaling/v2", "policy/v1"}),
            "extra_resources": {
                "autoscaling/v2beta2/horizontalpodautoscalers": HPA_V2BETA2,
                "policy/v1beta1/poddisruptionbudgets": PDB_V1BETA1,
            },
        }
    ],
    indirect=True,
)


@AS_1_20
def test_discovery_reads_the_version_and_what_is_served(fake_apiserver: FakeCluster) -> None:
    with fake_apiserver.api() as api:
        target = discover(api)
    assert target.version == (1, 20)
    assert target.served is not None
    assert {"v1", "apps/v1", "policy/v1beta1", "autoscaling/v2beta2"} <= target.served
    assert "policy/v1" not in target.served
    assert target.api_version("PodDisruptionBudget") == "policy/v1beta1"


@AS_1_20
def test_a_missing_built_in_kind_says_which_kubernetes_serves_it(
    fake_apiserver: FakeCluster,
) -> None:
    pdb = pod_disruption_budget(spec("1.33"))  # rendered for another cluster
    with fake_apiserver.api() as api, pytest.raises(DeployError) as caught:
        apply_objects(api, [pdb])
    message = str(caught.value)
    assert message.startswith(
        "the cluster (Kubernetes 1.20) does not serve PodDisruptionBudget (policy/v1), "
        "a built-in kind of Kubernetes 1.21 and later (it serves policy/v1beta1)"
    )
    assert "--kube-version" in message
    assert "CRD" not in message
    assert fake_apiserver.requests("PATCH") == []


@pytest.mark.parametrize("fake_apiserver", [{"kube_version": "1.19"}], indirect=True)
def test_a_cluster_older_than_1_20_is_refused_by_name(fake_apiserver: FakeCluster) -> None:
    with fake_apiserver.api() as api, pytest.raises(DeployError, match=r"runs Kubernetes 1\.19"):
        discover(api)


@AS_1_20
def test_deploy_status_and_delete_work_on_a_1_20_cluster(
    fake_apiserver: FakeCluster, controller: Controller
) -> None:
    runner = CliRunner()
    common = ["--kubeconfig", str(fake_apiserver.kubeconfig)]
    result = runner.invoke(
        main,
        [
            "deploy", str(EXAMPLE_REPOSITORY), "--image", "registry.example/clf:1",
            "--name", "clf", "--namespace", NAMESPACE, "--create-namespace",
            "--custom-metric", "inflight", "--timeout", "5s", "--poll", "0.05", *common,
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Kubernetes 1.20" in result.stdout
    applied = {
        (r.resource.group, r.resource.version, r.resource.plural)
        for r in fake_apiserver.requests("PATCH")
        if r.resource is not None
    }
    assert ("policy", "v1beta1", "poddisruptionbudgets") in applied
    assert ("autoscaling", "v2beta2", "horizontalpodautoscalers") in applied
    stored = fake_apiserver.stored("deployments", NAMESPACE, "clf")
    assert stored is not None
    probe = stored["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    assert "grpc" not in probe
    assert probe["httpGet"]["path"] == "/v2/health/ready"

    status = runner.invoke(main, ["status", "clf", "-n", NAMESPACE, "--json", *common])
    assert status.exit_code == 0, status.output
    assert yaml.safe_load(status.stdout)["autoscaler"]["max"] == 4

    with fake_apiserver.api() as api:
        found = {
            (o["apiVersion"], o["kind"]) for o in find_instance(KubeCluster(api), NAMESPACE, "clf")
        }
    assert {
        ("autoscaling/v2beta2", "HorizontalPodAutoscaler"),
        ("policy/v1beta1", "PodDisruptionBudget"),
    } <= found
    deleted = runner.invoke(main, ["delete", "clf", "-n", NAMESPACE, "--yes", *common])
    assert deleted.exit_code == 0, deleted.output
    assert fake_apiserver.stored("poddisruptionbudgets", NAMESPACE, "clf") is None
    assert fake_apiserver.stored("horizontalpodautoscalers", NAMESPACE, "clf") is None
