"""What a deployment of a model image is, as one frozen value: ``DeploySpec``.

The CLI builds it (``cli/k8s_options.spec_options``); ``manifests.build_objects(spec)`` turns it
into Kubernetes objects; ``deploy`` and the canary read it again. Everything that changes the
objects is a field here, so two equal specs give the same YAML.

Memory comes from the model repository (see ``memory_for``), CPU and replicas from a capacity
plan (``infership plan --json``) when one is given.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from infership.capacity_plan import CapacityPlan
from infership.errors import ConfigError
from infership.k8s.target import KubeTarget
from infership.settings import GrpcSettings, HttpSettings, ShutdownSettings

# DNS-1123 label: what Kubernetes accepts as a Service or Namespace name. The longest name we
# derive is "<name>-canary" (+7), and Service names stop at 63 characters.
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_MAX_NAME = 63 - len("-canary")

BASELINE_MEMORY_MIB = 256
"""RSS of a server with its runtimes imported, before any model is loaded (rounded up)."""
MODEL_MEMORY_FACTOR = 3
"""Bytes of RSS per byte of model file: the weights, the runtime's optimised copy, and the
arena for a batch's activations. The example (18.6 MB ONNX) measured ~300 MB RSS under load:
256 MiB + 3 × 17.8 MiB = 310 MiB."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Resources(_Frozen):
    """Requests and limits of the server container."""

    cpu_request_millicores: int = Field(500, ge=10)
    cpu_limit_millicores: int = Field(2000, ge=10)
    memory_request_mib: int = Field(512, ge=64)
    memory_limit_mib: int = Field(1024, ge=64)
    gpus: int = Field(0, ge=0)
    """``nvidia.com/gpu`` limit; > 0 also adds the GPU toleration."""

    @model_validator(mode="after")
    def _limits_cover_requests(self) -> Resources:
        if self.cpu_limit_millicores < self.cpu_request_millicores:
            raise ValueError("the CPU limit is below the CPU request")
        if self.memory_limit_mib < self.memory_request_mib:
            raise ValueError("the memory limit is below the memory request")
        return self


class Autoscaling(_Frozen):
    """A HorizontalPodAutoscaler (``autoscaling/v2``, or ``v2beta2`` before 1.23) for the
    stable Deployment."""

    min_replicas: int = Field(ge=1)
    max_replicas: int = Field(ge=1)
    target_cpu_utilization: int = Field(70, ge=1, le=100)
    """Percent of the container's CPU request (every rendered Deployment has one, so the
    target is always defined)."""
    custom_metric: Literal["inflight", "queue"] | None = None
    """A per-pod metric served by a metrics adapter (prometheus-adapter, KEDA) besides CPU."""
    custom_metric_target: str | None = None
    """Average per pod, as a Kubernetes quantity: requests in flight, or queue seconds."""

    @model_validator(mode="after")
    def _ordered(self) -> Autoscaling:
        if self.max_replicas < self.min_replicas:
            raise ValueError("max_replicas is below min_replicas")
        if (self.custom_metric is None) != (self.custom_metric_target is None):
            raise ValueError("give custom_metric and custom_metric_target together")
        return self


class DeploySpec(_Frozen):
    """One model image deployed to one namespace, and how traffic reaches it."""

    name: str
    """Base of every object name, and the ``app.kubernetes.io/instance`` label."""
    namespace: str
    image: str
    """The reference to deploy, ``[registry/]path[:tag][@sha256:...]``."""
    models: tuple[str, ...] = ()
    """Models of the image's repository to serve (INFERSHIP_MODELS); empty serves all."""
    http_port: int = HttpSettings.model_fields["port"].default
    grpc_port: int = GrpcSettings.model_fields["port"].default
    replicas: int = Field(2, ge=1)
    """Replicas when there is no autoscaler (``autoscaling`` None); the CLI sets
    ``autoscaling`` from it (``default_autoscaling``) unless a plan does."""
    autoscaling: Autoscaling | None = None
    resources: Resources = Resources()
    traffic: Literal["none", "ingress", "gateway"] = "none"
    host: str | None = None
    """Host name routed to the Service (Ingress rule or HTTPRoute hostname)."""
    tls_secret: str | None = None
    """A ``kubernetes.io/tls`` Secret for the Ingress (with ``traffic="ingress"``)."""
    ingress_class: str = "nginx"
    gateway_name: str = "gateway"
    gateway_namespace: str | None = None
    """The Gateway's namespace; None: the deployment's own."""
    allow_from_namespaces: tuple[str, ...] = ()
    """Namespaces (e.g. the ingress controller's) allowed to connect; empty: any source."""
    api_keys_secret: str | None = None
    """Existing Secret holding ``keys.yaml`` (``infership keys``); None: ``<name>-api-keys``."""
    api_keys_yaml: str | None = None
    """Contents of a keys file to ship as the Secret ``<name>-api-keys`` (hashed keys only)."""
    model_key_secret: str | None = None
    """Secret of model decryption keys, mounted as a folder (INFERSHIP_MODEL_SECURITY__KEY_DIR)."""
    allow_unauthenticated: bool = False
    """Serve without API keys (dev only): no keys Secret is mounted."""
    monitoring: bool = False
    """Add the ServiceMonitor, PrometheusRule and dashboard (``infership.monitoring``)."""
    drain_delay_s: float = Field(5.0, ge=0)
    """INFERSHIP_SHUTDOWN__DELAY_S: serving on after SIGTERM while endpoints update."""
    drain_timeout_s: float = Field(ShutdownSettings.model_fields["timeout_s"].default, gt=0)
    """INFERSHIP_SHUTDOWN__TIMEOUT_S: longest wait for admitted requests."""
    kubernetes: KubeTarget = KubeTarget()
    """The cluster rendered for: its version and the API versions it serves (the newest
    Kubernetes by default; ``--kube-version``, or what ``deploy`` discovers)."""

    @model_validator(mode="after")
    def _consistent(self) -> DeploySpec:
        for what, value in (("name", self.name), ("namespace", self.namespace)):
            if not _DNS_LABEL.fullmatch(value) or len(value) > _MAX_NAME:
                raise ValueError(
                    f"{what} {value!r} must be a DNS label: lowercase letters, digits and '-', "
                    f"at most {_MAX_NAME} characters"
                )
        if self.tls_secret is not None and (self.traffic != "ingress" or self.host is None):
            raise ValueError("a TLS secret needs traffic='ingress' and a host")
        if self.api_keys_secret is not None and self.api_keys_yaml is not None:
            raise ValueError("give an existing keys Secret or a keys file, not both")
        return self

    @property
    def keys_secret_name(self) -> str | None:
        """The Secret mounted as the API keys file; None when unauthenticated."""
        if self.allow_unauthenticated:
            return None
        return self.api_keys_secret or f"{self.name}-api-keys"

    @property
    def image_parts(self) -> tuple[str, str | None, str | None]:
        """(name, tag, digest) of ``image``; tag and digest None when absent."""
        rest, _, digest = self.image.partition("@")
        slash = rest.rfind("/")
        colon = rest.rfind(":")
        if colon > slash:
            return rest[:colon], rest[colon + 1 :], digest or None
        return rest, None, digest or None

    @property
    def pinned_image(self) -> str:
        """``name@sha256:...`` when the digest is known (a tag beside it would only mislead)."""
        name, _, digest = self.image_parts
        return f"{name}@{digest}" if digest else self.image

    @property
    def termination_grace_s(self) -> int:
        """Drain delay + drain timeout + 5 s for the runtimes to close and the process to exit."""
        return math.ceil(self.drain_delay_s + self.drain_timeout_s) + 5


