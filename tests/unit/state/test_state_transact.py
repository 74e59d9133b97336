"""transact: the retrying load → fn → compare-and-set cycle."""

from __future__ import annotations

import pytest

from saar.state import (
    MemoryStore,
    TransactionConflictError,
    TransactResult,
    Versioned,
    transact,
)


class RacingStore(MemoryStore):
    """A MemoryStore where another writer sneaks in before the first ``races`` saves."""

    def __init__(self, races: int) -> None:
        super().__init__()
        self.races = races

    async def compare_and_set(
        self, key: str, data: bytes, *, expected_version: int | None, ttl_s: float
    ) -> int | None:
        if self.races > 0:
            self.races -= 1
            current = await self.load(key)
            await super().compare_and_set(
                key,
                b"other-" + (current.data if current else b""),
                expected_version=None if current is None else current.version,
                ttl_s=ttl_s,
            )
        return await super().compare_and_set(
            key, data, expected_version=expected_version, ttl_s=ttl_s
        )


def _append(current: Versioned | None) -> tuple[bytes, bytes]:
    seen = b"" if current is None else current.data
    return seen, seen + b"+"


async def test_no_race_saves_in_one_attempt() -> None:
    """Without a race, fn runs once and its bytes are saved."""
    store = MemoryStore()
    result = await transact(store, "k", _append, ttl_s=60)
    stored = await store.load("k")
    assert stored is not None
    assert TransactResult(b"", 1, False, True, stored.version) == result
    assert stored.data == b"+"


async def test_nothing_to_save_writes_nothing() -> None:
    """fn returning None bytes saves nothing and reports the loaded version."""
    store = MemoryStore()
    version = await store.compare_and_set("k", b"x", expected_version=None, ttl_s=60)
    result = await transact(store, "k", lambda cur: ("seen", None), ttl_s=60)
    assert TransactResult("seen", 1, False, False, version) == result


async def test_conflict_reruns_fn_on_the_winners_state() -> None:
    """After losing a race, fn runs again on the winner's value, so no update is lost."""
    store = RacingStore(races=2)
    result = await transact(store, "k", _append, ttl_s=60, backoff_s=0)
    stored = await store.load("k")
    assert stored is not None
    assert (result.attempts, result.conflicted, result.saved) == (3, True, True)
    assert result.value == b"other-other-"
    assert stored.data == b"other-other-+"


async def test_gives_up_after_max_attempts() -> None:
    """Losing every race raises TransactionConflictError carrying the attempt count."""
    store = RacingStore(races=100)
    with pytest.raises(TransactionConflictError) as info:
        await transact(store, "k", _append, ttl_s=60, max_attempts=4, backoff_s=0)
    assert info.value.attempts == 4


async def test_max_attempts_must_be_positive() -> None:
    """max_attempts below 1 is a ValueError."""
    with pytest.raises(ValueError):
        await transact(MemoryStore(), "k", _append, ttl_s=60, max_attempts=0)
