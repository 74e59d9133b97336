"""The Kubernetes bootstrap's client-header stripping, exercised in a real Envoy process."""

from __future__ import annotations

import asyncio
import tempfile
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from saar.stack import ChildProcess, envoy_binary, free_port

from .conftest import ROOT


def _bootstrap(workdir: Path, listen: int, admin: int) -> dict[str, Any]:
    """envoy/kubernetes.yaml with its ingress filters intact and the routes made observable.

    The pool routes become direct responses (418 if the x-saar-cluster route matched, 200 for
    the default route) and saar's socket points nowhere, so ext_proc fails open exactly as
    it does when saar is down in the pod.
    """
    config: dict[str, Any] = yaml.safe_load(
        (ROOT / "envoy/kubernetes.yaml").read_text(encoding="utf-8")
    )
    config["admin"]["address"]["socket_address"]["port_value"] = admin
    resources = config["static_resources"]
    resources["listeners"] = [
        listener for listener in resources["listeners"] if listener["name"] == "ingress"
    ]
    (listener,) = resources["listeners"]
    listener["address"]["socket_address"] = {"address": "127.0.0.1", "port_value": listen}
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
    steered, default = manager["route_config"]["virtual_hosts"][0]["routes"]
    assert "cluster_header" in steered["route"]
    for route, status in ((steered, 418), (default, 200)):
        del route["route"]
        route["direct_response"] = {"status": status}
    (saar,) = [c for c in resources["clusters"] if c["name"] == "saar"]
    endpoint = saar["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    endpoint["address"]["pipe"]["path"] = str(workdir / "absent.sock")
    resources["clusters"] = [saar]
    return config


@pytest.fixture
async def envoy_port() -> AsyncIterator[int]:
    """A real Envoy running the adapted bootstrap on 127.0.0.1; stopped after the test."""
    with tempfile.TemporaryDirectory(prefix="saar-envoy-", dir="/tmp") as name:
        workdir = Path(name)
        listen, admin = free_port(), free_port()
        config = workdir / "envoy.yaml"
        config.write_text(yaml.safe_dump(_bootstrap(workdir, listen, admin)), encoding="utf-8")
        envoy = ChildProcess(
            "envoy",
            [
                envoy_binary(), "-c", str(config), "--concurrency", "1",
                "--use-dynamic-base-id", "--log-level", "warn",
            ],
            workdir / "envoy.log",
            workdir,
        )  # fmt: skip
        envoy.start()
        try:
            for _ in range(200):
                if await asyncio.to_thread(_status, f"http://127.0.0.1:{admin}/ready", {}) == 200:
                    break
                assert envoy.alive(), envoy.output()
                await asyncio.sleep(0.05)
            yield listen
        finally:
            await envoy.stop()


def _status(url: str, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as reply:  # loopback only
            return int(reply.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except OSError:
        return 0


@pytest.mark.parametrize(
    "headers",
    [
        {"x-saar-cluster": "vllm-h100"},
        {"X-Saar-Cluster": "vllm-h100", "x-saar-affinity-key": "forged"},
    ],
)
async def test_client_cannot_steer_the_route(envoy_port: int, headers: dict[str, str]) -> None:
    """A client-sent x-saar-cluster is removed before routing, with saar down (fail-open)."""
    url = f"http://127.0.0.1:{envoy_port}/v1/chat/completions"
    assert 200 == await asyncio.to_thread(_status, url, headers)
    assert 200 == await asyncio.to_thread(_status, url, {})
