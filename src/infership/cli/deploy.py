"""``infership deploy``, ``status``, ``rollback`` and ``delete``: a model image on a cluster.

Each command is a thin shell over ``infership.k8s``: connect (``client.connect``), call one or
two library functions, print. The cluster is chosen as kubectl chooses it (``--kubeconfig``,
``$KUBECONFIG``, ``~/.kube/config``, in-cluster; ``--context``). The namespace is
``--namespace`` when given, else the context's namespace when it names one, else the
deployment's name (as ``infership manifests`` renders it).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from infership.cli.common import fail
from infership.cli.k8s_options import spec_options
from infership.errors import CanaryFailed, DeployError, RolloutFailed

if TYPE_CHECKING:
    from kubernetes import client

    from infership.k8s.canary import CanaryProgress
    from infership.k8s.client import Cluster
    from infership.k8s.rollout import RolloutStatus
    from infership.k8s.spec import DeploySpec

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


def _connect(kubeconfig: str | None, context: str | None) -> Cluster:
    try:
        from infership.k8s.client import connect
    except ImportError as exc:  # pragma: no cover - the extra is part of [dev]
        fail(
            "this command needs the Kubernetes client: "
            f"pip install 'infership[kubernetes]' ({exc})",
            1,
        )
    try:
        return connect(kubeconfig, context)
    except DeployError as exc:
        fail(str(exc), 1)


class LiveLine:
    """The rollout's progress on stderr: one line rewritten in place on a terminal, and on
    anything else (CI logs) a new line only when something other than the clock changed."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last = ""
        self.width = 0

    def __call__(self, status: RolloutStatus) -> None:
        line = status.line()
        if self.tty:
            click.echo("\r" + line.ljust(self.width), err=True, nl=False)
            self.width = len(line)
            return
        key = (status.updated, status.ready, status.available, status.desired, status.reasons)
        if str(key) != self.last:
            self.last = str(key)
            click.echo(line, err=True)

    def end(self) -> None:
        if self.tty and self.width:
            click.echo(err=True)
            self.width = 0


def _wait(
    api: client.ApiClient, namespace: str, name: str, timeout_s: float, poll_s: float
) -> RolloutStatus:
    from infership.k8s.rollout import wait_for_rollout

    live = LiveLine()
    try:
        return wait_for_rollout(
            api, namespace, name, timeout_s=timeout_s, on_progress=live, poll_s=poll_s
        )
    finally:
        live.end()


def _images(api: client.ApiClient, namespace: str, name: str) -> str:
    from infership.k8s.rollout import read_deployment

    template = read_deployment(api, namespace, name)["spec"]["template"]
    return ", ".join(str(c.get("image")) for c in template["spec"]["containers"])


