"""The dashboard, alert rules and Kubernetes objects: golden files, structure, and every query
checked against the metrics a real server exports."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import httpx
import yaml
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from infership.cli import main
from infership.monitoring import (
    AlertThresholds,
    alert_rules,
    dashboard,
    kubernetes_objects,
    render_files,
)

GOLDEN = Path(__file__).parent / "golden"
# PromQL words that are not metric names.
PROMQL_WORDS = {
    "sum", "by", "rate", "histogram_quantile", "le", "model", "version", "outcome", "status",
    "label_values",
}  # fmt: skip


def all_queries() -> list[str]:
    board = dashboard()
    queries = [t["expr"] for p in board["panels"] for t in p["targets"]]
    queries += [v["query"] for v in board["templating"]["list"] if v["type"] == "query"]
    queries += [r["expr"] for g in alert_rules()["groups"] for r in g["rules"]]
    return queries


def metric_names(query: str) -> set[str]:
    """Identifiers in ``query`` that are not PromQL words: label matchers, strings, ranges and
    Grafana variables removed first."""
    query = re.sub(r'"[^"]*"', "", query)
    query = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\$\w+", "", query)
    names = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", query))
    return names - PROMQL_WORDS


async def test_every_query_names_a_metric_the_server_exports(
    client: httpx.AsyncClient, chelsea: bytes
) -> None:
    # Labelled metrics appear once used: answer one upload and one unknown path first.
    files = {"img": ("chelsea.jpg", chelsea, "image/jpeg")}
    assert (await client.post("/predict", files=files)).status_code == 200
    assert (await client.get("/no-such-path")).status_code == 404
    exported = {
        sample.name
        for family in text_string_to_metric_families((await client.get("/metrics")).text)
        for sample in family.samples
    }
    for query in all_queries():
        used = metric_names(query)
        assert used, f"no metric in {query!r}"
        assert used <= exported, f"{query!r} uses {sorted(used - exported)}, not exported"


def test_metric_names_finds_names_outside_label_matchers() -> None:
    query = 'sum by (le) (rate(a_total{x="b_total"}[5m])) / on() c{y=~"$model"}'
    assert metric_names(query) == {"a_total", "on", "c"}


def test_dashboard_panels_are_well_formed_and_do_not_overlap() -> None:
    board = json.loads(json.dumps(dashboard()))
    panels: list[dict[str, Any]] = board["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        box = panel["gridPos"]
        assert box["x"] + box["w"] <= 24, panel["title"]
        columns = range(box["x"], box["x"] + box["w"])
        mine = {(x, y) for x in columns for y in range(box["y"], box["y"] + box["h"])}
        assert not mine & cells, f"{panel['title']} overlaps another panel"
        cells |= mine
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(set(ref_ids)) == len(ref_ids)
        assert panel["datasource"]["uid"] == "${datasource}"
    variables = {v["name"] for v in board["templating"]["list"]}
    assert variables == {"datasource", "model"}


def test_alert_rules_cover_errors_latency_saturation_and_readiness() -> None:
    rules = alert_rules(AlertThresholds(p99_seconds=0.25))["groups"][0]["rules"]
    by_name = {r["alert"]: r for r in rules}
    assert set(by_name) == {
        "InfershipHighErrorRate",
        "InfershipHighLatency",
        "InfershipQueueSaturated",
        "InfershipModelNotReady",
    }
    assert by_name["InfershipHighLatency"]["expr"].endswith("> 0.25")
    for rule in rules:
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert re.fullmatch(r"\d+m", rule["for"])


def test_kubernetes_objects_carry_the_dashboard_and_rules() -> None:
    configmap, rule, monitor = kubernetes_objects("shop", "ml")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(configmap["data"]["infership.json"]) == dashboard()
    assert rule["kind"] == "PrometheusRule"
    assert rule["spec"] == alert_rules()
    assert monitor["kind"] == "ServiceMonitor"
    assert monitor["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/instance": "shop"}
    assert {o["metadata"]["namespace"] for o in (configmap, rule, monitor)} == {"ml"}


def test_no_service_monitor_without_a_port() -> None:
    kinds = [o["kind"] for o in kubernetes_objects(service_monitor_port=None)]
    assert kinds == ["ConfigMap", "PrometheusRule"]


def test_rendered_files_match_the_golden_files() -> None:
    files = render_files()
    if os.environ.get("INFERSHIP_UPDATE_GOLDEN"):
        for name, text in files.items():
            (GOLDEN / name).write_text(text)
    assert sorted(files) == sorted(p.name for p in GOLDEN.iterdir())
    for name, text in files.items():
        assert text == (GOLDEN / name).read_text(), f"{name} differs from tests/monitoring/golden"
    # The YAML parses back to the data it was made from.
    assert yaml.safe_load(files["prometheus-rules.yaml"]) == alert_rules()
    assert list(yaml.safe_load_all(files["monitoring.yaml"])) == kubernetes_objects()


def test_cli_writes_the_files_into_the_folder(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["monitoring", "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    written = {p.name: p.read_text() for p in (tmp_path / "out").iterdir()}
    assert written == render_files()
    assert result.output.splitlines() == [str(tmp_path / "out" / n) for n in render_files()]


def test_cli_thresholds_and_no_service_monitor(tmp_path: Path) -> None:
    args = ["monitoring", "-o", str(tmp_path), "--p99-seconds", "0.2", "--error-ratio", "0.1"]
    result = CliRunner().invoke(main, [*args, "--service-monitor-port", "none"])
    assert result.exit_code == 0, result.output
    rules = yaml.safe_load((tmp_path / "prometheus-rules.yaml").read_text())
    exprs = [r["expr"] for r in rules["groups"][0]["rules"]]
    assert exprs[0].endswith("> 0.1")
    assert exprs[1].endswith("> 0.2")
    kinds = [d["kind"] for d in yaml.safe_load_all((tmp_path / "monitoring.yaml").read_text())]
    assert "ServiceMonitor" not in kinds


def test_cli_refuses_a_non_positive_threshold(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["monitoring", "-o", str(tmp_path), "--p99-seconds", "0"])
    assert result.exit_code == 2
    assert "--p99-seconds must be positive" in result.output


def test_cli_says_why_it_cannot_write(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = CliRunner().invoke(main, ["monitoring", "-o", str(blocker / "sub")])
    assert result.exit_code == 1
    assert "cannot write into" in result.output
