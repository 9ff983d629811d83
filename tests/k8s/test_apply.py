"""Server-side apply and deletion over HTTP against the fake API server on 127.0.0.1."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient

from infership.errors import DeployError
from infership.k8s.apply import FieldConflict, apply_objects, delete_objects
from infership.k8s.deploy import find_instance, namespace_exists
from infership.k8s.kube import KubeCluster
from k8s.conftest import NAMESPACE, FakeCluster

LABELS = {"app.kubernetes.io/name": "infership", "app.kubernetes.io/instance": "clf"}


def namespace(name: str = NAMESPACE) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def config_map(data: str = "a") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "clf-config", "namespace": NAMESPACE, "labels": LABELS},
        "data": {"model": data},
    }


def deployment(image: str = "registry.example/clf:1") -> dict[str, Any]:
    selector = {**LABELS, "infership.dev/track": "stable"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "clf", "namespace": NAMESPACE, "labels": LABELS},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": selector},
                "spec": {"containers": [{"name": "server", "image": image}]},
            },
        },
    }


def http_route() -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "clf", "namespace": NAMESPACE, "labels": LABELS},
        "spec": {"rules": [{"backendRefs": [{"name": "clf", "port": 8000}]}]},
    }


def test_every_write_is_a_server_side_apply_by_infership_that_forces_nothing(
    fake_apiserver: FakeCluster,
) -> None:
    with fake_apiserver.api() as api:
        apply_objects(api, [namespace(), config_map(), deployment()])

    patches = fake_apiserver.requests("PATCH")
    assert [p.url.path for p in patches] == [
        f"/api/v1/namespaces/{NAMESPACE}",
        f"/api/v1/namespaces/{NAMESPACE}/configmaps/clf-config",
        f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/clf",
    ]
    for patch in patches:
        assert patch.headers["Content-Type"] == "application/apply-patch+yaml"
        # Fields another manager holds are reported, not taken (test_live_cluster.py).
        assert dict(patch.params).get("force", "false") == "false", patch.params
        assert patch.params["fieldManager"] == "infership"
    # Nothing is created any other way: apply alone creates what is missing.
    assert fake_apiserver.requests("POST") == []
    assert fake_apiserver.requests("PUT") == []


def test_apply_creates_missing_objects_and_updates_existing_ones(
    fake_apiserver: FakeCluster,
) -> None:
    with fake_apiserver.api() as api:
        first = apply_objects(api, [namespace(), deployment("registry.example/clf:1")])
        again = apply_objects(api, [deployment("registry.example/clf:1")])
        changed = apply_objects(api, [deployment("registry.example/clf:2")])

    assert first[1]["metadata"]["generation"] == 1
    assert again[0]["metadata"]["generation"] == 1  # the same spec is not a new generation
    assert changed[0]["metadata"]["generation"] == 2
    stored = fake_apiserver.stored("deployments", NAMESPACE, "clf")
    assert stored is not None
    assert stored["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example/clf:2"


def test_dry_run_sends_dry_run_all_and_stores_nothing(fake_apiserver: FakeCluster) -> None:
    with fake_apiserver.api() as api:
        answered = apply_objects(api, [namespace(), config_map()], dry_run=True)

    assert [a["kind"] for a in answered] == ["Namespace", "ConfigMap"]
    assert all(p.params.get("dryRun") == "All" for p in fake_apiserver.requests("PATCH"))
    assert fake_apiserver.stored("namespaces", None, NAMESPACE) is None
    assert fake_apiserver.stored("configmaps", NAMESPACE, "clf-config") is None


WITHOUT_GATEWAY_API = pytest.mark.parametrize(
    "fake_apiserver", [{"without_groups": frozenset({"gateway.networking.k8s.io"})}], indirect=True
)


@WITHOUT_GATEWAY_API
def test_a_kind_the_cluster_does_not_serve_fails_before_any_write(
    fake_apiserver: FakeCluster,
) -> None:
    with fake_apiserver.api() as api, pytest.raises(DeployError) as caught:
        apply_objects(api, [config_map(), http_route()])

    message = str(caught.value)
    assert "HTTPRoute (gateway.networking.k8s.io/v1)" in message
    assert "Gateway API CRDs" in message
    assert fake_apiserver.requests("PATCH") == []


def test_namespace_exists_tells_present_from_missing(fake_apiserver: FakeCluster) -> None:
    with fake_apiserver.api() as api:
        assert namespace_exists(KubeCluster(api), NAMESPACE) is False
        apply_objects(api, [namespace()])
        assert namespace_exists(KubeCluster(api), NAMESPACE) is True


def test_namespace_check_is_skipped_when_reading_namespaces_is_forbidden(
    fake_apiserver: FakeCluster,
) -> None:
    fake_apiserver.server.deny.add(("get", "namespaces"))
    with fake_apiserver.api() as api:
        assert namespace_exists(KubeCluster(api), NAMESPACE) is None


def test_forbidden_apply_names_the_verb_and_the_object(fake_apiserver: FakeCluster) -> None:
    fake_apiserver.server.deny.add(("patch", "deployments"))
    with fake_apiserver.api() as api, pytest.raises(DeployError) as caught:
        apply_objects(api, [namespace(), deployment()])

    assert f"forbidden to apply Deployment {NAMESPACE}/clf" in str(caught.value)
    assert "RBAC" in str(caught.value)


def test_unreachable_server_is_named_in_the_error(fake_apiserver: FakeCluster) -> None:
    from kubernetes import client

    configuration = client.Configuration()
    configuration.host = "http://127.0.0.1:9"
    configuration.retries = 0
    with client.ApiClient(configuration) as api, pytest.raises(DeployError) as caught:
        apply_objects(api, [config_map()])

    assert "cannot reach the Kubernetes API server at http://127.0.0.1:9" in str(caught.value)


@WITHOUT_GATEWAY_API
def test_delete_removes_objects_and_ignores_missing_ones(fake_apiserver: FakeCluster) -> None:
    with fake_apiserver.api() as api:
        apply_objects(api, [namespace(), config_map(), deployment()])
        delete_objects(api, [config_map(), deployment(), http_route()])
        delete_objects(api, [config_map()])  # already gone: not an error

        with pytest.raises(DeployError, match="does not serve HTTPRoute"):
            delete_objects(api, [http_route()], missing_ok=False)

    assert fake_apiserver.stored("configmaps", NAMESPACE, "clf-config") is None
    assert fake_apiserver.stored("deployments", NAMESPACE, "clf") is None
    assert fake_apiserver.stored("namespaces", None, NAMESPACE) is not None


def test_find_instance_lists_only_objects_labelled_with_the_instance(
    fake_apiserver: FakeCluster,
) -> None:
    other = config_map()
    other["metadata"] = {
        "name": "other-config",
        "namespace": NAMESPACE,
        "labels": {"app.kubernetes.io/instance": "other"},
    }
    with fake_apiserver.api() as api:
        apply_objects(api, [namespace(), config_map(), other, deployment()])
        found = find_instance(KubeCluster(api), NAMESPACE, "clf")

    assert [(o["kind"], o["metadata"]["name"]) for o in found] == [
        ("ConfigMap", "clf-config"),
        ("Deployment", "clf"),
    ]


def _conflict_409(manager: str) -> ApiException:
    """The 409 an API server answers when server-side apply meets another manager's field."""
    error = ApiException(status=409, reason="Conflict")
    error.body = json.dumps(
        {
            "kind": "Status",
            "status": "Failure",
            "reason": "Conflict",
            "code": 409,
            "message": f'Apply failed with 1 conflict: conflict with "{manager}" using apps/v1',
            "details": {
                "causes": [
                    {
                        "reason": "FieldManagerConflict",
                        "message": f'conflict with "{manager}" using apps/v1',
                        "field": '.spec.template.spec.containers[name="server"].image',
                    }
                ]
            },
        }
    )
    return error


