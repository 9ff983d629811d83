"""The Kubernetes objects of a deployment, as plain data built from a ``DeploySpec``.

``build_objects(spec)`` is everything, in apply order (the Namespace first, the objects that the
Deployment mounts before it, what points at the Deployment after it). ``canary_objects(spec,
weight=...)`` is what a canary adds beside it. Nothing here talks to a cluster or writes files:
``render`` turns the lists into YAML, ``kustomize`` into a base and overlays.

Labels: ``app.kubernetes.io/name: infership``, ``app.kubernetes.io/instance: <name>`` and
``infership.dev/track: stable|canary``. Each Deployment selects its own track; the Service
``<name>`` routes to stable pods only, ``<name>-canary`` to canary pods only.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from infership.k8s.spec import DeploySpec

Obj = dict[str, Any]
Track = Literal["stable", "canary"]

UID = 10001
"""The user and group ``infership build`` images run as."""
KEYS_DIR = "/etc/infership/keys"
MODEL_KEYS_DIR = "/etc/infership/model-keys"
KEYS_FILE_NAME = "keys.yaml"
CANARY_SUFFIX = "-canary"
TRACK_LABEL = "infership.dev/track"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


def build_objects(spec: DeploySpec) -> list[Obj]:
    """Every object of ``spec`` in apply order, the production flavour."""
    objects = [namespace(spec), service_account(spec), config_map(spec)]
    if spec.api_keys_yaml is not None and not spec.allow_unauthenticated:
        objects.append(api_keys_secret(spec))
    objects += [deployment(spec), service(spec)]
    objects += traffic_objects(spec)
    if spec.autoscaling is not None:
        objects.append(horizontal_pod_autoscaler(spec))
    objects += [pod_disruption_budget(spec), network_policy(spec)]
    if spec.monitoring:
        from infership.monitoring.kubernetes import kubernetes_objects

        for obj in kubernetes_objects(spec.name, spec.namespace, service_monitor_port="http"):
            # Our labels too, so that `status` and `delete` find them with the rest.
            obj["metadata"]["labels"] = {
                **obj["metadata"]["labels"],
                **_metadata(spec, "")["labels"],
            }
            objects.append(obj)
    return objects


def compatibility_notes(spec: DeploySpec) -> list[str]:
    """What the objects of ``spec`` cannot do on its target cluster, for the CLI to print;
    empty when they work as documented."""
    notes = []
    others = sorted(set(spec.allow_from_namespaces) - {spec.namespace})
    if others and not spec.kubernetes.labels_namespace_names:
        labelled = " ".join(
            f"kubectl label namespace {ns} {NAMESPACE_NAME_LABEL}={ns};" for ns in others
        )
        notes.append(
            f"{spec.kubernetes.label} does not label namespaces {NAMESPACE_NAME_LABEL} (1.21 "
            f"and later do), which the NetworkPolicy selects --allow-from namespaces by: "
            f"label them yourself: {labelled.rstrip(';')}"
        )
    return notes


def canary_objects(spec: DeploySpec, *, weight: int) -> list[Obj]:
    """The canary Deployment and Service beside the stable ones, and the traffic split that
    sends ``weight`` percent of requests to it. ``spec.image`` is the canary's image.

    With ``traffic="none"`` there is no split: the canary gets a share of nothing but the
    requests sent to ``<name>-canary`` directly.
    """
    if not 0 <= weight <= 100:
        raise ValueError(f"a canary weight is a percentage in [0, 100], got {weight}")
    objects = [deployment(spec, track="canary"), service(spec, track="canary")]
    if spec.traffic == "gateway":
        objects.append(http_route(spec, canary_weight=weight))
    elif spec.traffic == "ingress":
        objects.append(ingress(spec, canary_weight=weight))
    return objects


def labels(spec: DeploySpec, track: Track | None = None) -> dict[str, str]:
    """The labels every object carries; with ``track``, those that select one Deployment's pods."""
    result = {"app.kubernetes.io/name": "infership", "app.kubernetes.io/instance": spec.name}
    if track is not None:
        result[TRACK_LABEL] = track
    return result


