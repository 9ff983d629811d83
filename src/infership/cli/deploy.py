"""``infership deploy``, ``status``, ``rollback`` and ``delete``: a model image on a cluster.

Each command parses its options, calls the library (``infership.k8s.deploy``, ``rollout``)
once, and prints; the policy (apply, wait, roll back, canary) is the library's. The cluster is
chosen as kubectl chooses it (``--kubeconfig``, ``$KUBECONFIG``, ``~/.kube/config``,
in-cluster; ``--context``). The namespace is ``--namespace`` when given, else the context's
namespace when it names one, else the deployment's name (as ``infership manifests`` renders it).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from infership.cli.common import fail
from infership.cli.k8s_options import (
    canary_options,
    cluster_options,
    namespace_option,
    rollout_options,
    spec_options,
)
from infership.errors import CanaryFailed, DeployError
from infership.k8s.deploy import Observer

if TYPE_CHECKING:
    from infership.errors import RolloutFailed
    from infership.k8s.canary import CanaryProgress
    from infership.k8s.cluster import Obj
    from infership.k8s.kube import KubeCluster
    from infership.k8s.rollout import RolloutStatus
    from infership.k8s.spec import DeploySpec


def _connect(kubeconfig: str | None, context: str | None) -> KubeCluster:
    try:
        from infership.k8s.client import connect
    except ImportError as exc:  # pragma: no cover - the extra is part of [dev]
        fail(
            "this command needs the Kubernetes client: "
            f"pip install 'infership[kubernetes]' ({exc})",
            1,
        )
    try:
        cluster = connect(kubeconfig, context)
    except DeployError as exc:
        fail(str(exc), 1)
    for note in cluster.notes:
        click.echo(f"warning: {note}", err=True)
    return cluster


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


class _Printer(Observer):
    """What ``deploy`` reports, printed: objects on stdout, progress and failures on stderr."""

    def __init__(self, cluster: KubeCluster) -> None:
        self.cluster = cluster
        self.live = LiveLine()

    def notes(self, notes: list[str]) -> None:
        for note in notes:
            click.echo(f"warning: {note}", err=True)

    def applied(self, spec: DeploySpec, objects: list[Obj], *, dry_run: bool) -> None:
        where = f"context {self.cluster.context}" if self.cluster.context else "in-cluster"
        where += f", {spec.kubernetes.label}"
        verb = "would apply (server dry run)" if dry_run else "applied"
        click.echo(
            f"{verb} {len(objects)} objects in namespace {spec.namespace} "
            f"({where}, {self.cluster.server}):"
        )
        for obj in objects:
            click.echo(f"  {obj.get('kind')}/{obj.get('metadata', {}).get('name')}")

    def progress(self, status: RolloutStatus) -> None:
        self.live(status)

    def rollout_failed(self, error: RolloutFailed) -> None:
        self.live.end()
        click.echo(f"rollout failed: {error}", err=True)
        for reason in error.reasons:
            click.echo(f"  - {reason}", err=True)

    def rolling_back(self, namespace: str, name: str, revision: int, images: str) -> None:
        _rolling_back(namespace, name, revision, images, err=True)

    def canary(self, progress: CanaryProgress) -> None:
        click.echo(f"[{progress.elapsed_s:4.0f}s] {progress.phase}: {progress.message}", err=True)


def _rolling_back(namespace: str, name: str, revision: int, images: str, *, err: bool) -> None:
    click.echo(
        f"rolling back Deployment {namespace}/{name} to revision {revision} ({images})", err=err
    )


@click.command()
@spec_options
@cluster_options
@click.option(
    "--create-namespace", is_flag=True, help="Create the namespace when it does not exist."
)
@rollout_options
@click.option(
    "--dry-run", is_flag=True, help="Send everything as a server dry run; change nothing."
)
@click.option("--no-rollback", is_flag=True, help="On failure, leave the new revision in place.")
@click.option(
    "--force-conflicts",
    is_flag=True,
    help="Take over fields that another field manager changed since (kubectl apply "
    "--server-side, a controller); without it such a change stops the deploy.",
)
@canary_options
def deploy(
    spec: DeploySpec,
    kubeconfig: str | None,
    context: str | None,
    create_namespace: bool,
    timeout_s: float,
    poll_s: float,
    dry_run: bool,
    no_rollback: bool,
    force_conflicts: bool,
    canary: Any,
) -> None:
    """Deploy MODEL_REPO's image to a cluster and wait for it to be ready.

    Objects are applied with server-side apply (field manager "infership"); a field that
    another manager changed since stops the deploy (see --force-conflicts). When the new pods
    do not become ready within --timeout, the Deployment is rolled back to its previous
    revision and the command exits 1 with the pods' reasons. With --canary, the new image
    first serves a share of the traffic beside the stable version.
    """
    from infership.k8s.deploy import deploy as run_deploy

    if canary is not None and dry_run:
        raise click.UsageError("--canary cannot be combined with --dry-run")
    cluster = _connect(kubeconfig, context)
    source = click.get_current_context().get_parameter_source("namespace")
    if source in (None, click.core.ParameterSource.DEFAULT) and cluster.namespace_set:
        spec = _with_namespace(spec, cluster.namespace)
    printer = _Printer(cluster)
    try:
        outcome = run_deploy(
            spec,
            cluster,
            create_namespace=create_namespace,
            dry_run=dry_run,
            force_conflicts=force_conflicts,
            rollback_on_failure=not no_rollback,
            timeout_s=timeout_s,
            poll_s=poll_s,
            canary=canary,
            observer=printer,
        )
    except CanaryFailed as exc:
        fail(f"canary failed: {exc}", 1)
    except DeployError as exc:
        fail(str(exc), 1)
    finally:
        printer.live.end()
    ns, name = spec.namespace, spec.name
    if outcome.canary is not None:
        click.echo(outcome.canary.to_text())
        if not outcome.canary.promoted:
            fail(f"canary of {spec.image} was rolled back; the stable version serves on", 1)
        return
    failure = outcome.failure
    if failure is not None:
        if outcome.kept == "asked":
            fail(f"left Deployment {ns}/{name} as it is (--no-rollback)", 1)
        if outcome.kept == "first revision":
            fail(
                f"Deployment {ns}/{name} was created by this deploy (its first revision), "
                f"so there is nothing to roll back to; `infership delete {name}` removes it",
                1,
            )
        fail(
            f"deploy of {spec.image} failed and was rolled back to revision "
            f"{outcome.rolled_back_to}: {failure.reasons[0] if failure.reasons else failure}",
            1,
        )
    if outcome.status is not None:
        status = outcome.status
        click.echo(
            f"Deployment {ns}/{name} rolled out: revision {status.revision}, "
            f"{status.available}/{status.desired} available, {spec.image}"
        )


def _with_namespace(spec: DeploySpec, namespace: str) -> DeploySpec:
    from pydantic import ValidationError

    try:
        return type(spec).model_validate({**spec.model_dump(), "namespace": namespace})
    except ValidationError as exc:
        raise click.UsageError(
            f"the context's namespace {namespace!r} is not usable: {exc}"
        ) from exc


def _namespace_for(cluster: KubeCluster, namespace: str | None, name: str) -> str:
    if namespace:
        return namespace
    return cluster.namespace if cluster.namespace_set else name


def _wait(cluster: KubeCluster, namespace: str, name: str, timeout_s: float, poll_s: float) -> Any:
    from infership.k8s.rollout import wait_for_rollout

    live = LiveLine()
    try:
        return wait_for_rollout(
            cluster, namespace, name, timeout_s=timeout_s, on_progress=live, poll_s=poll_s
        )
    finally:
        live.end()


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
        info = describe(cluster, ns, name)
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
@rollout_options
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
    from infership.k8s.rollout import images, rollback

    cluster = _connect(kubeconfig, context)
    ns = _namespace_for(cluster, namespace, name)
    try:
        revision = rollback(cluster, ns, name, to_revision=to_revision)
        _rolling_back(ns, name, revision, images(cluster, ns, name), err=False)
        status = _wait(cluster, ns, name, timeout_s, poll_s)
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
    from infership.k8s.deploy import find_instance

    cluster = _connect(kubeconfig, context)
    ns = _namespace_for(cluster, namespace, name)
    try:
        found = find_instance(cluster, ns, name)
        if not found:
            fail(f"nothing labelled app.kubernetes.io/instance={name} in namespace {ns}", 1)
        click.echo(f"in namespace {ns} ({cluster.server}):")
        for obj in found:
            click.echo(f"  {obj['kind']}/{obj['metadata']['name']}")
        if not yes:
            if not sys.stdin.isatty():
                fail("not deleting without confirmation: pass --yes", 1)
            click.confirm(f"delete these {len(found)} objects?", abort=True)
        cluster.delete(found)
    except DeployError as exc:
        fail(str(exc), 1)
    click.echo(f"deleted {len(found)} objects")
