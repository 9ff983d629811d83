"""``infership manifests``: the Kubernetes objects of a model image, as YAML or a kustomize tree;
with ``--kserve``, a KServe ServingRuntime and InferenceServices instead."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from infership.cli.k8s_options import spec_options

if TYPE_CHECKING:
    from infership.k8s.spec import DeploySpec


@click.command()
@spec_options
@click.option(
    "--output",
    "-o",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write a kustomize tree (base/, overlays/dev, overlays/prod) into this folder.",
)
@click.option(
    "--kube-version",
    metavar="X.Y",
    help="Kubernetes version of the target cluster, 1.20 or later; picks the API versions "
    "and fields it serves [default: the newest, 1.37].",
)
@click.option(
    "--kserve",
    is_flag=True,
    help="Print a KServe ServingRuntime for IMAGE and an InferenceService per model instead "
    "of a Deployment (docs/kubernetes.md, KServe).",
)
@click.option(
    "--storage-uri",
    metavar="URI",
    help="With --kserve: a model repository for KServe to download into /mnt/models "
    "[default: the repository inside IMAGE].",
)
def manifests(
    spec: DeploySpec,
    output: Path | None,
    kube_version: str | None,
    kserve: bool,
    storage_uri: str | None,
) -> None:
    """Kubernetes objects that serve MODEL_REPO from IMAGE.

    Without --output, print the production objects as one YAML stream (`kubectl apply -f -`).
    Memory comes from the size of the models; replicas, CPU and autoscaling from --plan.
    """
    from infership.errors import ConfigError
    from infership.k8s.kustomize import kustomize_files, write_tree
    from infership.k8s.manifests import build_objects, compatibility_notes
    from infership.k8s.render import render_stream
    from infership.k8s.target import KubeTarget

    if kube_version is not None:
        try:
            target = KubeTarget.for_version(kube_version)
        except ConfigError as exc:
            raise click.BadParameter(str(exc), param_hint="--kube-version") from exc
        spec = spec.model_copy(update={"kubernetes": target})
    if kserve:
        click.echo(render_stream(_kserve_objects(spec, output, storage_uri)), nl=False)
        return
    if storage_uri is not None:
        raise click.UsageError("--storage-uri needs --kserve")
    for note in compatibility_notes(spec):
        click.echo(f"warning: {note}", err=True)

    if output is None:
        click.echo(render_stream(build_objects(spec)), nl=False)
        return
    written = write_tree(kustomize_files(spec), output)
    click.echo(
        f"wrote {len(written)} files to {output}: "
        f"kubectl apply -k {output / 'overlays' / 'prod'}  (or overlays/dev)"
    )


# Options of the Deployment flavour that KServe does by itself, or that have no place in it.
_NOT_WITH_KSERVE = {
    "output": "--output (a kustomize tree of the Deployment)",
    "traffic": "--traffic (KServe routes traffic itself)",
    "allow_from": "--allow-from (no NetworkPolicy is rendered)",
    "custom_metric": "--custom-metric (KServe scales on CPU here)",
}


def _kserve_objects(
    spec: DeploySpec, output: Path | None, storage_uri: str | None
) -> list[dict[str, object]]:
    from infership.k8s.kserve import kserve_objects
    from infership.repository.filesystem import FilesystemRepository

    params = click.get_current_context().params
    for option, what in _NOT_WITH_KSERVE.items():
        if params.get(option) not in (None, (), "none", False):
            raise click.UsageError(f"--kserve does not take {what}")
    # spec_options turned MODEL_REPO into the spec; KServe also needs each model's runtime.
    repository = FilesystemRepository(params["model_repo"])
    formats = {name: repository.find(name).manifest.runtime for name in spec.models}
    objects: list[dict[str, object]]
    try:
        objects = kserve_objects(spec, formats, storage_uri)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    if spec.monitoring:
        from infership.monitoring.kubernetes import kubernetes_objects

        # The dashboard and alert rules; Prometheus scrapes the pods by their annotations.
        objects += kubernetes_objects(spec.name, spec.namespace, service_monitor_port=None)
    return objects
