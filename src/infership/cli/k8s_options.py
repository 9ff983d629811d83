"""The options of the Kubernetes commands, each defined once here.

``spec_options`` (``manifests``, ``deploy``): MODEL_REPO plus ``--image``, ``--name``,
``--namespace``, ... turned into one ``spec: DeploySpec`` keyword. Their defaults, choices and
ranges come from the fields of ``DeploySpec`` (and ``CanaryThresholds``), so the library and
the command line cannot disagree. ``cluster_options``, ``namespace_option``,
``rollout_options`` and ``canary_options`` are what the commands that talk to a cluster share.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, get_args

import annotated_types
import click
from pydantic import BaseModel, ValidationError

from infership.cli.common import fail
from infership.errors import ConfigError
from infership.k8s.analysis import CanaryThresholds
from infership.k8s.spec import DeploySpec

if TYPE_CHECKING:
    from infership.k8s.deploy import CanaryRelease

R = TypeVar("R")
F = TypeVar("F", bound=Callable[..., Any])

_DURATION = re.compile(
    r"(?:(?P<h>\d+(?:\.\d+)?)h)?(?:(?P<m>\d+(?:\.\d+)?)m)?(?:(?P<s>\d+(?:\.\d+)?)s?)?"
)


class Duration(click.ParamType):  # type: ignore[type-arg]  # generic only since click 8.2
    """Seconds, written as kubectl does: ``90``, ``90s``, ``5m``, ``1m30s``, ``1h``."""

    name = "duration"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, int | float):
            return float(value)
        match = _DURATION.fullmatch(str(value).strip())
        if not str(value).strip() or match is None:
            self.fail(f"{value!r} is not a duration such as 90s, 5m or 1m30s", param, ctx)
        return sum(
            float(match[unit] or 0) * factor for unit, factor in (("h", 3600), ("m", 60), ("s", 1))
        )


DURATION = Duration()


def _default(model: type[BaseModel], field: str) -> Any:
    return model.model_fields[field].default


def _range(model: type[BaseModel], field: str) -> click.IntRange | click.FloatRange:
    """``click.IntRange``/``FloatRange`` with the bounds the model's field declares."""
    info = model.model_fields[field]
    low = next((m.ge for m in info.metadata if isinstance(m, annotated_types.Ge)), None)
    high = next((m.le for m in info.metadata if isinstance(m, annotated_types.Le)), None)
    if info.annotation is int:
        return click.IntRange(low, high)  # type: ignore[arg-type]
    return click.FloatRange(low, high)  # type: ignore[arg-type]


def _choices(model: type[BaseModel], field: str) -> click.Choice:  # type: ignore[type-arg]
    return click.Choice([str(c) for c in get_args(model.model_fields[field].annotation)])


namespace_option = click.option(
    "--namespace",
    "-n",
    help="Namespace [default: the kubeconfig context's namespace when talking to a cluster "
    "and the context names one, else NAME].",
)


def cluster_options(command: F) -> F:
    """``--kubeconfig`` and ``--context``, as kubectl has them."""
    command = click.option(
        "--context", help="kubeconfig context to use [default: the current-context]."
    )(command)
    return click.option(
        "--kubeconfig",
        type=click.Path(dir_okay=False),
        help="kubeconfig file [default: $KUBECONFIG, else ~/.kube/config, else in-cluster].",
    )(command)


def rollout_options(command: F) -> F:
    """``--timeout`` for a rollout to become ready, and the hidden ``--poll`` interval."""
    command = click.option("--poll", "poll_s", type=DURATION, default="2s", hidden=True)(command)
    return click.option(
        "--timeout",
        "timeout_s",
        type=DURATION,
        default="5m",
        show_default=True,
        help="How long the rollout may take before it counts as failed.",
    )(command)


def _threshold(flag: str, help: str) -> Callable[[F], F]:
    """An option for the ``CanaryThresholds`` field of the same name: its default and range."""
    field = flag.removeprefix("--").replace("-", "_")
    return click.option(
        flag,
        type=_range(CanaryThresholds, field),
        default=_default(CanaryThresholds, field),
        show_default=True,
        help=help,
    )


