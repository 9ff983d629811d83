"""``runtime: python`` and Python hooks, served in-process: the class contract, its errors,
both execution modes, hooks around an ONNX model, and what may and may not load."""

from __future__ import annotations

import asyncio
import logging
import shutil
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from infership.app import Application
from infership.errors import ConfigError, ModelLoadError, SignatureInvalid
from infership.registry import ModelState
from infership.settings import ServerSettings

sys.path.insert(0, str(Path(__file__).parents[1] / "security"))
from keyfiles import write_signing_key

from infership.security.signing import sign_folder

BENCH_MODELS = Path(__file__).parents[2] / "bench" / "models"

SCALE = """
import numpy as np
from infership.python import InputError, Tensor

class Model:
    inputs = [Tensor("x", "FP32", [-1, 4])]
    outputs = [Tensor("y", "FP32", [-1, 4])]

    def __init__(self, folder, options):
        self.k = np.float32(options.get("k", 2))

    def predict(self, batch):
        x = batch["x"]
        if (x < 0).any():
            raise InputError(f"x must be non-negative, got {float(x.min())}")
        if (x == 13).any():
            raise RuntimeError("secret database password in this message")
        return {"y": x * self.k}
"""


def write_model(
    root: Path,
    name: str,
    code: str,
    yaml: str = "runtime: python\n",
    *,
    version: int = 1,
    files: dict[str, str] | None = None,
) -> Path:
    folder = root / name / str(version)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.py").write_text(textwrap.dedent(code))
    for file, text in (files or {}).items():
        (folder / file).write_text(textwrap.dedent(text))
    (root / name / "model.yaml").write_text(textwrap.dedent(yaml))
    return folder


class Served:
    """A repository of python models, served in-process, with an HTTP client on it."""

    def __init__(self, root: Path, **settings: Any) -> None:
        self.root = root
        self.settings = ServerSettings(model_repository=root, model_control=True, **settings)

    async def __aenter__(self) -> Served:
        self.app = Application(self.settings)
        self.app.check()
        await self.app.start()
        transport = httpx.ASGITransport(app=self.app.rest)
        self.client = httpx.AsyncClient(transport=transport, base_url="http://test", timeout=60)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()
        await self.app.stop()

    async def infer(self, name: str, **inputs: tuple[str, list[int], list[Any]]) -> httpx.Response:
        body = {
            "inputs": [
                {"name": n, "datatype": d, "shape": s, "data": v} for n, (d, s, v) in inputs.items()
            ]
        }
        return await self.client.post(f"/v2/models/{name}/infer", json=body)


def scale_yaml(execution: str, extra: str = "") -> str:
    return (
        f"runtime: python\npython: {{execution: {execution}, workers: 2, options: {{k: 3}}}}\n"
        "batching: {max_batch_size: 8, max_queue_delay_ms: 50}\n" + extra
    )


