"""``infership build``: package a model repository as an OCI image."""

from __future__ import annotations

from pathlib import Path

import click

from infership.cli.common import fail
from infership.errors import BuildError, ConfigError


@click.command()
@click.argument("model_repository", type=click.Path(path_type=Path))
@click.option("--tag", "-t", required=True, help="Image name, e.g. localhost/classifier:1.")
@click.option(
    "--engine",
    type=click.Choice(["podman", "buildah", "docker"]),
    help="Container engine [default: the first found, in this order].",
)
@click.option(
    "--base-image",
    help="Base with Python [default: docker.io/library/python:3.11-slim; a CUDA image with --gpu].",
)
@click.option("--gpu", is_flag=True, help="CUDA base image and onnxruntime-gpu.")
@click.option(
    "--context-only",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write the build context into this folder and stop.",
)
@click.option(
    "--extra",
    "extras",
    multiple=True,
    help="An infership extra to install in the image too, e.g. text (repeatable).",
)
@click.option("--push", is_flag=True, help="Push the image through the engine once built.")
@click.option("--quiet", "-q", is_flag=True, help="Do not stream the engine's output.")
def build(
    model_repository: Path,
    tag: str,
    engine: str | None,
    base_image: str | None,
    gpu: bool,
    context_only: Path | None,
    extras: tuple[str, ...],
    push: bool,
    quiet: bool,
) -> None:
    """Build an image that serves MODEL_REPOSITORY.

    Dependencies are downloaded on this machine into a wheelhouse and installed offline in
    the build. The image runs as user 10001, works with a read-only root filesystem, and
    checks readiness in its HEALTHCHECK.
    """
    try:
        from infership.image.build import BuildOptions, build_image
    except ImportError as exc:  # pragma: no cover - packaging comes with pip's usual setups
        fail(f"infership build needs the [build] extra: pip install 'infership[build]' ({exc})", 1)

    def show(line: str) -> None:
        if not quiet:
            click.echo(line, err=True)

    options = BuildOptions(
        model_repository,
        tag,
        engine=engine,
        base_image=base_image,
        gpu=gpu,
        context_only=context_only,
        push=push,
        extras=extras,
    )
    try:
        result = build_image(options, show)
    except ConfigError as exc:
        fail(str(exc), 2)
    except BuildError as exc:
        fail(str(exc), 1)
    models = ", ".join(f"{m.name} (versions {', '.join(map(str, m.versions))})"
                       for m in result.spec.models)  # fmt: skip
    if result.context is not None:
        click.echo(f"wrote the build context for {models} to {result.context}")
        return
    pushed = " and pushed" if push else ""
    click.echo(
        f"built{pushed} {tag} ({result.image_id}) with {result.engine} in "
        f"{result.seconds:.1f} s, serving {models}"
    )