def _metadata(spec: DeploySpec, name: str, track: Track | None = None) -> Obj:
    return {
        "name": name,
        "namespace": spec.namespace,
        "labels": {**labels(spec, track), "app.kubernetes.io/managed-by": "infership"},
    }


def _suffix(track: Track) -> str:
    return CANARY_SUFFIX if track == "canary" else ""


def namespace(spec: DeploySpec) -> Obj:
    """The namespace, enforcing the ``restricted`` Pod Security Standard our pods meet."""
    meta = _metadata(spec, spec.namespace)
    del meta["namespace"]
    meta["labels"]["pod-security.kubernetes.io/enforce"] = "restricted"
    if not spec.kubernetes.labels_namespace_names:
        # The label `--allow-from` selects namespaces by; the API server sets it from 1.21.
        meta["labels"][NAMESPACE_NAME_LABEL] = spec.namespace
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}


def service_account(spec: DeploySpec) -> Obj:
    """The pods' identity. The server never calls the Kubernetes API: no token is mounted."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _metadata(spec, spec.name),
        "automountServiceAccountToken": False,
    }


def setting_env(*path: str) -> str:
    """The environment variable of a server setting, named from ``ServerSettings`` itself:
    ``setting_env("http", "port")`` is ``INFERSHIP_HTTP__PORT``. KeyError for a setting the
    server does not have, so a renamed setting cannot leave a stale name in the manifests."""
    from infership.settings import ServerSettings

    model: Any = ServerSettings
    for part in path:
        model = model.model_fields[part].annotation
    config = ServerSettings.model_config
    delimiter = str(config.get("env_nested_delimiter") or "__")
    return str(config.get("env_prefix") or "") + delimiter.join(path).upper()


def server_environment(spec: DeploySpec) -> dict[str, str]:
    """The server's settings (``INFERSHIP_*``), held by the ConfigMap ``<name>-config``."""
    env = {
        setting_env("http", "port"): str(spec.http_port),
        setting_env("grpc", "port"): str(spec.grpc_port),
        setting_env("observability", "log_format"): "json",
        setting_env("shutdown", "delay_s"): f"{spec.drain_delay_s:g}",
        setting_env("shutdown", "timeout_s"): f"{spec.drain_timeout_s:g}",
    }
    if spec.models:
        env[setting_env("models")] = json.dumps(list(spec.models))
    if spec.keys_secret_name is not None:
        env[setting_env("auth", "keys_file")] = f"{KEYS_DIR}/{KEYS_FILE_NAME}"
    else:
        env[setting_env("auth", "allow_unauthenticated")] = "true"
    if spec.model_key_secret is not None:
        env[setting_env("model_security", "key_dir")] = MODEL_KEYS_DIR
    return env


def config_map(spec: DeploySpec) -> Obj:
    """Which models to serve, the ports, the drain and where the keys are, as env vars."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(spec, f"{spec.name}-config"),
        "data": server_environment(spec),
    }


def config_checksum(data: dict[str, str]) -> str:
    """sha256 of a ConfigMap's data, put on the pod template so a config change rolls the pods
    (environment variables are read only when a container starts)."""
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def api_keys_secret(spec: DeploySpec) -> Obj:
    """The keys file (hashed keys from ``infership keys``) as the Secret ``<name>-api-keys``."""
    assert spec.api_keys_yaml is not None
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(spec, f"{spec.name}-api-keys"),
        "type": "Opaque",
        "stringData": {KEYS_FILE_NAME: spec.api_keys_yaml},
    }


def deployment(spec: DeploySpec, track: Track = "stable") -> Obj:
    """The server's Deployment: hardened pod, probes on the health endpoints, drain-aware."""
    name = spec.name + _suffix(track)
    body: Obj = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(spec, name, track),
        "spec": {},
    }
    deployment_spec = body["spec"]
    # An autoscaler owns the replica count: a value here would reset it on every apply. The
    # canary is one pod; its share of traffic is set by weight, not by its replica count.
    if track == "canary":
        deployment_spec["replicas"] = 1
    elif spec.autoscaling is None:
        deployment_spec["replicas"] = spec.replicas
    deployment_spec.update(
        {
            "revisionHistoryLimit": 5,
            # Fails the rollout (condition Progressing=False) when no progress in 10 minutes:
            # model loads are slow, but not that slow.
            "progressDeadlineSeconds": 600,
            "selector": {"matchLabels": labels(spec, track)},
            # One extra pod at a time, none taken away before its replacement is ready.
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "template": pod_template(spec, track),
        }
    )
    return body


