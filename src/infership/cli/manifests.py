"""``infership manifests``: the Kubernetes objects of a model image, as YAML or a kustomize tree."""

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
def manifests(spec: DeploySpec, output: Path | None, kube_version: str | None) -> None:
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
