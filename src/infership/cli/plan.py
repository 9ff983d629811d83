"""``infership plan``: replicas and autoscaler settings from an ``infership bench --json`` file."""

from __future__ import annotations

from pathlib import Path

import click

from infership.cli.common import fail


@click.command()
@click.argument("bench_json", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--rate", "target_rps", type=float, required=True, help="Target requests/s.")
@click.option("--p99", "p99_budget_ms", type=float, required=True, help="p99 budget in ms.")
@click.option("--headroom", type=float, default=0.3, show_default=True,
              help="Fraction of each replica's capacity kept free.")  # fmt: skip
@click.option("--peak-rate", "peak_rps", type=float, help="Autoscaler max [default: 2×rate].")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
def plan(
    bench_json: Path,
    target_rps: float,
    p99_budget_ms: float,
    headroom: float,
    peak_rps: float | None,
    as_json: bool,
) -> None:
    """Replicas needed to serve --rate within --p99, from BENCH_JSON (one replica measured).

    \b
    infership bench http://127.0.0.1:8000 --image cat.jpg -c 1 -c 4 -c 8 -c 16 --json b.json
    infership plan b.json --rate 500 --p99 200
    """
    from pydantic import ValidationError

    from infership.bench.report import BenchReport
    from infership.capacity import PlanError
    from infership.capacity import plan as make_plan

    try:
        report = BenchReport.model_validate_json(bench_json.read_bytes())
    except ValidationError as exc:
        fail(f"{bench_json} is not an infership bench --json file: {exc}", 2)
    try:
        result = make_plan(
            report.runs,
            target_rps=target_rps,
            p99_budget_ms=p99_budget_ms,
            headroom=headroom,
            peak_rps=peak_rps,
        )
    except PlanError as exc:
        fail(str(exc), 1)
    if as_json:
        click.echo(result.model_dump_json(indent=2))
        return
    cpu = result.hpa.cpu_request_millicores
    rows = [
        ("measured", result.measured),
        ("p99 there", f"{result.measured_p99_ms:.1f} ms (budget {result.p99_budget_ms:g} ms)"),
        ("k, requests in flight per replica", str(result.concurrency_per_replica)),
        ("t, service time per request", f"{result.service_time_s * 1000:.2f} ms"),
        ("capacity per replica (k / t)", f"{result.replica_capacity_rps:.1f} req/s"),
        ("target rate C", f"{result.target_rps:g} req/s, headroom {result.headroom:.0%}"),
        ("replicas = ceil(C·t / (k·(1 − headroom)))", str(result.replicas)),
        ("HPA min / max replicas", f"{result.hpa.min_replicas} / {result.hpa.max_replicas}"),
        ("HPA target CPU utilisation", f"{result.hpa.target_cpu_utilization} %"),
        ("CPU request per replica", f"{cpu}m" if cpu else "not measured (bench --server-pid)"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        click.echo(f"{name:<{width}}  {value}")
