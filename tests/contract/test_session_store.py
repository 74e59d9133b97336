"""The SessionStore contract, run against MemoryStore and a real redis-server (TCP and Unix)."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest

from saar.state import InvalidKeyError, SessionStore, Versioned, transact
from saar.state.base import MAX_KEY_CHARS

from .conftest import StoreKit

TTL = 60.0


async def test_load_missing_returns_none(kit: StoreKit) -> None:
    """A key never written loads as None."""
    store = kit.open()
    assert await store.load("absent") is None


async def test_create_then_load_round_trips(kit: StoreKit) -> None:
    """Creating with expected_version=None stores the bytes under the returned version."""
    store = kit.open()
    version = await store.compare_and_set("k", b"hello", expected_version=None, ttl_s=TTL)
    assert version is not None
    assert Versioned(b"hello", version) == await store.load("k")


async def test_create_conflicts_when_key_exists(kit: StoreKit) -> None:
    """expected_version=None on an existing key is a conflict and changes nothing."""
    store = kit.open()
    first = await store.compare_and_set("k", b"one", expected_version=None, ttl_s=TTL)
    assert await store.compare_and_set("k", b"two", expected_version=None, ttl_s=TTL) is None
    assert Versioned(b"one", first or -1) == await store.load("k")


async def test_cas_with_current_version_succeeds_stale_conflicts(kit: StoreKit) -> None:
    """A CAS on the current version wins; a CAS on an older version is refused."""
    store = kit.open()
    v1 = await store.compare_and_set("k", b"v1", expected_version=None, ttl_s=TTL)
    v2 = await store.compare_and_set("k", b"v2", expected_version=v1, ttl_s=TTL)
    assert v2 is not None
    assert await store.compare_and_set("k", b"stale", expected_version=v1, ttl_s=TTL) is None
    assert Versioned(b"v2", v2) == await store.load("k")


async def test_cas_on_missing_key_with_a_version_conflicts(kit: StoreKit) -> None:
    """Expecting a version of a key that does not exist is a conflict, not a create."""
    store = kit.open()
    assert await store.compare_and_set("k", b"x", expected_version=7, ttl_s=TTL) is None
    assert await store.load("k") is None


async def test_versions_strictly_increase(kit: StoreKit) -> None:
    """Every successful write returns a larger version than the one before."""
    store = kit.open()
    versions: list[int] = []
    expected: int | None = None
    for i in range(10):
        expected = await store.compare_and_set(
            "k", str(i).encode(), expected_version=expected, ttl_s=TTL
        )
        assert expected is not None
        versions.append(expected)
    assert sorted(set(versions)) == versions


async def test_delete_removes_and_is_idempotent(kit: StoreKit) -> None:
    """Delete removes the key; deleting again (or a missing key) is fine."""
    store = kit.open()
    await store.compare_and_set("k", b"x", expected_version=None, ttl_s=TTL)
    await store.delete("k")
    await store.delete("k")
    await store.delete("never-written")
    assert await store.load("k") is None


async def test_recreated_key_never_reuses_a_version(kit: StoreKit) -> None:
    """After delete and re-create, the version is higher and an old version cannot match."""
    store = kit.open()
    old = await store.compare_and_set("k", b"a", expected_version=None, ttl_s=TTL)
    await store.delete("k")
    new = await store.compare_and_set("k", b"b", expected_version=None, ttl_s=TTL)
    assert old is not None
    assert new is not None
    assert new > old
    assert await store.compare_and_set("k", b"c", expected_version=old, ttl_s=TTL) is None


async def test_ttl_expiry(kit: StoreKit) -> None:
    """An entry not written for ttl_s disappears; its old version no longer matches."""
    store = kit.open()
    version = await store.compare_and_set("k", b"x", expected_version=None, ttl_s=0.15)
    await kit.advance(0.3)
    assert await store.load("k") is None
    assert await store.compare_and_set("k", b"y", expected_version=version, ttl_s=TTL) is None
    assert await store.compare_and_set("k", b"z", expected_version=None, ttl_s=TTL) is not None


async def test_write_restarts_ttl(kit: StoreKit) -> None:
    """Each write restarts the TTL, so a session written every turn stays alive."""
    store = kit.open()
    version = await store.compare_and_set("k", b"1", expected_version=None, ttl_s=0.4)
    await kit.advance(0.25)
    version = await store.compare_and_set("k", b"2", expected_version=version, ttl_s=0.4)
    await kit.advance(0.25)
    assert Versioned(b"2", version or -1) == await store.load("k")


async def test_key_prefix_isolation(kit: StoreKit) -> None:
    """Two prefixes on one backend never see or delete each other's keys."""
    a = kit.open(kit.prefix + "a:")
    b = kit.open(kit.prefix + "b:")
    await a.compare_and_set("same", b"from-a", expected_version=None, ttl_s=TTL)
    assert await b.load("same") is None
    await b.compare_and_set("same", b"from-b", expected_version=None, ttl_s=TTL)
    await b.delete("same")
    found = await a.load("same")
    assert found is not None
    assert found.data == b"from-a"


