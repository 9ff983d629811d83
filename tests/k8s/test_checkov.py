"""checkov's Kubernetes policies on the rendered prod overlay: none may fail.

checkov runs from its own virtualenv (.venv/checkov, `make .venv/checkov/.installed`): it
would downgrade packages the project needs. The prod overlay currently passes every check, so
SKIPPED_CHECKS is empty; a check that does not fit a model server goes there, and only there,
with the reason on its line.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from infership.k8s.kustomize import kustomize_files, write_tree
from infership.k8s.spec import Autoscaling, DeploySpec

CHECKOV = Path(__file__).parents[2] / ".venv" / "checkov" / "bin" / "checkov"

SKIPPED_CHECKS: dict[str, str] = {
    # "CKV_K8S_NN": "why this check does not apply to an inference server",
}

SPEC = DeploySpec(
    name="classifier",
    namespace="ml",
    image="registry.example.com/ml/classifier:1@sha256:" + "ef" * 32,
    traffic="ingress",
    host="classify.example.com",
    tls_secret="classify-tls",
    api_keys_yaml="keys: []\n",
    autoscaling=Autoscaling(min_replicas=2, max_replicas=6),
    monitoring=True,
)


def _checkov() -> Path:
    if not CHECKOV.exists():
        message = f"{CHECKOV} is missing: run `make .venv/checkov/.installed`"
        if os.environ.get("INFERSHIP_CI"):
            pytest.fail(message)
        pytest.skip(message)
    return CHECKOV


def test_the_prod_overlay_fails_no_checkov_check(tmp_path: Path) -> None:
    checkov = _checkov()
    kubectl = shutil.which("kubectl")
    assert kubectl is not None, "kubectl is not installed: run .ci/setup.d/40-kubernetes.sh"
    write_tree(kustomize_files(SPEC), tmp_path)
    rendered = tmp_path / "prod.yaml"
    rendered.write_text(
        subprocess.run(
            [kubectl, "kustomize", str(tmp_path / "overlays" / "prod")],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
    )
    command = [
        str(checkov), "--file", str(rendered), "--framework", "kubernetes",
        "--skip-download", "--output", "json",
    ]  # fmt: skip
    if SKIPPED_CHECKS:
        command += ["--skip-check", ",".join(SKIPPED_CHECKS)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    report = json.loads(run.stdout)
    failed = [
        f"{c['check_id']} {c['check_name']} ({c['resource']})"
        for c in report["results"]["failed_checks"]
    ]
    assert failed == [], "\n".join(failed)
    assert run.returncode == 0, run.stderr
    # The graph check that needs the NetworkPolicy beside the Deployment ran and passed.
    passed = {c["check_id"] for c in report["results"]["passed_checks"]}
    assert {"CKV2_K8S_6", "CKV_K8S_43", "CKV_K8S_22", "CKV_K8S_38"} <= passed
