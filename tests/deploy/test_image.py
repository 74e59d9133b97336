"""The Dockerfile builds the image the manifests expect (checked statically: no engine here)."""

from __future__ import annotations

import json
import re

from .conftest import DEPLOY, ROOT, load_all, pod_spec


def _instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


def test_dockerfile_is_multi_stage_on_python_slim() -> None:
    """Two stages on python:3.11-slim; the package is installed with `pip install .`."""
    steps = _instructions()
    bases = [arg for op, arg in steps if op == "FROM"]
    assert ["python:3.11-slim AS build", "python:3.11-slim"] == bases
    assert ("RUN", "pip install .") in steps
    assert any(op == "COPY" and "--from=build" in arg for op, arg in steps)


def test_image_runs_as_the_uid_the_manifests_use() -> None:
    """USER is the non-root 10001 that runAsUser names in deploy/base/gateway.yaml."""
    steps = _instructions()
    (user,) = [arg for op, arg in steps if op == "USER"]
    (gateway,) = load_all(DEPLOY / "base/gateway.yaml")
    saar = pod_spec(gateway)["initContainers"][0]
    assert f"{saar['securityContext']['runAsUser']}:{saar['securityContext']['runAsGroup']}" == user
    assert any(op == "RUN" and re.search(r"useradd .*--uid 10001", arg) for op, arg in steps)


def test_entrypoint_and_default_command() -> None:
    """ENTRYPOINT is saar and CMD serves /etc/saar/config.yaml, where the ConfigMap is mounted."""
    steps = dict(_instructions())
    assert ["saar"] == json.loads(steps["ENTRYPOINT"])
    assert ["serve", "--config", "/etc/saar/config.yaml"] == json.loads(steps["CMD"])


def test_dockerignore_keeps_only_what_the_build_copies() -> None:
    """.dockerignore excludes everything but pyproject.toml, README.md and src/."""
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    rules = [line for line in lines if line and not line.startswith("#")]
    assert "*" == rules[0]
    assert {"!pyproject.toml", "!README.md", "!src/"} <= set(rules)
