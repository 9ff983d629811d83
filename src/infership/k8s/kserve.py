"""The image as a KServe runtime: a ``ServingRuntime`` and one ``InferenceService`` per model.

``kserve_objects(spec, formats)`` is what ``infership manifests --kserve`` prints. The runtime's
container is the Deployment's (``manifests.pod_template``): the same image, probes, resources
and hardening, on KServe's ports (REST 8080, gRPC 8081) and under KServe's container name, with
the server's settings as environment variables instead of a ConfigMap. Each InferenceService
names that runtime and one model, so its pods load only that model.

Where the model comes from: the image carries the repository at ``/models`` (``infership
build``), so an InferenceService needs no ``storageUri``. With one, KServe's storage initializer
downloads it into ``/mnt/models``, which must then be a model repository (the folder given to
``infership serve``), and the InferenceService points the server there.

Auto-selection is off (``autoSelect: false``): the image serves the models it carries, not any
model of a format, so an InferenceService elsewhere in the namespace that names only a format
must not be given this runtime.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from typing import Any

from infership.k8s.manifests import (
    api_keys_secret,
    labels,
    pod_template,
    server_environment,
    service_account,
)
from infership.k8s.spec import DeploySpec

Obj = dict[str, Any]

HTTP_PORT = 8080
"""KServe sends REST traffic to the first container port; its own runtimes use 8080."""
GRPC_PORT = 8081
CONTAINER_NAME = "kserve-container"
"""The name KServe gives the predictor's serving container (its runtimes use it too)."""
REPOSITORY_IN_IMAGE = "/models"
KSERVE_MODEL_DIR = "/mnt/models"
"""Where KServe's storage initializer puts what ``storageUri`` names."""
PROTOCOL_VERSIONS = ("v2", "grpc-v2")

# KServe's webhook takes DNS-1035 names (a letter first) for InferenceServices, and names the
# predictor's Deployment and Service "<name>-predictor": a Service name stops at 63 characters.
_ISVC_NAME = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_MAX_ISVC_NAME = 63 - len("-predictor")

MODEL_FORMATS: dict[str, str] = {"onnx": "onnx", "torch": "pytorch", "python": "python"}
"""``runtime:`` of model.yaml → KServe model format name. ``pytorch`` is KServe's name for
PyTorch models; ours are torch.export programs or TorchScript."""


def kserve_objects(
    spec: DeploySpec, formats: Mapping[str, str], storage_uri: str | None = None
) -> list[Obj]:
    """The ServiceAccount, keys Secret (when shipped), ServingRuntime and one InferenceService
    per model of ``formats`` (model name → ``runtime:`` of its model.yaml), in apply order.

    Raises ValueError for a runtime that has no KServe model format, or a name KServe refuses.
    """
    unknown = sorted(set(formats.values()) - set(MODEL_FORMATS))
    if unknown:
        raise ValueError(f"no KServe model format for runtime(s) {unknown}")
    names = {
        model: spec.name if len(formats) == 1 else f"{spec.name}-{_dns(model)}" for model in formats
    }
    for name in names.values():
        if not _ISVC_NAME.fullmatch(name) or len(name) > _MAX_ISVC_NAME:
            raise ValueError(
                f"KServe needs InferenceService names that start with a letter, hold only "
                f"lowercase letters, digits and '-', and are at most {_MAX_ISVC_NAME} characters "
                f"long: {name!r}"
            )
    kspec = _on_kserve_ports(spec)
    objects = [service_account(kspec)]
    if kspec.api_keys_yaml is not None and not kspec.allow_unauthenticated:
        objects.append(api_keys_secret(kspec))
    objects.append(serving_runtime(kspec, sorted({MODEL_FORMATS[f] for f in formats.values()})))
    for model, runtime in formats.items():
        objects.append(
            inference_service(
                kspec, names[model], model, MODEL_FORMATS[runtime], storage_uri=storage_uri
            )
        )
    return objects


def _on_kserve_ports(spec: DeploySpec) -> DeploySpec:
    return spec.model_copy(update={"http_port": HTTP_PORT, "grpc_port": GRPC_PORT})


