"""The dashboard and alert rules against a real Prometheus (Debian's 2.42 and its promtool,
installed by .ci/setup.d/60-prometheus.sh).

- ``promtool check rules`` accepts the rules file ``infership monitoring`` writes, and ``promtool
  test rules`` shows two alerts firing, and staying quiet, on made-up series.
- A real ``prometheus`` on a free loopback port scrapes a real ``infership serve`` every second
  and evaluates the rules every second. After traffic that succeeds and fails, every query of
  every dashboard panel (Grafana's variables substituted) returns series, the template
  variable's label query finds the model, each alert's expression without its threshold returns
  series, and Prometheus reports every rule healthy.

Without prometheus and promtool the tests skip, except in CI (INFERSHIP_CI=1), where they fail.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from conftest import EXAMPLE, RunningServer, free_port, start_server, stop_server
from infership.monitoring import alert_rules, dashboard
from infership.monitoring.render import RULES_FILE, render_files

pytestmark = pytest.mark.e2e

SCRAPE_INTERVAL = "1s"
RATE_WINDOW = "30s"
"""What ``$__rate_interval`` becomes: Grafana makes it at least four scrape intervals; 30 s
also holds the whole of the traffic the test sends, so rates of it are above zero."""


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        message = f"{name} is not installed: run .ci/setup.d/60-prometheus.sh"
        if os.environ.get("INFERSHIP_CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture(scope="module")
def rules_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The rules file as `infership monitoring` writes it."""
    path = tmp_path_factory.mktemp("rules") / RULES_FILE
    path.write_text(render_files()[RULES_FILE])
    return path


def test_promtool_accepts_the_alert_rules(rules_file: Path) -> None:
    checked = run(tool("promtool"), "check", "rules", str(rules_file))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(alert_rules()['groups'][0]['rules'])} rules found" in checked.stdout


def test_promtool_unit_tests_the_error_rate_and_readiness_alerts(
    rules_file: Path, tmp_path: Path
) -> None:
    rules = {r["alert"]: r for r in alert_rules()["groups"][0]["rules"]}
    requests = 'infership_requests_total{{model="m",version="1",outcome="{}"}}'
    tests = {
        "rule_files": [str(rules_file)],
        "evaluation_interval": "1m",
        "tests": [
            {
                # 100 requests a minute, 10 of them server errors: 10% > 5% for over 5 minutes.
                "interval": "1m",
                "input_series": [
                    {"series": requests.format("success"), "values": "0+90x20"},
                    {"series": requests.format("server_error"), "values": "0+10x20"},
                    {"series": requests.format("client_error"), "values": "0x20"},
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "15m",
                        "alertname": "InfershipHighErrorRate",
                        "exp_alerts": [
                            {
                                "exp_labels": {"severity": "critical", "model": "m"},
                                "exp_annotations": {
                                    "summary": "m: 10% of requests fail",
                                    "description": rules["InfershipHighErrorRate"]["annotations"][
                                        "description"
                                    ],
                                },
                            }
                        ],
                    },
                    # Client errors are the client's: no alert on them.
                    {"eval_time": "15m", "alertname": "InfershipQueueSaturated", "exp_alerts": []},
                ],
            },
            {
                # Not ready for 4 minutes: pending only; for 6: firing.
                "interval": "1m",
                "input_series": [
                    {"series": 'infership_model_ready{model="m",version="2"}', "values": "0x10"}
                ],
                "alert_rule_test": [
                    {"eval_time": "4m", "alertname": "InfershipModelNotReady", "exp_alerts": []},
                    {
                        "eval_time": "6m",
                        "alertname": "InfershipModelNotReady",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "critical",
                                    "model": "m",
                                    "version": "2",
                                },
                                "exp_annotations": {
                                    "summary": "m version 2 is not ready",
                                    "description": rules["InfershipModelNotReady"]["annotations"][
                                        "description"
                                    ],
                                },
                            }
                        ],
                    },
                ],
            },
        ],
    }
    test_file = tmp_path / "rules_test.yaml"
    test_file.write_text(yaml.safe_dump(tests, sort_keys=False))
    tested = run(tool("promtool"), "test", "rules", str(test_file))
    assert tested.returncode == 0, tested.stdout + tested.stderr


