"""The build, compose and probe commands: exit codes and messages, on real sockets and files."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from conftest import free_port
from infership.app import EXAMPLE_REPOSITORY
from infership.cli import main

CONFIG_ERROR, FAILURE = 2, 1


def test_build_of_a_missing_repository_exits_2_naming_it(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["build", str(tmp_path / "nope"), "--tag", "localhost/m:1"])
    assert result.exit_code == CONFIG_ERROR
    assert f"error: model repository {tmp_path / 'nope'} does not exist" in result.output


def test_build_with_a_malformed_tag_exits_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["build", str(EXAMPLE_REPOSITORY), "--tag", "Not A Tag"])
    assert result.exit_code == CONFIG_ERROR
    assert "tag 'Not A Tag' is not a valid image reference" in result.output


def test_build_with_a_malformed_base_image_exits_2() -> None:
    args = ["build", str(EXAMPLE_REPOSITORY), "-t", "localhost/m:1", "--base-image", "UPPER:1"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == CONFIG_ERROR
    assert "base image 'UPPER:1' is not a valid image reference" in result.output


def test_build_without_any_engine_exits_1_saying_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    result = CliRunner().invoke(main, ["build", str(EXAMPLE_REPOSITORY), "-t", "localhost/m:1"])
    assert result.exit_code == FAILURE
    assert "error: no container engine found" in result.output
    assert "--context-only" in result.output


def test_compose_writes_a_file_that_runs_the_image(tmp_path: Path) -> None:
    target = tmp_path / "compose.yaml"
    args = ["compose", "localhost/m:1", "-o", str(target), "--port", "18001", "--memory", "2g"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    service = yaml.safe_load(target.read_text())["services"]["infership"]
    assert service["image"] == "localhost/m:1"
    assert service["ports"] == ["127.0.0.1:18001:8000"]
    assert service["deploy"]["resources"]["limits"]["memory"] == "2g"


def test_compose_to_stdout_and_bad_image() -> None:
    result = CliRunner().invoke(main, ["compose", "localhost/m:1", "-o", "-"])
    assert yaml.safe_load(result.output)["services"]["infership"]["image"] == "localhost/m:1"
    bad = CliRunner().invoke(main, ["compose", "Bad Image"])
    assert bad.exit_code == CONFIG_ERROR
    assert "image 'Bad Image' is not a valid image reference" in bad.output


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/v2/health/ready" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[http.server.HTTPServer]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    _Health.status = 200


def test_probe_passes_when_ready(health_server: http.server.HTTPServer) -> None:
    port = str(health_server.server_address[1])
    result = CliRunner().invoke(main, ["probe"], env={"INFERSHIP_HTTP__PORT": port})
    assert result.exit_code == 0, result.output


def test_probe_fails_when_not_ready(health_server: http.server.HTTPServer) -> None:
    _Health.status = 503
    port = str(health_server.server_address[1])
    result = CliRunner().invoke(main, ["probe", "--port", port])
    assert result.exit_code == 1
    assert f"probe: http://127.0.0.1:{port}/v2/health/ready: HTTP 503" in result.output


def test_probe_fails_when_nothing_listens() -> None:
    port = free_port()
    result = CliRunner().invoke(main, ["probe", "--port", str(port), "--timeout", "1"])
    assert result.exit_code == 1
    assert "Connection refused" in result.output
