"""The options every Kubernetes command shares (``manifests``, ``deploy``): MODEL_REPO plus
``--image``, ``--name``, ``--namespace``, ... turned into one ``spec: DeploySpec`` keyword."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import click
from pydantic import ValidationError

from infership.cli.common import fail
from infership.errors import ConfigError

if TYPE_CHECKING:
    from infership.k8s.spec import DeploySpec

R = TypeVar("R")

_OPTIONS = [
    click.argument("model_repo", type=click.Path(exists=True, file_okay=False, path_type=Path)),
    click.option(
        "--image",
        required=True,
        help="Image to run, from `infership build`; pinned when given as NAME[:TAG]@sha256:...",
    ),
    click.option("--name", help="Name of every object [default: the single model's name]."),
    click.option("--namespace", help="Namespace [default: the name]."),
    click.option(
        "--plan",
        "plan_file",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="`infership plan --json` output: HPA replicas, CPU target and CPU request.",
    ),
    click.option(
        "--replicas", type=click.IntRange(1), default=2, show_default=True, help="Without --plan."
    ),
    click.option("--gpu", type=click.IntRange(0), default=0, help="nvidia.com/gpu per pod."),
    click.option(
        "--traffic",
        type=click.Choice(["none", "ingress", "gateway"]),
        default="none",
        show_default=True,
        help="How outside traffic arrives: an Ingress, a Gateway API HTTPRoute, or neither.",
    ),
    click.option("--host", help="Host name routed to the service."),
    click.option("--tls-secret", help="kubernetes.io/tls Secret for the Ingress (with --host)."),
    click.option(
        "--gateway",
        default="gateway",
        show_default=True,
        help="Gateway the HTTPRoute attaches to, NAME[/NAMESPACE].",
    ),
    click.option("--ingress-class", default="nginx", show_default=True),
    click.option(
        "--allow-from",
        multiple=True,
        help="Namespace allowed to connect, e.g. the ingress controller's (repeatable) "
        "[default: any].",
    ),
    click.option(
        "--api-keys-secret", help="Existing Secret with keys.yaml [default: NAME-api-keys]."
    ),
    click.option(
        "--api-keys-file",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="Keys file from `infership keys` (hashed keys), shipped as the Secret NAME-api-keys.",
    ),
    click.option("--model-key-secret", help="Secret of model decryption keys (a folder)."),
    click.option(
        "--custom-metric",
        type=click.Choice(["inflight", "queue"]),
        help="Also scale on requests in flight or queue time per pod (needs a metrics adapter).",
    ),
    click.option("--monitoring", is_flag=True, help="Add ServiceMonitor, alerts and dashboard."),
    click.option(
        "--allow-unauthenticated", is_flag=True, help="Serve without API keys (dev clusters only)."
    ),
]


def spec_options(command: Callable[..., R]) -> Callable[..., R]:
    """Add MODEL_REPO and the deployment options to ``command``, which receives ``spec``."""

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> R:
        values = {key: kwargs.pop(key) for key in _PARAMETERS}
        try:
            kwargs["spec"] = spec_from_options(**values)
        except ConfigError as exc:
            fail(str(exc), 2)
        return command(**kwargs)

    for decorate in reversed(_OPTIONS):
        wrapper = decorate(wrapper)
    return wrapper


_PARAMETERS = (
    "model_repo", "image", "name", "namespace", "plan_file", "replicas", "gpu", "traffic",
    "host", "tls_secret", "gateway", "ingress_class", "allow_from", "api_keys_secret",
    "api_keys_file", "model_key_secret", "custom_metric", "monitoring", "allow_unauthenticated",
)  # fmt: skip


def spec_from_options(
    *,
    model_repo: Path,
    image: str,
    name: str | None = None,
    namespace: str | None = None,
    plan_file: Path | None = None,
    replicas: int = 2,
    gpu: int = 0,
    traffic: Literal["none", "ingress", "gateway"] = "none",
    host: str | None = None,
    tls_secret: str | None = None,
    gateway: str = "gateway",
    ingress_class: str = "nginx",
    allow_from: tuple[str, ...] = (),
    api_keys_secret: str | None = None,
    api_keys_file: Path | None = None,
    model_key_secret: str | None = None,
    custom_metric: Literal["inflight", "queue"] | None = None,
    monitoring: bool = False,
    allow_unauthenticated: bool = False,
) -> DeploySpec:
    """A DeploySpec from the options' values; raises ConfigError naming the bad option."""
    from infership.capacity_plan import CapacityPlan
    from infership.image.context import check_reference
    from infership.k8s.spec import (
        Autoscaling,
        DeploySpec,
        autoscaling_from_plan,
        default_custom_target,
        memory_for,
        repository_footprint,
    )

    check_reference(image, "--image")
    models, files = repository_footprint(model_repo)
    if name is None:
        name = _dns_name(models[0]) if len(models) == 1 else "infership"
    resources = memory_for(files)
    autoscaling = None
    if plan_file is not None:
        try:
            plan = CapacityPlan.model_validate_json(plan_file.read_text(encoding="utf-8"))
        except ValidationError as exc:
            raise ConfigError(
                f"--plan {plan_file}: not `infership plan --json` output: {exc}"
            ) from exc
        autoscaling = autoscaling_from_plan(plan, custom_metric)
        cpu = plan.hpa.cpu_request_millicores
        if cpu is not None:
            # The limit leaves room for bursts above the measured use (throttled, not killed).
            resources = resources.model_copy(
                update={"cpu_request_millicores": cpu, "cpu_limit_millicores": 4 * cpu}
            )
    elif custom_metric is not None:
        autoscaling = Autoscaling(
            min_replicas=replicas,
            max_replicas=2 * replicas,
            custom_metric=custom_metric,
            custom_metric_target=default_custom_target(custom_metric),
        )
    gateway_name, _, gateway_namespace = gateway.partition("/")
    try:
        return DeploySpec(
            name=name,
            namespace=namespace or name,
            image=image,
            models=models,
            replicas=replicas,
            autoscaling=autoscaling,
            resources=resources.model_copy(update={"gpus": gpu}),
            traffic=traffic,
            host=host,
            tls_secret=tls_secret,
            ingress_class=ingress_class,
            gateway_name=gateway_name,
            gateway_namespace=gateway_namespace or None,
            allow_from_namespaces=allow_from,
            api_keys_secret=api_keys_secret,
            api_keys_yaml=None
            if api_keys_file is None
            else api_keys_file.read_text(encoding="utf-8"),
            model_key_secret=model_key_secret,
            allow_unauthenticated=allow_unauthenticated,
            monitoring=monitoring,
        )
    except ValidationError as exc:
        problems = "; ".join(error["msg"].removeprefix("Value error, ") for error in exc.errors())
        raise ConfigError(f"invalid deployment options: {problems}") from exc


def _dns_name(model: str) -> str:
    # Model folder names may hold '_' or '.', which Kubernetes names may not.
    return re.sub(r"[^a-z0-9-]+", "-", model.lower()).strip("-") or "infership"
