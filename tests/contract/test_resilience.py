"""ResilientStore over a real redis-server that is stopped, slowed down and restarted."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from saar.state import (
    NO_VERSION,
    Backend,
    MemoryStore,
    RedisStore,
    ResilientStore,
    StoreConfig,
    Versioned,
    build_store,
    redis_client,
    transact,
)
from saar.testing.redis_server import RedisServer

from .conftest import TIMEOUT_S
from .test_redis_store import Recorder

COOLDOWN_S = 0.3


def _increment(current: Versioned | None) -> tuple[int, bytes]:
    value = 0 if current is None else int(current.data)
    return value + 1, str(value + 1).encode()


def _replica(server: RedisServer, recorder: Recorder, *, local: bool = True) -> ResilientStore:
    redis = RedisStore(
        redis_client(server.url, timeout_s=TIMEOUT_S), timeout_s=TIMEOUT_S, observer=recorder
    )
    return ResilientStore(
        redis,
        fallback=MemoryStore() if local else None,
        failure_threshold=3,
        cooldown_s=COOLDOWN_S,
        observer=recorder,
    )


@pytest.fixture
async def replicas(
    private_redis: RedisServer,
) -> AsyncIterator[tuple[ResilientStore, ResilientStore, Recorder]]:
    """Two resilient replicas on one private redis-server, sharing one recorder."""
    recorder = Recorder()
    a, b = _replica(private_redis, recorder), _replica(private_redis, recorder)
    yield a, b, recorder
    await a.close()
    await b.close()


async def test_outage_falls_back_opens_breaker_and_recovers(
    private_redis: RedisServer, replicas: tuple[ResilientStore, ResilientStore, Recorder]
) -> None:
    """Redis down: fast local turns, breaker opens; Redis back: recovers and state is shared."""
    a, b, recorder = replicas
    await transact(a, "s", _increment, ttl_s=60)
    assert (await transact(b, "s", _increment, ttl_s=60)).value == 2

    private_redis.stop()
    started = time.perf_counter()
    values = [(await transact(a, "s", _increment, ttl_s=60)).value for _ in range(20)]
    elapsed = time.perf_counter() - started
    # Local memory starts empty, then counts on: the turns kept their (local) memory.
    assert list(range(1, 21)) == values
    assert elapsed < 1.0  # 20 turns; only the first few may touch the dead server
    assert "open" in recorder.breaker
    assert {"error", "breaker_open"} <= set(recorder.fallbacks)
    redis_calls_while_open = len([o for o in recorder.operations if o[0] == "redis"])
    await transact(a, "s", _increment, ttl_s=60)
    assert redis_calls_while_open == len([o for o in recorder.operations if o[0] == "redis"])

    private_redis.start()  # same port; no persistence, so it comes back empty
    await asyncio.sleep(COOLDOWN_S + 0.05)
    result = await transact(a, "s", _increment, ttl_s=60)
    assert recorder.breaker[-1] == "closed"
    assert result.value == 1  # the shared (empty) store wins over outage-local state
    assert (await transact(b, "s", _increment, ttl_s=60)).value == 2
    shared = await a.load("s")
    assert shared is not None
    assert shared.data == b"2"
    assert a.stats().local_entries == 0  # outage state cleared on recovery


async def test_slow_redis_falls_back_within_budget(private_redis: RedisServer) -> None:
    """While Redis is blocked, a load is answered from the fallback in about the budget."""
    recorder = Recorder()
    store = _replica(private_redis, recorder)
    admin = Redis.from_url(private_redis.url)
    try:
        await store.load("warm-up")  # open a pooled connection first
        await admin.client_pause(1000)  # replies at once, then stalls
        started = time.perf_counter()
        assert await store.load("k") is None
        elapsed = time.perf_counter() - started
        assert elapsed < 0.2
        assert recorder.fallbacks == ["timeout"]
    finally:
        await admin.aclose()
        await store.close()


async def test_no_memory_mode_when_redis_is_down(private_redis: RedisServer) -> None:
    """fail_open_to none: load is None and a save is an accepted no-op (NO_VERSION)."""
    recorder = Recorder()
    store = _replica(private_redis, recorder, local=False)
    try:
        private_redis.stop()
        result = await transact(store, "s", _increment, ttl_s=60)
        assert (result.value, result.saved, result.version) == (1, True, NO_VERSION)
        assert (await transact(store, "s", _increment, ttl_s=60)).value == 1
        assert await store.load("s") is None
    finally:
        await store.close()


async def test_build_store_end_to_end(monkeypatch: pytest.MonkeyPatch) -> None:
    """build_store from a StoreConfig reaches a password-protected Redis via password_env."""
    with RedisServer(password="pw-from-env") as server:
        monkeypatch.setenv("SAAR_TEST_REDIS_PASSWORD", "pw-from-env")
        config = StoreConfig(
            backend=Backend.REDIS,
            redis_url=server.url,
            password_env="SAAR_TEST_REDIS_PASSWORD",
            key_prefix="e2e:",
            timeout_ms=1000,
        )
        recorder = Recorder()
        store = build_store(config, recorder)
        try:
            result = await transact(store, "s", _increment, ttl_s=config.ttl_seconds)
            admin = Redis.from_url(server.url, password="pw-from-env")
            assert await admin.keys("*") == [b"e2e:s"]
            await admin.aclose()
            assert (result.value, result.saved) == (1, True)
            assert recorder.fallbacks == []
            assert {("redis", "load", "ok"), ("redis", "cas", "ok")} == set(recorder.operations)
        finally:
            await store.close()
