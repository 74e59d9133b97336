"""The sidecar's exec probe: gRPC health over the Unix socket, against real servers."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from saar.deploy.probe import EXTPROC_SERVICE, check
from saar.stack import ChildProcess, free_port

from .conftest import ROOT


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    """A short directory for a Unix socket (paths are limited to 107 bytes)."""
    with tempfile.TemporaryDirectory(prefix="saar-probe-", dir="/tmp") as name:
        yield Path(name)


@pytest.fixture
def health_server(socket_dir: Path) -> Iterator[tuple[str, health.HealthServicer]]:
    """A standard gRPC health server on a Unix socket; stopped after the test."""
    servicer = health.HealthServicer()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    socket = str(socket_dir / "saar.sock")
    server.add_insecure_port(f"unix:{socket}")
    server.start()
    try:
        yield socket, servicer
    finally:
        server.stop(0)


def test_serving_is_ready_and_alive(health_server: tuple[str, health.HealthServicer]) -> None:
    """SERVING passes both the readiness and the liveness probe."""
    socket, servicer = health_server
    servicer.set(EXTPROC_SERVICE, health_pb2.HealthCheckResponse.SERVING)
    assert (True, "SERVING") == check(socket, EXTPROC_SERVICE, 2.0, alive_only=False)
    assert check(socket, EXTPROC_SERVICE, 2.0, alive_only=True)[0]


def test_draining_is_alive_but_not_ready(health_server: tuple[str, health.HealthServicer]) -> None:
    """NOT_SERVING (draining) fails readiness but passes liveness, so kubelet does not kill it."""
    socket, servicer = health_server
    servicer.set(EXTPROC_SERVICE, health_pb2.HealthCheckResponse.NOT_SERVING)
    assert (False, "NOT_SERVING") == check(socket, EXTPROC_SERVICE, 2.0, alive_only=False)
    assert (True, "alive (NOT_SERVING)") == check(socket, EXTPROC_SERVICE, 2.0, alive_only=True)


def test_missing_socket_fails_both_probes(socket_dir: Path) -> None:
    """No server behind the socket: both probes fail (exit 1) with the gRPC reason."""
    result = subprocess.run(
        [sys.executable, "-m", "saar.deploy.probe", "--socket", str(socket_dir / "none.sock")],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert 1 == result.returncode
    assert "UNAVAILABLE" in result.stderr
    healthy, _ = check(str(socket_dir / "none.sock"), EXTPROC_SERVICE, 1.0, alive_only=True)
    assert healthy is False


async def test_probe_passes_against_saar_serving_the_kubernetes_config(socket_dir: Path) -> None:
    """`saar serve` boots config/kubernetes.yaml and the probe, run as kubelet does, passes."""
    socket = socket_dir / "saar.sock"
    saar = ChildProcess(
        "saar",
        [
            sys.executable, "-m", "saar", "serve", "--config", "config/kubernetes.yaml",
            "--grpc-socket", str(socket), "--metrics-address", f"127.0.0.1:{free_port()}",
        ],
        socket_dir / "saar.log",
        ROOT,
    )  # fmt: skip
    saar.start()
    try:
        await saar.wait_for_output("saar ready", timeout_s=30.0)
        for extra in ([], ["--alive"]):
            result = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "saar.deploy.probe", "--socket", str(socket), *extra],
                capture_output=True,
                text=True,
                check=False,
                timeout=30,
            )
            assert 0 == result.returncode, result.stderr + saar.output()
    finally:
        assert 0 == await saar.stop(grace_s=30.0)
