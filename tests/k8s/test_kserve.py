"""`infership manifests --kserve`: a ServingRuntime and InferenceServices that KServe's published
CRD schemas accept (vendored in schemas/kserve/; see k8s/kserve_validation.py for the rules), that
KServe would match with each other, and whose pods are hardened as the Deployment's are."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner
from kubernetes import client

from infership.app import EXAMPLE_REPOSITORY
from infership.cli import main
from infership.k8s.kserve import kserve_objects
from infership.k8s.manifests import build_objects
from infership.k8s.render import render_stream
from infership.k8s.spec import Autoscaling, DeploySpec, Resources
from k8s.kserve_validation import kserve_errors, schema_errors

GOLDEN = Path(__file__).parent / "golden"
REGENERATE = os.environ.get("INFERSHIP_REGENERATE_GOLDEN") == "1"
IMAGE = "registry.example.com/ml/classifier:1@sha256:" + "ab" * 32
FORMATS = {"classifier": "onnx", "exported_net": "torch", "digits.v2": "python"}

# Between them: one model and three of every runtime; keys shipped, an existing keys Secret or
# none; GPUs; an autoscaler; a storage URI.
CASES: dict[str, tuple[DeploySpec, dict[str, str], str | None]] = {
    "one-onnx-model": (
        DeploySpec(name="classifier", namespace="ml", image=IMAGE, api_keys_yaml="keys: []\n"),
        {"classifier": "onnx"},
        None,
    ),
    "every-runtime-gpu-autoscaled": (
        DeploySpec(
            name="models",
            namespace="ml",
            image="localhost/models:2",
            resources=Resources(gpus=1),
            autoscaling=Autoscaling(min_replicas=2, max_replicas=6),
            model_key_secret="model-keys",
            api_keys_secret="shared-keys",
        ),
        FORMATS,
        None,
    ),
    "storage-uri-unauthenticated": (
        DeploySpec(name="digits", namespace="dev", image=IMAGE, allow_unauthenticated=True),
        {"digits": "python"},
        "s3://models/digits-repository",
    ),
}


def objects_of(case: str) -> list[dict[str, Any]]:
    spec, formats, storage_uri = CASES[case]
    return kserve_objects(spec, formats, storage_uri)


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    [obj] = [o for o in objects if o["kind"] == kind]
    return obj


def services(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == "InferenceService"]


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    runtime_container: dict[str, Any] = one(objects, "ServingRuntime")["spec"]["containers"][0]
    return runtime_container


def deployment_pod(spec: DeploySpec) -> dict[str, Any]:
    pod: dict[str, Any] = one(build_objects(spec), "Deployment")["spec"]["template"]["spec"]
    return pod


# The schemas, and what KServe checks beyond them.


@pytest.mark.parametrize("case", CASES)
def test_the_objects_validate_against_kserves_crd_schemas(case: str) -> None:
    objects = objects_of(case)
    kinds = [o["kind"] for o in objects]
    assert kinds.count("ServingRuntime") == 1
    assert kinds.count("InferenceService") == len(CASES[case][1])
    for obj in objects:
        if obj["apiVersion"].startswith("serving.kserve.io/"):
            assert schema_errors(obj) == [], obj["metadata"]["name"]
        else:  # ServiceAccount, Secret: Kubernetes' own schemas
            kubernetes_validate.validate(obj, "1.37", strict=True)
    assert kserve_errors(one(objects, "ServingRuntime"), services(objects)) == []


@pytest.mark.parametrize("case", CASES)
def test_the_runtime_container_is_a_valid_kubernetes_container(case: str) -> None:
    # The CRD embeds the Container schema; the client's model is a second opinion.
    client.V1Container.model_validate(container(objects_of(case)))


def broken(case: str, kind: str, change: Any) -> dict[str, Any]:
    obj = copy.deepcopy(one(objects_of(case), kind))
    change(obj)
    return obj


@pytest.mark.parametrize(
    ("kind", "change", "message"),
    [
        (
            "ServingRuntime",
            lambda o: o["spec"]["containers"][0].update(imagePullPolicyy="Always"),
            "containers/0: Additional properties are not allowed ('imagePullPolicyy'",
        ),
        (
            "ServingRuntime",
            lambda o: o["spec"].update(protocolVersion=["v2"]),
            "spec: Additional properties are not allowed ('protocolVersion'",
        ),
        (
            "ServingRuntime",
            lambda o: o["spec"]["supportedModelFormats"][0].update(autoSelect="yes"),
            "supportedModelFormats/0/autoSelect: 'yes' is not of type 'boolean'",
        ),
        (
            "ServingRuntime",
            lambda o: o["spec"]["containers"][0]["ports"].append(
                {"name": "again", "containerPort": 8080}
            ),
            "ports: items 0 and 2 are duplicates (map list",
        ),
        (
            "ServingRuntime",
            lambda o: o["spec"]["containers"][0]["resources"]["limits"].update(cpu=[2]),
            "resources/limits/cpu: [2] is not valid under any of the given schemas",
        ),
        (
            "InferenceService",
            lambda o: o["spec"]["predictor"].update(minReplicas=2**31),
            "predictor/minReplicas: 2147483648 is not a 'int32'",
        ),
        (
            "InferenceService",
            lambda o: o["spec"]["predictor"]["model"].update(modelFormat={"version": "1"}),
            "modelFormat: 'name' is a required property",
        ),
        (
            "InferenceService",
            lambda o: o["spec"]["predictor"].update(scaleMetric="gpu"),
            "predictor/scaleMetric: 'gpu' is not one of",
        ),
        (
            "InferenceService",
            lambda o: o["metadata"].update(name="Classifier"),
            "metadata/name: 'Classifier' is not a DNS-1123 subdomain",
        ),
    ],
)
def test_a_broken_object_fails_the_schema(kind: str, change: Any, message: str) -> None:
    errors = schema_errors(broken("one-onnx-model", kind, change))
    assert any(message in error for error in errors), errors


def on_runtime(**changes: Any) -> Any:
    return lambda runtime, isvc: runtime["spec"].update(changes)


def on_model(**changes: Any) -> Any:
    return lambda runtime, isvc: isvc["spec"]["predictor"]["model"].update(changes)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (on_runtime(protocolVersions=["v2", "grpc-v3"]), "unknown protocol version 'grpc-v3'"),
        (on_model(protocolVersion="v3"), "unknown protocol version 'v3'"),
        (on_model(protocolVersion="v1"), "does not support protocol v1"),
        (on_runtime(protocolVersions=["grpc-v2"]), "does not support protocol v2"),
        (on_model(modelFormat={"name": "tensorflow"}), "does not support model format"),
        (on_model(modelFormat={"name": "onnx", "version": "1"}), "does not support model format"),
        (on_model(runtime="kserve-tritonserver"), "names runtime 'kserve-tritonserver'"),
        (lambda r, s: s["metadata"].update(name="1classifier"), "not a DNS-1035 name"),
        (lambda r, s: r["spec"]["containers"][0].update(name="server"), "no kserve-container"),
    ],
)
def test_what_kserve_refuses_beyond_the_schema_is_caught(change: Any, message: str) -> None:
    # Protocol versions are plain strings in the CRD: "v3" passes the schema, not KServe.
    objects = copy.deepcopy(objects_of("one-onnx-model"))
    runtime, [isvc] = one(objects, "ServingRuntime"), services(objects)
    change(runtime, isvc)
    errors = kserve_errors(runtime, [isvc])
    assert any(message in error for error in errors), errors


def test_the_validator_is_strict_where_kubernetes_is_and_lax_where_it_is_not() -> None:
    isvc = services(objects_of("one-onnx-model"))[0]
    # x-kubernetes-int-or-string: a quantity may be a number.
    relaxed = copy.deepcopy(isvc)
    relaxed["spec"]["predictor"]["model"]["resources"]["limits"]["cpu"] = 2
    assert schema_errors(relaxed) == []
    # Status is the controller's, free-form where KServe says so; unknown fields elsewhere fail.
    unknown = copy.deepcopy(isvc)
    unknown["spec"]["predictor"]["modle"] = {}
    assert schema_errors(unknown) == [
        "spec/predictor: Additional properties are not allowed ('modle' was unexpected)"
    ]


# What the objects say.


def test_the_runtime_serves_protocol_v2_over_rest_and_grpc_for_the_repositorys_formats() -> None:
    runtime = one(objects_of("every-runtime-gpu-autoscaled"), "ServingRuntime")["spec"]
    assert runtime["protocolVersions"] == ["v2", "grpc-v2"]
    assert runtime["supportedModelFormats"] == [
        {"name": "onnx", "autoSelect": False},
        {"name": "python", "autoSelect": False},
        {"name": "pytorch", "autoSelect": False},
    ]
    server = runtime["containers"][0]
    assert server["name"] == "kserve-container"
    assert {p["name"]: p["containerPort"] for p in server["ports"]} == {"http": 8080, "grpc": 8081}
    # REST first: KServe sends the predictor Service's port 80 to the first container port.
    assert server["ports"][0]["name"] == "http"
    env = {e["name"]: e["value"] for e in server["env"]}
    assert env["INFERSHIP_HTTP__PORT"] == "8080"
    assert env["INFERSHIP_GRPC__PORT"] == "8081"
    assert env["INFERSHIP_MODEL_REPOSITORY"] == "/models"
    assert "INFERSHIP_MODELS" not in env
    assert server["args"] == ["serve"]


def test_each_model_gets_an_inference_service_on_the_runtime() -> None:
    isvcs = services(objects_of("every-runtime-gpu-autoscaled"))
    got = {
        s["metadata"]["name"]: (
            s["spec"]["predictor"]["model"]["modelFormat"]["name"],
            s["spec"]["predictor"]["model"]["env"],
        )
        for s in isvcs
    }
    assert got == {
        "models-classifier": ("onnx", [{"name": "INFERSHIP_MODELS", "value": '["classifier"]'}]),
        "models-exported-net": (
            "pytorch",
            [{"name": "INFERSHIP_MODELS", "value": '["exported_net"]'}],
        ),
        "models-digits-v2": ("python", [{"name": "INFERSHIP_MODELS", "value": '["digits.v2"]'}]),
    }
    for isvc in isvcs:
        model = isvc["spec"]["predictor"]["model"]
        assert model["runtime"] == "models"
        assert model["protocolVersion"] == "v2"
        assert "storageUri" not in model  # the image carries the repository
        assert isvc["metadata"]["annotations"] == {
            "serving.kserve.io/deploymentMode": "RawDeployment"
        }
        predictor = isvc["spec"]["predictor"]
        assert (predictor["minReplicas"], predictor["maxReplicas"]) == (2, 6)
        assert (predictor["scaleMetric"], predictor["scaleTarget"]) == ("cpu", 70)


def test_a_storage_uri_moves_the_repository_to_kserves_download_folder() -> None:
    model = services(objects_of("storage-uri-unauthenticated"))[0]["spec"]["predictor"]["model"]
    assert model["storageUri"] == "s3://models/digits-repository"
    assert {"name": "INFERSHIP_MODEL_REPOSITORY", "value": "/mnt/models"} in model["env"]


def test_the_runtime_container_is_hardened_as_the_deployments() -> None:
    for case, (spec, _, _) in CASES.items():
        objects = objects_of(case)
        server = container(objects)
        reference = deployment_pod(spec)
        [deployed] = reference["containers"]
        assert server["securityContext"] == deployed["securityContext"], case
        assert server["volumeMounts"] == deployed["volumeMounts"], case
        assert one(objects, "ServingRuntime")["spec"]["volumes"] == reference["volumes"], case
        assert server["image"] == deployed["image"], case
        assert server["resources"] == deployed["resources"], case
        # The Deployment test's assertions, on the runtime's container.
        context = server["securityContext"]
        assert context["runAsNonRoot"] is True
        assert context["runAsUser"] == 10001
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["privileged"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}
        assert {"name": "tmp", "mountPath": "/tmp"} in server["volumeMounts"]
        # The pod-level half goes on each InferenceService's predictor.
        assert one(objects, "ServiceAccount")["automountServiceAccountToken"] is False
        for isvc in services(objects):
            predictor = isvc["spec"]["predictor"]
            for key in (
                "securityContext",
                "automountServiceAccountToken",
                "enableServiceLinks",
                "serviceAccountName",
                "terminationGracePeriodSeconds",
            ):
                assert predictor[key] == reference[key], (case, key)


def test_the_runtime_probes_the_health_endpoints_as_the_deployment_does() -> None:
    spec = CASES["one-onnx-model"][0]
    server = container(objects_of("one-onnx-model"))
    [deployed] = deployment_pod(spec)["containers"]
    for probe in ("startupProbe", "livenessProbe"):
        assert server[probe] == deployed[probe]
    assert server["readinessProbe"] == {**deployed["readinessProbe"], "grpc": {"port": 8081}}


def test_keys_and_gpus_come_along() -> None:
    objects = objects_of("one-onnx-model")
    secret = one(objects, "Secret")
    assert secret["metadata"]["name"] == "classifier-api-keys"
    mounts = {m["name"] for m in container(objects)["volumeMounts"]}
    assert mounts == {"tmp", "api-keys"}
    gpu = objects_of("every-runtime-gpu-autoscaled")
    assert [o["kind"] for o in gpu].count("Secret") == 0  # an existing Secret is only mounted
    runtime = one(gpu, "ServingRuntime")["spec"]
    assert runtime["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert runtime["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    plain = objects_of("storage-uri-unauthenticated")
    env = {e["name"]: e["value"] for e in container(plain)["env"]}
    assert env["INFERSHIP_AUTH__ALLOW_UNAUTHENTICATED"] == "true"


def test_names_kserve_refuses_are_refused_here() -> None:
    spec = DeploySpec(name="1st", namespace="ml", image=IMAGE)
    with pytest.raises(ValueError, match="start with a letter"):
        kserve_objects(spec, {"1st": "onnx"})
    long = DeploySpec(name="m" * 52, namespace="ml", image=IMAGE)
    with pytest.raises(ValueError, match="at most 53"):
        kserve_objects(long, {"a": "onnx", "b": "onnx"})


# The command.


def manifests(*args: str, repository: Path = EXAMPLE_REPOSITORY) -> Any:
    return CliRunner().invoke(main, ["manifests", str(repository), "--image", IMAGE, *args])


def test_the_stream_matches_its_golden_file() -> None:
    text = render_stream(objects_of("one-onnx-model"))
    path = GOLDEN / "kserve-stream.yaml"
    if REGENERATE:
        path.write_text(text)
    assert text == path.read_text(), "differs from tests/k8s/golden/kserve-stream.yaml"


def test_the_cli_prints_the_kserve_flavour_of_the_deployment_it_would_print() -> None:
    kserve = manifests("--kserve", "--namespace", "ml")
    plain = manifests("--namespace", "ml")
    assert kserve.exit_code == plain.exit_code == 0, kserve.output + plain.output
    objects = list(yaml.safe_load_all(kserve.output))
    assert [o["kind"] for o in objects] == ["ServiceAccount", "ServingRuntime", "InferenceService"]
    assert all(schema_errors(o) == [] for o in objects[1:])
    assert kserve_errors(objects[1], objects[2:]) == []
    # The same options make the same pod, whichever the flavour.
    deployment = one(list(yaml.safe_load_all(plain.output)), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    [deployed] = pod["containers"]
    runtime_container = container(objects)
    for key in ("image", "resources", "securityContext", "startupProbe", "livenessProbe"):
        assert runtime_container[key] == deployed[key], key
    predictor = objects[2]["spec"]["predictor"]
    assert predictor["securityContext"] == pod["securityContext"]
    assert predictor["model"]["env"] == [
        {"name": "INFERSHIP_MODELS", "value": '["efficientnet-lite0"]'}
    ]


def test_the_cli_reads_each_models_runtime_from_the_repository(tmp_path: Path) -> None:
    for name, manifest, artifact in (
        ("vision", "runtime: onnx\n", "model.onnx"),
        ("net", "runtime: torch\nartifact: model.pt2\n", "model.pt2"),
        ("rules", "runtime: python\npython: {module: model.py}\n", "model.py"),
    ):
        (tmp_path / name / "1").mkdir(parents=True)
        (tmp_path / name / "model.yaml").write_text(manifest)
        (tmp_path / name / "1" / artifact).write_text("")
    args = ("--kserve", "--storage-uri", "gs://bucket/repo", "--monitoring")
    result = manifests(*args, repository=tmp_path)
    assert result.exit_code == 0, result.output
    objects = list(yaml.safe_load_all(result.output))
    formats = {
        o["metadata"]["name"]: o["spec"]["predictor"]["model"]["modelFormat"]["name"]
        for o in objects
        if o["kind"] == "InferenceService"
    }
    assert formats == {
        "infership-net": "pytorch",
        "infership-rules": "python",
        "infership-vision": "onnx",
    }
    # --monitoring: the dashboard and alert rules; the pods are scraped by annotation.
    assert {"ConfigMap", "PrometheusRule"} <= {o["kind"] for o in objects}
    assert "ServiceMonitor" not in {o["kind"] for o in objects}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--storage-uri", "s3://b/r"], "--storage-uri needs --kserve"),
        (["--kserve", "--traffic", "ingress"], "--kserve does not take --traffic"),
        (["--kserve", "--allow-from", "ingress-nginx"], "--kserve does not take --allow-from"),
        (["--kserve", "--name", "7up"], "start with a letter"),
    ],
)
def test_options_that_do_not_fit_kserve_are_refused(args: list[str], message: str) -> None:
    result = manifests(*args)
    assert result.exit_code == 2
    assert message in result.output


def test_kserve_with_an_output_folder_is_refused(tmp_path: Path) -> None:
    result = manifests("--kserve", "--output", str(tmp_path / "tree"))
    assert result.exit_code == 2
    assert "--kserve does not take --output" in result.output
    assert not (tmp_path / "tree").exists()
