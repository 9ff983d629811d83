"""PyTorch modules imported with torch's own exporters (ONNX through torch.onnx's dynamo
exporter, torch.export ``.pt2`` as the fallback), served for real and compared with the module.

The models are tiny and trained here on a fixed array. The torchvision transform pipeline is
imported in its own virtualenv (``.venv/import-torchvision``, torch 2.14.1 + torchvision
0.29.1): PyPI's torchvision cannot import beside the CPU build of torch in ``.venv``. That part
runs ``torchvision_job.py`` there and serves what it wrote from here.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient

from conftest import start_server, stop_server
from infership.errors import ImportFailed
from infership.importing import ImportReport, import_path, save_model
from infership.importing.source import ImportOptions
from infership.importing.sources.torch import TorchSource
from infership.repository.manifest import load_manifest

from .conftest import ROOT, ask, require, served_outputs, virtualenv_python

torch = require("torch")
require("onnxscript")

CLASSES = ("low", "middle", "high")


def blobs(rows: int = 96, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three Gaussian blobs in four dimensions: FP32 features and their class."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, rows)
    centres = np.array([[-2, 0, 1, 0], [0, 2, -1, 1], [2, -1, 0, -2]], dtype=np.float32)
    features = centres[labels] + rng.normal(0, 0.6, (rows, 4)).astype(np.float32)
    return features.astype(np.float32), labels


class Classifier(torch.nn.Module):
    """An MLP with dropout and batch norm: both must be in eval mode when exported."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(4, 16),
            torch.nn.BatchNorm1d(16),
            torch.nn.ReLU(),
            torch.nn.Dropout(0.3),
            torch.nn.Linear(16, 3),
        )

    def forward(self, features: Any) -> Any:
        return self.net(features)


def trained_classifier() -> Classifier:
    torch.manual_seed(0)
    model = Classifier()
    features, labels = blobs()
    optimiser = torch.optim.Adam(model.parameters(), lr=0.05)
    x, y = torch.from_numpy(features), torch.from_numpy(labels)
    for _ in range(40):
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimiser.step()
    return model  # left in training mode, as after a training loop


class TwoHeads(torch.nn.Module):
    """Two inputs, a dict of two outputs, one of them integer."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 2)

    def forward(self, features: Any, offset: Any) -> dict[str, Any]:
        scores = self.linear(features) + offset
        return {"scores": scores, "winner": scores.argmax(dim=1)}


class Median(torch.nn.Module):
    """torch.median over a dimension has no ONNX function in torch.onnx: falls back to .pt2."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 4)

    def forward(self, features: Any) -> Any:
        return torch.median(self.linear(features), dim=1).values


class Flattening(torch.nn.Module):
    """Flattens the whole batch into one vector: it can only ever take one row."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 2)

    def forward(self, features: Any) -> Any:
        return self.linear(features.flatten()).unsqueeze(0)


class Branching(torch.nn.Module):
    """Python control flow on a tensor's value: torch.export cannot trace it."""

    def forward(self, features: Any) -> Any:
        if features.sum() > 0:
            return features * 2
        return -features


# --- served for real ---------------------------------------------------------------------
#
# Four models are imported into one repository and served by one server: each server start
# imports torch for the .pt2 models, which costs more than everything else here.

FEATURES = blobs(8, seed=1)[0]
OFFSET = np.full((8, 2), 0.5, dtype=np.float32)


@dataclass
class Imported:
    repository: Path
    reports: dict[str, ImportReport]
    models: dict[str, Any]


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> Imported:
    """``blobs``: a trained classifier (ONNX, labels); ``heads``: two inputs and a dict of two
    outputs, as .pt2 on request; ``median``: an operator ONNX lacks (.pt2 fallback);
    ``fromfile``: a .pt2 file exported at a fixed batch of 4, with its sample inputs."""
    repository = tmp_path_factory.mktemp("torch") / "models"
    torch.manual_seed(0)
    models = {"blobs": trained_classifier(), "heads": TwoHeads(), "median": Median()}
    reports = {
        "blobs": save_model(models["blobs"], repository, "blobs", example_inputs=FEATURES,
                            labels=CLASSES),
        "heads": save_model(models["heads"], repository, "heads", format="pt2",
                            example_inputs={"features": FEATURES, "offset": OFFSET}),
        "median": save_model(models["median"], repository, "median", example_inputs=FEATURES),
    }  # fmt: skip
    models["fromfile"] = trained_classifier().eval()
    program = torch.export.export(models["fromfile"], (torch.from_numpy(FEATURES[:4]),))
    path = repository.parent / "fromfile.pt2"
    torch.export.save(program, path)
    reports["fromfile"] = import_path(path, repository, labels=CLASSES)
    return Imported(repository, reports, models)


