"""``infership deploy``, ``status``, ``rollback`` and ``delete`` against the fake API server."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from infership.app import EXAMPLE_REPOSITORY
from infership.cli import main
from infership.errors import CanaryFailed
from k8s.conftest import NAMESPACE, Controller, FakeCluster, write_kubeconfig

V1, V2 = "registry.example/clf:1", "registry.example/clf:2"


def run(cluster: FakeCluster, *args: str, env: dict[str, str] | None = None) -> Result:
    command, *rest = args
    return CliRunner().invoke(
        main, [command, *rest, "--kubeconfig", str(cluster.kubeconfig)], env=env
    )


def deploy(cluster: FakeCluster, image: str, *extra: str) -> Result:
    return run(
        cluster,
        "deploy",
        str(EXAMPLE_REPOSITORY),
        "--image",
        image,
        "--name",
        "clf",
        "--namespace",
        NAMESPACE,
        "--create-namespace",
        "--timeout",
        "5s",
        "--poll",
        "0.05",
        *extra,
    )


def test_deploy_applies_every_object_and_waits_for_the_rollout(
    fake_apiserver: FakeCluster, controller: Controller
) -> None:
    result = deploy(fake_apiserver, V1)

    assert result.exit_code == 0, result.output
    assert f"Deployment {NAMESPACE}/clf rolled out: revision 1, 2/2 available" in result.stdout
    for kind in ("Namespace/ml", "ServiceAccount/clf", "Deployment/clf", "Service/clf"):
        assert kind in result.stdout
    assert "2/2 updated, 2 ready, 2 available" in result.stderr  # the live progress line
    patches = fake_apiserver.requests("PATCH")
    applied = [p for p in patches if p.headers["Content-Type"] == "application/apply-patch+yaml"]
    assert len(applied) >= 6
    managers = [p.params.get("fieldManager") for p in applied]
    assert all(p.params.get("force", "false") == "false" for p in applied)
    # Everything as "infership" except the new Deployment's starting replica count, which
    # goes to a manager of its own so that the autoscaler, not the next deploy, owns it.
    assert managers.count("infership-initial-replicas") == 1
    assert set(managers) == {"infership", "infership-initial-replicas"}
    assert fake_apiserver.deployed_image("clf") == V1
    stored = fake_apiserver.stored("deployments", NAMESPACE, "clf")
    assert stored is not None
    assert stored["spec"]["replicas"] == 2


def test_deploy_refuses_a_missing_namespace_without_create_namespace(
    fake_apiserver: FakeCluster,
) -> None:
    result = run(
        fake_apiserver,
        "deploy",
        str(EXAMPLE_REPOSITORY),
        "--image",
        V1,
        "--name",
        "clf",
        "--namespace",
        NAMESPACE,
    )

    assert result.exit_code == 1
    assert f"namespace {NAMESPACE} does not exist: pass --create-namespace" in result.stderr
    assert fake_apiserver.requests("PATCH") == []


def test_deploy_dry_run_stores_nothing(fake_apiserver: FakeCluster) -> None:
    result = deploy(fake_apiserver, V1, "--dry-run")

    assert result.exit_code == 0, result.output
    assert "would apply (server dry run)" in result.stdout
    assert all(p.params.get("dryRun") == "All" for p in fake_apiserver.requests("PATCH"))
    assert fake_apiserver.stored("deployments", NAMESPACE, "clf") is None


def test_deploy_uses_the_contexts_namespace_when_none_is_given(
    fake_apiserver: FakeCluster, tmp_path: Path
) -> None:
    write_kubeconfig(fake_apiserver.kubeconfig, fake_apiserver.url, namespace="team-a")
    result = run(
        fake_apiserver,
        "deploy",
        str(EXAMPLE_REPOSITORY),
        "--image",
        V1,
        "--name",
        "clf",
        "--create-namespace",
        "--dry-run",
    )

    assert result.exit_code == 0, result.output
    assert "in namespace team-a (context fake" in result.stdout


def test_a_rollout_that_never_becomes_ready_is_rolled_back_with_the_reason(
    fake_apiserver: FakeCluster, controller: Controller
) -> None:
    controller.unready_images.add(V2)
    controller.deadline_s = 0.3  # the Deployment's progressDeadlineSeconds, shortened
    assert deploy(fake_apiserver, V1).exit_code == 0

    result = deploy(fake_apiserver, V2, "--timeout", "30s")

    assert result.exit_code == 1
    assert "rollout failed: Deployment ml/clf exceeded its progress deadline" in result.stderr
    assert "Unhealthy: Readiness probe failed" in result.stderr
    assert f"rolling back Deployment ml/clf to revision 1 ({V1})" in result.stderr
    assert f"deploy of {V2} failed and was rolled back to revision 1" in result.stderr
    assert fake_apiserver.deployed_image("clf") == V1


def test_an_image_that_cannot_be_pulled_is_rolled_back_without_waiting_for_the_timeout(
    fake_apiserver: FakeCluster, controller: Controller
) -> None:
    controller.broken_images.add(V2)
    assert deploy(fake_apiserver, V1).exit_code == 0

    started = time.monotonic()
    result = deploy(fake_apiserver, V2)  # the default --timeout, 5 minutes

    assert time.monotonic() - started < 30
    assert result.exit_code == 1
    assert "rollout failed: Deployment ml/clf cannot become ready" in result.stderr
    assert f"deploy of {V2} failed and was rolled back to revision 1: pod clf-" in result.stderr
    assert f'ImagePullBackOff: Back-off pulling image "{V2}"' in result.stderr
    assert fake_apiserver.deployed_image("clf") == V1


def test_a_failed_first_revision_is_not_rolled_back_and_says_so(
    fake_apiserver: FakeCluster, controller: Controller
) -> None:
    controller.broken_images.add(V1)

    result = deploy(fake_apiserver, V1, "--timeout", "0.5s")

    assert result.exit_code == 1
    assert "its first revision), so there is nothing to roll back to" in result.stderr
    assert "infership delete clf" in result.stderr


def test_no_rollback_leaves_the_failed_revision_in_place(
    fake_apiserver: FakeCluster, controller: Controller
) -> None:
    controller.broken_images.add(V2)
    deploy(fake_apiserver, V1)

    result = deploy(fake_apiserver, V2, "--timeout", "0.5s", "--no-rollback")

    assert result.exit_code == 1
    assert "left Deployment ml/clf as it is (--no-rollback)" in result.stderr
    assert fake_apiserver.deployed_image("clf") == V2


def test_status_shows_revision_image_replicas_and_pods(
    fake_apiserver: FakeCluster, controller: Controller
) -> None:
    deploy(fake_apiserver, V1)

    result = run(fake_apiserver, "status", "clf", "-n", NAMESPACE)

    assert result.exit_code == 0, result.output
    assert "deployment: ml/clf  revision 1" in result.stdout
    assert f"image:      {V1}" in result.stdout
    assert "replicas:   2 desired, 2 updated, 2 ready, 2 available" in result.stdout
    assert "condition:  Available=True (MinimumReplicasAvailable)" in result.stdout
    assert "pods:       2" in result.stdout
    assert "Running  ready  restarts 0" in result.stdout


def test_status_reports_failing_pods_and_json(
    fake_apiserver: FakeCluster, controller: Controller
) -> None:
    controller.crashing_images.add(V2)
    deploy(fake_apiserver, V1)
    deploy(fake_apiserver, V2, "--timeout", "0.3s", "--no-rollback")

    result = run(fake_apiserver, "status", "clf", "-n", NAMESPACE, "--json")

    assert result.exit_code == 0, result.output
    import json

    info = json.loads(result.stdout)
    assert info["revision"] == "2"
    assert info["rolled_out"] is False
    problems = [p for pod in info["pods"] for p in pod["problems"]]
    assert any("CrashLoopBackOff" in p for p in problems)
    # Without --plan: an autoscaler from --replicas (2) to twice that.
    assert (info["autoscaler"]["min"], info["autoscaler"]["max"]) == (2, 4)
    assert info["canary"] is None


def test_status_of_an_unknown_deployment_fails(fake_apiserver: FakeCluster) -> None:
    result = run(fake_apiserver, "status", "nope", "-n", NAMESPACE)
    assert result.exit_code == 1
    assert "there is no Deployment nope in namespace ml" in result.stderr


def test_rollback_command_restores_a_given_revision(
    fake_apiserver: FakeCluster, controller: Controller
) -> None:
    deploy(fake_apiserver, V1)
    deploy(fake_apiserver, V2)

    result = run(
        fake_apiserver, "rollback", "clf", "-n", NAMESPACE, "--to-revision", "1", "--poll", "0.05"
    )

    assert result.exit_code == 0, result.output
    assert f"rolling back Deployment ml/clf to revision 1 ({V1})" in result.stdout
    assert "rolled back: now revision 3 (the template of revision 1), 2/2 available" in (
        result.stdout
    )
    assert fake_apiserver.deployed_image("clf") == V1


def test_delete_removes_the_instances_objects_but_keeps_the_namespace(
    fake_apiserver: FakeCluster, controller: Controller
) -> None:
    deploy(fake_apiserver, V1)

    refused = run(fake_apiserver, "delete", "clf", "-n", NAMESPACE)
    result = run(fake_apiserver, "delete", "clf", "-n", NAMESPACE, "--yes")
    again = run(fake_apiserver, "delete", "clf", "-n", NAMESPACE, "--yes")

    assert refused.exit_code == 1
    assert "pass --yes" in refused.stderr
    assert result.exit_code == 0, result.output
    assert "Deployment/clf" in result.stdout
    assert fake_apiserver.stored("deployments", NAMESPACE, "clf") is None
    assert fake_apiserver.stored("services", NAMESPACE, "clf") is None
    assert fake_apiserver.stored("namespaces", None, NAMESPACE) is not None
    assert again.exit_code == 1
    assert "nothing labelled app.kubernetes.io/instance=clf in namespace ml" in again.stderr


def test_an_unknown_context_lists_the_known_ones(fake_apiserver: FakeCluster) -> None:
    result = run(fake_apiserver, "status", "clf", "--context", "nope")
    assert result.exit_code == 1
    assert "context 'nope' is not in kubeconfig" in result.stderr
    assert "known contexts: elsewhere, fake" in result.stderr


def test_an_unreachable_server_is_named(fake_apiserver: FakeCluster) -> None:
    result = run(fake_apiserver, "status", "clf", "--context", "elsewhere")
    assert result.exit_code == 1
    assert "cannot reach the Kubernetes API server at http://127.0.0.1:9" in result.stderr
    assert "Deployment team/clf" in result.stderr  # the context's namespace was used


def test_kubeconfig_comes_from_the_kubeconfig_variable_like_kubectl(
    fake_apiserver: FakeCluster, controller: Controller, tmp_path: Path
) -> None:
    deploy(fake_apiserver, V1)
    listed = f"{tmp_path / 'missing'}:{fake_apiserver.kubeconfig}"
    result = CliRunner().invoke(main, ["status", "clf"], env={"KUBECONFIG": listed})
    assert result.exit_code == 0, result.output
    assert "deployment: ml/clf" in result.stdout


def test_no_kubeconfig_anywhere_says_where_it_looked(tmp_path: Path) -> None:
    env = {"KUBECONFIG": "", "HOME": str(tmp_path), "KUBERNETES_SERVICE_HOST": ""}
    result = CliRunner().invoke(main, ["status", "clf"], env=env)
    assert result.exit_code == 1
    assert "no kubeconfig found (--kubeconfig, $KUBECONFIG or ~/.kube/config)" in result.stderr


def test_a_forbidden_write_names_the_verb_and_object(fake_apiserver: FakeCluster) -> None:
    fake_apiserver.server.deny.add(("patch", "deployments"))
    result = deploy(fake_apiserver, V1)
    assert result.exit_code == 1
    assert "forbidden to apply Deployment ml/clf (403" in result.stderr


def test_canary_options_reach_run_canary(
    fake_apiserver: FakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    import infership.k8s.canary

    calls: list[dict[str, Any]] = []

    def fake_run_canary(api: Any, spec: Any, **kwargs: Any) -> Any:
        calls.append({"spec": spec, **kwargs})
        raise CanaryFailed("error rate 5.0% is above 2.0%")

    monkeypatch.setattr(infership.k8s.canary, "run_canary", fake_run_canary)
    result = deploy(
        fake_apiserver,
        V2,
        "--traffic",
        "gateway",
        "--canary",
        "10",
        "--canary-window",
        "1m30s",
        "--max-error-rate",
        "0.02",
        "--max-p99-ratio",
        "1.2",
    )

    assert result.exit_code == 1
    assert "canary failed: error rate 5.0% is above 2.0%" in result.stderr
    (call,) = calls
    assert call["weight"] == 10
    assert call["window_s"] == 90
    assert call["thresholds"].max_error_rate == 0.02
    assert call["thresholds"].max_p99_ratio == 1.2
    assert call["spec"].image == V2
    assert call["rollout_timeout_s"] == 5


def test_an_insecure_kubeconfig_is_one_warning_line_not_one_per_request(tmp_path: Path) -> None:
    import warnings

    import yaml
    from urllib3.exceptions import InsecureRequestWarning

    from infership.k8s.client import connect

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "lab",
                "clusters": [
                    {
                        "name": "lab",
                        "cluster": {
                            "server": "https://127.0.0.1:9",
                            "insecure-skip-tls-verify": True,
                        },
                    }
                ],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": "u"}}],
            }
        )
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cluster = connect(str(kubeconfig))
        for _ in range(3):  # what urllib3 does on every request
            warnings.warn("Unverified HTTPS request", InsecureRequestWarning, stacklevel=1)
    assert caught == []
    [note] = cluster.notes
    assert "TLS certificate is not verified (context 'lab' sets insecure-skip-tls-verify)" in note

    result = CliRunner().invoke(main, ["status", "clf", "--kubeconfig", str(kubeconfig)])
    assert result.exit_code == 1
    assert result.stderr.count("warning: the API server's TLS certificate is not verified") == 1
