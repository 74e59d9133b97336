"""Dataplane fixtures: the real Envoy binary + saar + the vLLM pool emulator, as processes.

Every stack gets private ports (Envoy listener and admin, saar metrics, the emulator's pool
ports shifted by a random free offset, its control port) and a private Unix socket, so the
tests never collide with a `make run` stack or with each other.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from saar.stack import LocalStack, StackPorts, free_port, pick_port_offset
from saar.testing.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config" / "local.yaml"
ENVOY = ROOT / "envoy" / "local.yaml"


def pool_ports(raw: dict[str, Any]) -> list[int]:
    """Every emulator port in a saar config."""
    return [
        int(port)
        for pool in raw["pools"].values()
        for port in pool.get("emulator", {}).get("ports", [])
    ]


class Stack:
    """A running stack plus helpers to read the emulator's backend truth."""

    def __init__(self, local: LocalStack) -> None:
        self.local = local

    @property
    def base_url(self) -> str:
        """Envoy's client-facing URL."""
        return self.local.base_url

    @property
    def control(self) -> str:
        """The emulator's control URL."""
        return f"http://127.0.0.1:{self.local.ports.emulator_control}"

    def backend_log(self) -> list[dict[str, Any]]:
        """What every emulated replica received, oldest first (backend truth)."""
        with urllib.request.urlopen(f"{self.control}/_emulator/log", timeout=5) as reply:
            records: list[dict[str, Any]] = json.loads(reply.read())
        return records

    def control_post(self, path: str, payload: Any = None) -> Any:
        """POST to the emulator's control API."""
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(
            f"{self.control}{path}",
            data=data if data is not None else b"",
            method="POST",
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as reply:
            body = reply.read()
        return json.loads(body) if body else None

    def metrics_text(self) -> str:
        """saar's Prometheus exposition."""
        url = f"http://127.0.0.1:{self.local.ports.metrics}/metrics"
        with urllib.request.urlopen(url, timeout=5) as reply:
            text: str = reply.read().decode()
        return text


StackFactory = Callable[..., Any]


@pytest.fixture
def redis_server() -> Any:
    """A real redis-server on 127.0.0.1 for the duration of one test."""
    with RedisServer() as server:
        yield server


def use_redis(url: str, **state: Any) -> Callable[[dict[str, Any]], None]:
    """A config edit that puts router memory in the Redis at ``url``."""

    def edit(raw: dict[str, Any]) -> None:
        raw["state"] = {"backend": "redis", "redis": {"url": url}, **state}

    return edit


@pytest.fixture
async def make_stack(tmp_path: Path) -> AsyncIterator[StackFactory]:
    """Start stacks for a test (optionally with config edits); stops them all afterwards."""
    started: list[LocalStack] = []

    async def start(
        edit: Callable[[dict[str, Any]], None] | None = None,
        *,
        with_saar: bool = True,
        share_emulator: Stack | None = None,
    ) -> Stack:
        """Start a stack; with ``share_emulator`` it routes to that stack's emulated pools."""
        raw: dict[str, Any] = yaml.safe_load(CONFIG.read_text())
        if edit is not None:
            edit(raw)
        index = len(started)
        # Each stack records its decisions in its own replay file (the default is relative to
        # the working directory, which would be the repository here).
        raw.setdefault("replay", {}).setdefault("path", str(tmp_path / f"replay-{index}.sqlite3"))
        config_path = tmp_path / f"saar-{index}.yaml"
        config_path.write_text(yaml.safe_dump(raw, sort_keys=False))
        workdir = tmp_path / f"stack-{index}"
        # Ports are free when picked but may be taken before Envoy binds them (other suites
        # share this machine): a start that lost that race retries on fresh ports.
        for attempt in range(3):
            local = LocalStack(
                config_path=config_path,
                envoy_template=ENVOY,
                workdir=workdir,
                ports=StackPorts(
                    listen=free_port(),
                    envoy_admin=free_port(),
                    metrics=free_port(),
                    emulator_offset=(
                        share_emulator.local.ports.emulator_offset
                        if share_emulator is not None
                        else pick_port_offset(pool_ports(raw))
                    ),
                    emulator_control=(
                        share_emulator.local.ports.emulator_control
                        if share_emulator is not None
                        else free_port()
                    ),
                ),
                with_saar=with_saar,
                with_emulator=share_emulator is None,
            )
            try:
                await local.start()
            except RuntimeError as exc:
                if "Address already in use" not in str(exc) or attempt == 2:
                    raise
                continue
            break
        started.append(local)
        return Stack(local)

    yield start
    for local in reversed(started):
        await local.stop()
