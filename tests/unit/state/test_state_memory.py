"""MemoryStore: LRU bound, idle expiry, amortised O(1) sweeping, shared views."""

from __future__ import annotations

import pytest

from saar.state import MemoryStore, MemoryStoreStats, Versioned

TTL = 60.0


class Clock:
    """A clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def _put(store: MemoryStore, key: str, ttl_s: float = TTL) -> int:
    current = await store.load(key)
    version = await store.compare_and_set(
        key,
        key.encode(),
        expected_version=None if current is None else current.version,
        ttl_s=ttl_s,
    )
    assert version is not None
    return version


async def test_lru_evicts_least_recently_used() -> None:
    """At capacity, a new key evicts the entry used least recently (a read counts as use)."""
    store = MemoryStore(max_entries=3)
    for key in ("a", "b", "c"):
        await _put(store, key)
    await store.load("a")
    await _put(store, "d")
    assert [await store.load(k) is not None for k in ("a", "b", "c", "d")] == [
        True,
        False,
        True,
        True,
    ]
    assert store.stats().evictions == 1
    assert await store.approx_len() == 3


async def test_updating_existing_key_never_evicts() -> None:
    """Rewriting a key at capacity does not push anything out."""
    store = MemoryStore(max_entries=2)
    await _put(store, "a")
    await _put(store, "b")
    await _put(store, "a")
    assert store.stats().evictions == 0


async def test_entry_expires_after_ttl_on_access() -> None:
    """An entry past its TTL loads as None and is removed."""
    clock = Clock()
    store = MemoryStore(clock=clock)
    await _put(store, "a", ttl_s=10)
    clock.now = 9.9
    assert await store.load("a") is not None
    clock.now = 10.0
    assert await store.load("a") is None
    assert MemoryStoreStats(entries=0, evictions=0, expirations=1, sweep_checks=1) == store.stats()


async def test_idle_ttl_caps_the_write_ttl() -> None:
    """idle_ttl_s shortens a longer per-write TTL."""
    clock = Clock()
    store = MemoryStore(clock=clock, idle_ttl_s=5)
    await _put(store, "a", ttl_s=100)
    clock.now = 5.0
    assert await store.load("a") is None


async def test_sweep_inspects_a_bounded_number_of_entries() -> None:
    """One write with 1000 expired entries inspects at most sweep_batch of them (no scan)."""
    clock = Clock()
    store = MemoryStore(clock=clock, sweep_batch=8)
    for i in range(1000):
        await _put(store, f"k{i}", ttl_s=1)
    before = store.stats().sweep_checks
    clock.now = 5.0
    await _put(store, "fresh")
    stats = store.stats()
    assert stats.sweep_checks - before == 8
    assert stats.expirations == 8
    assert stats.entries == 1000 + 1 - 8


async def test_sweep_stops_at_first_live_entry() -> None:
    """When the LRU end is live, a write inspects exactly one entry."""
    store = MemoryStore()
    for i in range(100):
        await _put(store, f"k{i}")
    before = store.stats().sweep_checks
    await _put(store, "k0")
    assert store.stats().sweep_checks - before == 1


async def test_repeated_sweeps_drain_expired_entries() -> None:
    """Writes keep draining expired entries from the LRU end, batch by batch."""
    clock = Clock()
    store = MemoryStore(clock=clock, sweep_batch=4)
    for i in range(20):
        await _put(store, f"old{i}", ttl_s=1)
    clock.now = 2.0
    for i in range(5):
        await _put(store, f"new{i}")
    assert await store.approx_len() == 5


async def test_views_share_table_and_versions_but_not_keys() -> None:
    """A view under another prefix shares capacity and the version counter, not keys."""
    store = MemoryStore(max_entries=10, key_prefix="a:")
    other = store.view("b:")
    v1 = await _put(store, "k")
    v2 = await _put(other, "k")
    assert v2 > v1
    assert Versioned(b"k", v1) == await store.load("k")
    assert await other.approx_len() == 2


async def test_clear_keeps_versions_increasing() -> None:
    """clear() empties the table; versions handed out later are still higher."""
    store = MemoryStore()
    v1 = await _put(store, "k")
    store.clear()
    assert await store.load("k") is None
    assert await _put(store, "k") > v1


@pytest.mark.parametrize(
    "kwargs",
    [{"max_entries": 0}, {"idle_ttl_s": 0}, {"sweep_batch": 0}, {"key_prefix": "bad prefix"}],
    ids=["max_entries", "idle_ttl", "sweep_batch", "prefix"],
)
def test_impossible_settings_are_rejected(kwargs: dict[str, object]) -> None:
    """Zero capacity, zero TTL, zero sweep batch or an unsafe prefix raise ValueError."""
    with pytest.raises(ValueError):
        MemoryStore(**kwargs)  # type: ignore[arg-type]