@pytest.mark.parametrize("manager", ["infership-patch", "infership-initial-replicas"])
def test_fields_held_by_infership_own_managers_are_taken_back(
    fake_apiserver: FakeCluster, monkeypatch: pytest.MonkeyPatch, manager: str
) -> None:
    sent: list[bool] = []
    original = DynamicClient.server_side_apply

    def conflicting(self: Any, resource: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(bool(kwargs.get("force_conflicts")))
        if not kwargs.get("force_conflicts"):
            raise _conflict_409(manager)
        return original(self, resource, *args, **kwargs)

    monkeypatch.setattr(DynamicClient, "server_side_apply", conflicting)
    with fake_apiserver.api() as api:
        apply_objects(api, [deployment("registry.example/clf:2")])
    assert sent == [False, True]
    assert fake_apiserver.deployed_image("clf") == "registry.example/clf:2"


def test_fields_held_by_another_manager_stop_the_apply_naming_them(
    fake_apiserver: FakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    def conflicting(self: Any, resource: Any, *args: Any, **kwargs: Any) -> Any:
        assert not kwargs.get("force_conflicts")
        raise _conflict_409("kubectl-edit")

    monkeypatch.setattr(DynamicClient, "server_side_apply", conflicting)
    with fake_apiserver.api() as api, pytest.raises(FieldConflict) as refused:
        apply_objects(api, [deployment("registry.example/clf:2")])
    message = str(refused.value)
    assert f"Deployment {NAMESPACE}/clf" in message
    assert '.spec.template.spec.containers[name="server"].image  held by "kubectl-edit"' in message
    assert "--force-conflicts" in message
