"""``RedisStore``: the shared ``SessionStore`` that every saar replica reads and writes.

Theory of operation: Redis is the single source of truth; there is deliberately no local read
cache, because a cached copy is exactly how upstream served stale locks for up to 24 h
(upstream-saar-behaviour §13.3). Every ``load`` is one ``GET``; every save is one atomic Lua
compare-and-set, so replicas never overwrite each other's turns.

Value layout: one Redis string, the version in decimal, a newline, then the data bytes. A
single string keeps the per-entry overhead minimal (a 2-field hash with a 1 KB value would
leave the compact listpack encoding), lets ``load`` be a plain ``GET`` and lets the script
read only the first 24 bytes (``GETRANGE``) to compare versions, whatever the value size.

Versions are ``max(previous + 1, server TIME in microseconds)``: strictly increasing per key
and, because they follow the server clock, a key deleted or expired and then re-created gets
a version higher than any version handed out before, so a stale ``expected_version`` can
never match it (no ABA). Microseconds since 1970 stay below 2**53, so Lua's doubles hold
them exactly.

Every operation runs under ``asyncio.timeout(timeout_s)`` and socket timeouts of the same
size, redis-py's own retries are off (the failure policy lives in ``ResilientStore``), and
connections come from a bounded blocking pool whose wait counts against the same budget.
"""

from __future__ import annotations

import asyncio
import time
from typing import Final

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from saar.state.base import (
    NULL_OBSERVER,
    CorruptValueError,
    OpOutcome,
    StoreError,
    StoreObserver,
    StoreTimeoutError,
    StoreUnavailableError,
    Versioned,
    check_prefix,
    check_ttl,
    storage_key,
)

__all__ = ["CAS_SCRIPT", "RedisStore", "redis_client"]

_CORRUPT: Final = "saar: corrupt value header"
# Longest version header: 16 digits for microseconds since 1970 (< 2**53) plus slack.
_HEADER_SCAN: Final = 24

#: The compare-and-set script. KEYS[1]: storage key; ARGV[1]: expected version ('' = the key
#: must not exist); ARGV[2]: data; ARGV[3]: TTL in milliseconds. Returns the new version as
#: a decimal string, or nil on conflict.
CAS_SCRIPT: Final = f"""
local head = redis.call('GETRANGE', KEYS[1], 0, {_HEADER_SCAN - 1})
local current = false
if head ~= '' then
  local sep = string.find(head, '\\n', 1, true)
  if sep then current = tonumber(string.sub(head, 1, sep - 1)) end
  if not current then return redis.error_reply('{_CORRUPT}') end
end
if ARGV[1] == '' then
  if current then return false end
elseif current ~= tonumber(ARGV[1]) then
  return false
end
local now = redis.call('TIME')
local version = tonumber(now[1]) * 1000000 + tonumber(now[2])
if current and current >= version then version = current + 1 end
local text = string.format('%d', version)
redis.call('SET', KEYS[1], text .. '\\n' .. ARGV[2], 'PX', ARGV[3])
return text
"""


def redis_client(
    url: str,
    *,
    timeout_s: float,
    db: int | None = None,
    username: str | None = None,
    password: str | None = None,
    max_connections: int = 64,
) -> Redis:
    """Build a ``redis.asyncio.Redis`` for ``url`` (``redis://``, ``rediss://``, ``unix://``).

    Connecting is lazy: nothing touches the network until the first command, so saar starts
    even while Redis is down (the breaker then handles it). Socket connect/read timeouts
    equal ``timeout_s``; redis-py retries are disabled because a retry would spend the
    request's budget twice.
    """
    kwargs: dict[str, object] = {
        "max_connections": max_connections,
        "timeout": timeout_s,  # wait for a free pooled connection, within the same budget
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "retry": Retry(NoBackoff(), 0),
        "client_name": "saar",
    }
    if db is not None:
        kwargs["db"] = db
    if username is not None:
        kwargs["username"] = username
    if password is not None:
        kwargs["password"] = password
    pool = BlockingConnectionPool.from_url(url, **kwargs)
    return Redis.from_pool(pool)  # the client owns the pool and closes it with itself