def pod_template(spec: DeploySpec, track: Track = "stable") -> Obj:
    """The pod: non-root, read-only root, no capabilities, RuntimeDefault seccomp, no token."""
    volumes: list[Obj] = [{"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}]
    mounts: list[Obj] = [{"name": "tmp", "mountPath": "/tmp"}]
    keys = spec.keys_secret_name
    if keys is not None:
        # The whole Secret as a folder, never subPath: the kubelet then swaps in rotated keys
        # and the server re-reads the file when it changes.
        volumes.append({"name": "api-keys", "secret": {"secretName": keys, "defaultMode": 0o440}})
        mounts.append({"name": "api-keys", "mountPath": KEYS_DIR, "readOnly": True})
    if spec.model_key_secret is not None:
        volumes.append(
            {
                "name": "model-keys",
                "secret": {"secretName": spec.model_key_secret, "defaultMode": 0o440},
            }
        )
        mounts.append({"name": "model-keys", "mountPath": MODEL_KEYS_DIR, "readOnly": True})
    pod: Obj = {
        "serviceAccountName": spec.name,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        # SIGTERM starts the server's own drain: readiness off at once, serving on for the
        # delay while endpoints and load balancers update, then up to the timeout for admitted
        # requests. No preStop hook: a preStop sleep would do the first step worse (readiness
        # stays true and kept-alive clients are not told to reconnect) and add its time to the
        # grace period. The grace period covers delay + timeout, so the kubelet never SIGKILLs
        # a drain that is within its settings.
        "terminationGracePeriodSeconds": spec.termination_grace_s,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": UID,
            "runAsGroup": UID,
            "fsGroup": UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [_container(spec, mounts)],
        "volumes": volumes,
        "topologySpreadConstraints": [
            {
                # Replicas on different nodes where the scheduler can, so one node going down
                # takes one replica; ScheduleAnyway keeps small clusters schedulable.
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": labels(spec, track)},
            }
        ],
    }
    if spec.resources.gpus:
        pod["tolerations"] = [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        ]
    return {
        "metadata": {
            "labels": labels(spec, track),
            "annotations": {
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(spec.http_port),
                "prometheus.io/path": "/metrics",
                "infership.dev/config-sha256": config_checksum(server_environment(spec)),
            },
        },
        "spec": pod,
    }


def _container(spec: DeploySpec, mounts: list[Obj]) -> Obj:
    res = spec.resources
    limits: dict[str, str] = {
        "cpu": f"{res.cpu_limit_millicores}m",
        "memory": f"{res.memory_limit_mib}Mi",
    }
    if res.gpus:
        limits["nvidia.com/gpu"] = str(res.gpus)
    return {
        "name": "server",
        "image": spec.pinned_image,
        "imagePullPolicy": "IfNotPresent",
        # The image's entrypoint is `infership`; /models is its model repository.
        "args": ["serve", "/models"],
        "ports": [
            {"name": "http", "containerPort": spec.http_port, "protocol": "TCP"},
            {"name": "grpc", "containerPort": spec.grpc_port, "protocol": "TCP"},
        ],
        "envFrom": [{"configMapRef": {"name": f"{spec.name}-config"}}],
        "resources": {
            "requests": {
                "cpu": f"{res.cpu_request_millicores}m",
                "memory": f"{res.memory_request_mib}Mi",
            },
            "limits": limits,
        },
        # Start-up: models load, verify and warm before /ready turns true; up to 5 minutes.
        "startupProbe": {
            "httpGet": {"path": "/v2/health/ready", "port": "http"},
            "periodSeconds": 5,
            "timeoutSeconds": 3,
            "failureThreshold": 60,
        },
        "readinessProbe": {
            **_readiness_check(spec),
            "periodSeconds": 5,
            "timeoutSeconds": 3,
            "failureThreshold": 2,
        },
        # Liveness only asks whether the process answers at all: a busy or draining server is
        # alive, and restarting it would not help.
        "livenessProbe": {
            "httpGet": {"path": "/v2/health/live", "port": "http"},
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": UID,
            "runAsGroup": UID,
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": mounts,
    }


def _readiness_check(spec: DeploySpec) -> Obj:
    # Readiness through gRPC's grpc.health.v1 (service "": the server), which turns false with
    # REST's /ready; so both listeners are checked: REST by the other two probes. Before 1.24
    # Kubernetes has no gRPC probe: REST's /ready then, which answers the same question.
    if spec.kubernetes.grpc_probes:
        return {"grpc": {"port": spec.grpc_port}}
    return {"httpGet": {"path": "/v2/health/ready", "port": "http"}}


def service(spec: DeploySpec, track: Track = "stable") -> Obj:
    """REST and gRPC of one track's pods, inside the cluster."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(spec, spec.name + _suffix(track), track),
        "spec": {
            "type": "ClusterIP",
            "selector": labels(spec, track),
            "ports": [
                {"name": "http", "port": spec.http_port, "targetPort": "http", "protocol": "TCP"},
                {
                    "name": "grpc",
                    "port": spec.grpc_port,
                    "targetPort": "grpc",
                    "protocol": "TCP",
                    "appProtocol": "kubernetes.io/h2c",
                },
            ],
        },
    }


def traffic_objects(spec: DeploySpec) -> list[Obj]:
    """The Ingress or the HTTPRoute that brings outside traffic to the stable Service."""
    if spec.traffic == "ingress":
        return [ingress(spec)]
    if spec.traffic == "gateway":
        return [http_route(spec)]
    return []


def ingress(spec: DeploySpec, *, canary_weight: int | None = None) -> Obj:
    """REST through an Ingress; with ``canary_weight``, the ingress-nginx canary Ingress that
    sends that percentage of the same host's requests to ``<name>-canary``."""
    track: Track = "stable" if canary_weight is None else "canary"
    name = spec.name + _suffix(track)
    meta = _metadata(spec, name)
    if canary_weight is not None:
        meta["annotations"] = {
            "nginx.ingress.kubernetes.io/canary": "true",
            "nginx.ingress.kubernetes.io/canary-weight": str(canary_weight),
        }
    rule: Obj = {
        "http": {
            "paths": [
                {
                    "path": "/",
                    "pathType": "Prefix",
                    "backend": {"service": {"name": name, "port": {"name": "http"}}},
                }
            ]
        }
    }
    if spec.host is not None:
        rule = {"host": spec.host, **rule}
    body: Obj = {"ingressClassName": spec.ingress_class, "rules": [rule]}
    if spec.tls_secret is not None:
        body["tls"] = [{"hosts": [spec.host], "secretName": spec.tls_secret}]
    return {
        "apiVersion": spec.kubernetes.api_version("Ingress"),
        "kind": "Ingress",
        "metadata": meta,
        "spec": body,
    }


def http_route(spec: DeploySpec, *, canary_weight: int = 0) -> Obj:
    """REST through a Gateway API HTTPRoute; a canary weight splits it between the Services."""
    backends = [{"name": spec.name, "port": spec.http_port, "weight": 100 - canary_weight}]
    if canary_weight:
        backends.append(
            {"name": spec.name + CANARY_SUFFIX, "port": spec.http_port, "weight": canary_weight}
        )
    parent: Obj = {"name": spec.gateway_name}
    if spec.gateway_namespace is not None:
        parent["namespace"] = spec.gateway_namespace
    route: Obj = {
        "parentRefs": [parent],
        "rules": [
            {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}], "backendRefs": backends}
        ],
    }
    if spec.host is not None:
        route = {"hostnames": [spec.host], **route}
    return {
        "apiVersion": spec.kubernetes.api_version("HTTPRoute"),
        "kind": "HTTPRoute",
        "metadata": _metadata(spec, spec.name),
        "spec": route,
    }


# Names a metrics adapter serves per pod (prometheus-adapter rules in docs/kubernetes.md).
CUSTOM_METRICS = {
    "inflight": "infership_inflight_requests",
    "queue": "infership_queue_seconds",
}


def horizontal_pod_autoscaler(spec: DeploySpec) -> Obj:
    """On CPU (and a per-pod custom metric when asked): quick to scale up, slow to scale down,
    so a dip between bursts does not cost warm replicas. ``autoscaling/v2``, or ``v2beta2``
    (the same fields) where v2 is not served yet (before 1.23)."""
    hpa = spec.autoscaling
    assert hpa is not None
    metrics: list[Obj] = [
        {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": hpa.target_cpu_utilization},
            },
        }
    ]
    if hpa.custom_metric is not None:
        metrics.append(
            {
                "type": "Pods",
                "pods": {
                    "metric": {"name": CUSTOM_METRICS[hpa.custom_metric]},
                    "target": {"type": "AverageValue", "averageValue": hpa.custom_metric_target},
                },
            }
        )
    return {
        "apiVersion": spec.kubernetes.api_version("HorizontalPodAutoscaler"),
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(spec, spec.name),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": spec.name},
            "minReplicas": hpa.min_replicas,
            "maxReplicas": hpa.max_replicas,
            "metrics": metrics,
            "behavior": {
                "scaleUp": {
                    "stabilizationWindowSeconds": 0,
                    "selectPolicy": "Max",
                    "policies": [
                        {"type": "Percent", "value": 100, "periodSeconds": 15},
                        {"type": "Pods", "value": 4, "periodSeconds": 15},
                    ],
                },
                "scaleDown": {
                    "stabilizationWindowSeconds": 300,
                    "selectPolicy": "Max",
                    "policies": [{"type": "Percent", "value": 50, "periodSeconds": 60}],
                },
            },
        },
    }