@pytest.fixture(scope="module")
def served(imported: Imported) -> dict[str, dict[str, np.ndarray]]:
    """Every imported model asked once with tritonclient.http, by one server."""
    questions = {
        "blobs": ({"features": FEATURES}, ["output", "label"]),
        "heads": ({"features": FEATURES, "offset": OFFSET}, ["scores", "winner"]),
        "median": ({"features": FEATURES}, ["output"]),
        "fromfile": ({"features": FEATURES[:3]}, ["output"]),
    }
    server = start_server(str(imported.repository), timeout=90)
    try:
        client = httpclient.InferenceServerClient(server.url.removeprefix("http://"))
        return {
            model: ask(client, model, inputs, outputs)
            for model, (inputs, outputs) in questions.items()
        }
    finally:
        stop_server(server)


@pytest.mark.e2e
def test_a_trained_classifier_is_served_as_onnx_with_its_labels(
    imported: Imported, served: dict[str, dict[str, np.ndarray]]
) -> None:
    model, report = imported.models["blobs"], imported.reports["blobs"]
    manifest = load_manifest(imported.repository / "blobs" / "model.yaml")
    assert manifest.runtime == "onnx"
    assert [t.name for t in manifest.inputs or ()] == ["features"]  # forward's parameter
    assert manifest.inputs
    assert manifest.inputs[0].shape == (-1, 4)
    assert manifest.batching.max_batch_size == 32
    classification = manifest.postprocess.classification
    assert classification is not None
    assert classification.output == "output"
    assert model.training, "the caller's model keeps its training mode"
    assert report.parity.passed
    (scores,) = [o for o in report.parity.outputs if o.name == "output"]
    assert scores.top1_agreement == 1.0
    assert scores.max_abs_diff is not None
    assert scores.max_abs_diff < 1e-4

    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(FEATURES)).numpy()
    model.train()
    np.testing.assert_allclose(served["blobs"]["output"], expected, atol=1e-4, rtol=1e-3)
    labels = [CLASSES[i] for i in expected.argmax(axis=1)]
    assert [v.decode() for v in served["blobs"]["label"][:, 0]] == labels


@pytest.mark.e2e
def test_pt2_format_is_served_by_the_torch_runtime_with_named_inputs_and_outputs(
    imported: Imported, served: dict[str, dict[str, np.ndarray]]
) -> None:
    manifest = load_manifest(imported.repository / "heads" / "model.yaml")
    assert (manifest.runtime, manifest.artifact) == ("torch", "model.pt2")
    assert [t.name for t in manifest.inputs or ()] == ["features", "offset"]
    assert [(t.name, t.datatype) for t in manifest.outputs or ()] == [
        ("scores", "FP32"),
        ("winner", "INT64"),
    ]
    assert imported.reports["heads"].parity.passed
    with torch.no_grad():
        expected = imported.models["heads"](torch.from_numpy(FEATURES), torch.from_numpy(OFFSET))
    np.testing.assert_allclose(served["heads"]["scores"], expected["scores"].numpy(), atol=1e-5)
    np.testing.assert_array_equal(served["heads"]["winner"], expected["winner"].numpy())


@pytest.mark.e2e
def test_an_operator_onnx_lacks_falls_back_to_a_pt2_program(
    imported: Imported, served: dict[str, dict[str, np.ndarray]]
) -> None:
    report = imported.reports["median"]
    assert load_manifest(imported.repository / "median" / "model.yaml").runtime == "torch"
    assert any("aten.median.dim" in note and "model.pt2" in note for note in report.notes)
    assert not (report.path / "model.onnx").exists()
    with torch.no_grad():
        expected = imported.models["median"](torch.from_numpy(FEATURES)).numpy()
    np.testing.assert_allclose(served["median"]["output"], expected, atol=1e-6)