class RedisStore:
    """``SessionStore`` on Redis with an atomic, versioned Lua compare-and-set.

    Raises ``StoreTimeoutError`` when an operation exceeds ``timeout_s`` and
    ``StoreUnavailableError`` for any other backend failure.
    """

    __slots__ = ("_cas", "_client", "_name", "_observer", "_prefix", "_timeout_s")

    def __init__(
        self,
        client: Redis,
        *,
        key_prefix: str = "saar:v1:",
        timeout_s: float = 0.05,
        name: str = "redis",
        observer: StoreObserver | None = None,
    ) -> None:
        check_ttl(timeout_s)
        self._client = client
        self._prefix = check_prefix(key_prefix)
        self._timeout_s = timeout_s
        self._name = name
        self._observer = observer if observer is not None else NULL_OBSERVER
        # redis-py's Script runs EVALSHA and reloads the script on NOSCRIPT (after a
        # restart or SCRIPT FLUSH), so the script text crosses the wire only when needed.
        self._cas = client.register_script(CAS_SCRIPT)

    @property
    def name(self) -> str:
        """Backend name for metrics and logs."""
        return self._name

    @property
    def client(self) -> Redis:
        """The underlying client (for admin and measurement helpers)."""
        return self._client

    def storage_key(self, key: str) -> str:
        """Return the Redis key used for ``key`` (prefix + safe encoding)."""
        return storage_key(self._prefix, key)

    async def load(self, key: str) -> Versioned | None:
        """``GET`` the key and split off its version header."""
        skey = storage_key(self._prefix, key)
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._timeout_s):
                raw = await self._client.get(skey)
        except (TimeoutError, RedisError, OSError) as exc:
            raise self._failure("load", started, exc) from exc
        self._report("load", started, OpOutcome.OK)
        if raw is None:
            return None
        if not isinstance(raw, bytes):  # decode_responses=True would corrupt binary data
            raise CorruptValueError("the redis client must not decode responses")
        return _decode(raw)

    async def compare_and_set(
        self, key: str, data: bytes, *, expected_version: int | None, ttl_s: float
    ) -> int | None:
        """Run the CAS script; return the new version or ``None`` on conflict."""
        skey = storage_key(self._prefix, key)
        check_ttl(ttl_s)
        if not isinstance(data, bytes):
            raise TypeError(f"data must be bytes, not {type(data).__name__}")
        expected = "" if expected_version is None else str(int(expected_version))
        ttl_ms = max(1, int(ttl_s * 1000))
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._timeout_s):
                result = await self._cas(keys=[skey], args=[expected, data, ttl_ms])
        except (TimeoutError, RedisError, OSError) as exc:
            raise self._failure("cas", started, exc) from exc
        if result is None:
            self._report("cas", started, OpOutcome.CONFLICT)
            return None
        self._report("cas", started, OpOutcome.OK)
        return int(result)

    async def delete(self, key: str) -> None:
        """``DEL`` the key."""
        skey = storage_key(self._prefix, key)
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._client.delete(skey)
        except (TimeoutError, RedisError, OSError) as exc:
            raise self._failure("delete", started, exc) from exc
        self._report("delete", started, OpOutcome.OK)

    async def ping(self) -> None:
        """Check that Redis answers within the budget; raise ``StoreUnavailableError`` if not."""
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._client.ping()
        except (TimeoutError, RedisError, OSError) as exc:
            raise self._failure("ping", started, exc) from exc
        self._report("ping", started, OpOutcome.OK)

    async def approx_len(self) -> int | None:
        """``None``: counting one prefix in a shared database would need a full ``SCAN``."""
        return None

    async def memory_usage(self, key: str) -> int | None:
        """Bytes Redis spends on ``key`` (``MEMORY USAGE``, exact), or ``None`` if absent.

        Not bounded by the per-operation budget: this is a measurement helper, not hot path.
        """
        skey = storage_key(self._prefix, key)
        result = await self._client.memory_usage(skey, samples=0)
        return None if result is None else int(result)

    async def close(self) -> None:
        """Close the client and its connection pool."""
        await self._client.aclose()

    def _report(self, op: str, started: float, outcome: OpOutcome) -> None:
        self._observer.on_operation(self._name, op, time.perf_counter() - started, outcome)

    def _failure(self, op: str, started: float, exc: Exception) -> StoreError:
        """Map a backend exception to the store's error family and report it."""
        if isinstance(exc, TimeoutError | RedisTimeoutError):
            self._report(op, started, OpOutcome.TIMEOUT)
            return StoreTimeoutError(f"redis {op} exceeded {self._timeout_s * 1000:.0f} ms")
        if isinstance(exc, ResponseError) and _CORRUPT in str(exc):
            self._report(op, started, OpOutcome.ERROR)
            return CorruptValueError("a stored value has no valid version header")
        self._report(op, started, OpOutcome.ERROR)
        return StoreUnavailableError(f"redis {op} failed: {type(exc).__name__}: {exc}")


def _decode(raw: bytes) -> Versioned:
    sep = raw.find(b"\n", 0, _HEADER_SCAN)
    if sep <= 0:
        raise CorruptValueError("a stored value has no valid version header")
    try:
        version = int(raw[:sep])
    except ValueError as exc:
        raise CorruptValueError("a stored value has no valid version header") from exc
    return Versioned(raw[sep + 1 :], version)