async def test_replicas_share_state(kit: StoreKit) -> None:
    """A write through one handle is loaded, with its version, through another."""
    first, second = kit.open(), kit.open()
    version = await first.compare_and_set("k", b"shared", expected_version=None, ttl_s=TTL)
    assert Versioned(b"shared", version or -1) == await second.load("k")


@pytest.mark.parametrize(
    "data",
    [b"", b"\n\n\x00binary\r\n\xff", os.urandom(1 << 20)],
    ids=["empty", "newlines-and-nul", "1MiB-random"],
)
async def test_values_round_trip_byte_exact(kit: StoreKit, data: bytes) -> None:
    """Empty, binary (newlines, NUL) and 1 MiB values come back byte for byte."""
    # Byte-exactness, not latency: moving 1 MiB can exceed the 50 ms production budget on a
    # loaded 2-core runner.
    store = kit.open(timeout_s=2.0)
    version = await store.compare_and_set("k", data, expected_version=None, ttl_s=TTL)
    assert Versioned(data, version or -1) == await store.load("k")


HOSTILE_KEYS = [
    "a/b",
    "a b",
    "line\nbreak",
    "glob*?[x]",
    "{hashtag}",
    "%41",
    "A",
    "ключ-🔑",
    "../../etc/passwd",
    "\x00\x01\x7f",
    "k" * MAX_KEY_CHARS,
]


async def test_hostile_keys_are_stored_separately(kit: StoreKit) -> None:
    """Keys with any characters round-trip, and look-alikes ('%41' vs 'A') never collide."""
    store = kit.open()
    for key in HOSTILE_KEYS:
        assert (
            await store.compare_and_set(key, key.encode(), expected_version=None, ttl_s=TTL)
            is not None
        ), key
    for key in HOSTILE_KEYS:
        found = await store.load(key)
        assert found is not None, key
        assert key.encode() == found.data


@pytest.mark.parametrize("key", ["", "k" * (MAX_KEY_CHARS + 1), b"bytes", None, "\ud800"])
async def test_invalid_keys_are_rejected(kit: StoreKit, key: Any) -> None:
    """Empty, oversized, non-string and non-Unicode keys raise InvalidKeyError everywhere."""
    store = kit.open()
    with pytest.raises(InvalidKeyError):
        await store.load(key)
    with pytest.raises(InvalidKeyError):
        await store.compare_and_set(key, b"x", expected_version=None, ttl_s=TTL)
    with pytest.raises(InvalidKeyError):
        await store.delete(key)


async def test_bad_ttl_and_data_are_rejected(kit: StoreKit) -> None:
    """A non-positive TTL is a ValueError and non-bytes data a TypeError."""
    store = kit.open()
    with pytest.raises(ValueError):
        await store.compare_and_set("k", b"x", expected_version=None, ttl_s=0)
    with pytest.raises(TypeError):
        await store.compare_and_set("k", "text", expected_version=None, ttl_s=TTL)  # type: ignore[arg-type]


class Interleaving:
    """Wraps a store and yields to the loop around each call, so turns really interleave."""

    def __init__(self, inner: SessionStore) -> None:
        self.inner = inner
        self.name = inner.name

    async def load(self, key: str) -> Versioned | None:
        await asyncio.sleep(0)
        return await self.inner.load(key)

    async def compare_and_set(
        self, key: str, data: bytes, *, expected_version: int | None, ttl_s: float
    ) -> int | None:
        await asyncio.sleep(0)
        return await self.inner.compare_and_set(
            key, data, expected_version=expected_version, ttl_s=ttl_s
        )

    async def delete(self, key: str) -> None:
        await self.inner.delete(key)

    async def approx_len(self) -> int | None:
        return await self.inner.approx_len()

    async def close(self) -> None:
        await self.inner.close()


def _increment(current: Versioned | None) -> tuple[int, bytes]:
    value = 0 if current is None else int(current.data)
    return value + 1, str(value + 1).encode()


async def test_concurrent_increments_through_two_replicas_lose_nothing(kit: StoreKit) -> None:
    """60 concurrent transact increments via two replicas end at exactly 60, with races seen."""
    # Correctness, not latency: a generous budget so a cold pool on a busy CI core is fine.
    replicas = [Interleaving(kit.open(timeout_s=2.0)), Interleaving(kit.open(timeout_s=2.0))]
    total = 60
    results = await asyncio.gather(
        *(
            transact(replicas[i % 2], "counter", _increment, ttl_s=TTL, max_attempts=500)
            for i in range(total)
        )
    )
    final = await replicas[0].load("counter")
    assert final is not None
    assert str(total).encode() == final.data
    assert sorted(r.value for r in results) == list(range(1, total + 1))
    assert any(r.conflicted for r in results)
