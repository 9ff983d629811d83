"""``infership monitoring``: write the Grafana dashboard, alert rules and Kubernetes objects."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.option(
    "-o", "--output", "output", required=True, type=click.Path(file_okay=False, path_type=Path),
    help="Folder to write into (created if missing).",
)  # fmt: skip
@click.option("--name", default="infership", show_default=True, help="Deployment name.")
@click.option("--namespace", default="default", show_default=True)
@click.option(
    "--service-monitor-port", default="http", show_default=True,
    help="Service port the ServiceMonitor scrapes; 'none' leaves the ServiceMonitor out.",
)  # fmt: skip
@click.option("--p99-seconds", type=float, help="Latency alert threshold [default: 1.0].")
@click.option("--error-ratio", type=float, help="Error-rate alert threshold [default: 0.05].")
def monitoring(
    output: Path,
    name: str,
    namespace: str,
    service_monitor_port: str,
    p99_seconds: float | None,
    error_ratio: float | None,
) -> None:
    """Write grafana-dashboard.json, prometheus-rules.yaml and monitoring.yaml (a dashboard
    ConfigMap, a PrometheusRule and a ServiceMonitor) into OUTPUT."""
    from infership.cli.common import fail
    from infership.monitoring import AlertThresholds, render_files, write_files

    given = {"p99_seconds": p99_seconds, "error_ratio": error_ratio}
    for option, value in given.items():
        if value is not None and value <= 0:
            fail(f"--{option.replace('_', '-')} must be positive; got {value}", 2)
    defaults = AlertThresholds()
    thresholds = defaults._replace(
        p99_seconds=p99_seconds or defaults.p99_seconds,
        error_ratio=error_ratio or defaults.error_ratio,
    )
    port = None if service_monitor_port.lower() == "none" else service_monitor_port
    files = render_files(name, namespace, service_monitor_port=port, thresholds=thresholds)
    try:
        written = write_files(files, output)
    except OSError as exc:
        fail(f"cannot write into {output}: {exc.strerror or exc}", 1)
    for path in written:
        click.echo(str(path))