@click.command()
@spec_options
@cluster_options
@click.option(
    "--create-namespace", is_flag=True, help="Create the namespace when it does not exist."
)
@click.option(
    "--timeout",
    "timeout_s",
    type=DURATION,
    default="5m",
    show_default=True,
    help="How long the rollout may take before it counts as failed.",
)
@click.option(
    "--dry-run", is_flag=True, help="Send everything as a server dry run; change nothing."
)
@click.option("--no-rollback", is_flag=True, help="On failure, leave the new revision in place.")
@click.option(
    "--canary",
    "canary_percent",
    type=click.IntRange(1, 99),
    help="Run the image as a canary taking this percent of traffic, then promote or roll back.",
)
@click.option(
    "--canary-window",
    type=DURATION,
    default="5m",
    show_default=True,
    help="How long the canary is watched.",
)
@click.option(
    "--max-error-rate",
    type=click.FloatRange(0, 1),
    default=0.01,
    show_default=True,
    help="Canary error rate above which it is rolled back.",
)
@click.option(
    "--max-p99-ratio",
    type=click.FloatRange(1),
    default=1.5,
    show_default=True,
    help="Canary p99 above this many times the stable p99 rolls it back.",
)
@click.option(
    "--min-requests",
    type=click.IntRange(1),
    default=100,
    show_default=True,
    help="Canary requests needed for a verdict (fewer: inconclusive, rolled back).",
)
@click.option("--poll", "poll_s", type=DURATION, default="2s", hidden=True)
def deploy(
    spec: DeploySpec,
    kubeconfig: str | None,
    context: str | None,
    create_namespace: bool,
    timeout_s: float,
    dry_run: bool,
    no_rollback: bool,
    canary_percent: int | None,
    canary_window: float,
    max_error_rate: float,
    max_p99_ratio: float,
    min_requests: int,
    poll_s: float,
) -> None:
    """Deploy MODEL_REPO's image to a cluster and wait for it to be ready.

    Objects are applied with server-side apply (field manager "infership"). When the new pods
    do not become ready within --timeout, the Deployment is rolled back to its previous
    revision and the command exits 1 with the pods' reasons. With --canary, the new image
    first serves a share of the traffic beside the stable version.
    """
    from infership.k8s.apply import apply_objects, namespace_exists
    from infership.k8s.discovery import discover
    from infership.k8s.manifests import build_objects, compatibility_notes
    from infership.k8s.rollout import read_deployment, rollback

    cluster = _connect(kubeconfig, context)
    source = click.get_current_context().get_parameter_source("namespace")
    if source in (None, click.core.ParameterSource.DEFAULT) and cluster.namespace_set:
        spec = _with_namespace(spec, cluster.namespace)
    api, ns, name = cluster.api, spec.namespace, spec.name
    try:
        # Rendered for what this cluster serves (API versions, probe kinds), not the newest.
        spec = spec.model_copy(update={"kubernetes": discover(api)})
        for note in compatibility_notes(spec):
            click.echo(f"warning: {note}", err=True)
        objects = build_objects(spec)
        if not create_namespace:
            objects = [o for o in objects if o["kind"] != "Namespace"]
            if namespace_exists(api, ns) is False:
                fail(
                    f"namespace {ns} does not exist: pass --create-namespace, or pick "
                    "another with --namespace",
                    1,
                )
        if canary_percent is not None:
            _canary(
                api,
                spec,
                [o for o in objects if o["kind"] == "Namespace"],
                weight=canary_percent,
                window_s=canary_window,
                dry_run=dry_run,
                thresholds={
                    "max_error_rate": max_error_rate,
                    "max_p99_ratio": max_p99_ratio,
                    "min_requests": min_requests,
                },
                timeout_s=timeout_s,
                poll_s=poll_s,
            )
            return
        try:
            read_deployment(api, ns, name)
            existed = True
        except DeployError:
            existed = False
        applied = apply_objects(api, objects, dry_run=dry_run)
        where = f"context {cluster.context}" if cluster.context else "in-cluster"
        where += f", {spec.kubernetes.label}"
        verb = "would apply (server dry run)" if dry_run else "applied"
        click.echo(f"{verb} {len(applied)} objects in namespace {ns} ({where}, {cluster.server}):")
        for obj in applied:
            click.echo(f"  {obj.get('kind')}/{obj.get('metadata', {}).get('name')}")
        if dry_run:
            return
        try:
            status = _wait(api, ns, name, timeout_s, poll_s)
        except RolloutFailed as exc:
            click.echo(f"rollout failed: {exc}", err=True)
            for reason in exc.reasons:
                click.echo(f"  - {reason}", err=True)
            if no_rollback:
                fail(f"left Deployment {ns}/{name} as it is (--no-rollback)", 1)
            if not existed:
                fail(
                    f"Deployment {ns}/{name} was created by this deploy (its first revision), "
                    f"so there is nothing to roll back to; `infership delete {name}` removes it",
                    1,
                )
            try:
                revision = rollback(api, ns, name)
            except DeployError as undo:
                fail(f"could not roll back: {undo}", 1)
            click.echo(
                f"rolling back Deployment {ns}/{name} to revision {revision} "
                f"({_images(api, ns, name)})",
                err=True,
            )
            try:
                _wait(api, ns, name, timeout_s, poll_s)
            except RolloutFailed as again:
                fail(
                    f"rolled back to revision {revision}, but it is not ready either: {again}",
                    1,
                )
            fail(
                f"deploy of {spec.image} failed and was rolled back to revision {revision}: "
                f"{exc.reasons[0] if exc.reasons else exc}",
                1,
            )
        click.echo(
            f"Deployment {ns}/{name} rolled out: revision {status.revision}, "
            f"{status.available}/{status.desired} available, {spec.image}"
        )
    except DeployError as exc:
        fail(str(exc), 1)


def _with_namespace(spec: DeploySpec, namespace: str) -> DeploySpec:
    from pydantic import ValidationError

    try:
        return type(spec).model_validate({**spec.model_dump(), "namespace": namespace})
    except ValidationError as exc:
        raise click.UsageError(
            f"the context's namespace {namespace!r} is not usable: {exc}"
        ) from exc


def _canary(
    api: client.ApiClient,
    spec: DeploySpec,
    namespace_objects: list[dict[str, Any]],
    *,
    weight: int,
    window_s: float,
    dry_run: bool,
    thresholds: dict[str, Any],
    timeout_s: float,
    poll_s: float,
) -> None:
    from infership.k8s.analysis import CanaryThresholds
    from infership.k8s.apply import apply_objects
    from infership.k8s.canary import run_canary

    if dry_run:
        raise click.UsageError("--canary cannot be combined with --dry-run")
    if namespace_objects:
        apply_objects(api, namespace_objects)

    def show(progress: CanaryProgress) -> None:
        click.echo(f"[{progress.elapsed_s:4.0f}s] {progress.phase}: {progress.message}", err=True)

    try:
        report = run_canary(
            api,
            spec,
            weight=weight,
            window_s=window_s,
            thresholds=CanaryThresholds(**thresholds),
            on_progress=show,
            rollout_timeout_s=timeout_s,
            rollout_poll_s=poll_s,
        )
    except CanaryFailed as exc:
        fail(f"canary failed: {exc}", 1)
    click.echo(report.to_text())
    if not report.promoted:
        fail(f"canary of {spec.image} was rolled back; the stable version serves on", 1)


