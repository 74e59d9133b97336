"""Fixtures for the SessionStore contract suite: real redis-servers and per-backend kits."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import pytest

from saar.state import MemoryStore, RedisStore, SessionStore, redis_client
from saar.testing.redis_server import RedisServer

TIMEOUT_S = 0.05  # the production default budget (timeout_ms: 50), for the budget tests
CONTRACT_TIMEOUT_S = 1.0
"""The contract suite checks behaviour, not latency: a loaded 2-core runner can take longer
than the production budget for one round trip, which is the resilience tests' subject."""


class ManualClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class StoreKit:
    """Opens stores on one backend and moves its time forward."""

    kind: str
    url: str | None = None
    clock: ManualClock | None = None
    root: MemoryStore | None = None
    prefix: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:12]}:")
    opened: list[SessionStore] = field(default_factory=list)

    def open(
        self, prefix: str | None = None, *, timeout_s: float = CONTRACT_TIMEOUT_S
    ) -> SessionStore:
        """Return a new handle on the shared backend (a 'replica') under ``prefix``."""
        prefix = self.prefix if prefix is None else prefix
        store: SessionStore
        if self.root is not None:
            store = self.root.view(prefix)
        else:
            assert self.url is not None
            store = RedisStore(
                redis_client(self.url, timeout_s=timeout_s), key_prefix=prefix, timeout_s=timeout_s
            )
        self.opened.append(store)
        return store

    async def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass: instantly for memory, really for Redis."""
        if self.clock is not None:
            self.clock.advance(seconds)
        else:
            await asyncio.sleep(seconds)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A redis-server on 127.0.0.1, shared by the whole session."""
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def redis_unix_server() -> Iterator[RedisServer]:
    """A redis-server listening only on a Unix socket, shared by the whole session."""
    with RedisServer(unix_socket=True) as server:
        yield server


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A redis-server of this test's own, free to be stopped and restarted."""
    with RedisServer() as server:
        yield server


@pytest.fixture(params=["memory", "redis-tcp", "redis-unix"])
async def kit(
    request: pytest.FixtureRequest,
    redis_server: RedisServer,
    redis_unix_server: RedisServer,
) -> AsyncIterator[StoreKit]:
    """A StoreKit for each backend; every store it opened is closed afterwards."""
    if request.param == "memory":
        clock = ManualClock()
        made = StoreKit("memory", clock=clock, root=MemoryStore(clock=clock))
    elif request.param == "redis-tcp":
        made = StoreKit("redis", url=redis_server.url)
    else:
        made = StoreKit("redis", url=redis_unix_server.url)
    yield made
    for store in made.opened:
        await store.close()
