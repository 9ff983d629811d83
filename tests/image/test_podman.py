"""End to end with podman: build the example image, run it hardened, classify, drain on SIGTERM.

Uses a local base image made from Debian packages (conftest.base_image) because there is no
registry here; the tag and the layer cache are kept between runs so that CI builds are warm.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import yaml

from conftest import TESTDATA, free_port
from image.conftest import EXAMPLE_TAG, infership_build, podman
from infership import __version__
from infership.app import EXAMPLE_REPOSITORY
from infership.errors import BuildError
from infership.image.engine import execute, find_engine

pytestmark = pytest.mark.e2e

TAG = EXAMPLE_TAG
LABEL = "io.infership.e2e=1"
MODEL = "efficientnet-lite0"


def image_layers(tag: str) -> list[str]:
    layers: list[str] = json.loads(
        podman("image", "inspect", tag, "--format", "{{json .RootFS.Layers}}").stdout
    )
    return layers


@pytest.fixture(scope="module")
def image(example_image: str) -> str:
    return example_image


class Container:
    def __init__(self, name: str, url: str) -> None:
        self.name, self.url = name, url

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/v2/health/ready", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        logs = podman("logs", self.name, check=False)
        raise AssertionError(f"container not ready:\n{logs.stdout}{logs.stderr}")


@pytest.fixture
def run_hardened(image: str) -> Iterator[Container]:
    """The image as it should run: read-only root, no capabilities, non-root, loopback port."""
    name = f"infership-e2e-{uuid.uuid4().hex[:8]}"
    port = free_port()
    podman(
        "run", "--detach", "--name", name, "--label", LABEL,
        "--publish", f"127.0.0.1:{port}:8000",
        "--read-only", "--cap-drop=ALL", "--user", "10001:10001",
        "--security-opt=no-new-privileges", "--memory", "1g",
        "--env", "INFERSHIP_AUTH__ALLOW_UNAUTHENTICATED=true",  # the port is on loopback
        image,
    )  # fmt: skip
    container = Container(name, f"http://127.0.0.1:{port}")
    try:
        container.wait_ready()
        yield container
    finally:
        podman("rm", "--force", "--volumes", "--time", "15", name, check=False)


def _classify(url: str, images: int = 1, timeout: float = 60) -> list[str]:
    jpeg = (TESTDATA / "images" / "chelsea.jpg").read_bytes()
    files = [("img", (f"chelsea{i}.jpg", jpeg, "image/jpeg")) for i in range(images)]
    response = httpx.post(f"{url}/predict", files=files, timeout=timeout)
    assert response.status_code == 200, response.text
    return [p["top_k"][0]["label"] for p in response.json()["predictions"]]


def test_hardened_container_classifies_and_passes_its_health_check(
    run_hardened: Container,
) -> None:
    assert _classify(run_hardened.url) == ["Egyptian cat"]
    # The image's own HEALTHCHECK (infership probe), run the way the engine runs it.
    assert podman("healthcheck", "run", run_hardened.name, check=False).returncode == 0
    state = json.loads(
        podman("inspect", run_hardened.name, "--format", "{{json .HostConfig}}").stdout
    )
    assert state["ReadonlyRootfs"] is True
    assert state["CapDrop"] or state.get("CapAdd") == []
    writable = podman("exec", run_hardened.name, "touch", "/opt/infership/x", check=False)
    assert writable.returncode != 0
    assert "Read-only file system" in writable.stderr


def test_image_refuses_to_serve_openly_unless_told(image: str) -> None:
    # Inside the container the server binds 0.0.0.0, so the server's rule applies: API keys,
    # or an explicit choice to run without them.
    ran = podman("run", "--rm", "--read-only", "--label", LABEL, image, check=False, timeout=60)
    assert ran.returncode == 2
    assert "INFERSHIP_AUTH__ALLOW_UNAUTHENTICATED" in ran.stderr


def test_image_carries_labels_user_and_stop_signal(image: str) -> None:
    config = json.loads(podman("image", "inspect", image, "--format", "{{json .Config}}").stdout)
    labels = config["Labels"]
    assert labels["io.infership.models"] == MODEL
    assert labels[f"io.infership.model.{MODEL}.versions"] == "1"
    digest = labels[f"io.infership.model.{MODEL}.v1.sha256"]
    assert (
        digest
        == yaml.safe_load((EXAMPLE_REPOSITORY / MODEL / "model.yaml").read_text())["sha256"][
            "1/model.onnx"
        ]
    )
    assert labels["org.opencontainers.image.base.name"] == "localhost/python:3.11-slim"
    assert config["User"] == "10001:10001"
    assert config["StopSignal"] == "SIGTERM"
    health = json.loads(
        podman("image", "inspect", image, "--format", "{{json .HealthCheck}}").stdout
    )
    assert health["Test"] == ["CMD", "infership", "probe"]


def _in_flight(url: str) -> float:
    """Requests the server has read and not yet answered (its own gauge)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("infership_inflight_requests{")
    )