def pod_disruption_budget(spec: DeploySpec) -> Obj:
    """Node drains take one pod at a time; never blocks a drain, even with one replica.
    ``policy/v1``, or ``v1beta1`` (the same fields for a non-empty selector) before 1.21."""
    return {
        "apiVersion": spec.kubernetes.api_version("PodDisruptionBudget"),
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(spec, spec.name),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": labels(spec, "stable")}},
    }


def network_policy(spec: DeploySpec) -> Obj:
    """In: only the REST and gRPC ports (from the listed namespaces when given). Out: nothing;
    the server needs no network (the models are in the image, keys are mounted files)."""
    rule: Obj = {
        "ports": [
            {"protocol": "TCP", "port": spec.http_port},
            {"protocol": "TCP", "port": spec.grpc_port},
        ]
    }
    if spec.allow_from_namespaces:
        allowed = sorted({spec.namespace, *spec.allow_from_namespaces})
        rule["from"] = [
            {
                "namespaceSelector": {
                    "matchExpressions": [
                        {
                            "key": NAMESPACE_NAME_LABEL,
                            "operator": "In",
                            "values": allowed,
                        }
                    ]
                }
            }
        ]
    return {
        "apiVersion": spec.kubernetes.api_version("NetworkPolicy"),
        "kind": "NetworkPolicy",
        "metadata": _metadata(spec, spec.name),
        "spec": {
            "podSelector": {"matchLabels": labels(spec)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [rule],
            "egress": [],
        },
    }
