"""``StoreConfig`` and ``build_store``: which router memory saar runs on.

Theory of operation: ``saar.settings`` validates the YAML and builds one frozen
``StoreConfig``; ``__post_init__`` repeats the checks that make a config impossible (so the
dataclass can never hold one) with messages naming the field. ``build_store`` is the only
place that picks concrete store classes and the only place that reads the Redis password,
from an environment variable or a file, never from the config file itself.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import NoReturn
from urllib.parse import parse_qs, urlsplit

from saar.state.base import SessionStore, StoreObserver, check_prefix
from saar.state.memory import MemoryStore
from saar.state.redis import RedisStore, redis_client
from saar.state.resilient import ResilientStore

__all__ = [
    "Backend",
    "FailOpenTo",
    "StoreConfig",
    "StoreConfigError",
    "build_store",
    "read_password",
    "redis_url",
]

_SCHEMES = ("redis", "rediss", "unix")


class StoreConfigError(ValueError):
    """A store configuration value is impossible; the message names the field."""


class Backend(StrEnum):
    """Where router memory lives."""

    LOCAL = "local"
    REDIS = "redis"


class FailOpenTo(StrEnum):
    """What serves router memory while Redis is unavailable."""

    LOCAL = "local"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """Router memory settings (``state:`` in the YAML).

    For ``backend: redis`` give exactly one of ``redis_url`` (``redis://host:port``,
    ``rediss://...``, ``unix:///path/redis.sock``) or ``redis_address`` (``host:port``).
    Credentials never go in the URL: use ``username`` plus ``password_env`` or
    ``password_file``.
    """

    backend: Backend = Backend.LOCAL
    redis_url: str | None = None
    redis_address: str | None = None
    db: int = 0
    username: str | None = None
    password_env: str | None = None
    password_file: str | None = None
    key_prefix: str = "saar:v1:"
    ttl_seconds: float = 86_400.0
    timeout_ms: float = 50.0
    max_connections: int = 64
    local_max_entries: int = 100_000
    local_idle_ttl_seconds: float | None = None
    fail_open_to: FailOpenTo = FailOpenTo.LOCAL
    breaker_failure_threshold: int = 3
    breaker_cooldown_seconds: float = 5.0

    def __post_init__(self) -> None:
        """Coerce enum strings and reject impossible values."""
        try:
            object.__setattr__(self, "backend", Backend(self.backend))
        except ValueError:
            _fail("backend", f"must be one of {[b.value for b in Backend]}, not {self.backend!r}")
        try:
            object.__setattr__(self, "fail_open_to", FailOpenTo(self.fail_open_to))
        except ValueError:
            _fail(
                "fail_open_to",
                f"must be one of {[f.value for f in FailOpenTo]}, not {self.fail_open_to!r}",
            )
        try:
            check_prefix(self.key_prefix)
        except ValueError as exc:
            _fail("key_prefix", str(exc))
        _positive("ttl_seconds", self.ttl_seconds)
        _positive("timeout_ms", self.timeout_ms)
        if self.timeout_ms > 60_000:
            _fail(
                "timeout_ms",
                f"must be at most 60000 (it bounds a hot-path call), not {self.timeout_ms}",
            )
        _positive("breaker_cooldown_seconds", self.breaker_cooldown_seconds)
        if self.local_idle_ttl_seconds is not None:
            _positive("local_idle_ttl_seconds", self.local_idle_ttl_seconds)
        _at_least("local_max_entries", self.local_max_entries, 1)
        _at_least("max_connections", self.max_connections, 1)
        _at_least("breaker_failure_threshold", self.breaker_failure_threshold, 1)
        _at_least("db", self.db, 0)
        if self.password_env is not None and self.password_file is not None:
            _fail("password_env", "set password_env or password_file, not both")
        if self.password_env == "":
            _fail("password_env", "must name an environment variable")
        if self.password_file == "":
            _fail("password_file", "must be a path")
        if self.backend is Backend.REDIS:
            if (self.redis_url is None) == (self.redis_address is None):
                _fail("redis_url", "backend redis needs exactly one of redis_url or redis_address")
            redis_url(self)  # validates the URL or the address

    @property
    def timeout_s(self) -> float:
        """Per-operation budget in seconds."""
        return self.timeout_ms / 1000.0


def redis_url(config: StoreConfig) -> str:
    """Return the connection URL for ``config`` (from ``redis_url`` or ``redis_address``)."""
    if config.redis_address is not None:
        host, sep, port = config.redis_address.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            _fail("redis_address", f"must be host:port, not {config.redis_address!r}")
        return f"redis://[{host}]:{port}" if ":" in host else f"redis://{host}:{port}"
    url = config.redis_url or ""
    parts = urlsplit(url)
    if parts.scheme not in _SCHEMES:
        _fail("redis_url", f"scheme must be one of {list(_SCHEMES)}, not {parts.scheme!r}")
    if parts.username or parts.password or "@" in parts.netloc:
        _fail("redis_url", "must not carry credentials; use username and password_env/_file")
    if parts.scheme == "unix":
        if not parts.path:
            _fail("redis_url", "unix:// needs a socket path, e.g. unix:///run/redis.sock")
    elif not parts.hostname:
        _fail("redis_url", "needs a host, e.g. redis://127.0.0.1:6379")
    url_db = _url_db(parts.path if parts.scheme != "unix" else "", parts.query)
    if url_db is not None and url_db != config.db:
        _fail(
            "redis_url",
            f"selects db {url_db} but db is {config.db}; set db or drop it from the URL",
        )
    return url


def read_password(config: StoreConfig) -> str | None:
    """Read the Redis password from ``password_env`` or ``password_file`` (None if neither)."""
    if config.password_env is not None:
        value = os.environ.get(config.password_env)
        if not value:
            raise StoreConfigError(
                f"password_env: environment variable {config.password_env} is not set"
            )
        return value
    if config.password_file is not None:
        try:
            text = Path(config.password_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise StoreConfigError(
                f"password_file: cannot read {config.password_file}: {exc}"
            ) from exc
        value = text.rstrip("\r\n")
        if not value:
            raise StoreConfigError(f"password_file: {config.password_file} is empty")
        return value
    return None


def build_store(
    config: StoreConfig,
    observer: StoreObserver | None = None,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> SessionStore:
    """Build the store ``config`` asks for.

    ``local``: a ``MemoryStore``. ``redis``: a ``RedisStore`` wrapped in a ``ResilientStore``
    whose fallback follows ``fail_open_to``. Does not connect: the first operation does, so
    saar starts while Redis is down and the breaker takes over.
    """
    if config.backend is Backend.LOCAL:
        return MemoryStore(
            max_entries=config.local_max_entries,
            idle_ttl_s=config.local_idle_ttl_seconds,
            key_prefix=config.key_prefix,
            clock=clock,
            observer=observer,
        )
    client = redis_client(
        redis_url(config),
        timeout_s=config.timeout_s,
        db=config.db,
        username=config.username,
        password=read_password(config),
        max_connections=config.max_connections,
    )
    primary = RedisStore(
        client, key_prefix=config.key_prefix, timeout_s=config.timeout_s, observer=observer
    )
    fallback = None
    if config.fail_open_to is FailOpenTo.LOCAL:
        fallback = MemoryStore(
            max_entries=config.local_max_entries,
            idle_ttl_s=config.local_idle_ttl_seconds,
            key_prefix=config.key_prefix,
            clock=clock,
            name="memory-fallback",
            observer=observer,
        )
    return ResilientStore(
        primary,
        fallback=fallback,
        failure_threshold=config.breaker_failure_threshold,
        cooldown_s=config.breaker_cooldown_seconds,
        clock=clock,
        observer=observer,
    )


def _url_db(path: str, query: str) -> int | None:
    raw = path.strip("/") or (parse_qs(query).get("db") or [""])[0]
    if not raw:
        return None
    if not raw.isdigit():
        _fail("redis_url", f"database {raw!r} is not a number")
    return int(raw)


def _positive(field: str, value: float) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (value > 0 and math.isfinite(value))
    ):
        _fail(field, f"must be a positive number, not {value!r}")


def _at_least(field: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        _fail(field, f"must be an integer >= {minimum}, not {value!r}")


def _fail(field: str, message: str) -> NoReturn:
    raise StoreConfigError(f"state.{field} {message}")