def runtime_container(spec: DeploySpec) -> Obj:
    """The Deployment's server container, made KServe's: its name, no ConfigMap (the settings
    are ``env``), and the repository from ``INFERSHIP_MODEL_REPOSITORY`` so that an
    InferenceService can move it (its ``env`` overrides the runtime's; its ``args`` would be
    appended to them)."""
    container: Obj = copy.deepcopy(pod_template(spec)["spec"]["containers"][0])
    environment = server_environment(spec)
    # Each InferenceService names its own model; the runtime serves what it is told.
    environment.pop("INFERSHIP_MODELS", None)
    environment = {"INFERSHIP_MODEL_REPOSITORY": REPOSITORY_IN_IMAGE, **environment}
    del container["envFrom"]
    ordered: Obj = {}
    for key, value in container.items():
        if key == "name":
            value = CONTAINER_NAME
        elif key == "args":
            value = ["serve"]
        ordered[key] = value
        if key == "ports":
            ordered["env"] = [{"name": k, "value": v} for k, v in environment.items()]
    return ordered


def serving_runtime(spec: DeploySpec, model_formats: list[str]) -> Obj:
    """A namespaced ServingRuntime ``<name>`` running ``spec.image`` for ``model_formats``."""
    pod = pod_template(spec)
    runtime: Obj = {
        # Pod annotations: KServe's metrics aggregation and plain Prometheus scraping.
        "annotations": {
            "prometheus.kserve.io/port": str(spec.http_port),
            "prometheus.kserve.io/path": "/metrics",
            **{k: v for k, v in pod["metadata"]["annotations"].items() if "prometheus" in k},
        },
        "supportedModelFormats": [{"name": name, "autoSelect": False} for name in model_formats],
        "protocolVersions": list(PROTOCOL_VERSIONS),
        "containers": [runtime_container(spec)],
        "volumes": pod["spec"]["volumes"],
    }
    if "tolerations" in pod["spec"]:
        runtime["tolerations"] = pod["spec"]["tolerations"]
    return {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ServingRuntime",
        "metadata": _metadata(spec, spec.name),
        "spec": runtime,
    }


def inference_service(
    spec: DeploySpec,
    name: str,
    model: str,
    model_format: str,
    *,
    storage_uri: str | None = None,
) -> Obj:
    """The InferenceService ``name`` serving ``model`` with the runtime ``<spec.name>`` over
    protocol v2 (REST ``/v2/models/<model>/infer``; gRPC on the second port)."""
    pod = pod_template(spec)["spec"]
    env = [{"name": "INFERSHIP_MODELS", "value": json.dumps([model])}]
    model_spec: Obj = {
        "modelFormat": {"name": model_format},
        "runtime": spec.name,
        "protocolVersion": "v2",
    }
    if storage_uri is not None:
        model_spec["storageUri"] = storage_uri
        env.append({"name": "INFERSHIP_MODEL_REPOSITORY", "value": KSERVE_MODEL_DIR})
    model_spec["env"] = env
    # KServe fills in its default requests when the InferenceService has none, and those win
    # over the runtime's: the sizes measured from the repository go here as well.
    model_spec["resources"] = runtime_container(spec)["resources"]
    hpa = spec.autoscaling
    predictor: Obj = {
        "minReplicas": spec.replicas if hpa is None else hpa.min_replicas,
        "maxReplicas": spec.replicas if hpa is None else hpa.max_replicas,
    }
    if hpa is not None:
        predictor |= {"scaleMetric": "cpu", "scaleTarget": hpa.target_cpu_utilization}
    # The pod-level half of the Deployment's hardening, which a ServingRuntime cannot carry.
    for key in (
        "serviceAccountName",
        "automountServiceAccountToken",
        "enableServiceLinks",
        "terminationGracePeriodSeconds",
        "securityContext",
    ):
        predictor[key] = pod[key]
    predictor["model"] = model_spec
    metadata = _metadata(spec, name)
    # Two ports (REST and gRPC) need a plain Deployment: Knative runs one port per container.
    # "RawDeployment" is the name every KServe release knows (newer ones call it Standard).
    metadata["annotations"] = {"serving.kserve.io/deploymentMode": "RawDeployment"}
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": metadata,
        "spec": {"predictor": predictor},
    }


def _metadata(spec: DeploySpec, name: str) -> Obj:
    # The labels and name every object of the Deployment flavour carries.
    return {
        "name": name,
        "namespace": spec.namespace,
        "labels": {**labels(spec), "app.kubernetes.io/managed-by": "infership"},
    }


def _dns(model: str) -> str:
    # Model folder names may hold '_' or '.', which Kubernetes names may not.
    return re.sub(r"[^a-z0-9-]+", "-", model.lower()).strip("-") or "model"