@pytest.fixture(params=["thread", "process"])
def execution(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def scale(tmp_path: Path, execution: str) -> AsyncIterator[Served]:
    write_model(tmp_path, "scale", SCALE, scale_yaml(execution))
    async with Served(tmp_path) as served:
        yield served


X = ("FP32", [2, 4], [0, 1, 2, 3, 4, 5, 6, 7])


async def test_a_python_model_answers_with_its_batched_predict(scale: Served) -> None:
    response = await scale.infer("scale", x=X)
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == [3.0 * v for v in X[2]]
    metadata = (await scale.client.get("/v2/models/scale")).json()
    assert metadata["platform"] == "python"
    assert metadata["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]


async def test_concurrent_requests_are_batched(scale: Served) -> None:
    answers = await asyncio.gather(*(scale.infer("scale", x=X) for _ in range(16)))
    assert all(a.status_code == 200 for a in answers)
    metrics = (await scale.client.get("/metrics")).text
    batches = _histogram(metrics, "infership_batch_size", "scale")
    assert batches["count"] < 16, "no two requests were computed together"


async def test_input_error_is_a_400_with_its_message(scale: Served) -> None:
    response = await scale.infer("scale", x=("FP32", [1, 4], [-1, 0, 0, 0]))
    assert response.status_code == 400
    assert response.json() == {"error": "x must be non-negative, got -1.0"}


async def test_only_the_request_the_model_refuses_in_a_batch_gets_the_400(scale: Served) -> None:
    good = [scale.infer("scale", x=("FP32", [1, 4], [i, 1, 1, 1])) for i in range(6)]
    bad = scale.infer("scale", x=("FP32", [1, 4], [-5, 1, 1, 1]))
    *answers, refused = await asyncio.gather(*good, bad)
    assert [a.status_code for a in answers] == [200] * 6
    assert [a.json()["outputs"][0]["data"][0] for a in answers] == [3.0 * i for i in range(6)]
    assert refused.status_code == 400


async def test_any_other_exception_is_a_500_naming_the_model_with_the_traceback_only_in_the_log(
    scale: Served, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        response = await scale.infer("scale", x=("FP32", [1, 4], [13, 0, 0, 0]))
    assert response.status_code == 500
    error = response.json()["error"]
    assert "model 'scale' version 1: predict raised RuntimeError" in error
    assert "request id" in error
    assert "password" not in error
    assert "secret database password" in caplog.text
    assert "Traceback" in caplog.text
    assert (await scale.infer("scale", x=X)).status_code == 200  # and it keeps serving


BROKEN_OUTPUTS = {
    "wrong-name": ('{"z": x}', "predict returned outputs without ['y']"),
    "extra-name": ('{"y": x, "z": x}', "returned outputs with undeclared ['z']"),
    "wrong-dtype": ('{"y": x.astype(np.float64)}', "returned FP64 for 'y', declared FP32"),
    "wrong-shape": ('{"y": x[:, :2]}', "returned shape [2, 2] for 'y', declared [-1, 4]"),
    "wrong-rows": ('{"y": x[:1]}', "returned 1 rows of 'y' for a batch of 2"),
    "not-a-dict": ("[x]", "predict returned list, not a dict of numpy arrays"),
    "not-an-array": ('{"y": x.tolist()}', "returned list for 'y', not a numpy array"),
}


@pytest.mark.parametrize(("returned", "message"), BROKEN_OUTPUTS.values(), ids=BROKEN_OUTPUTS)
async def test_a_predict_that_breaks_its_signature_is_a_500_naming_the_mismatch(
    tmp_path: Path, execution: str, returned: str, message: str
) -> None:
    code = SCALE.replace('return {"y": x * self.k}', f"return {returned}")
    write_model(tmp_path, "broken", code, scale_yaml(execution))
    async with Served(tmp_path) as served:
        response = await served.infer("broken", x=X)
    assert response.status_code == 500
    assert "model 'broken' version 1" in response.json()["error"]
    assert message in response.json()["error"]


async def test_the_signature_may_come_from_model_yaml(tmp_path: Path) -> None:
    code = SCALE.replace('    inputs = [Tensor("x", "FP32", [-1, 4])]\n', "").replace(
        '    outputs = [Tensor("y", "FP32", [-1, 4])]\n', ""
    )
    yaml = scale_yaml("thread") + (
        "inputs: [{name: x, datatype: FP32, shape: [-1, 4]}]\n"
        "outputs: [{name: y, datatype: FP32, shape: [-1, 4]}]\n"
    )
    write_model(tmp_path, "declared", code, yaml)
    async with Served(tmp_path) as served:
        assert (await served.infer("declared", x=X)).json()["outputs"][0]["data"][1] == 3.0


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (SCALE.replace("self.k = ", "raise ValueError('no weights'); self.k = "),
         "loading Model raised ValueError: no weights"),
        ("def broken(:\n", "SyntaxError"),
        ("class Other: pass\n", "has no class 'Model'"),
        (SCALE.replace("def predict", "def forward"), "Model has no predict method"),
        ("class Model:\n    def __init__(self, folder, options): pass\n"
         "    def predict(self, batch): return batch\n", "declare the model's inputs"),
        ("import sys\nsys.exit(3)\n", "SystemExit"),
    ],
    ids=["init-raises", "syntax-error", "no-class", "no-predict", "no-signature", "exits"],
)  # fmt: skip
async def test_a_class_that_cannot_load_leaves_the_version_unavailable_with_the_reason(
    tmp_path: Path, execution: str, code: str, reason: str
) -> None:
    write_model(tmp_path, "scale", SCALE, scale_yaml(execution))
    async with Served(tmp_path) as served:
        write_model(tmp_path, "scale", code, scale_yaml(execution), version=2)
        with pytest.raises(ModelLoadError, match=reason):
            await served.app.registry.load("scale")
        (state,) = [s for s in served.app.registry.index() if s.name == "scale"]
        assert state.version == 1
        assert state.state is ModelState.READY  # the old version keeps serving
        assert reason in state.reason
        assert (await served.infer("scale", x=X)).status_code == 200


HOOKS = """
import numpy as np
from infership.python import InputError, Tensor

class Hooks:
    preprocess_inputs = [Tensor("values", "FP64", [-1, 16])]
    postprocess_outputs = [Tensor("total", "FP32", [-1]), Tensor("y", "FP32", [-1, 16])]

    def __init__(self, folder, options):
        self.calls = 0

    def preprocess(self, inputs):
        values = inputs["values"]
        if np.isnan(values).any():
            raise InputError("values must be numbers")
        return {"x": (values * 2).astype(np.float32)}

    def postprocess(self, outputs):
        y = outputs["y"]
        return {"total": y.sum(axis=1), "y": y}
"""


async def test_hooks_wrap_an_onnx_model_per_request_and_per_batch(
    tmp_path: Path, execution: str
) -> None:
    shutil.copytree(BENCH_MODELS / "add", tmp_path / "add")
    text = (tmp_path / "add" / "model.yaml").read_text().split("sha256:")[0]
    (tmp_path / "add" / "model.yaml").write_text(
        text + f"python: {{module: hooks.py, class: Hooks, execution: {execution}, workers: 1}}\n"
    )
    (tmp_path / "add" / "1" / "hooks.py").write_text(HOOKS)
    async with Served(tmp_path) as served:
        metadata = (await served.client.get("/v2/models/add")).json()
        assert metadata["inputs"] == [{"name": "values", "datatype": "FP64", "shape": [-1, 16]}]
        assert [o["name"] for o in metadata["outputs"]] == ["total", "y"]
        response = await served.infer("add", values=("FP64", [1, 16], list(range(16))))
        assert response.status_code == 200, response.text
        outputs = {o["name"]: o["data"] for o in response.json()["outputs"]}
        assert outputs["y"] == [2.0 * v + 1 for v in range(16)]
        assert outputs["total"] == [sum(2.0 * v + 1 for v in range(16))]
        # The model's own input still works, and skips the preprocess hook.
        raw = await served.infer("add", x=("FP32", [1, 16], [0] * 16))
        assert raw.status_code == 200
        assert {o["name"]: o["data"] for o in raw.json()["outputs"]}["total"] == [16.0]


async def test_an_onnx_model_whose_class_defines_predict_is_refused(tmp_path: Path) -> None:
    shutil.copytree(BENCH_MODELS / "add", tmp_path / "add")
    text = (tmp_path / "add" / "model.yaml").read_text().split("sha256:")[0]
    (tmp_path / "add" / "model.yaml").write_text(text + "python: {execution: thread}\n")
    (tmp_path / "add" / "1" / "model.py").write_text(SCALE)
    app = Application(ServerSettings(model_repository=tmp_path))
    with pytest.raises(ConfigError, match="defines predict, but runtime onnx computes the model"):
        await app.registry.load("add")


ASYNC = """
import asyncio
import threading
import numpy as np
from infership.python import Tensor

class Model:
    inputs = [Tensor("x", "FP32", [-1, 1])]
    outputs = [Tensor("thread", "BYTES", [-1, 1])]

    def __init__(self, folder, options):
        pass

    async def predict(self, batch):
        await asyncio.sleep(0.01)
        name = threading.current_thread().name.encode()
        return {"thread": np.array([[name]] * len(batch["x"]), dtype=object)}
"""


async def test_async_methods_run_on_their_own_loop_not_the_servers(tmp_path: Path) -> None:
    write_model(tmp_path, "waits", ASYNC, "runtime: python\npython: {execution: thread}\n")
    async with Served(tmp_path) as served:
        response = await served.infer("waits", x=("FP32", [1, 1], [0]))
        assert response.status_code == 200, response.text
        thread = response.json()["outputs"][0]["data"][0]
        assert thread.endswith("-loop")
        assert thread != "MainThread"


RELATIVE = """
import numpy as np
from infership.python import Tensor
from . import helpers

class Model:
    inputs = [Tensor("x", "FP32", [-1, 1])]
    outputs = [Tensor("y", "FP32", [-1, 1])]

    def __init__(self, folder, options):
        self.version = (folder / "VERSION").read_text()

    def predict(self, batch):
        return {"y": batch["x"] + helpers.OFFSET}
"""


async def test_a_new_version_imports_its_own_code_and_siblings(
    tmp_path: Path, execution: str
) -> None:
    yaml = f"runtime: python\npython: {{execution: {execution}, workers: 1}}\n"
    files = {"helpers.py": "OFFSET = 1\n", "VERSION": "1"}
    write_model(tmp_path, "swap", RELATIVE, yaml, files=files)
    async with Served(tmp_path) as served:
        assert (await served.infer("swap", x=("FP32", [1, 1], [0]))).json()["outputs"][0][
            "data"
        ] == [1.0]
        files = {"helpers.py": "OFFSET = 100\n", "VERSION": "2"}
        write_model(tmp_path, "swap", RELATIVE, yaml, version=2, files=files)
        await served.app.registry.load("swap")
        assert (await served.infer("swap", x=("FP32", [1, 1], [0]))).json()["outputs"][0][
            "data"
        ] == [100.0]


DIES = SCALE.replace(
    "        if (x == 13).any():",
    "        if (x == 99).any():\n            import os; os._exit(7)\n        if (x == 13).any():",
)


async def test_a_worker_that_dies_fails_its_batch_and_is_replaced(tmp_path: Path) -> None:
    write_model(tmp_path, "fragile", DIES, scale_yaml("process"))
    async with Served(tmp_path) as served:
        response = await served.infer("fragile", x=("FP32", [1, 4], [99, 0, 0, 0]))
        assert response.status_code == 500
        assert (
            "worker process died while computing predict (exit code 7)"
            in (response.json()["error"])
        )
        answers = await asyncio.gather(*(served.infer("fragile", x=X) for _ in range(8)))
        assert [a.status_code for a in answers] == [200] * 8


ONCE = """
import os
import numpy as np
from infership.python import Tensor

class Model:
    inputs = [Tensor("x", "FP32", [-1, 1])]
    outputs = [Tensor("y", "FP32", [-1, 1])]

    def __init__(self, folder, options):
        if (folder / "crashed").exists():
            raise RuntimeError("will not start again")
        self.folder = folder

    def predict(self, batch):
        (self.folder / "crashed").touch()
        os._exit(1)
"""


async def test_when_no_worker_can_be_replaced_calls_fail_instead_of_hanging(
    tmp_path: Path,
) -> None:
    yaml = "runtime: python\npython: {execution: process, workers: 1}\n"
    write_model(tmp_path, "once", ONCE, yaml)
    async with Served(tmp_path) as served:
        first = await served.infer("once", x=("FP32", [1, 1], [0]))
        assert first.status_code == 500
        second = await asyncio.wait_for(served.infer("once", x=("FP32", [1, 1], [0])), 30)
        assert second.status_code == 500
        assert "no worker process is running" in second.json()["error"]


async def test_code_outside_the_version_folder_is_refused(tmp_path: Path) -> None:
    write_model(tmp_path, "escape", SCALE, "runtime: python\npython: {module: ../evil.py}\n")
    with pytest.raises(ConfigError, match=r"must be a \.py file name in the version folder"):
        Application(ServerSettings(model_repository=tmp_path)).check()


async def test_signing_covers_the_code_files(tmp_path: Path) -> None:
    key = write_signing_key(tmp_path, "signer")
    repository = tmp_path / "models"
    folder = write_model(
        repository, "signed", RELATIVE, files={"helpers.py": "OFFSET = 1\n", "VERSION": "1"}
    )
    sign_folder(folder, key.private)
    settings: dict[str, Any] = {
        "model_security": {"signing_policy": "require", "signing_public_key": key.public}
    }
    async with Served(repository, **settings) as served:
        assert (await served.infer("signed", x=("FP32", [1, 1], [0]))).status_code == 200
        (folder / "helpers.py").write_text("import os\nOFFSET = 1\n")  # a changed sibling
        with pytest.raises(SignatureInvalid, match=r"helpers\.py"):
            await served.app.registry.load("signed")


async def test_the_repository_api_takes_no_code(tmp_path: Path) -> None:
    write_model(tmp_path, "scale", SCALE, scale_yaml("thread"))
    async with Served(tmp_path) as served:
        for parameters in (
            {"config": '{"runtime": "python"}'},
            {"file:1/model.py": "aW1wb3J0IG9z"},
        ):
            response = await served.client.post(
                "/v2/repository/models/scale/load", json={"parameters": parameters}
            )
            assert response.status_code == 400, response.text


def _histogram(metrics: str, name: str, model: str) -> dict[str, float]:
    values: dict[str, float] = {}
    for line in metrics.splitlines():
        if line.startswith(f"{name}_count") and f'model="{model}"' in line:
            values["count"] = float(line.rsplit(" ", 1)[1])
        if line.startswith(f"{name}_sum") and f'model="{model}"' in line:
            values["sum"] = float(line.rsplit(" ", 1)[1])
    return values
