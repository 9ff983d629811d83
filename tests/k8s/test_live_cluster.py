"""The deploy path on a real cluster: deploy, wait, status, a failed rollout rolled back, delete.

Runs only when ``KUBECONFIG`` points at a reachable cluster and ``INFERSHIP_TEST_IMAGE`` names
an image from ``infership build`` that the cluster can pull (for kind: ``kind load
docker-image``). Everything happens in a fresh namespace that is removed at the end::

    KUBECONFIG=~/.kube/config INFERSHIP_TEST_IMAGE=localhost/classifier:1 \\
        pytest -m cluster tests/k8s/test_live_cluster.py --no-cov
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from click.testing import CliRunner, Result

from infership.app import EXAMPLE_REPOSITORY
from infership.cli import main

pytestmark = pytest.mark.cluster


def _reachable() -> str | None:
    """None when a cluster answers, else why the tests are skipped."""
    if not os.environ.get("KUBECONFIG"):
        return "KUBECONFIG does not point at a cluster"
    if not os.environ.get("INFERSHIP_TEST_IMAGE"):
        return "INFERSHIP_TEST_IMAGE does not name an image the cluster can pull"
    from kubernetes import client

    from infership.errors import DeployError
    from infership.k8s.client import api_errors, connect

    try:
        cluster = connect()
        with api_errors(cluster.api, "get", "the server version"):
            client.VersionApi(cluster.api).get_code(_request_timeout=5)
    except (DeployError, client.exceptions.ApiException) as exc:
        return f"the cluster in KUBECONFIG is not reachable: {exc}"
    return None


@pytest.fixture(scope="module")
def namespace() -> Iterator[str]:
    reason = _reachable()
    if reason is not None:
        pytest.skip(reason)
    from kubernetes import client

    from infership.k8s.client import connect

    name = f"infership-test-{uuid.uuid4().hex[:6]}"
    yield name
    cluster = connect()
    client.CoreV1Api(cluster.api).delete_namespace(name)


def infership(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def deploy(namespace: str, image: str, timeout: str) -> Result:
    return infership(
        "deploy",
        str(EXAMPLE_REPOSITORY),
        "--image",
        image,
        "--name",
        "classifier",
        "--namespace",
        namespace,
        "--create-namespace",
        "--allow-unauthenticated",
        "--replicas",
        "1",
        "--timeout",
        timeout,
    )


def test_deploy_status_failed_rollout_and_delete_on_a_real_cluster(namespace: str) -> None:
    image = os.environ["INFERSHIP_TEST_IMAGE"]

    first = deploy(namespace, image, "5m")
    assert first.exit_code == 0, first.output
    assert "rolled out: revision 1" in first.stdout

    status = infership("status", "classifier", "-n", namespace)
    assert status.exit_code == 0, status.output
    assert f"image:      {image}" in status.stdout
    assert "1 ready, 1 available" in status.stdout

    # An image that cannot be pulled: the rollout must fail and come back to revision 1.
    broken = deploy(namespace, "registry.invalid/infership/missing:1", "90s")
    assert broken.exit_code == 1
    assert "rolled back to revision 1" in broken.stderr
    after = infership("status", "classifier", "-n", namespace)
    assert f"image:      {image}" in after.stdout

    deleted = infership("delete", "classifier", "-n", namespace, "--yes")
    assert deleted.exit_code == 0, deleted.output
    gone = infership("status", "classifier", "-n", namespace)
    assert gone.exit_code == 1
