"""Rendering the Compose file (golden), and its hardening and limits."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import yaml

from infership.errors import ConfigError
from infership.image.compose import ComposeSpec, compose_document, render_compose


def test_compose_file_matches_golden(golden: Callable[[str, str], None]) -> None:
    golden("compose.yaml", render_compose(ComposeSpec("localhost/classifier:1")))


def test_compose_publishes_on_loopback_with_limits_and_health_check() -> None:
    spec = ComposeSpec("localhost/c:1", "clf", host_port=18080, cpus=1.5, memory="512m")
    service = yaml.safe_load(render_compose(spec))["services"]["clf"]
    assert service["ports"] == ["127.0.0.1:18080:8000"]
    assert service["deploy"]["resources"]["limits"] == {"cpus": "1.5", "memory": "512m"}
    assert service["healthcheck"]["test"] == "infership probe"
    assert (service["read_only"], service["cap_drop"], service["user"]) == (
        True, ["ALL"], "10001:10001"
    )  # fmt: skip


def test_bad_image_reference_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="image 'Bad Image' is not a valid image reference"):
        compose_document(ComposeSpec("Bad Image"))


def test_open_access_is_allowed_only_for_a_loopback_port() -> None:
    def allowed(host: str) -> str:
        env = compose_document(ComposeSpec("localhost/c:1", host=host))["services"]["infership"]
        return str(env["environment"]["INFERSHIP_AUTH__ALLOW_UNAUTHENTICATED"])

    assert allowed("127.0.0.1") == "true"
    assert allowed("0.0.0.0") == "false"