_CANARY_OPTIONS = [
    click.option(
        "--canary",
        "canary_percent",
        type=click.IntRange(1, 99),
        help="Run the image as a canary taking this percent of traffic, then promote or roll back.",
    ),
    click.option(
        "--canary-window",
        type=DURATION,
        default="5m",
        show_default=True,
        help="How long the canary is watched.",
    ),
    _threshold("--max-error-rate", "Canary error rate above which it is rolled back."),
    _threshold("--max-p99-ratio", "Canary p99 above this many times the stable p99 rolls it back."),
    _threshold(
        "--min-requests",
        "Canary requests needed for a verdict (fewer: inconclusive, rolled back).",
    ),
]


def canary_options(command: Callable[..., R]) -> Callable[..., R]:
    """The canary options, given to ``command`` as ``canary: CanaryRelease | None``."""

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> R:
        values = {key: kwargs.pop(key) for key in _names(_CANARY_OPTIONS)}
        kwargs["canary"] = _canary_release(**values)
        return command(**kwargs)

    return _decorate(wrapper, _CANARY_OPTIONS)


def _canary_release(
    *,
    canary_percent: int | None,
    canary_window: float,
    max_error_rate: float,
    max_p99_ratio: float,
    min_requests: int,
) -> CanaryRelease | None:
    from infership.k8s.deploy import CanaryRelease

    if canary_percent is None:
        return None
    thresholds = CanaryThresholds(
        max_error_rate=max_error_rate, max_p99_ratio=max_p99_ratio, min_requests=min_requests
    )
    return CanaryRelease(weight=canary_percent, window_s=canary_window, thresholds=thresholds)


def _decorate(command: Callable[..., R], options: list[Callable[[F], F]]) -> Callable[..., R]:
    for decorate in reversed(options):
        command = decorate(command)
    return command


def _names(options: list[Callable[[F], F]]) -> tuple[str, ...]:
    """The keyword names click gives ``options``' values: each option's name, defined once."""

    def probe() -> None: ...

    _decorate(probe, options)
    return tuple(str(p.name) for p in reversed(probe.__click_params__))  # type: ignore[attr-defined]


_OPTIONS = [
    click.argument("model_repo", type=click.Path(exists=True, file_okay=False, path_type=Path)),
    click.option(
        "--image",
        required=True,
        help="Image to run, from `infership build`; pinned when given as NAME[:TAG]@sha256:...",
    ),
    click.option("--name", help="Name of every object [default: the single model's name]."),
    namespace_option,
    click.option(
        "--plan",
        "plan_file",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="`infership plan --json` output: HPA replicas, CPU target and CPU request.",
    ),
    click.option(
        "--replicas",
        type=_range(DeploySpec, "replicas"),
        default=_default(DeploySpec, "replicas"),
        show_default=True,
        help="Without --plan: the autoscaler's minimum; it may scale out to twice that.",
    ),
    click.option("--gpu", type=click.IntRange(0), default=0, help="nvidia.com/gpu per pod."),
    click.option(
        "--traffic",
        type=_choices(DeploySpec, "traffic"),
        default=_default(DeploySpec, "traffic"),
        show_default=True,
        help="How outside traffic arrives: an Ingress, a Gateway API HTTPRoute, or neither.",
    ),
    click.option("--host", help="Host name routed to the service."),
    click.option("--tls-secret", help="kubernetes.io/tls Secret for the Ingress (with --host)."),
    click.option(
        "--gateway",
        default=_default(DeploySpec, "gateway_name"),
        show_default=True,
        help="Gateway the HTTPRoute attaches to, NAME[/NAMESPACE].",
    ),
    click.option(
        "--ingress-class", default=_default(DeploySpec, "ingress_class"), show_default=True
    ),
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

    return _decorate(wrapper, _OPTIONS)


_PARAMETERS = _names(_OPTIONS)


def spec_from_options(
    *,
    model_repo: Path,
    image: str,
    name: str | None = None,
    namespace: str | None = None,
    plan_file: Path | None = None,
    replicas: int = _default(DeploySpec, "replicas"),
    gpu: int = 0,
    traffic: Literal["none", "ingress", "gateway"] = _default(DeploySpec, "traffic"),
    host: str | None = None,
    tls_secret: str | None = None,
    gateway: str = _default(DeploySpec, "gateway_name"),
    ingress_class: str = _default(DeploySpec, "ingress_class"),
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
        autoscaling_from_plan,
        default_autoscaling,
        memory_for,
        repository_footprint,
    )

    check_reference(image, "--image")
    models, files = repository_footprint(model_repo)
    if name is None:
        name = _dns_name(models[0]) if len(models) == 1 else "infership"
    resources = memory_for(files)
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
    else:
        autoscaling = default_autoscaling(replicas, custom_metric)
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
