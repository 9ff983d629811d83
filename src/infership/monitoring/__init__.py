"""Monitoring for deployments, as data: a Grafana dashboard, Prometheus alert rules and the
Kubernetes objects that install them (a dashboard ConfigMap, a PrometheusRule and a
ServiceMonitor). Plain functions returning dicts; ``render`` turns them into files.

Every PromQL query here names only metrics that ``infership.metrics`` exports (a test scrapes a
real server to check).
"""

from __future__ import annotations

from infership.monitoring.alerts import AlertThresholds, alert_rules
from infership.monitoring.dashboard import dashboard
from infership.monitoring.kubernetes import (
    dashboard_configmap,
    kubernetes_objects,
    prometheus_rule,
    service_monitor,
)
from infership.monitoring.render import render_files, write_files

__all__ = [
    "AlertThresholds",
    "alert_rules",
    "dashboard",
    "dashboard_configmap",
    "kubernetes_objects",
    "prometheus_rule",
    "render_files",
    "service_monitor",
    "write_files",
]
