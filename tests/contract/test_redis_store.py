"""RedisStore specifics against a real redis-server: layout, key safety, scripts, timeouts."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from saar.state import (
    CorruptValueError,
    RedisStore,
    StoreTimeoutError,
    StoreUnavailableError,
    redis_client,
)
from saar.testing.redis_server import RedisServer, measure_entry_bytes

from .conftest import TIMEOUT_S
from .test_session_store import HOSTILE_KEYS

SAFE_KEY = re.compile(rb"[A-Za-z0-9._~:%-]+")


class Recorder:
    """A StoreObserver that remembers every call."""

    def __init__(self) -> None:
        self.operations: list[tuple[str, str, str]] = []
        self.fallbacks: list[str] = []
        self.breaker: list[str] = []

    def on_operation(self, store: str, op: str, seconds: float, outcome: str) -> None:
        self.operations.append((store, op, outcome))

    def on_fallback(self, reason: str) -> None:
        self.fallbacks.append(reason)

    def on_breaker(self, state: str) -> None:
        self.breaker.append(state)


@pytest.fixture
async def admin(redis_server: RedisServer) -> AsyncIterator[Redis]:
    """A plain redis client for inspecting and disturbing the server."""
    client = Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


@pytest.fixture
async def store(redis_server: RedisServer) -> AsyncIterator[RedisStore]:
    """A RedisStore with the production 50 ms budget under a fresh prefix."""
    made = RedisStore(
        redis_client(redis_server.url, timeout_s=TIMEOUT_S),
        key_prefix=f"r{uuid.uuid4().hex[:12]}:",
        timeout_s=TIMEOUT_S,
        observer=Recorder(),
    )
    yield made
    await made.close()


async def test_value_layout_is_version_newline_data(store: RedisStore, admin: Redis) -> None:
    """The Redis value is '<version>\\n<data>' under prefix + key, with a TTL set."""
    version = await store.compare_and_set("k", b"payload", expected_version=None, ttl_s=30)
    raw = await admin.get(store.storage_key("k"))
    assert f"{version}\n".encode() + b"payload" == raw
    ttl_ms = await admin.pttl(store.storage_key("k"))
    assert 0 < ttl_ms <= 30_000


async def test_storage_keys_use_only_safe_characters(store: RedisStore, admin: Redis) -> None:
    """Every hostile key lands in Redis as prefix + characters from the safe set."""
    for key in HOSTILE_KEYS:
        await store.compare_and_set(key, b"x", expected_version=None, ttl_s=30)
    prefix = store.storage_key("x")[:-1]
    keys = [k async for k in admin.scan_iter(match=prefix + "*")]
    assert len(HOSTILE_KEYS) == len(keys)
    assert all(SAFE_KEY.fullmatch(k) for k in keys)


async def test_foreign_value_is_reported_corrupt(store: RedisStore, admin: Redis) -> None:
    """A value without a version header raises CorruptValueError on load and CAS."""
    await admin.set(store.storage_key("k"), b"no header here at all, just text")
    with pytest.raises(CorruptValueError):
        await store.load("k")
    with pytest.raises(CorruptValueError):
        await store.compare_and_set("k", b"x", expected_version=1, ttl_s=30)


async def test_cas_survives_script_flush(store: RedisStore, admin: Redis) -> None:
    """After SCRIPT FLUSH (as after a restart) the CAS reloads its script and works."""
    v1 = await store.compare_and_set("k", b"1", expected_version=None, ttl_s=30)
    await admin.script_flush()
    assert await store.compare_and_set("k", b"2", expected_version=v1, ttl_s=30) is not None


async def test_slow_redis_times_out_within_budget(private_redis: RedisServer) -> None:
    """While Redis stalls (CLIENT PAUSE), an operation fails in about the 50 ms budget."""
    recorder = Recorder()
    store = RedisStore(
        redis_client(private_redis.url, timeout_s=TIMEOUT_S),
        timeout_s=TIMEOUT_S,
        observer=recorder,
    )
    admin = Redis.from_url(private_redis.url)
    try:
        await store.load("warm-up")  # a pooled connection exists: only the command stalls
        await admin.client_pause(1000)  # replies at once, then stalls
        started = time.perf_counter()
        with pytest.raises(StoreTimeoutError):
            await store.load("k")
        elapsed = time.perf_counter() - started
        assert elapsed < 0.2
        assert recorder.operations[-1] == ("redis", "load", "timeout")
    finally:
        await admin.aclose()
        await store.close()


async def test_stopped_redis_fails_fast(private_redis: RedisServer) -> None:
    """With the server gone, operations raise StoreUnavailableError well within budget."""
    store = RedisStore(redis_client(private_redis.url, timeout_s=TIMEOUT_S), timeout_s=TIMEOUT_S)
    try:
        assert await store.load("k") is None
        private_redis.stop()
        started = time.perf_counter()
        with pytest.raises(StoreUnavailableError):
            await store.compare_and_set("k", b"x", expected_version=None, ttl_s=30)
        assert time.perf_counter() - started < 0.2
    finally:
        await store.close()


async def test_password_protected_server() -> None:
    """A client with the right password works; without it, operations are unavailable."""
    with RedisServer(password="s3cret") as server:
        good = RedisStore(redis_client(server.url, timeout_s=1.0, password="s3cret"))
        bad = RedisStore(redis_client(server.url, timeout_s=1.0))
        try:
            assert await good.compare_and_set("k", b"x", expected_version=None, ttl_s=30)
            with pytest.raises(StoreUnavailableError):
                await bad.load("k")
        finally:
            await good.close()
            await bad.close()


async def test_bytes_per_1kib_entry(redis_server: RedisServer) -> None:
    """A ~1 KiB session costs Redis between 1 and 2 KiB (MEMORY USAGE, 64-char key)."""
    size = await measure_entry_bytes(redis_server.url, b"s" * 1024)
    print(f"\nMEMORY USAGE of a 1024-byte value under a 64-char key: {size} bytes")
    assert 1024 < size < 2048
