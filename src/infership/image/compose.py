"""A Compose file that runs an image built by ``infership build``, as a pure function.

The service keeps the image's hardening (read-only root, no capabilities, non-root user),
publishes the HTTP port (which also serves ``/metrics``) on loopback only, limits CPU and
memory, and checks readiness with ``infership probe``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from infership.image.context import check_reference


@dataclass(frozen=True, slots=True)
class ComposeSpec:
    image: str
    service: str = "infership"
    host: str = "127.0.0.1"
    """Host address the port is published on: loopback unless exposing it is deliberate.
    Off loopback the server then requires API keys, which the operator adds."""
    host_port: int = 8000
    port: int = 8000
    """The port the server listens on inside the container."""
    cpus: float = 2.0
    memory: str = "1g"
    uid: int = 10001
    stop_grace_s: int = 30


def compose_document(spec: ComposeSpec) -> dict[str, Any]:
    """The Compose file as a mapping, in the order it is written."""
    check_reference(spec.image, "image")
    service: dict[str, Any] = {
        "image": spec.image,
        "ports": [f"{spec.host}:{spec.host_port}:{spec.port}"],
        "environment": {
            "INFERSHIP_HTTP__PORT": str(spec.port),
            # The port is published on loopback only, which is the boundary here.
            "INFERSHIP_AUTH__ALLOW_UNAUTHENTICATED": str(_loopback(spec.host)).lower(),
        },
        "read_only": True,
        "tmpfs": ["/tmp"],
        "user": f"{spec.uid}:{spec.uid}",
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "stop_signal": "SIGTERM",
        "stop_grace_period": f"{spec.stop_grace_s}s",
        # String form: podman-compose 1.0.3 mishandles the list form with replicas.
        "healthcheck": {
            "test": "infership probe",
            "interval": "10s",
            "timeout": "3s",
            "retries": 3,
            "start_period": "60s",
        },
        "deploy": {"resources": {"limits": {"cpus": f"{spec.cpus:g}", "memory": spec.memory}}},
        "restart": "unless-stopped",
    }
    return {"services": {spec.service: service}}


def _loopback(host: str) -> bool:
    return host in ("127.0.0.1", "::1", "localhost")


def render_compose(spec: ComposeSpec) -> str:
    header = (
        "# Rendered by `infership compose`. Run: podman-compose up -d (or docker compose).\n"
        "# Published on loopback only, so no API keys are required; to publish it elsewhere,\n"
        "# set INFERSHIP_AUTH__TOKENS or mount a keys file (INFERSHIP_AUTH__KEYS_FILE) instead.\n"
    )
    body = yaml.safe_dump(compose_document(spec), sort_keys=False, default_flow_style=False)
    return header + body
