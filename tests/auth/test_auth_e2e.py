"""Keys, scopes, rate limits, TLS and mutual TLS against a real server, on REST and gRPC."""

from __future__ import annotations

import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
import yaml

from conftest import EXAMPLE, RunningServer, serve_command, start_server, stop_server
from infership.auth import digest, new_key
from infership.protocols.grpc._pb import pb
from infership.protocols.grpc.generated.grpc_service_pb2_grpc import GRPCInferenceServiceStub
from pki import Pki, make_pki

pytestmark = pytest.mark.e2e

KEYS = {name: new_key() for name in ("user", "ops", "old", "slow", "late")}


def entries(*names: str) -> dict[str, object]:
    extra: dict[str, dict[str, object]] = {
        "ops": {"scopes": ["admin"]},
        "old": {"expires": "2001-01-01T00:00:00Z"},
        "slow": {"rate_limit": {"requests_per_second": 0.5, "burst": 2}},
    }
    return {
        "keys": [
            {"name": name, "sha256": digest(KEYS[name]), "scopes": ["infer"], **extra.get(name, {})}
            for name in names
        ]
    }


def bearer(name: str) -> dict[str, str]:
    return {"authorization": f"Bearer {KEYS[name]}"}


@pytest.fixture(scope="module")
def keys_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("auth") / "keys.yaml"
    path.write_text(yaml.safe_dump(entries("user", "ops", "old", "slow")), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def server(keys_file: Path) -> Iterator[RunningServer]:
    running = start_server("--api-keys", str(keys_file), "--model-control")
    yield running
    log = stop_server(running)
    for key in KEYS.values():  # keys never reach the log, whatever happened
        assert key not in log


def infer_body() -> dict[str, object]:
    return {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["x"]}]}


@pytest.mark.parametrize(
    ("headers", "status", "message"),
    [
        ({}, 401, "requires an API key"),
        ({"authorization": "Bearer isk_wrong"}, 401, "not valid"),
        ({"authorization": f"Basic {KEYS['user']}"}, 401, "requires an API key"),
        (bearer("old"), 401, "'old' has expired"),
    ],
)
def test_rest_refuses_missing_wrong_and_expired_keys(
    server: RunningServer, headers: dict[str, str], status: int, message: str
) -> None:
    response = httpx.post(
        f"{server.url}/v2/models/{EXAMPLE}/infer", json=infer_body(), headers=headers
    )
    assert response.status_code == status
    assert message in response.json()["error"]
    assert response.headers["www-authenticate"] == 'Bearer realm="infership"'