# A real Prometheus scraping a real server.


@dataclass
class Scraped:
    """A running prometheus that has scraped ``server`` after the test traffic."""

    url: str
    server: RunningServer
    at: float | None = None
    """When queries are evaluated (Unix time): just after the traffic was scraped, so that the
    rate window holds it however long the tests before took; None: now."""

    def query(self, expr: str) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"query": expr}
        if self.at is not None:
            params["time"] = self.at
        answer = httpx.get(f"{self.url}/api/v1/query", params=params, timeout=10)
        body = answer.json()
        assert answer.status_code == 200, f"{expr}: {body}"
        assert body["status"] == "success", f"{expr}: {body}"
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def value(self, expr: str) -> float:
        [series] = self.query(expr)
        return float(series["value"][1])


def _config(directory: Path, server: RunningServer, rules: Path) -> Path:
    path = directory / "prometheus.yml"
    config = {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "rule_files": [str(rules)],
        "scrape_configs": [
            {
                "job_name": "infership",
                "scrape_timeout": SCRAPE_INTERVAL,
                "static_configs": [{"targets": [server.url.removeprefix("http://")]}],
            }
        ],
    }
    path.write_text(yaml.safe_dump(config))
    return path


def _wait_for(what: str, check: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except (httpx.TransportError, ValueError):
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)


def _send_traffic(server: RunningServer, image: bytes) -> dict[str, int]:
    """Requests that succeed, that the client gets wrong, that time out in the queue, and to
    a model that is not there; returns how many of each."""
    infer = f"{server.url}/v2/models/{EXAMPLE}/infer"
    wrong_shape = {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3], "data": [0.0] * 3}]
    }
    zeros = [0.0] * (3 * 224 * 224)
    expired = {
        "parameters": {"timeout": 1},  # microseconds, as in Triton: gone before compute
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3, 224, 224], "data": zeros}],
    }
    counts = {"success": 12, "client_error": 5, "capacity_error": 5, "not_found": 3}
    with httpx.Client(timeout=30) as client:
        for _ in range(counts["success"]):
            files = {"img": ("chelsea.jpg", image, "image/jpeg")}
            assert client.post(f"{server.url}/predict", files=files).status_code == 200
        for _ in range(counts["client_error"]):
            assert client.post(infer, json=wrong_shape).status_code == 400
        for _ in range(counts["capacity_error"]):
            assert client.post(infer, json=expired).status_code == 504
        for _ in range(counts["not_found"]):
            assert client.post(f"{server.url}/v2/models/nope/infer", json={}).status_code == 404
    return counts