def memory_for(model_files: Iterable[Path]) -> Resources:
    """Memory request and limit from the files of the served model versions.

    request = 256 MiB + 3 × (their total size), rounded up to 64 MiB; limit = 2 × request, room
    for a burst of large batches before the OOM killer steps in.
    """
    model_bytes = sum(path.stat().st_size for path in model_files)
    need = BASELINE_MEMORY_MIB + MODEL_MEMORY_FACTOR * model_bytes / 2**20
    request = 64 * math.ceil(need / 64)
    return Resources(memory_request_mib=request, memory_limit_mib=2 * request)


def repository_footprint(repository: Path) -> tuple[tuple[str, ...], list[Path]]:
    """Model names in ``repository`` and the files of every version they serve.

    Raises ConfigError (or ModelNotFound) as the server would, naming the file at fault.
    """
    from infership.repository.filesystem import FilesystemRepository

    repo = FilesystemRepository(repository)
    names = tuple(repo.names())
    if not names:
        raise ConfigError(f"model repository {repository} has no model (no */model.yaml)")
    files: list[Path] = []
    for name in names:
        source = repo.find(name)
        for version in source.versions:
            files += [p for p in (source.directory / str(version)).rglob("*") if p.is_file()]
    return names, files


def autoscaling_from_plan(
    plan: CapacityPlan, custom_metric: Literal["inflight", "queue"] | None = None
) -> Autoscaling:
    """The HPA of a capacity plan. Custom metric targets keep the plan's headroom:

    - inflight: ``k × (1 − headroom)`` requests in flight per pod, k measured within the budget;
    - queue: a quarter of the p99 budget as the mean queue wait per pod.
    """
    target = None
    if custom_metric == "inflight":
        target = _quantity(plan.concurrency_per_replica * (1 - plan.headroom))
    elif custom_metric == "queue":
        target = _quantity(plan.p99_budget_ms / 4 / 1000)
    return Autoscaling(
        min_replicas=plan.hpa.min_replicas,
        max_replicas=plan.hpa.max_replicas,
        target_cpu_utilization=plan.hpa.target_cpu_utilization,
        custom_metric=custom_metric,
        custom_metric_target=target,
    )


DEFAULT_SCALE_OUT = 2
"""Without a plan, the autoscaler may grow to this many times ``--replicas``."""


def default_autoscaling(
    replicas: int, custom_metric: Literal["inflight", "queue"] | None = None
) -> Autoscaling:
    """The autoscaler of a deployment without a capacity plan: a conservative default.

    It never runs fewer than ``replicas`` pods (what the user asked for), adds pods when the
    mean CPU use passes 70 % of the request, and stops at ``2 × replicas``: a burst can double
    the capacity, a runaway cannot take the cluster. A plan (``--plan``) sizes all three from
    measurements instead.
    """
    return Autoscaling(
        min_replicas=replicas,
        max_replicas=DEFAULT_SCALE_OUT * replicas,
        custom_metric=custom_metric,
        custom_metric_target=None
        if custom_metric is None
        else default_custom_target(custom_metric),
    )


def default_custom_target(metric: Literal["inflight", "queue"]) -> str:
    """Targets without a plan: 4 requests in flight per pod, or 50 ms mean queue wait."""
    return "4" if metric == "inflight" else "50m"


def _quantity(value: float) -> str:
    # Kubernetes quantities: whole numbers plain, fractions in milli-units ("2800m" = 2.8).
    milli = max(1, round(value * 1000))
    return str(milli // 1000) if milli % 1000 == 0 else f"{milli}m"