def _namespace_for(cluster: Cluster, namespace: str | None, name: str) -> str:
    if namespace:
        return namespace
    return cluster.namespace if cluster.namespace_set else name


def namespace_option(command: F) -> F:
    return click.option(
        "--namespace",
        "-n",
        help="Namespace [default: the context's namespace, else NAME].",
    )(command)


@click.command()
@click.argument("name")
@namespace_option
@cluster_options
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status(
    name: str, namespace: str | None, kubeconfig: str | None, context: str | None, as_json: bool
) -> None:
    """Show deployment NAME: revision, image, replicas, conditions, pods, autoscaler, canary."""
    import json

    from infership.k8s.rollout import describe

    cluster = _connect(kubeconfig, context)
    ns = _namespace_for(cluster, namespace, name)
    try:
        info = describe(cluster.api, ns, name)
    except DeployError as exc:
        fail(str(exc), 1)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(_status_text(info))
    canary = info.get("canary")
    if canary:
        click.echo("")
        click.echo(_status_text(canary, heading="canary"))


def _status_text(info: dict[str, Any], heading: str = "deployment") -> str:
    replicas = info["replicas"]
    lines = [
        f"{heading}: {info['namespace']}/{info['name']}  revision {info['revision'] or '?'}",
        f"image:      {', '.join(str(i) for i in info['images'])}",
        f"replicas:   {replicas['desired']} desired, {replicas['updated']} updated, "
        f"{replicas['ready']} ready, {replicas['available']} available"
        + ("" if info["rolled_out"] else f"  ({info['message']})"),
    ]
    for condition in info["conditions"]:
        text = f"{condition['type']}={condition['status']}"
        if condition.get("reason"):
            text += f" ({condition['reason']})"
        lines.append(f"condition:  {text}")
    hpa = info.get("autoscaler")
    if hpa:
        metrics = ", ".join(hpa["metrics"]) or "no metrics yet"
        lines.append(
            f"autoscaler: {hpa['current']} current, {hpa['desired']} desired "
            f"(min {hpa['min']}, max {hpa['max']}); {metrics}"
        )
    lines.append(f"pods:       {len(info['pods'])}")
    for pod in info["pods"]:
        ready = "ready" if pod["ready"] else "not ready"
        lines.append(f"  {pod['name']}  {pod['phase']}  {ready}  restarts {pod['restarts']}")
        lines.extend(f"    {problem}" for problem in pod["problems"])
    return "\n".join(lines)


@click.command(name="rollback")
@click.argument("name")
@namespace_option
@cluster_options
@click.option(
    "--to-revision", type=click.IntRange(1), help="Revision to restore [default: the previous one]."
)
@click.option("--timeout", "timeout_s", type=DURATION, default="5m", show_default=True)
@click.option("--poll", "poll_s", type=DURATION, default="2s", hidden=True)
def rollback_command(
    name: str,
    namespace: str | None,
    kubeconfig: str | None,
    context: str | None,
    to_revision: int | None,
    timeout_s: float,
    poll_s: float,
) -> None:
    """Roll deployment NAME back to its previous revision (or --to-revision) and wait."""
    from infership.k8s.rollout import rollback

    cluster = _connect(kubeconfig, context)
    ns = _namespace_for(cluster, namespace, name)
    try:
        revision = rollback(cluster.api, ns, name, to_revision=to_revision)
        click.echo(
            f"rolling back Deployment {ns}/{name} to revision {revision} "
            f"({_images(cluster.api, ns, name)})"
        )
        status = _wait(cluster.api, ns, name, timeout_s, poll_s)
    except DeployError as exc:
        fail(str(exc), 1)
    click.echo(
        f"Deployment {ns}/{name} rolled back: now revision {status.revision} "
        f"(the template of revision {revision}), {status.available}/{status.desired} available"
    )


@click.command()
@click.argument("name")
@namespace_option
@cluster_options
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def delete(
    name: str, namespace: str | None, kubeconfig: str | None, context: str | None, yes: bool
) -> None:
    """Delete everything infership created for NAME (objects labelled
    app.kubernetes.io/instance=NAME). The namespace itself is kept."""
    from infership.k8s.apply import delete_objects, find_instance

    cluster = _connect(kubeconfig, context)
    ns = _namespace_for(cluster, namespace, name)
    try:
        found = find_instance(cluster.api, ns, name)
        if not found:
            fail(f"nothing labelled app.kubernetes.io/instance={name} in namespace {ns}", 1)
        click.echo(f"in namespace {ns} ({cluster.server}):")
        for obj in found:
            click.echo(f"  {obj['kind']}/{obj['metadata']['name']}")
        if not yes:
            if not sys.stdin.isatty():
                fail("not deleting without confirmation: pass --yes", 1)
            click.confirm(f"delete these {len(found)} objects?", abort=True)
        delete_objects(cluster.api, found)
    except DeployError as exc:
        fail(str(exc), 1)
    click.echo(f"deleted {len(found)} objects")