@pytest.fixture(scope="module")
def scraped(rules_file: Path, chelsea: bytes) -> Iterator[Scraped]:
    prometheus = tool("prometheus")
    server = start_server()
    directory = Path(tempfile.mkdtemp(prefix="prometheus-"))
    url = f"http://127.0.0.1:{free_port()}"
    log = (directory / "prometheus.log").open("w")
    process = subprocess.Popen(
        [
            prometheus,
            f"--config.file={_config(directory, server, rules_file)}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address={url.removeprefix('http://')}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        scraped = Scraped(url, server)
        _wait_for("prometheus to be ready", lambda: httpx.get(f"{url}/-/ready").status_code == 200)
        # One scrape before the traffic, so that the rates over it are above zero.
        _wait_for("the first scrape", lambda: scraped.value('up{job="infership"}') == 1)
        counts = _send_traffic(server, chelsea)
        success = f'sum(infership_requests_total{{outcome="success",model="{EXAMPLE}"}})'
        _wait_for("a scrape after the traffic", lambda: scraped.value(success) >= counts["success"])
        # Counters born in the traffic (the 404s' status) have a rate from their second sample.
        samples = "min(count_over_time(infership_http_requests_total[1m]))"
        _wait_for("two scrapes of every counter", lambda: scraped.value(samples) >= 2)
        scraped.at = time.time()
        yield scraped
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
        stop_server(server)
        shutil.rmtree(directory, ignore_errors=True)


def grafana_expr(expr: str, variables: dict[str, str]) -> str:
    """``expr`` as Grafana sends it: its interval variables and template variables replaced."""
    values = {"__rate_interval": RATE_WINDOW, "__interval": SCRAPE_INTERVAL, **variables}
    substituted = re.sub(r"\$\{?(\w+)\}?", lambda m: values.get(m.group(1), m.group(0)), expr)
    assert "$" not in substituted, f"a Grafana variable without a value in {expr!r}"
    return substituted


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, expr) of every target of every panel."""
    return [(p["title"], t["expr"]) for p in dashboard()["panels"] for t in p["targets"]]


@pytest.mark.parametrize("selection", ["all", "one model"])
def test_every_dashboard_query_returns_series_after_traffic(
    scraped: Scraped, selection: str
) -> None:
    # The model variable as Grafana fills it in: its allValue for "All", else the model name.
    [variable] = [v for v in dashboard()["templating"]["list"] if v["name"] == "model"]
    values = {"model": variable["allValue"] if selection == "all" else EXAMPLE}
    empty = [
        f"{title}: {grafana_expr(expr, values)}"
        for title, expr in dashboard_queries()
        if not scraped.query(grafana_expr(expr, values))
    ]
    assert empty == [], "queries that returned no series:\n" + "\n".join(empty)


def test_the_dashboard_shows_the_traffic_it_was_sent(scraped: Scraped) -> None:
    values = {"model": EXAMPLE}
    queries = {title: grafana_expr(expr, values) for title, expr in dashboard_queries()}
    by_outcome = {
        s["metric"]["outcome"]: float(s["value"][1])
        for s in scraped.query(queries["Requests / s by outcome"])
    }
    for outcome in ("success", "client_error", "capacity_error"):
        assert by_outcome[outcome] > 0, by_outcome
    assert 0 < scraped.value(queries["Failed share (server and capacity errors)"]) < 1
    statuses = {s["metric"]["status"] for s in scraped.query(queries["HTTP answers / s by status"])}
    assert {"200", "400", "404", "504"} <= statuses
    [ready] = scraped.query(queries["Model versions ready"])
    assert ready["metric"] == {"model": EXAMPLE, "version": "1"}
    assert ready["value"][1] == "1"


def test_the_model_variables_label_query_finds_the_model(scraped: Scraped) -> None:
    [variable] = [v for v in dashboard()["templating"]["list"] if v["name"] == "model"]
    # Grafana's label_values(METRIC, LABEL) is the label-values API with a series matcher.
    call = re.fullmatch(r"label_values\((\w+), (\w+)\)", variable["query"])
    assert call is not None, variable["query"]
    metric, label = call.groups()
    answer = httpx.get(
        f"{scraped.url}/api/v1/label/{label}/values", params={"match[]": metric}, timeout=10
    ).json()
    assert answer["data"] == [EXAMPLE]


def test_every_alert_expression_returns_series_below_its_threshold(scraped: Scraped) -> None:
    # The alerts do not fire on this traffic; their expressions without the comparison must
    # still find the series they compare.
    for rule in alert_rules()["groups"][0]["rules"]:
        comparison = re.fullmatch(r"(.+) (?:[<>]=?|==|!=) [0-9.]+", rule["expr"])
        assert comparison is not None, rule["expr"]
        measured = comparison.group(1)
        assert scraped.query(measured), f"{rule['alert']}: no series for {measured}"


def test_prometheus_evaluates_every_rule_without_error(scraped: Scraped) -> None:
    def evaluated() -> bool:
        groups = httpx.get(f"{scraped.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        return len(rules) == 4 and all(r["lastEvaluation"][:4] != "0001" for r in rules)

    _wait_for("every rule to be evaluated", evaluated)
    groups = httpx.get(f"{scraped.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
    health = {r["name"]: (r["health"], r.get("lastError", "")) for g in groups for r in g["rules"]}
    assert health == dict.fromkeys(health, ("ok", ""))
    assert set(health) == {r["alert"] for r in alert_rules()["groups"][0]["rules"]}
