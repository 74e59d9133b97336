"""ResilientStore: fallback, circuit breaker, half-open probe and version tagging."""

from __future__ import annotations

import pytest

from saar.state import (
    NO_VERSION,
    BreakerState,
    CorruptValueError,
    MemoryStore,
    ResilientStore,
    StoreTimeoutError,
    StoreUnavailableError,
    Versioned,
    transact,
)


class Clock:
    """A clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Recorder:
    """A StoreObserver that remembers fallbacks and breaker transitions."""

    def __init__(self) -> None:
        self.fallbacks: list[str] = []
        self.breaker: list[str] = []

    def on_operation(self, store: str, op: str, seconds: float, outcome: str) -> None:
        """Ignore operations."""

    def on_fallback(self, reason: str) -> None:
        self.fallbacks.append(reason)

    def on_breaker(self, state: str) -> None:
        self.breaker.append(state)


class Flaky(MemoryStore):
    """A MemoryStore that raises while ``down`` and counts the calls it receives."""

    def __init__(self) -> None:
        super().__init__(name="flaky")
        self.down: type[Exception] | None = None
        self.calls = 0

    def _gate(self) -> None:
        self.calls += 1
        if self.down is not None:
            raise self.down("down")

    async def load(self, key: str) -> Versioned | None:
        self._gate()
        return await super().load(key)

    async def compare_and_set(
        self, key: str, data: bytes, *, expected_version: int | None, ttl_s: float
    ) -> int | None:
        self._gate()
        return await super().compare_and_set(
            key, data, expected_version=expected_version, ttl_s=ttl_s
        )

    async def delete(self, key: str) -> None:
        self._gate()
        await super().delete(key)


def _make(local: bool = True) -> tuple[ResilientStore, Flaky, Clock, Recorder]:
    primary, clock, recorder = Flaky(), Clock(), Recorder()
    store = ResilientStore(
        primary,
        fallback=MemoryStore() if local else None,
        failure_threshold=3,
        cooldown_s=5.0,
        clock=clock,
        observer=recorder,
    )
    return store, primary, clock, recorder


def _inc(current: Versioned | None) -> tuple[int, bytes]:
    value = 0 if current is None else int(current.data)
    return value + 1, str(value + 1).encode()


async def test_healthy_primary_serves_everything() -> None:
    """With the primary up, results come from it and no fallback is reported."""
    store, primary, _, recorder = _make()
    version = await store.compare_and_set("k", b"x", expected_version=None, ttl_s=60)
    assert await primary.load("k") == await store.load("k") == Versioned(b"x", version or -1)
    assert recorder.fallbacks == []


async def test_breaker_opens_after_threshold_and_stops_calling_primary() -> None:
    """Three failures open the breaker; later calls never reach the primary."""
    store, primary, _, recorder = _make()
    primary.down = StoreTimeoutError
    for _ in range(10):
        await store.load("k")
    assert primary.calls == 3
    assert store.breaker_state == BreakerState.OPEN
    assert recorder.fallbacks == ["timeout"] * 3 + ["breaker_open"] * 7
    assert recorder.breaker == ["open"]


async def test_success_resets_the_failure_count() -> None:
    """Failures separated by a success never add up to the threshold."""
    store, primary, _, _ = _make()
    for _ in range(3):
        primary.down = StoreUnavailableError
        await store.load("k")
        await store.load("k")
        primary.down = None
        await store.load("k")
    assert store.breaker_state == BreakerState.CLOSED


async def test_half_open_probe_closes_breaker_when_primary_is_back() -> None:
    """After the cool-down one call probes; success closes the breaker and clears local state."""
    store, primary, clock, recorder = _make()
    primary.down = StoreUnavailableError
    for _ in range(3):
        await transact(store, "s", _inc, ttl_s=60)
    assert store.stats().local_entries == 1
    primary.down = None
    clock.now = 4.9
    await store.load("s")
    assert store.breaker_state == BreakerState.OPEN
    clock.now = 5.0
    assert await store.load("s") is None  # the primary's view, not the outage's
    assert recorder.breaker == ["open", "half_open", "closed"]
    assert store.stats().local_entries == 0


async def test_failed_probe_reopens_for_another_cooldown() -> None:
    """A failing probe re-opens the breaker and restarts the cool-down."""
    store, primary, clock, recorder = _make()
    primary.down = StoreUnavailableError
    for _ in range(3):
        await store.load("k")
    clock.now = 5.0
    await store.load("k")
    calls = primary.calls
    clock.now = 9.0
    await store.load("k")
    assert calls == primary.calls
    assert recorder.breaker == ["open", "half_open", "open"]


async def test_probe_without_verdict_does_not_wedge_half_open() -> None:
    """A probe ending in a non-availability error propagates and the next call probes again."""
    store, primary, clock, recorder = _make()
    primary.down = StoreUnavailableError
    for _ in range(3):
        await store.load("k")
    clock.now = 5.0
    primary.down = CorruptValueError
    with pytest.raises(CorruptValueError):
        await store.load("k")
    assert store.breaker_state == BreakerState.OPEN
    primary.down = None
    assert await store.load("k") is None
    assert recorder.breaker == ["open", "half_open", "open", "half_open", "closed"]


async def test_fallback_versions_are_negative_and_conflict_when_primary_is_healthy() -> None:
    """Fallback versions are negated; a CAS carrying one after recovery is a conflict."""
    store, primary, clock, _ = _make()
    primary.down = StoreUnavailableError
    for _ in range(3):
        await store.load("k")
    version = await store.compare_and_set("k", b"local", expected_version=None, ttl_s=60)
    assert version is not None
    assert version < NO_VERSION
    loaded = await store.load("k")
    assert Versioned(b"local", version) == loaded
    primary.down = None
    clock.now = 5.0
    await store.load("k")  # probe succeeds, breaker closes
    assert await store.compare_and_set("k", b"x", expected_version=version, ttl_s=60) is None


async def test_primary_version_conflicts_on_the_fallback() -> None:
    """A version loaded from the primary never matches the fallback; transact re-loads."""
    store, primary, _, _ = _make()
    version = await store.compare_and_set("k", b"1", expected_version=None, ttl_s=60)
    primary.down = StoreUnavailableError
    assert await store.compare_and_set("k", b"2", expected_version=version, ttl_s=60) is None
    assert (await transact(store, "k", _inc, ttl_s=60)).value == 1


async def test_no_memory_mode_accepts_saves_without_keeping_them() -> None:
    """Without a fallback, loads are None and saves return NO_VERSION during an outage."""
    store, primary, _, recorder = _make(local=False)
    primary.down = StoreUnavailableError
    assert await store.compare_and_set("k", b"x", expected_version=None, ttl_s=60) == NO_VERSION
    assert await store.load("k") is None
    assert recorder.fallbacks == ["error", "error"]


async def test_delete_reaches_both_stores() -> None:
    """Delete removes the key from the primary and from the local fallback."""
    store, primary, _, _ = _make()
    await primary.compare_and_set("k", b"shared", expected_version=None, ttl_s=60)
    primary.down = StoreUnavailableError
    for _ in range(3):
        await store.load("k")
    await store.compare_and_set("k", b"local", expected_version=None, ttl_s=60)
    primary.down = None
    await store.delete("k")  # breaker open: the primary delete is skipped, local is not
    assert (store.stats().local_entries, await primary.approx_len()) == (0, 1)
    store2, primary2, _, _ = _make()
    await primary2.compare_and_set("k", b"shared", expected_version=None, ttl_s=60)
    await store2.delete("k")
    assert await primary2.load("k") is None