@pytest.mark.e2e
def test_a_pt2_file_is_imported_with_the_sample_inputs_it_carries(
    imported: Imported, served: dict[str, dict[str, np.ndarray]]
) -> None:
    report = imported.reports["fromfile"]
    assert report.model == "fromfile"
    assert report.parity.passed
    assert "examples: the sample inputs saved in the .pt2 program" in report.notes
    manifest = load_manifest(imported.repository / "fromfile" / "model.yaml")
    assert manifest.inputs
    assert manifest.inputs[0].shape == (-1, 4)  # exported at a batch of 4, re-traced free
    with torch.no_grad():
        expected = imported.models["fromfile"](torch.from_numpy(FEATURES[:3])).numpy()
    np.testing.assert_allclose(served["fromfile"]["output"], expected, atol=1e-4, rtol=1e-3)


def test_asking_for_onnx_makes_the_missing_operator_an_error(tmp_path: Path) -> None:
    features, _ = blobs(4)
    with pytest.raises(ImportFailed, match=r"ONNX export failed: .*aten\.median\.dim"):
        save_model(Median(), tmp_path, "median", example_inputs=features, format="onnx")
    assert not (tmp_path / "median").exists()


def test_a_model_that_fixes_its_batch_size_is_written_with_batches_of_one(
    tmp_path: Path,
) -> None:
    torch.manual_seed(0)
    features, _ = blobs(4)
    report = save_model(Flattening(), tmp_path, "flat", example_inputs=features)

    manifest = load_manifest(tmp_path / "flat" / "model.yaml")
    assert manifest.batching.max_batch_size == 1
    assert manifest.inputs
    assert manifest.inputs[0].shape == (1, 4)
    assert any(note.startswith("max_batch_size 1: the model cannot") for note in report.notes)
    assert report.parity.passed


def test_python_control_flow_on_values_fails_naming_the_line(tmp_path: Path) -> None:
    features, _ = blobs(4)
    with pytest.raises(ImportFailed, match=r"torch\.export cannot trace.*features\.sum\(\) > 0"):
        save_model(Branching(), tmp_path, "branching", example_inputs=features)
    assert not (tmp_path / "branching").exists()


# --- refused --------------------------------------------------------------------------------


def test_a_pickled_checkpoint_is_refused_saying_why_and_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save(trained_classifier().state_dict(), path)
    source = TorchSource()
    assert source.accepts_path(path)
    with pytest.raises(ImportFailed, match=r"pickle.*runs.*code.*torch\.export\.save"):
        import_path(path, tmp_path / "models")
    assert not (tmp_path / "models").exists()


def test_examples_are_required_and_named_after_forward(tmp_path: Path) -> None:
    with pytest.raises(ImportFailed, match=r"needs example_inputs.*forward\(features\)"):
        save_model(trained_classifier(), tmp_path, "blobs")
    with pytest.raises(ImportFailed, match=r"\['pixels'\], which forward\(\) does not take"):
        save_model(trained_classifier(), tmp_path, "blobs", example_inputs={"pixels": blobs(4)[0]})


def test_labels_must_match_the_number_of_classes(tmp_path: Path) -> None:
    with pytest.raises(ImportFailed, match=r"2 labels given but output 'output' scores 3"):
        save_model(
            trained_classifier(), tmp_path, "blobs", example_inputs=blobs(4)[0], labels=["a", "b"]
        )


def test_settings_rename_inputs_and_outputs_and_unknown_ones_are_refused(tmp_path: Path) -> None:
    options = ImportOptions(
        name="blobs",
        example_inputs=blobs(4)[0],
        format="pt2",
        settings={"input_names": "x", "output_names": ["logits"]},
    )
    exported = TorchSource().export(trained_classifier(), options, tmp_path)
    assert [t["name"] for t in exported.manifest["inputs"]] == ["x"]
    assert [t["name"] for t in exported.manifest["outputs"]] == ["logits"]
    assert set(exported.examples) == {"x"}
    with pytest.raises(ImportFailed, match="unknown torch setting"):
        TorchSource().export(
            trained_classifier(), ImportOptions(name="b", settings={"input_name": "x"}), tmp_path
        )


