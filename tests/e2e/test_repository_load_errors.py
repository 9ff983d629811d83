"""Repository loads that cannot succeed, on a real server over sockets (REST and gRPC): each is
a 4xx (INVALID_ARGUMENT / FAILED_PRECONDITION) whose message names the problem, never a 500
or INTERNAL, and the version already serving keeps serving."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import grpc
import httpx
import pytest

from conftest import RunningServer, start_server, stop_server
from infership.protocols.grpc._pb import pb
from infership.protocols.grpc.generated.grpc_service_pb2_grpc import GRPCInferenceServiceStub

pytestmark = pytest.mark.e2e

BENCH_MODELS = Path(__file__).parents[2] / "bench" / "models"
ROW = [float(i) for i in range(16)]
LABELS = "".join(f"class {i}\n" for i in range(16))
LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8)
)


class Repo:
    """The running server, its repository folder and both transports."""

    def __init__(self, server: RunningServer, root: Path) -> None:
        self.server = server
        self.root = root
        self.http = httpx.Client(base_url=server.url, timeout=30)
        self.channel = grpc.insecure_channel(server.grpc_address)
        self.grpc = GRPCInferenceServiceStub(self.channel)

    def load(self, transport: str, name: str) -> tuple[str, str]:
        """(status, message) of a load: the HTTP status as text, or the gRPC code's name."""
        if transport == "rest":
            response = self.http.post(f"/v2/repository/models/{quote(name, safe='')}/load")
            assert response.headers["content-type"] == "application/json", response.text
            message = response.json().get("error", "") if response.status_code != 200 else ""
            return str(response.status_code), message
        try:
            self.grpc.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name=name))
        except grpc.RpcError as exc:
            return exc.code().name, exc.details() or ""
        return "OK", ""

    def still_serves(self, name: str = "add") -> None:
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 16], "data": ROW}]}
        response = self.http.post(f"/v2/models/{name}/infer", json=body)
        assert response.status_code == 200, response.text
        outputs = {o["name"]: o for o in response.json()["outputs"]}
        if name == "add":
            assert outputs["y"]["data"] == [x + 1 for x in ROW]
        else:
            assert outputs["label"]["data"][0] == "class 15"
        assert self.http.get(f"/v2/models/{name}/ready").status_code == 200
        assert self.http.get("/v2/health/ready").status_code == 200


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Repo]:
    root = tmp_path_factory.mktemp("load-errors") / "models"
    shutil.copytree(BENCH_MODELS / "add", root / "add")
    # The same model as a classifier, so that a labels file is read at load.
    labelled = root / "labelled"
    shutil.copytree(BENCH_MODELS / "add", labelled)
    (labelled / "labels.txt").write_text(LABELS)
    yaml_text = (labelled / "model.yaml").read_text().split("sha256:")[0]  # the last block
    (labelled / "model.yaml").write_text(
        yaml_text + "postprocess: {classification: {output: y, top_k: 1, labels: labels.txt}}\n"
    )
    server = start_server(str(root), "--model-control")
    state = Repo(server, root)
    yield state
    state.http.close()
    state.channel.close()
    stop_server(server)


TRANSPORTS = ["rest", "grpc"]
BAD_NAME = {"rest": "400", "grpc": "INVALID_ARGUMENT"}
BAD_MODEL = {"rest": "400", "grpc": "FAILED_PRECONDITION"}


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(
    "name",
    [
        pytest.param("a" * 256, id="256-chars"),
        pytest.param("a" * 129, id="129-chars"),
        pytest.param("b" * 5000, id="5000-chars"),
        pytest.param("add\x00", id="nul"),
        pytest.param("add\n", id="trailing-newline"),
        pytest.param("..", id="dot-dot"),
        pytest.param(".add", id="hidden"),
        pytest.param("café", id="unicode"),
        pytest.param("ａｄｄ", id="fullwidth"),
        pytest.param("a\u0301", id="combining-accent"),
        pytest.param("add/../add", id="slash"),
        pytest.param("../" * 200 + "etc", id="deep-traversal"),
        pytest.param("/".join(["d"] * 3000), id="very-deep-path"),
        pytest.param("add\\x", id="backslash"),
    ],
)
def test_a_name_no_model_can_have_is_a_bad_request_and_the_model_keeps_serving(
    repo: Repo, transport: str, name: str
) -> None:
    status, message = repo.load(transport, name)
    if transport == "rest" and ("/" in name or name == ".."):
        # %2F decodes to "/" (and clients resolve ".."), so the route is not matched: a 404
        # before any handler runs.
        assert status in ("400", "404"), message
    else:
        assert status == BAD_NAME[transport], message
        assert "not a valid model name" in message
    assert len(message) < 500
    repo.still_serves()


