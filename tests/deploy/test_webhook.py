"""The admission webhook over real HTTPS on 127.0.0.1, and the JSON Patch it answers with."""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from saar.deploy.inject import InjectOptions, inject_pod_template
from saar.deploy.patch import JsonPatchError, apply_json_patch, json_patch
from saar.deploy.webhook import WebhookOptions, mutate, run_webhook
from saar.stack import free_port

from .conftest import DEPLOY, load_all, validate

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")


def _certificate(directory: Path, name: str) -> tuple[Path, Path]:
    """A throwaway self-signed certificate for 127.0.0.1 (openssl CLI)."""
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
            "-subj", f"/CN={name}", "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )  # fmt: skip
    return cert, key


def _pod(labels: dict[str, str] | None = None) -> dict[str, Any]:
    """A Pod as the API server sends it: the example gateway's template, made a Pod."""
    (deployment,) = [
        d for d in load_all(DEPLOY / "examples/envoy-gateway.yaml") if d["kind"] == "Deployment"
    ]
    template = copy.deepcopy(deployment["spec"]["template"])
    metadata = {
        "generateName": "llm-gateway-6d8f-",
        "namespace": "saar",
        "labels": {**template["metadata"]["labels"], **(labels or {"saar.io/inject": "true"})},
    }
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"]}


def _review(pod: dict[str, Any], uid: str = "0b6a-42") -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "operation": "CREATE",
            "namespace": "saar",
            "object": pod,
        },
    }


class _Server:
    def __init__(self, url: str, client_context: ssl.SSLContext, cert: Path, key: Path) -> None:
        self.url = url
        self.client_context = client_context
        self.cert = cert
        self.key = key


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[_Server]:
    """`saar webhook` serving HTTPS on a free 127.0.0.1 port; stopped after the test."""
    cert, key = _certificate(tmp_path, "webhook")
    port = free_port()
    options = WebhookOptions(
        inject=InjectOptions(),
        host="127.0.0.1",
        port=port,
        cert_file=str(cert),
        key_file=str(key),
        cert_check_interval_s=0.1,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(run_webhook(options, stop))
    client_context = ssl.create_default_context(cafile=str(cert))
    url = f"https://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as session:
        for _ in range(100):
            try:
                async with session.get(f"{url}/healthz", ssl=client_context):
                    break
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)
    try:
        yield _Server(url, client_context, cert, key)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def _post(server: _Server, body: Any) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{server.url}/mutate", json=body, ssl=server.client_context) as reply,
    ):
        return reply.status, await reply.json()


def _decoded_patch(review: dict[str, Any]) -> list[dict[str, Any]]:
    response = review["response"]
    assert "JSONPatch" == response["patchType"]
    patch: list[dict[str, Any]] = json.loads(base64.b64decode(response["patch"]))
    return patch


async def test_healthz_over_https(server: _Server) -> None:
    """GET /healthz answers 200 over TLS with the served certificate."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{server.url}/healthz", ssl=server.client_context) as reply,
    ):
        assert (200, "ok\n") == (reply.status, await reply.text())


async def test_admission_patch_yields_the_injected_pod(server: _Server) -> None:
    """Applying the returned JSONPatch to the pod gives exactly what `inject` makes of it."""
    pod = _pod()
    status, review = await _post(server, _review(pod, uid="abc-1"))
    assert 200 == status
    assert "AdmissionReview" == review["kind"]
    assert "admission.k8s.io/v1" == review["apiVersion"]
    assert {"uid": "abc-1", "allowed": True} == {
        k: review["response"][k] for k in ("uid", "allowed")
    }
    patched = apply_json_patch(pod, _decoded_patch(review))
    assert inject_pod_template(pod, InjectOptions()) == patched
    validate(patched)
    assert "Always" == patched["spec"]["initContainers"][0]["restartPolicy"]


async def test_already_injected_pod_gets_no_patch(server: _Server) -> None:
    """A pod that already carries the current sidecar is admitted without a patch."""
    pod = inject_pod_template(_pod(), InjectOptions())
    _, review = await _post(server, _review(pod))
    assert "patch" not in review["response"]
    assert review["response"]["allowed"] is True


async def test_unlabelled_pod_is_left_alone(server: _Server) -> None:
    """A pod without saar.io/inject=true is admitted unchanged, even if the selector were wrong."""
    _, review = await _post(server, _review(_pod(labels={"saar.io/inject": "false"})))
    assert {"uid": "0b6a-42", "allowed": True} == review["response"]


async def test_pod_without_envoy_is_admitted_with_a_warning(server: _Server) -> None:
    """A labelled pod without Envoy is not blocked: no patch, one warning saying why."""
    pod = _pod()
    pod["spec"]["containers"][0].update(name="app", image="nginx:1.27", command=["nginx"])
    _, review = await _post(server, _review(pod))
    response = review["response"]
    assert response["allowed"] is True
    assert "patch" not in response
    (warning,) = response["warnings"]
    assert "no Envoy container found" in warning


async def test_malformed_review_is_a_400(server: _Server) -> None:
    """A body that is not an AdmissionReview v1 gets HTTP 400 with a reason."""
    status, body = await _post(server, {"kind": "Pod"})
    assert (400, {"error": "body is not an AdmissionReview"}) == (status, body)
    review = _review(_pod())
    review["apiVersion"] = "admission.k8s.io/v1beta1"
    status, body = await _post(server, review)
    assert 400 == status
    assert "unsupported AdmissionReview version" in body["error"]


async def test_renewed_certificate_is_served_without_restart(
    server: _Server, tmp_path: Path
) -> None:
    """When cert-manager rewrites the key pair, new connections get the new certificate."""
    new_cert, new_key = _certificate(tmp_path, "renewed")
    shutil.copyfile(new_key, server.key)
    shutil.copyfile(new_cert, server.cert)
    trusting_new = ssl.create_default_context(cafile=str(new_cert))
    async with aiohttp.ClientSession() as session:
        for _ in range(100):
            try:
                async with session.get(f"{server.url}/healthz", ssl=trusting_new) as reply:
                    assert 200 == reply.status
                    return
            except aiohttp.ClientConnectorCertificateError:
                await asyncio.sleep(0.05)
    pytest.fail("the renewed certificate was never served")


def test_non_pod_objects_are_admitted_unchanged() -> None:
    """A review for another kind is allowed with no patch."""
    review = _review(_pod())
    review["request"]["kind"] = {"group": "apps", "version": "v1", "kind": "Deployment"}
    assert {"uid": "0b6a-42", "allowed": True} == mutate(review, InjectOptions())["response"]


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ({"a": [1, 2, 3]}, {"a": [1, 2]}),
        ({"a": [1]}, {"a": [1, {"b/c~": 2}], "d": None}),
        ({"a": {"x": 1}}, {"a": "x"}),
        ([1, 2], [3]),
        ({"k": 1}, {"k": 1.0}),
    ],
)
def test_json_patch_round_trips(old: Any, new: Any) -> None:
    """Applying json_patch(old, new) to old gives new, including escaped keys and list shrinking."""
    assert new == apply_json_patch(old, json_patch(old, new))


def test_json_patch_test_op_guards() -> None:
    """A failing `test` operation refuses the patch (as the API server and kustomize do)."""
    with pytest.raises(JsonPatchError, match="test failed"):
        apply_json_patch({"a": 1}, [{"op": "test", "path": "/a", "value": 2}])
    with pytest.raises(JsonPatchError, match="no member"):
        apply_json_patch({"a": 1}, [{"op": "remove", "path": "/b"}])