def test_modules_and_programs_are_recognised_without_importing_torch_for_others() -> None:
    source = TorchSource()
    assert source.accepts(trained_classifier())
    program = torch.export.export(Classifier().eval(), (torch.zeros(2, 4),))
    assert source.accepts(program)
    assert not source.accepts(object())
    assert not source.accepts(np.zeros(3))


# --- torchvision transforms, in their own virtualenv --------------------------------------------


@pytest.fixture(scope="module")
def torchvision_job(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run ``torchvision_job.py`` in the torchvision virtualenv: it imports a small CNN with a
    Flask-style transform pipeline through ``save_model`` (parity checked there, with the real
    torchvision) and records what the mapping refuses."""
    python = virtualenv_python("torchvision")
    out = tmp_path_factory.mktemp("torchvision")
    job = Path(__file__).with_name("torchvision_job.py")
    result = subprocess.run(
        [str(python), str(job), str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    seen: dict[str, Any] = json.loads((out / "result.json").read_text())
    seen["out"] = out
    return seen


@pytest.mark.e2e
def test_a_flask_style_transform_pipeline_becomes_preprocess_image(
    torchvision_job: dict[str, Any],
) -> None:
    out: Path = torchvision_job["out"]
    assert torchvision_job["versions"]["torchvision"].startswith("0.29.1")
    manifest = load_manifest(out / "models" / "cnn" / "model.yaml")
    image = manifest.preprocess.image
    assert image is not None
    assert (image.input, image.public_input) == ("pixels", "image")
    assert (image.resize_shorter, image.resize, image.interpolation) == (64, (56, 56), "bilinear")
    assert image.mean == pytest.approx((0.485, 0.456, 0.406))
    assert image.std == pytest.approx((0.229, 0.224, 0.225))
    assert image.scale == pytest.approx(1 / 255)
    assert torchvision_job["parity"]["passed"]

    # The images as a client sends them; the answers of the user's own pipeline and CNN.
    photos = np.load(out / "photos.npy", allow_pickle=True)
    expected = np.load(out / "expected.npy")
    served = served_outputs(out / "models", "cnn", {"image": photos}, ["output", "label"])
    np.testing.assert_allclose(served["output"], expected, atol=1e-4, rtol=1e-3)
    assert list(served["label"][:, 0].astype(str)) == torchvision_job["expected_labels"]


def test_v2_transforms_map_the_same_way(torchvision_job: dict[str, Any]) -> None:
    v1, v2 = torchvision_job["mapped"]["v1"], torchvision_job["mapped"]["v2"]
    assert v1 == v2
    assert torchvision_job["mapped"]["v2_unscaled"]["scale"] == 1.0
    # v2 resizing a tensor (ToImage first) is torch's resize, not Pillow's: refused.
    refused = torchvision_job["mapped"]["v2_resizing_tensors"]["refused"]
    assert "Resize(size=[64]" in refused
    assert "after the image became a tensor" in refused


@pytest.mark.parametrize(
    ("case", "named"),
    [
        ("random_crop", r"RandomCrop\(size=\(224, 224\).*random augmentation"),
        ("color_jitter", r"ColorJitter\(.*random augmentation"),
        ("lambda", r"Lambda\(.*arbitrary Python"),
        ("grayscale", r"Grayscale\(.*no equivalent"),
        ("resize_without_crop", r"Resize\(256\) without a CenterCrop"),
        ("crop_after_fixed_resize", r"CenterCrop\(size=\(224, 224\)\).*after Resize to \(256, 3"),
        ("box_filter", r"interpolation 'box'"),
        ("max_size", r"max_size"),
        ("normalize_before_tensor", r"Normalize\(.*one Normalize, after the image is a float"),
        ("no_tensor", r"does not end with a float tensor"),
    ],
)  # fmt: skip
def test_a_transform_that_cannot_be_mapped_is_refused_by_name(
    torchvision_job: dict[str, Any], case: str, named: str
) -> None:
    import re

    message = torchvision_job["refused"][case]
    assert message is not None, f"{case} was mapped"
    assert re.search(named, message), message
    assert not (torchvision_job["out"] / "refused" / case).exists()  # nothing written


def test_every_photo_size_matches_torchvision(torchvision_job: dict[str, Any]) -> None:
    worst = torchvision_job["odd_sizes"]
    assert max(worst.values()) < 0.02, worst