@pytest.mark.parametrize("raw", ["%ED%A0%80", "%FF%FE", "%C0%AE%C0%AE", "%00", "%E2%80%AE"])
def test_a_rest_name_that_is_not_utf8_or_not_printable_is_a_bad_request(
    repo: Repo, raw: str
) -> None:
    response = repo.http.post(f"/v2/repository/models/{raw}/load")
    assert response.status_code == 400, response.text
    assert "not a valid model name" in response.json()["error"]
    repo.still_serves()


def write_laughs(folder: Path) -> None:
    (folder / "model.yaml").write_text(LAUGHS)


def _write(text: bytes | str) -> Callable[[Path], None]:
    def write(folder: Path) -> None:
        data = text.encode() if isinstance(text, str) else text
        (folder / "model.yaml").write_bytes(data)

    return write


def _prepend(text: str) -> Callable[[Path], None]:
    def write(folder: Path) -> None:
        path = folder / "model.yaml"
        path.write_text(text + path.read_text())

    return write


BROKEN_MANIFESTS = [
    pytest.param(_write(b"runtime: onnx\ndescription: caf\xe9\n"), "not UTF-8", id="latin-1"),
    pytest.param(_write("runtime: onnx\n".encode("utf-16")), "not UTF-8", id="utf-16"),
    pytest.param(_write(b"\xff" * 64), "not UTF-8", id="binary"),
    pytest.param(_write(b"runtime: onnx\x00\n"), "not valid YAML", id="nul-byte"),
    pytest.param(write_laughs, "aliases are expanded", id="billion-laughs"),
    pytest.param(_write("a: &a [*a]\n"), "alias refers to a node that contains it", id="cycle"),
    pytest.param(_write("[" * 5000 + "]" * 5000), "nested deeper", id="deep-flow"),
    pytest.param(
        _write("".join("  " * i + "k:\n" for i in range(200))), "nested deeper", id="deep-block"
    ),
    pytest.param(_write("description: " + "x" * 300_000), "larger than", id="huge"),
    pytest.param(_prepend("runtime: torch\n"), "given twice", id="duplicate-key"),
    pytest.param(
        _write("runtime: !!python/object/apply:os.system ['true']\n"),
        "could not determine a constructor",
        id="python-tag",
    ),
    pytest.param(_write("- runtime\n- onnx\n"), "expected a mapping", id="list-root"),
    pytest.param(_write("just a string\n"), "expected a mapping", id="scalar-root"),
    pytest.param(_write("batching: {max_batch_size: " + "9" * 5000 + "}\n"), "digits", id="int"),
    pytest.param(_write("colour: red\n"), "unknown key", id="unknown-key"),
    pytest.param(_write("a: [\n"), "not valid YAML", id="truncated"),
    pytest.param(_write("runtime: onnx\n---\nruntime: onnx\n"), "single document", id="two-docs"),
    pytest.param(_write("artifact: " + "a" * 300 + "\n"), "name too long", id="long-artifact"),
    pytest.param(_write('artifact: "a\\0b"\n'), "artifact", id="nul-in-artifact"),
    pytest.param(
        _write("signing: {policy: require, public_key: " + "k" * 300 + ".pem}\n"),
        "signing.public_key",
        id="long-key-path",
    ),
    pytest.param(_write("artifact: 1\n"), "artifact", id="artifact-is-a-folder"),
]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(("breaks", "problem"), BROKEN_MANIFESTS)
def test_a_broken_model_yaml_is_refused_naming_the_file_and_the_old_version_keeps_serving(
    repo: Repo, transport: str, breaks: Callable[[Path], None], problem: str
) -> None:
    manifest = repo.root / "add" / "model.yaml"
    good = manifest.read_bytes()
    try:
        breaks(manifest.parent)
        status, message = repo.load(transport, "add")
    finally:
        manifest.write_bytes(good)
    assert status == BAD_MODEL[transport], message
    assert "model.yaml" in message
    assert problem in message
    assert len(message) < 3000
    repo.still_serves()
    index = repo.http.post("/v2/repository/index").json()
    assert {"name": "add", "version": "1", "state": "READY"}.items() <= next(
        e for e in index if e["name"] == "add"
    ).items()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_labels_file_that_is_not_utf8_is_refused_and_the_classifier_keeps_serving(
    repo: Repo, transport: str
) -> None:
    labels = repo.root / "labelled" / "labels.txt"
    try:
        labels.write_bytes(LABELS.replace("class 3", "classé 3").encode("latin-1"))
        status, message = repo.load(transport, "labelled")
    finally:
        labels.write_text(LABELS)
    assert status == BAD_MODEL[transport], message
    assert "labels.txt is not UTF-8" in message
    repo.still_serves("labelled")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_labels_path_the_file_system_refuses_is_refused(repo: Repo, transport: str) -> None:
    manifest = repo.root / "labelled" / "model.yaml"
    good = manifest.read_text()
    try:
        manifest.write_text(good.replace("labels: labels.txt", "labels: labels.txt/inside"))
        status, message = repo.load(transport, "labelled")
    finally:
        manifest.write_text(good)
    assert status == BAD_MODEL[transport], message
    assert "postprocess.classification.labels" in message
    repo.still_serves("labelled")


