"""Start-up refuses to put an unauthenticated server on a network unless told to."""

from __future__ import annotations

import pytest

from infership.app import Application
from infership.errors import ConfigError
from infership.settings import ServerSettings, is_loopback


def check(**settings: object) -> list[str]:
    application = Application(ServerSettings.model_validate(settings))
    try:
        return application.check()
    finally:
        application.preprocess_executor.shutdown()


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("::1", True), ("[::1]", True), ("localhost", True),
     ("0.0.0.0", False), ("::", False), ("10.1.2.3", False), ("example.org", False)],
)  # fmt: skip
def test_loopback_addresses_are_told_apart(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_a_grpc_listener_on_a_network_is_refused_without_keys() -> None:
    with pytest.raises(ConfigError, match=r"binding 0\.0\.0\.0 without API keys"):
        check(grpc={"host": "0.0.0.0"})


def test_a_disabled_grpc_listener_exposes_nothing() -> None:
    assert check(grpc={"host": "0.0.0.0", "enabled": False}) == ["efficientnet-lite0"]


def test_allow_unauthenticated_serves_openly_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    check(http={"host": "0.0.0.0"}, auth={"allow_unauthenticated": True})
    assert "serving 0.0.0.0 without authentication" in caplog.text


def test_the_repository_api_on_a_network_always_needs_keys() -> None:
    with pytest.raises(ConfigError, match="repository API must never be open to a network"):
        check(http={"host": "0.0.0.0"}, model_control=True, auth={"allow_unauthenticated": True})


def test_keys_make_a_network_address_acceptable() -> None:
    settings = {"http": {"host": "0.0.0.0"}, "auth": {"tokens": ["isk_" + "a" * 40]}}
    assert check(**settings) == ["efficientnet-lite0"]
