"""StoreConfig validation, Redis address handling, password sources and build_store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from saar.state import (
    Backend,
    FailOpenTo,
    MemoryStore,
    ResilientStore,
    StoreConfig,
    StoreConfigError,
    build_store,
)
from saar.state.config import read_password, redis_url


def test_defaults() -> None:
    """The defaults are the documented ones: local backend, saar:v1:, 24 h, 50 ms."""
    config = StoreConfig()
    assert (
        config.backend,
        config.key_prefix,
        config.ttl_seconds,
        config.timeout_ms,
        config.local_max_entries,
        config.fail_open_to,
    ) == (Backend.LOCAL, "saar:v1:", 86_400.0, 50.0, 100_000, FailOpenTo.LOCAL)
    assert config.timeout_s == 0.05


def test_enum_strings_are_coerced() -> None:
    """Plain strings from YAML become the enums."""
    config = StoreConfig(backend="redis", redis_address="h:1", fail_open_to="none")  # type: ignore[arg-type]
    assert (config.backend, config.fail_open_to) == (Backend.REDIS, FailOpenTo.NONE)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"backend": "memcached"}, "state.backend"),
        ({"fail_open_to": "disk"}, "state.fail_open_to"),
        ({"key_prefix": "has space"}, "state.key_prefix"),
        ({"ttl_seconds": 0}, "state.ttl_seconds"),
        ({"timeout_ms": -5}, "state.timeout_ms"),
        ({"timeout_ms": 120_000}, "state.timeout_ms"),
        ({"timeout_ms": float("nan")}, "state.timeout_ms"),
        ({"local_max_entries": 0}, "state.local_max_entries"),
        ({"local_idle_ttl_seconds": 0}, "state.local_idle_ttl_seconds"),
        ({"breaker_failure_threshold": 0}, "state.breaker_failure_threshold"),
        ({"breaker_cooldown_seconds": 0}, "state.breaker_cooldown_seconds"),
        ({"db": -1}, "state.db"),
        ({"db": True}, "state.db"),
        ({"password_env": "A", "password_file": "/x"}, "state.password_env"),
        ({"backend": "redis"}, "state.redis_url"),
        ({"backend": "redis", "redis_url": "redis://h", "redis_address": "h:1"}, "state.redis_url"),
        ({"backend": "redis", "redis_url": "http://h:1"}, "state.redis_url"),
        ({"backend": "redis", "redis_url": "redis://:pw@h:1"}, "state.redis_url"),
        ({"backend": "redis", "redis_url": "redis://user:pw@h:1"}, "state.redis_url"),
        ({"backend": "redis", "redis_url": "redis://h:1/2"}, "state.redis_url"),
        ({"backend": "redis", "redis_url": "unix://"}, "state.redis_url"),
        ({"backend": "redis", "redis_address": "nohost"}, "state.redis_address"),
        ({"backend": "redis", "redis_address": "h:99999"}, "state.redis_address"),
    ],
)
def test_impossible_values_are_rejected_naming_the_field(
    kwargs: dict[str, Any], field: str
) -> None:
    """Each impossible value raises StoreConfigError whose message starts with its field."""
    with pytest.raises(StoreConfigError) as info:
        StoreConfig(**kwargs)
    assert str(info.value).startswith(field + " ")


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"redis_address": "10.0.0.1:6379"}, "redis://10.0.0.1:6379"),
        ({"redis_address": "[::1]:6380"}, "redis://[::1]:6380"),
        ({"redis_url": "rediss://cache.internal:6380"}, "rediss://cache.internal:6380"),
        ({"redis_url": "redis://h:1/3", "db": 3}, "redis://h:1/3"),
        ({"redis_url": "unix:///run/redis.sock?db=2", "db": 2}, "unix:///run/redis.sock?db=2"),
    ],
)
def test_redis_url_forms(kwargs: dict[str, Any], expected: str) -> None:
    """host:port (IPv4/IPv6), rediss:// and unix:// with a matching db are accepted."""
    assert expected == redis_url(StoreConfig(backend=Backend.REDIS, **kwargs))


def test_password_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """password_env reads the variable; an unset one is an error naming the field."""
    monkeypatch.setenv("SAAR_TEST_PW", "from-env")
    assert read_password(StoreConfig(password_env="SAAR_TEST_PW")) == "from-env"
    monkeypatch.delenv("SAAR_TEST_PW")
    with pytest.raises(StoreConfigError, match="password_env"):
        read_password(StoreConfig(password_env="SAAR_TEST_PW"))


def test_password_from_file(tmp_path: Path) -> None:
    """password_file is read with its trailing newline removed; a missing file is an error."""
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    assert read_password(StoreConfig(password_file=str(secret))) == "from-file"
    with pytest.raises(StoreConfigError, match="password_file"):
        read_password(StoreConfig(password_file=str(tmp_path / "missing")))


def test_no_password_configured() -> None:
    """Without password_env or password_file there is no password."""
    assert read_password(StoreConfig()) is None


async def test_build_local_store() -> None:
    """backend local builds a MemoryStore with the configured bound."""
    store = build_store(StoreConfig(local_max_entries=2))
    assert isinstance(store, MemoryStore)
    for key in "abc":
        await store.compare_and_set(key, b"x", expected_version=None, ttl_s=60)
    assert await store.approx_len() == 2


async def test_build_redis_store_without_connecting() -> None:
    """backend redis builds a ResilientStore and does not touch the network yet."""
    store = build_store(StoreConfig(backend=Backend.REDIS, redis_address="127.0.0.1:1"))
    assert isinstance(store, ResilientStore)
    assert store.stats().local_entries == 0
    await store.close()