@pytest.mark.parametrize(
    "body",
    [
        {"parameters": {"config": '{"max_batch_size": 4}'}},
        {"parameters": {"file:1/model.onnx": "AAAA"}},
        {"parameters": "config"},
        {"config": {}},
        [],
        "add",
    ],
)
def test_rest_load_refuses_parameters_and_other_bodies_as_grpc_does(
    repo: Repo, body: object
) -> None:
    response = repo.http.post("/v2/repository/models/add/load", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]
    repo.still_serves()


@pytest.mark.parametrize("body", [b"null", b"{", b"\xff\xfe", b"[" * 10000, b" " * 70000])
def test_rest_load_refuses_bodies_that_are_not_a_json_object(repo: Repo, body: bytes) -> None:
    response = repo.http.post("/v2/repository/models/add/load", content=body)
    assert response.status_code == (413 if len(body) > 65536 else 400), response.text
    assert response.json()["error"]
    repo.still_serves()


def test_rest_load_accepts_what_tritonclient_and_curl_send(repo: Repo) -> None:
    for body in (b"", b"{}", b'{"parameters": {}}'):
        response = repo.http.post("/v2/repository/models/add/load", content=body)
        assert response.status_code == 200, response.text
    response = repo.http.post(
        "/v2/repository/models/add/unload", json={"parameters": {"unload_dependents": False}}
    )
    assert response.status_code == 200, response.text
    try:
        assert repo.http.get("/v2/models/add/ready").status_code == 503
    finally:
        assert repo.http.post("/v2/repository/models/add/load").status_code == 200
    repo.still_serves()


def test_grpc_load_refuses_the_config_parameter_too(repo: Repo) -> None:
    request = pb.RepositoryModelLoadRequest(model_name="add")
    request.parameters["config"].string_param = "{}"
    with pytest.raises(grpc.RpcError) as info:
        repo.grpc.RepositoryModelLoad(request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "config" in (info.value.details() or "")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_good_reload_after_the_failures_still_works(repo: Repo, transport: str) -> None:
    assert repo.load(transport, "add")[0] in ("200", "OK")
    repo.still_serves()
    entry = next(e for e in repo.http.post("/v2/repository/index").json() if e["name"] == "add")
    assert entry == {"name": "add", "version": "1", "state": "READY"}
