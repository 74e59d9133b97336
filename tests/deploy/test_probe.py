"""The sidecar's exec probe: gRPC health over the Unix socket, against real servers."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from saar.deploy.inject import InjectOptions, sidecar_container
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


async def test_sidecar_command_serves_a_world_writable_socket_that_probes_pass(
    socket_dir: Path,
) -> None:
    """The sidecar's exact command line boots config/kubernetes.yaml; Envoy's UID can connect."""
    options = InjectOptions(socket_dir=str(socket_dir))
    container = sidecar_container(options)
    # The pod's paths, moved under the test's directory: data volume (workingDir) and config.
    data = socket_dir / "data"
    data.mkdir()
    assert "/var/lib/saar" == container["workingDir"]
    config = socket_dir / "config.yaml"
    source = (ROOT / "config/kubernetes.yaml").read_text(encoding="utf-8")
    assert "path: /var/lib/saar/replay.sqlite3" in source
    config.write_text(source.replace("/var/lib/saar/", f"{data}/"), encoding="utf-8")
    replace = {"/etc/saar/config.yaml": str(config), "0.0.0.0:9464": f"127.0.0.1:{free_port()}"}
    argv = [*container["command"], *(replace.get(a, a) for a in container["args"])]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    saar = ChildProcess("saar", argv, socket_dir / "saar.log", data, env)
    saar.start()
    try:
        await saar.wait_for_output("saar ready", timeout_s=30.0)
        assert (data / "replay.sqlite3").exists(), "replay writes to the data volume"
        mode = os.stat(options.socket_path).st_mode
        assert stat.S_ISSOCK(mode)
        assert mode & stat.S_IWOTH, "another UID (Envoy's) needs write permission to connect"
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            result = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, *container[probe]["exec"]["command"][1:]],
                capture_output=True,
                text=True,
                check=False,
                timeout=30,
            )
            assert 0 == result.returncode, probe + result.stderr + saar.output()
    finally:
        assert 0 == await saar.stop(grace_s=30.0)