def test_rest_serves_a_valid_key_and_leaves_probes_and_metrics_open(
    server: RunningServer, chelsea: bytes
) -> None:
    response = httpx.post(
        f"{server.url}/predict",
        content=chelsea,
        headers={**bearer("user"), "content-type": "image/jpeg"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["predictions"][0]["top_k"][0]["label"] == "Egyptian cat"
    for path in ("/v2/health/live", "/v2/health/ready", f"/v2/models/{EXAMPLE}/ready", "/metrics"):
        assert httpx.get(f"{server.url}{path}").status_code == 200, path


def test_the_repository_api_needs_the_admin_scope(server: RunningServer) -> None:
    index = f"{server.url}/v2/repository/index"
    forbidden = httpx.post(index, headers=bearer("user"))
    assert forbidden.status_code == 403
    assert "'user' lacks the 'admin' scope" in forbidden.json()["error"]
    assert httpx.post(index, headers=bearer("ops")).status_code == 200


def test_a_key_over_its_rate_gets_429_with_retry_after(server: RunningServer) -> None:
    url = f"{server.url}/v2/models/{EXAMPLE}"
    answers = [httpx.get(url, headers=bearer("slow")) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert int(answers[2].headers["retry-after"]) >= 1
    assert "'slow' is over its rate" in answers[2].json()["error"]


def test_grpc_applies_the_same_keys_and_scopes(server: RunningServer) -> None:
    with grpc.insecure_channel(server.grpc_address) as channel:
        stub = GRPCInferenceServiceStub(channel)
        request = pb.ModelMetadataRequest(name=EXAMPLE)
        with pytest.raises(grpc.RpcError) as missing:
            stub.ModelMetadata(request, timeout=5)
        assert missing.value.code() is grpc.StatusCode.UNAUTHENTICATED
        user = tuple(bearer("user").items())
        assert stub.ModelMetadata(request, metadata=user, timeout=5).name == EXAMPLE
        with pytest.raises(grpc.RpcError) as forbidden:
            stub.RepositoryIndex(pb.RepositoryIndexRequest(), metadata=user, timeout=5)
        assert forbidden.value.code() is grpc.StatusCode.PERMISSION_DENIED
        ops = tuple(bearer("ops").items())
        assert stub.RepositoryIndex(pb.RepositoryIndexRequest(), metadata=ops, timeout=5).models
        assert stub.ServerReady(pb.ServerReadyRequest(), timeout=5).ready  # probes stay open


def test_a_key_added_to_the_file_works_without_a_restart(
    server: RunningServer, keys_file: Path
) -> None:
    url = f"{server.url}/v2/models/{EXAMPLE}"
    assert httpx.get(url, headers=bearer("late")).status_code == 401
    replacement = keys_file.with_suffix(".new")
    replacement.write_text(yaml.safe_dump(entries("user", "ops", "old", "slow", "late")))
    replacement.replace(keys_file)
    deadline = time.monotonic() + 5
    while httpx.get(url, headers=bearer("late")).status_code != 200:
        assert time.monotonic() < deadline, "the new key was not picked up within 5 s"
        time.sleep(0.2)


def test_model_names_cannot_walk_out_of_the_repository(server: RunningServer) -> None:
    for name in ("..", "../..", "..%2F..%2Fetc%2Fpasswd", "%2e%2e"):
        response = httpx.post(
            f"{server.url}/v2/repository/models/{name}/load", headers=bearer("ops")
        )
        assert response.status_code in (400, 404), (name, response.status_code, response.text)


def test_oversized_headers_get_431(server: RunningServer) -> None:
    response = httpx.get(f"{server.url}/v2/health/live", headers={"x-big": "a" * 40_000})
    assert response.status_code == 431


def test_a_public_address_without_keys_is_refused_unless_allowed() -> None:
    result = subprocess.run(
        serve_command("--host", "0.0.0.0", "--port", "0"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--allow-unauthenticated" in result.stderr


# TLS


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def client_context(pki: Pki, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca))
    if cert is not None:
        context.load_cert_chain(str(cert), str(key))
    return context


def test_tls_serves_https_and_grpc_over_tls(pki: Pki) -> None:
    tls = ("--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key))
    server = start_server(*tls, scheme="https", verify=client_context(pki))
    try:
        response = httpx.get(f"{server.url}/v2", verify=client_context(pki))
        assert response.status_code == 200
        with pytest.raises(httpx.TransportError):  # plain HTTP on the TLS port
            httpx.get(server.url.replace("https", "http") + "/v2")
        credentials = grpc.ssl_channel_credentials(root_certificates=pki.ca.read_bytes())
        with grpc.secure_channel(server.grpc_address, credentials) as channel:
            stub = GRPCInferenceServiceStub(channel)
            assert stub.ServerReady(pb.ServerReadyRequest(), timeout=5).ready
    finally:
        stop_server(server)


def test_mutual_tls_admits_only_clients_with_a_certificate_from_the_ca(pki: Pki) -> None:
    trusted = client_context(pki, pki.client_cert, pki.client_key)
    server = start_server(
        "--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key),
        "--tls-client-ca", str(pki.ca),
        scheme="https", verify=trusted,
    )  # fmt: skip
    try:
        assert httpx.get(f"{server.url}/v2", verify=trusted).status_code == 200
        for context in (
            client_context(pki),
            client_context(pki, pki.stranger_cert, pki.stranger_key),
        ):
            with pytest.raises(httpx.TransportError):
                httpx.get(f"{server.url}/v2", verify=context)

        def ready(cert: Path | None, key: Path | None) -> grpc.StatusCode:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=pki.ca.read_bytes(),
                private_key=key.read_bytes() if key else None,
                certificate_chain=cert.read_bytes() if cert else None,
            )
            with grpc.secure_channel(server.grpc_address, credentials) as channel:
                stub = GRPCInferenceServiceStub(channel)
                try:
                    stub.ServerReady(pb.ServerReadyRequest(), timeout=5)
                except grpc.RpcError as exc:
                    return exc.code()  # type: ignore[no-any-return]
                return grpc.StatusCode.OK

        assert ready(pki.client_cert, pki.client_key) is grpc.StatusCode.OK
        assert ready(None, None) is grpc.StatusCode.UNAVAILABLE  # the handshake fails
        assert ready(pki.stranger_cert, pki.stranger_key) is grpc.StatusCode.UNAVAILABLE
    finally:
        stop_server(server)
