"""The objects of `infership manifests`: golden YAML, hardening defaults, plan → HPA, canary."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from infership.app import EXAMPLE_REPOSITORY
from infership.cli import main
from infership.k8s.manifests import build_objects, canary_objects
from infership.k8s.spec import Autoscaling, DeploySpec, Resources, memory_for

GOLDEN = Path(__file__).parent / "golden"
REGENERATE = os.environ.get("INFERSHIP_REGENERATE_GOLDEN") == "1"
"""INFERSHIP_REGENERATE_GOLDEN=1 pytest tests/k8s rewrites the golden files; review the diff."""

DIGEST = "sha256:" + "ab" * 32
IMAGE = f"registry.example.com/ml/classifier:1.0@{DIGEST}"
# What `infership plan --json` printed for the example on the 2-core machine, trimmed to what a
# CapacityPlan holds (its numbers only need to be plausible here).
PLAN = {
    "target_rps": 200.0,
    "p99_budget_ms": 100.0,
    "headroom": 0.3,
    "measured": "chelsea.jpg c=4 on infership",
    "measured_p99_ms": 61.0,
    "concurrency_per_replica": 4,
    "service_time_s": 0.05,
    "replica_capacity_rps": 80.0,
    "replicas": 4,
    "hpa": {
        "min_replicas": 4,
        "max_replicas": 8,
        "target_cpu_utilization": 70,
        "cpu_request_millicores": 1800,
    },
}


def check_golden(relative: str, text: str) -> None:
    path = GOLDEN / relative
    if REGENERATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"{path} missing: run with INFERSHIP_REGENERATE_GOLDEN=1"
    assert text == path.read_text(), f"{relative} differs from its golden file"


def manifests(*args: str) -> str:
    result = CliRunner().invoke(main, ["manifests", str(EXAMPLE_REPOSITORY), *args])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture
def plan_file(tmp_path: Path) -> Path:
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(PLAN))
    return path


def spec(**changes: Any) -> DeploySpec:
    values: dict[str, Any] = {"name": "classifier", "namespace": "ml", "image": IMAGE}
    return DeploySpec(**(values | changes))


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    [obj] = by_kind(objects, kind)
    return obj


def server(objects: list[dict[str, Any]]) -> dict[str, Any]:
    container: dict[str, Any] = one(objects, "Deployment")["spec"]["template"]["spec"][
        "containers"
    ][0]
    return container


# Golden files: the whole output, so any change to the manifests shows up as a diff in review.


def test_the_yaml_stream_matches_its_golden_file(plan_file: Path) -> None:
    text = manifests(
        "--image", IMAGE, "--plan", str(plan_file), "--custom-metric", "inflight",
        "--traffic", "gateway", "--host", "classify.example.com", "--gateway", "public/gateways",
        "--monitoring",
    )  # fmt: skip
    check_golden("stream-gateway.yaml", text)


def test_the_kustomize_tree_matches_its_golden_files(tmp_path: Path, plan_file: Path) -> None:
    keys = tmp_path / "keys.yaml"
    keys.write_text("keys:\n- id: ci\n  sha256: " + "0" * 64 + "\n  scopes: [infer]\n")
    out = tmp_path / "tree"
    output = manifests(
        "--image", IMAGE, "--name", "classifier", "--namespace", "ml", "--plan", str(plan_file),
        "--traffic", "ingress", "--host", "classify.example.com", "--tls-secret", "classify-tls",
        "--allow-from", "ingress-nginx", "--api-keys-file", str(keys), "-o", str(out),
    )  # fmt: skip
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert f"wrote {len(files)} files to {out}" in output
    for relative in files:
        check_golden(f"tree/{relative}", (out / relative).read_text())
    assert files == sorted(
        p.relative_to(GOLDEN / "tree").as_posix()
        for p in (GOLDEN / "tree").rglob("*")
        if p.is_file()
    ), "the tree has different files than its golden copy"


# What every deployment gets.


def test_objects_come_in_apply_order_with_the_namespace_first() -> None:
    kinds = [o["kind"] for o in build_objects(spec(traffic="ingress"))]
    assert kinds[0] == "Namespace"
    # What the pods mount exists before the Deployment; what points at it comes after.
    assert kinds.index("ServiceAccount") < kinds.index("Deployment")
    assert kinds.index("ConfigMap") < kinds.index("Deployment")
    assert kinds.index("Deployment") < kinds.index("Service") < kinds.index("Ingress")
    assert {"PodDisruptionBudget", "NetworkPolicy"} <= set(kinds)


def test_every_object_is_labelled_and_in_the_namespace() -> None:
    for obj in build_objects(spec(traffic="gateway", monitoring=True)):
        assert obj["metadata"]["labels"]["app.kubernetes.io/instance"] == "classifier"
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "ml"


def test_the_pod_is_hardened() -> None:
    objects = build_objects(spec())
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert one(objects, "ServiceAccount")["automountServiceAccountToken"] is False
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    context = server(objects)["securityContext"]
    assert context["runAsUser"] == 10001
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    # The one writable place, where the image puts HOME and TMPDIR.
    assert {"name": "tmp", "mountPath": "/tmp"} in server(objects)["volumeMounts"]
    assert (
        one(objects, "Namespace")["metadata"]["labels"]["pod-security.kubernetes.io/enforce"]
        == "restricted"
    )


def test_the_image_is_pinned_by_digest_when_known() -> None:
    assert server(build_objects(spec()))["image"] == f"registry.example.com/ml/classifier@{DIGEST}"
    tagged = "localhost:5000/classifier:2"
    assert server(build_objects(spec(image=tagged)))["image"] == tagged


def test_probes_use_the_servers_health_endpoints_over_http_and_grpc() -> None:
    container = server(build_objects(spec()))
    assert container["startupProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert container["readinessProbe"]["grpc"] == {"port": 8001}
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8000, "grpc": 8001}


def test_the_grace_period_covers_the_servers_drain() -> None:
    objects = build_objects(spec(drain_delay_s=10, drain_timeout_s=45))
    env = one(objects, "ConfigMap")["data"]
    drain = float(env["INFERSHIP_SHUTDOWN__DELAY_S"]) + float(env["INFERSHIP_SHUTDOWN__TIMEOUT_S"])
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert drain == 55
    assert pod["terminationGracePeriodSeconds"] > drain


def test_rolling_updates_never_take_a_ready_pod_away_first() -> None:
    deployment = one(build_objects(spec()), "Deployment")
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    spread = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"][0]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "8000"


def test_a_config_change_rolls_the_pods() -> None:
    def checksum(s: DeploySpec) -> str:
        template = one(build_objects(s), "Deployment")["spec"]["template"]
        return str(template["metadata"]["annotations"]["infership.dev/config-sha256"])

    assert checksum(spec()) != checksum(spec(drain_timeout_s=60))
    assert checksum(spec()) == checksum(spec(host="a.example.com"))


def test_api_keys_are_a_mounted_folder_never_env_or_subpath() -> None:
    objects = build_objects(spec(api_keys_yaml="keys: []\n"))
    assert one(objects, "Secret")["stringData"] == {"keys.yaml": "keys: []\n"}
    container = server(objects)
    mount = next(m for m in container["volumeMounts"] if m["name"] == "api-keys")
    assert "subPath" not in mount
    assert mount["readOnly"] is True
    assert "env" not in container
    env = one(objects, "ConfigMap")["data"]
    assert env["INFERSHIP_AUTH__KEYS_FILE"] == f"{mount['mountPath']}/keys.yaml"
    assert "INFERSHIP_AUTH__ALLOW_UNAUTHENTICATED" not in env


def test_an_existing_keys_secret_is_mounted_and_not_shipped() -> None:
    objects = build_objects(spec(api_keys_secret="team-keys"))
    assert by_kind(objects, "Secret") == []
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    secrets = [v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v]
    assert secrets == ["team-keys"]


def test_unauthenticated_serving_mounts_no_keys() -> None:
    objects = build_objects(spec(allow_unauthenticated=True))
    assert one(objects, "ConfigMap")["data"]["INFERSHIP_AUTH__ALLOW_UNAUTHENTICATED"] == "true"
    assert [m["name"] for m in server(objects)["volumeMounts"]] == ["tmp"]


def test_model_decryption_keys_are_mounted_as_a_folder() -> None:
    objects = build_objects(spec(model_key_secret="model-keys"))
    mount = next(m for m in server(objects)["volumeMounts"] if m["name"] == "model-keys")
    env = one(objects, "ConfigMap")["data"]
    assert env["INFERSHIP_MODEL_SECURITY__KEY_DIR"] == mount["mountPath"]
    assert "subPath" not in mount


def test_the_network_policy_lets_in_only_the_serving_ports_and_nothing_out() -> None:
    policy = one(build_objects(spec()), "NetworkPolicy")
    assert policy["spec"]["egress"] == []
    [rule] = policy["spec"]["ingress"]
    assert [p["port"] for p in rule["ports"]] == [8000, 8001]
    limited = one(build_objects(spec(allow_from_namespaces=("ingress-nginx",))), "NetworkPolicy")
    allowed = limited["spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchExpressions"]
    assert allowed[0]["values"] == ["ingress-nginx", "ml"]


def test_ingress_with_tls_routes_the_host_to_the_stable_service() -> None:
    ingress = one(
        build_objects(spec(traffic="ingress", host="c.example.com", tls_secret="c-tls")), "Ingress"
    )
    assert ingress["spec"]["tls"] == [{"hosts": ["c.example.com"], "secretName": "c-tls"}]
    [rule] = ingress["spec"]["rules"]
    assert rule["host"] == "c.example.com"
    assert rule["http"]["paths"][0]["backend"]["service"]["name"] == "classifier"


def test_tls_without_an_ingress_host_is_refused() -> None:
    with pytest.raises(ValueError, match="TLS secret needs"):
        spec(traffic="gateway", tls_secret="c-tls")


# Resources and autoscaling from measurements.


def test_memory_follows_the_size_of_the_served_models(tmp_path: Path) -> None:
    small = tmp_path / "small.onnx"
    small.write_bytes(b"\0" * 2**20)
    large = tmp_path / "large.onnx"
    large.write_bytes(b"\0" * 100 * 2**20)
    assert memory_for([small]) == Resources(memory_request_mib=320, memory_limit_mib=640)
    # 256 + 3 × 101 MiB = 559 → 576 MiB, rounded up to 64 MiB.
    assert memory_for([small, large]).memory_request_mib == 576


def test_the_example_gets_the_memory_it_measured() -> None:
    container = server([yaml.safe_load(d) for d in manifests("--image", IMAGE).split("---\n")])
    # The example's 18.6 MB model measured ~300 MB RSS under load.
    assert container["resources"]["requests"]["memory"] == "320Mi"
    assert container["resources"]["limits"]["memory"] == "640Mi"


def test_the_plan_sets_the_autoscaler_and_the_cpu_request(plan_file: Path) -> None:
    objects = list(yaml.safe_load_all(manifests("--image", IMAGE, "--plan", str(plan_file))))
    hpa = one(objects, "HorizontalPodAutoscaler")["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (4, 8)
    assert hpa["metrics"] == [
        {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 70},
            },
        }
    ]
    assert hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300
    assert server(objects)["resources"]["requests"]["cpu"] == "1800m"
    # The autoscaler owns the replica count; a value here would reset it on every apply.
    assert "replicas" not in one(objects, "Deployment")["spec"]


@pytest.mark.parametrize(
    ("metric", "name", "target"),
    [
        ("inflight", "infership_inflight_requests", "2800m"),
        ("queue", "infership_queue_seconds", "25m"),
    ],
)
def test_a_custom_metric_scales_on_a_per_pod_target_from_the_plan(
    plan_file: Path, metric: str, name: str, target: str
) -> None:
    objects = list(
        yaml.safe_load_all(
            manifests("--image", IMAGE, "--plan", str(plan_file), "--custom-metric", metric)
        )
    )
    pods = one(objects, "HorizontalPodAutoscaler")["spec"]["metrics"][1]["pods"]
    # inflight: k=4 in flight × (1 − 0.3 headroom); queue: a quarter of the 100 ms budget.
    assert pods == {
        "metric": {"name": name},
        "target": {"type": "AverageValue", "averageValue": target},
    }


def test_without_a_plan_an_autoscaler_keeps_the_replicas_and_may_double_them() -> None:
    objects = list(yaml.safe_load_all(manifests("--image", IMAGE, "--replicas", "3")))
    hpa = one(objects, "HorizontalPodAutoscaler")["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 6)
    [cpu] = hpa["metrics"]
    assert cpu["resource"] == {
        "name": "cpu",
        "target": {"type": "Utilization", "averageUtilization": 70},
    }
    # A CPU utilisation target is a percentage of the request: the pod must have one.
    assert server(objects)["resources"]["requests"]["cpu"] == "500m"
    assert "replicas" not in one(objects, "Deployment")["spec"]


def test_the_default_stream_matches_its_golden_file() -> None:
    # No plan and no options beyond the image: what a first `infership manifests` prints.
    check_golden("stream-default.yaml", manifests("--image", IMAGE))


def test_gpu_pods_ask_for_gpus_and_tolerate_gpu_nodes() -> None:
    objects = build_objects(spec(resources=Resources(gpus=1)))
    assert server(objects)["resources"]["limits"]["nvidia.com/gpu"] == "1"
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert "tolerations" not in one(build_objects(spec()), "Deployment")["spec"]["template"]["spec"]


def test_an_autoscaler_below_its_minimum_is_refused() -> None:
    with pytest.raises(ValueError, match="max_replicas is below"):
        Autoscaling(min_replicas=3, max_replicas=2)


# Canary.


def test_the_canary_runs_beside_the_stable_track_with_its_own_service() -> None:
    stable = build_objects(spec(traffic="gateway"))
    canary = canary_objects(spec(traffic="gateway", image="r.example.com/c:2"), weight=10)
    deployment, service = one(canary, "Deployment"), one(canary, "Service")
    assert deployment["metadata"]["name"] == service["metadata"]["name"] == "classifier-canary"
    assert deployment["spec"]["selector"]["matchLabels"]["infership.dev/track"] == "canary"
    assert service["spec"]["selector"]["infership.dev/track"] == "canary"
    assert one(stable, "Service")["spec"]["selector"]["infership.dev/track"] == "stable"
    assert server(canary)["image"] == "r.example.com/c:2"


def test_a_gateway_canary_splits_the_route_by_weight_and_a_redeploy_restores_it() -> None:
    route = one(canary_objects(spec(traffic="gateway"), weight=10), "HTTPRoute")
    backends = route["spec"]["rules"][0]["backendRefs"]
    assert [(b["name"], b["weight"]) for b in backends] == [
        ("classifier", 90),
        ("classifier-canary", 10),
    ]
    restored = one(build_objects(spec(traffic="gateway")), "HTTPRoute")
    assert restored["metadata"]["name"] == route["metadata"]["name"]
    assert [b["name"] for b in restored["spec"]["rules"][0]["backendRefs"]] == ["classifier"]


def test_an_ingress_canary_is_a_second_ingress_with_nginx_canary_annotations() -> None:
    canary = one(
        canary_objects(spec(traffic="ingress", host="c.example.com"), weight=25), "Ingress"
    )
    assert canary["metadata"]["name"] == "classifier-canary"
    assert canary["metadata"]["annotations"] == {
        "nginx.ingress.kubernetes.io/canary": "true",
        "nginx.ingress.kubernetes.io/canary-weight": "25",
    }
    [rule] = canary["spec"]["rules"]
    assert rule["host"] == "c.example.com"
    assert rule["http"]["paths"][0]["backend"]["service"]["name"] == "classifier-canary"


def test_a_canary_weight_outside_0_to_100_is_refused() -> None:
    with pytest.raises(ValueError, match="percentage"):
        canary_objects(spec(), weight=101)


# The command line.


def test_the_name_defaults_to_the_single_models_name() -> None:
    objects = list(yaml.safe_load_all(manifests("--image", IMAGE)))
    assert one(objects, "Deployment")["metadata"]["name"] == "efficientnet-lite0"
    assert one(objects, "ConfigMap")["data"]["INFERSHIP_MODELS"] == '["efficientnet-lite0"]'


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--image", IMAGE, "--name", "Not_A_Name"], "must be a DNS label"),
        (["--image", "bad image!"], "not a valid image reference"),
        (["--image", IMAGE, "--tls-secret", "x"], "TLS secret needs traffic='ingress'"),
    ],
)
def test_bad_options_exit_with_code_2_and_say_why(args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["manifests", str(EXAMPLE_REPOSITORY), *args])
    assert result.exit_code == 2
    assert message in result.output


def test_a_file_that_is_not_a_plan_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "plan.json"
    bad.write_text('{"replicas": 2}')
    result = CliRunner().invoke(
        main, ["manifests", str(EXAMPLE_REPOSITORY), "--image", IMAGE, "--plan", str(bad)]
    )
    assert result.exit_code == 2
    assert "not `infership plan --json` output" in result.output


def test_rendering_manifests_does_not_import_the_load_generator() -> None:
    # A fresh interpreter: this one has imported everything the other tests needed.
    import subprocess
    import sys

    code = (
        "import sys, infership.k8s.manifests, infership.k8s.kustomize, infership.cli.manifests;"
        "print(sorted(m for m in sys.modules if m.startswith('infership.bench')))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "[]", run.stdout


def test_environment_names_come_from_the_servers_settings() -> None:
    from infership.k8s.manifests import server_environment, setting_env
    from infership.settings import ServerSettings

    env = server_environment(spec(models=("a",), model_key_secret="mk"))
    # Every name the ConfigMap sets is one the server reads back.
    settings = ServerSettings.model_validate({})  # defaults: nothing from this environment
    assert settings.http.port == int(env["INFERSHIP_HTTP__PORT"]) == spec().http_port
    assert set(env) == {
        "INFERSHIP_HTTP__PORT", "INFERSHIP_GRPC__PORT", "INFERSHIP_OBSERVABILITY__LOG_FORMAT",
        "INFERSHIP_SHUTDOWN__DELAY_S", "INFERSHIP_SHUTDOWN__TIMEOUT_S", "INFERSHIP_MODELS",
        "INFERSHIP_AUTH__KEYS_FILE", "INFERSHIP_MODEL_SECURITY__KEY_DIR",
    }  # fmt: skip
    with pytest.raises(KeyError):
        setting_env("http", "no_such_setting")
