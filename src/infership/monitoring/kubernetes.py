"""The Kubernetes objects that install the monitoring: for the Prometheus Operator
(PrometheusRule, ServiceMonitor) and Grafana's dashboard sidecar (a labelled ConfigMap)."""

from __future__ import annotations

import json
from typing import Any

from infership.monitoring.alerts import DEFAULT_THRESHOLDS, AlertThresholds, alert_rules
from infership.monitoring.dashboard import dashboard


def _metadata(name: str, namespace: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": namespace,
        "labels": {"app.kubernetes.io/name": "infership", **(labels or {})},
    }


def dashboard_configmap(name: str = "infership", namespace: str = "default") -> dict[str, Any]:
    """The dashboard in a ConfigMap labelled ``grafana_dashboard: "1"``, which the Grafana
    Helm chart's sidecar picks up."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(f"{name}-dashboard", namespace, {"grafana_dashboard": "1"}),
        "data": {"infership.json": json.dumps(dashboard(), indent=2, sort_keys=True)},
    }


def prometheus_rule(
    name: str = "infership",
    namespace: str = "default",
    thresholds: AlertThresholds = DEFAULT_THRESHOLDS,
) -> dict[str, Any]:
    """The alert rules as a Prometheus Operator PrometheusRule."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": _metadata(f"{name}-alerts", namespace),
        "spec": alert_rules(thresholds),
    }


def service_monitor(
    name: str = "infership",
    namespace: str = "default",
    port: str = "http",
    interval: str = "15s",
) -> dict[str, Any]:
    """Scrape ``/metrics`` of every Service labelled ``app.kubernetes.io/instance: <name>``
    through its port called ``port``."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": _metadata(name, namespace),
        "spec": {
            "selector": {"matchLabels": {"app.kubernetes.io/instance": name}},
            "namespaceSelector": {"matchNames": [namespace]},
            "endpoints": [{"port": port, "path": "/metrics", "interval": interval}],
        },
    }


def kubernetes_objects(
    name: str = "infership",
    namespace: str = "default",
    *,
    service_monitor_port: str | None = "http",
    thresholds: AlertThresholds = DEFAULT_THRESHOLDS,
) -> list[dict[str, Any]]:
    """Everything ``--monitoring`` adds to a deployment; no ServiceMonitor when its port is
    None (clusters without the Prometheus Operator scrape by annotation instead)."""
    objects = [dashboard_configmap(name, namespace), prometheus_rule(name, namespace, thresholds)]
    if service_monitor_port is not None:
        objects.append(service_monitor(name, namespace, service_monitor_port))
    return objects
