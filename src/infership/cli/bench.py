"""``infership bench``: load an inference server, print percentiles, optionally save JSON."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from infership.cli.common import fail, run

if TYPE_CHECKING:
    from infership.bench.loadgen import Load, Progress, Recording
    from infership.bench.transport import Target

T = TypeVar("T")


@click.command()
@click.argument("target")
@click.option("--versus", help="A second target, run alternately with TARGET; prints B/A.")
@click.option(
    "--payload",
    type=click.Choice(["upload", "raw", "oip-json", "oip-binary", "grpc", "grpc-stream"]),
    default="upload",
    show_default=True,
    help="upload: multipart image to /predict; raw: image body; oip-*: /v2 infer; "
    "grpc: OIP gRPC ModelInfer (TARGET grpc://host:8001); grpc-stream: every request of a "
    "connection on one ModelStreamInfer call.",
)
@click.option("--model", help="Model name (required for oip-* and grpc; optional for upload).")
@click.option("--image", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--input", "tensors", multiple=True, help="NAME:DATATYPE:SHAPE, e.g. x:FP32:1,16.")
@click.option("--output", "outputs", multiple=True, help="Output to ask for (repeatable).")
@click.option("-c", "--concurrency", multiple=True, type=click.IntRange(min=1))
@click.option("-r", "--rate", multiple=True, type=click.FloatRange(min=0, min_open=True))
@click.option("-d", "--duration", type=float, default=10.0, show_default=True)
@click.option("--warmup", type=float, default=1.0, show_default=True)
@click.option("--rounds", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--timeout", type=float, default=30.0, show_default=True)
@click.option("--server-pid", type=int, help="Also report this local process's CPU use.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--progress/--no-progress", default=None, help="[default: when stderr is a TTY]")
def bench(
    target: str,
    versus: str | None,
    payload: str,
    model: str | None,
    image: Path | None,
    tensors: tuple[str, ...],
    outputs: tuple[str, ...],
    concurrency: tuple[int, ...],
    rate: tuple[float, ...],
    duration: float,
    warmup: float,
    rounds: int,
    timeout: float,
    server_pid: int | None,
    json_path: Path | None,
    progress: bool | None,
) -> None:
    """Load TARGET (http://host:port) at fixed concurrency (-c) or arrival rate (-r).

    \b
    infership bench http://127.0.0.1:8000 --image cat.jpg -c 1 -c 32
    infership bench http://127.0.0.1:8000 --payload oip-binary --model add \\
        --input x:FP32:1,16 -r 500 -r 1000 --json out.json
    """
    from infership.bench import report as reports
    from infership.bench.loadgen import Load
    from infership.bench.payloads import PayloadError
    from infership.bench.runner import measure

    try:
        loads = [Load(concurrency=c, duration_s=duration, warmup_s=warmup) for c in concurrency]
        loads += [Load(rate=r, duration_s=duration, warmup_s=warmup) for r in rate]
        loads = loads or [Load(concurrency=1, duration_s=duration, warmup_s=warmup)]
        spec = _Spec(payload, model, image, tensors, outputs, timeout)
        targets = [spec.target(url) for url in (target, versus) if url]
    except (PayloadError, ValueError) as exc:
        fail(str(exc), 2)
    show = sys.stderr.isatty() if progress is None else progress
    try:
        results = _run(measure(targets, payload, loads, rounds=rounds,
                               server_pids=[server_pid] if server_pid else [],
                               progress=_progress if show else None))  # fmt: skip
    except ConnectionError as exc:
        fail(str(exc), 1)
    finally:
        if show:
            click.echo("", err=True)  # end the live progress line
    finished = reports.report(results, shlex.join(["infership", "bench", *sys.argv[2:]]))
    click.echo(reports.table(results))
    if versus:
        for a, b in zip(results[::2], results[1::2], strict=True):
            click.echo(f"B = {b.target} vs A = {a.target}, {reports.ratio(a, b)}")
    if json_path is not None:
        json_path.write_text(finished.model_dump_json(indent=2) + "\n")
    if any(r.ok == 0 for r in results):
        fail("some runs had no successful request; see the errors column", 1)


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """``common.run`` (uvloop) for a coroutine whose result we need."""
    box: list[T] = []

    async def keep() -> None:
        box.append(await coro)

    run(keep())
    return box[0]


class _Spec:
    """Turns the payload options into a target for a URL (payload bodies built once)."""

    def __init__(
        self,
        payload: str,
        model: str | None,
        image: Path | None,
        tensors: tuple[str, ...],
        outputs: tuple[str, ...],
        timeout: float,
    ) -> None:
        from infership.bench import payloads

        self.payload, self.timeout = payload, timeout
        if payload in ("upload", "raw"):
            if image is None:
                raise payloads.PayloadError(f"--payload {payload} needs --image FILE")
            path = f"/v2/models/{model}/predict" if model else "/predict"
            build = payloads.upload if payload == "upload" else payloads.raw_image
            self.http = build(image.read_bytes(), image.name, path)
            return
        if model is None:
            raise payloads.PayloadError(f"--payload {payload} needs --model NAME")
        inputs = [payloads.parse_tensor(spec) for spec in tensors]
        if image is not None:
            inputs.append(payloads.image_tensor(image.read_bytes()))
        if not inputs:
            raise payloads.PayloadError(f"--payload {payload} needs --input or --image")
        path = payloads.infer_path(model)
        if payload == "oip-json":
            self.http = payloads.oip_json(path, inputs, outputs)
        elif payload == "oip-binary":
            self.http = payloads.oip_binary(path, inputs, outputs)
        else:
            self.grpc = payloads.grpc_infer_request(model, inputs, outputs)

    def target(self, url: str) -> Target:
        from infership.bench.transport import GrpcTarget, HttpTarget

        if self.payload in ("grpc", "grpc-stream"):
            return GrpcTarget(url, self.grpc, self.timeout, stream=self.payload == "grpc-stream")
        return HttpTarget(url, self.http, self.timeout)


def _progress(label: str, load: Load) -> Progress:
    from infership.bench.report import progress_line

    def show(seconds: float, recording: Recording) -> None:
        line = progress_line(label, seconds, load.duration_s, recording)
        click.echo(f"\r\x1b[2K{line}", err=True, nl=False)

    return show
