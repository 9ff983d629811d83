"""The generated Deployment, run for real by `podman kube play`, answers a classification.

podman 4.3 plays a Deployment as one pod and honours what the hardening is about (user,
read-only root, no capabilities, no privilege escalation, the ConfigMap's environment, the
/tmp emptyDir). Its limits, and what the test changes because of them:

- no --publish flag: the container ports get hostPort + hostIP 127.0.0.1 (else podman
  publishes every containerPort on 0.0.0.0);
- readiness and startup probes are ignored; the liveness probe becomes a healthcheck running
  `curl -f http://localhost:0/v2/health/live` (named ports become 0, and the image has no
  curl), whose timer needs systemd anyway. So the test plays the kubelet: it runs the
  generated container's own startup, readiness and liveness probes (HTTP GET or gRPC health,
  port by name or number) against the published ports;
- a Secret played by podman 4.3 cannot be mounted reliably, so the pod runs unauthenticated
  on its loopback-only ports (the dev flavour).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conftest import TESTDATA, free_port
from image.conftest import base_image, example_image, podman  # noqa: F401  (fixtures)
from infership.k8s.manifests import build_objects
from infership.k8s.render import render_stream
from infership.k8s.spec import DeploySpec

pytestmark = pytest.mark.e2e


def kube_play_objects(spec: DeploySpec, http_port: int, grpc_port: int) -> list[dict[str, Any]]:
    """The ConfigMap and the Deployment of ``spec``, as podman 4.3 can play them."""
    objects = [o for o in build_objects(spec) if o["kind"] in ("ConfigMap", "Deployment")]
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    published = {"http": http_port, "grpc": grpc_port}
    for port in container["ports"]:
        port.update(hostPort=published[port["name"]], hostIP="127.0.0.1")
    return objects


class Played:
    """The pod podman runs, its container spec as generated, and the host ports of its ports."""

    def __init__(self, container: dict[str, Any], host_ports: dict[str, int]) -> None:
        self.container = container
        # A probe names its port by name or by number, as the kubelet allows.
        self.ports: dict[str | int, int] = dict(host_ports)
        for port in container["ports"]:
            self.ports[port["containerPort"]] = host_ports[port["name"]]
        self.url = f"http://127.0.0.1:{host_ports['http']}"

    def probe(self, kind: str) -> bool:
        """Run the container's ``kind`` probe (startupProbe, ...) once, as the kubelet would."""
        probe = self.container[kind]
        timeout = probe.get("timeoutSeconds", 1)
        try:
            if "httpGet" in probe:
                get = probe["httpGet"]
                url = f"http://127.0.0.1:{self.ports[get['port']]}{get['path']}"
                return 200 <= httpx.get(url, timeout=timeout).status_code < 400
            grpc_probe = probe["grpc"]
            target = f"127.0.0.1:{self.ports[grpc_probe['port']]}"
            with grpc.insecure_channel(target) as channel:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=grpc_probe.get("service", "")),
                    timeout=timeout,
                )
            return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
        except (httpx.TransportError, grpc.RpcError):
            return False

    def wait_started(self, timeout: float = 120) -> float:
        """Seconds until the startup probe passes (podman 4.3 does not run it itself)."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.probe("startupProbe"):
                return time.monotonic() - start
            time.sleep(0.5)
        raise AssertionError(f"the startup probe of {self.url} never passed")


@pytest.fixture
def played(example_image: str, tmp_path: Path) -> Iterator[Played]:  # noqa: F811
    spec = DeploySpec(
        name="kube-play-e2e",
        namespace="default",
        image=example_image,
        replicas=1,
        allow_unauthenticated=True,
        drain_delay_s=0,
    )
    host_ports = {"http": free_port(), "grpc": free_port()}
    objects = kube_play_objects(spec, host_ports["http"], host_ports["grpc"])
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    manifest = tmp_path / "kube.yaml"
    manifest.write_text(render_stream(objects))
    try:
        result = podman("kube", "play", str(manifest), check=False, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
        yield Played(container, host_ports)
    finally:
        podman("kube", "down", str(manifest), check=False, timeout=120)


def test_the_deployment_passes_its_probes_under_kube_play_and_classifies(
    played: Played,
) -> None:
    played.wait_started()
    assert played.probe("readinessProbe"), played.container["readinessProbe"]
    assert played.probe("livenessProbe"), played.container["livenessProbe"]
    jpeg = (TESTDATA / "images" / "chelsea.jpg").read_bytes()
    response = httpx.post(
        f"{played.url}/predict", files=[("img", ("chelsea.jpg", jpeg, "image/jpeg"))], timeout=60
    )
    assert response.status_code == 200, response.text
    assert response.json()["predictions"][0]["top_k"][0]["label"] == "Egyptian cat"


def test_kube_play_keeps_the_pods_hardening(played: Played) -> None:
    played.wait_started()
    [container] = [
        name
        for name in podman("ps", "--format", "{{.Names}}").stdout.split()
        if name.startswith("kube-play-e2e-pod") and name.endswith("-server")
    ]
    assert podman("exec", container, "id", "-u").stdout.strip() == "10001"
    denied = podman("exec", container, "touch", "/opt/infership/x", check=False)
    assert "Read-only file system" in denied.stderr
    podman("exec", container, "touch", "/tmp/writable")
    caps = podman("exec", container, "grep", "CapEff", "/proc/self/status").stdout
    assert caps.split()[-1] == "0000000000000000"