def test_sigterm_answers_every_admitted_request(run_hardened: Container) -> None:
    # 24 requests of 4 images each keep the 2-core server busy for seconds. SIGTERM goes once
    # the server has admitted all of them (read them: in flight by its gauge, or answered).
    requests = 24
    finished: list[float] = []

    def request(_: int) -> list[str]:
        labels = _classify(run_hardened.url, images=4)
        finished.append(time.monotonic())
        return labels

    with ThreadPoolExecutor(max_workers=requests) as pool:
        futures = [pool.submit(request, i) for i in range(requests)]
        deadline = time.monotonic() + 60
        while _in_flight(run_hardened.url) + len(finished) < requests:
            assert time.monotonic() < deadline, "the requests were never all admitted"
            time.sleep(0.02)
        stopped_at = time.monotonic()
        podman("kill", "--signal", "SIGTERM", run_hardened.name)
        results = [f.result() for f in futures]  # raises on any connection error or non-200
    assert results == [["Egyptian cat"] * 4] * requests
    assert any(t > stopped_at for t in finished), "no request was still in flight at SIGTERM"
    exit_code = podman("wait", run_hardened.name, timeout=60).stdout.strip()
    assert exit_code == "0"
    logs = podman("logs", run_hardened.name)
    assert "Shutting down" in logs.stdout + logs.stderr


def test_new_model_version_rebuilds_only_the_model_layer(base_image: str, tmp_path: Path) -> None:
    # One context built twice, the second time with a version 2 added to its models, so that
    # nothing else (the source tree, the wheels) can differ between the two images.
    context = tmp_path / "context"
    written = infership_build(
        str(EXAMPLE_REPOSITORY),
        "-t",
        TAG,
        "--base-image",
        base_image,
        "--context-only",
        str(context),
    )
    assert written.returncode == 0, written.stderr
    engine = find_engine("podman")

    def build(tag: str) -> float:
        started = time.perf_counter()
        argv = engine.build_argv(context, tag, offline=True, iidfile=tmp_path / "id")
        execute(argv, lambda _: None)
        return time.perf_counter() - started

    try:
        build(f"{TAG}-v1")
        shutil.copytree(context / "models" / MODEL / "1", context / "models" / MODEL / "2")
        seconds = build(f"{TAG}-v2")
        before, after = image_layers(f"{TAG}-v1"), image_layers(f"{TAG}-v2")
        assert len(before) == len(after)
        assert before[:-1] == after[:-1]
        assert before[-1] != after[-1]
        print(f"rebuild after a new model version: {seconds:.1f} s")
    finally:
        podman("rmi", f"{TAG}-v1", f"{TAG}-v2", check=False)


def test_missing_base_image_fails_naming_it(image: str) -> None:
    built = infership_build(
        str(EXAMPLE_REPOSITORY),
        "--tag",
        f"{TAG}-x",
        "--base-image",
        "localhost/infership-no-such-base:1",
    )
    assert built.returncode == 1
    assert (
        "error: base image 'localhost/infership-no-such-base:1' could not be found or pulled"
        in built.stderr
    )


