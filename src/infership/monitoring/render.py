"""Monitoring data as files: the dashboard as JSON, rules and Kubernetes objects as YAML."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from infership.monitoring.alerts import DEFAULT_THRESHOLDS, AlertThresholds, alert_rules
from infership.monitoring.dashboard import dashboard
from infership.monitoring.kubernetes import kubernetes_objects

DASHBOARD_FILE = "grafana-dashboard.json"
RULES_FILE = "prometheus-rules.yaml"
KUBERNETES_FILE = "monitoring.yaml"


def _yaml(documents: list[Any]) -> str:
    # Key order as built (readable), and no YAML aliases for repeated dicts.
    return yaml.dump_all(documents, Dumper=_Dumper, sort_keys=False, width=100)


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    # Multi-line strings (the dashboard inside its ConfigMap) as readable literal blocks.
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _text)


def render_files(
    name: str = "infership",
    namespace: str = "default",
    *,
    service_monitor_port: str | None = "http",
    thresholds: AlertThresholds = DEFAULT_THRESHOLDS,
) -> dict[str, str]:
    """File name → text: the dashboard, a plain rules file, and the Kubernetes objects."""
    return {
        DASHBOARD_FILE: json.dumps(dashboard(), indent=2) + "\n",
        RULES_FILE: _yaml([alert_rules(thresholds)]),
        KUBERNETES_FILE: _yaml(
            kubernetes_objects(
                name, namespace, service_monitor_port=service_monitor_port, thresholds=thresholds
            )
        ),
    }


def write_files(files: dict[str, str], directory: Path) -> list[Path]:
    """Write ``files`` into ``directory`` (created if needed); returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for file_name, text in files.items():
        path = directory / file_name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
