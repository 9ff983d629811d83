"""``infership optimize``: rewrite an ONNX model version, check it, write it as a new version."""

from __future__ import annotations

import json
from pathlib import Path

import click

from infership.cli.common import fail
from infership.errors import ConfigError, InfershipError


@click.command()
@click.argument("model_dir", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option(
    "--mode",
    type=click.Choice(["graph", "dynamic", "static"]),
    default="dynamic",
    show_default=True,
    help="graph: fusions only; dynamic: int8 weights; static: int8 weights and activations.",
)
@click.option(
    "--samples",
    type=click.Path(path_type=Path, exists=True),
    help="Images folder (image models) or text file, one per line (text models): accuracy check "
    "and static calibration. Random tensors when absent.",
)
@click.option(
    "--keep-fp32",
    multiple=True,
    metavar="REGEX",
    help="dynamic/static: leave the nodes whose names match in FP32 (repeatable), e.g. "
    "'layer\\.[0-9]+/output/dense/' for a BERT's feed-forward output MatMuls.",
)
@click.option("--version", type=int, help="Version to rewrite [default: the newest].")
@click.option("--new-version", type=int, help="Version to write [default: newest + 1].")
@click.option(
    "--min-top1",
    type=float,
    default=1.0,
    show_default=True,
    help="Classifiers: least share of samples whose top-1 class must stay the same.",
)
@click.option(
    "--min-cosine",
    type=float,
    default=0.99,
    show_default=True,
    help="Other models: least cosine similarity of each output row to the original.",
)
@click.option("--batch-size", type=int, default=8, show_default=True, help="Rows per timed run.")
@click.option("--seconds", type=float, default=3.0, show_default=True, help="Timing budget.")
@click.option(
    "--threads",
    type=int,
    default=0,
    show_default=True,
    help="onnxruntime intra-op threads while timing (0 = every core).",
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(path_type=Path),
    help="Also write the report as JSON here.",
)
def optimize(
    model_dir: Path, json_path: Path | None, keep_fp32: tuple[str, ...], **options: object
) -> None:
    """Optimise or quantise the ONNX model in MODEL_DIR (a folder holding model.yaml).

    The rewrite is compared with the original on samples and timed against it; it is written as
    a new version folder, with its digest added to model.yaml, only when the check passes.
    """
    try:
        from infership.optimize import Gates
        from infership.optimize import optimize as run_optimize
    except ImportError as exc:  # pragma: no cover - the onnx package is in the [optimize] extra
        fail(f"optimize needs the optimize extra (pip install 'infership[optimize]'): {exc}", 1)
    gates = Gates(
        min_top1_agreement=options.pop("min_top1"),  # type: ignore[arg-type]
        min_cosine=options.pop("min_cosine"),  # type: ignore[arg-type]
    )
    try:
        report = run_optimize(model_dir, gates=gates, keep_fp32=keep_fp32, **options)  # type: ignore[arg-type]
    except ConfigError as exc:
        fail(str(exc), 2)
    except InfershipError as exc:
        fail(str(exc), 1)
    a, s = report.accuracy, report.speed
    click.echo(
        f"{report.model}: version {report.source_version} -> {report.new_version} "
        f"({report.mode}), written to {report.path}"
    )
    click.echo(
        f"  size        {report.original_bytes / 1e6:.1f} MB -> "
        f"{report.optimized_bytes / 1e6:.1f} MB "
        f"({report.optimized_bytes / report.original_bytes:.2f}x)"
    )
    agreement = "" if a.top1_agreement is None else f"top-1 agrees on {a.top1_agreement:.0%}, "
    click.echo(
        f"  accuracy    {a.samples} samples: {agreement}lowest cosine {a.min_cosine:.4f}, "
        f"largest |difference| {a.max_abs_diff:.4g}"
    )
    click.echo(
        f"  throughput  batch {s.batch_size}: {s.original_per_s:.1f}/s -> "
        f"{s.candidate_per_s:.1f}/s ({s.speedup:.2f}x)"
    )
    if json_path is not None:
        json_path.write_text(json.dumps(report.as_dict(), indent=2) + "\n", encoding="utf-8")