def test_push_refused_by_the_registry_is_an_engine_error(image: str) -> None:
    tag = "127.0.0.1:1/infership-e2e:push"  # nothing listens on port 1
    podman("tag", image, tag)
    engine = find_engine("podman")
    try:
        with pytest.raises(BuildError) as caught:
            execute(engine.push_argv(tag), lambda _: None)
    finally:
        podman("rmi", tag, check=False)
    message = str(caught.value)
    assert message.startswith("podman push failed (exit code 125)")
    assert "connection refused" in message


def test_context_only_writes_a_complete_context_without_an_engine(tmp_path: Path) -> None:
    context = tmp_path / "context"
    written = infership_build(str(EXAMPLE_REPOSITORY), "-t", TAG, "--context-only", str(context))
    assert written.returncode == 0, written.stderr
    assert f"wrote the build context for {MODEL} (versions 1) to {context}" in written.stdout
    locked = {
        line.split("==")[0] for line in (context / "requirements.lock").read_text().splitlines()[1:]
    }
    wheels = {
        w.name.split("-")[0].replace("_", "-").lower() for w in (context / "wheels").glob("*.whl")
    }
    assert locked == wheels
    assert {"numpy", "onnxruntime", "uvicorn"} <= locked
    assert [p.name for p in (context / "dist").iterdir()] == [
        f"infership-{__version__}-py3-none-any.whl"
    ]
    assert (context / "models" / MODEL / "1" / "model.onnx").is_file()
    assert (
        "FROM docker.io/library/python:3.11-slim AS builder"
        in (context / "Containerfile").read_text()
    )


def _docker_daemon_absent() -> bool:
    if shutil.which("docker") is None:
        return False
    return (
        subprocess.run(["docker", "info"], capture_output=True, check=False, timeout=30).returncode
        != 0
    )


@pytest.mark.skipif(not _docker_daemon_absent(), reason="needs the docker CLI without a daemon")
def test_docker_without_a_daemon_is_explained(base_image: str) -> None:
    built = infership_build(
        str(EXAMPLE_REPOSITORY),
        "--tag",
        f"{TAG}-docker",
        "--engine",
        "docker",
        "--base-image",
        base_image,
    )
    assert built.returncode == 1
    assert "error: docker cannot reach its daemon" in built.stderr


def test_compose_file_runs_with_podman_compose(image: str, tmp_path: Path) -> None:
    if shutil.which("podman-compose") is None:
        pytest.fail("podman-compose is not installed: run .ci/setup.d/20-podman.sh")
    port = free_port()
    compose = tmp_path / "compose.yaml"
    written = subprocess.run(
        [
            sys.executable,
            "-m",
            "infership",
            "compose",
            image,
            "-o",
            str(compose),
            "--port",
            str(port),
            "--cpus",
            "1",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert written.returncode == 0, written.stderr
    project = f"infership-e2e-{uuid.uuid4().hex[:8]}"
    command = ["podman-compose", "--project-name", project, "--file", str(compose)]
    try:
        up = subprocess.run(
            [*command, "up", "-d"], capture_output=True, text=True, check=False, timeout=120
        )
        assert up.returncode == 0, up.stdout + up.stderr
        Container(f"{project}_infership_1", f"http://127.0.0.1:{port}").wait_ready()
        assert _classify(f"http://127.0.0.1:{port}") == ["Egyptian cat"]
        limits = json.loads(
            podman("inspect", f"{project}_infership_1", "--format", "{{json .HostConfig}}").stdout
        )
        assert limits["NanoCpus"] == 1_000_000_000 or limits["CpuQuota"] == 100000
        assert limits["Memory"] == 1 << 30
        assert limits["ReadonlyRootfs"] is True
    finally:
        subprocess.run(
            [*command, "down", "-t", "15"], capture_output=True, check=False, timeout=120
        )
        podman("network", "rm", f"{project}_default", check=False)
