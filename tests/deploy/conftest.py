"""Shared helpers for the Kubernetes packaging tests: paths, YAML loading, validation."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from saar.stack import envoy_binary

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
# The oldest Kubernetes with native sidecars on by default is 1.29; validate against the
# newest schema kubernetes-validate ships (1.37 in 1.37.0) and the GA release of sidecars.
K8S_VERSIONS = ("1.33.0", kubernetes_validate.latest_version())
# Kinds whose schemas are CRDs (cert-manager); offline validation cannot check them.
CRD_KINDS = frozenset({"Issuer", "Certificate"})


def load_all(path: Path) -> list[Any]:
    """Every non-empty YAML document of a file."""
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]


def validate(document: dict[str, Any]) -> None:
    """Strict offline schema validation against every version in K8S_VERSIONS."""
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(document, version, strict=True)


def envoy_validate(config: Path) -> subprocess.CompletedProcess[str]:
    """Run ``envoy --mode validate`` on a bootstrap file."""
    return subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(config), "--log-level", "error"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def pod_spec(document: dict[str, Any]) -> dict[str, Any]:
    """The pod spec of a Pod or a workload with a pod template."""
    if document["kind"] == "Pod":
        spec: dict[str, Any] = document["spec"]
        return spec
    spec = document["spec"]["template"]["spec"]
    return spec


@pytest.fixture
def gateway() -> dict[str, Any]:
    """The base gateway Deployment as committed."""
    (document,) = load_all(DEPLOY / "base" / "gateway.yaml")
    assert isinstance(document, dict)
    return document
