"""``transact``: the race-free load → decide → save cycle on a ``SessionStore``.

Theory of operation: optimistic concurrency. ``fn`` is pure: it sees the current value and
returns a result plus the bytes to save (or ``None`` to save nothing). The save is a
compare-and-set on the version ``fn`` saw; if another turn of the same session saved first,
the cycle re-loads and re-runs ``fn`` on the winner's state, so no update is ever lost and a
switch is never counted twice (upstream: last writer wins, upstream-saar-behaviour §13.1).
Conflicts are rare (two turns of one session at the same instant), so a lock would only
add a round trip to every turn; optimistic retries cost nothing when there is no race.

After ``max_attempts`` conflicts in a row ``TransactionConflictError`` is raised; the router
fails open on it. Between attempts a short jittered pause (``backoff_s``) spreads out
replicas that would otherwise collide again in lock step.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from saar.state.base import SessionStore, TransactionConflictError, Versioned

__all__ = ["TransactResult", "transact"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class TransactResult(Generic[T]):
    """What ``fn`` returned on the attempt that committed, plus how the cycle went."""

    value: T
    #: Load → fn → save rounds run (1 when nothing raced).
    attempts: int
    #: True when at least one compare-and-set lost a race.
    conflicted: bool
    #: True when bytes were written; False when ``fn`` returned ``None`` to save.
    saved: bool
    #: Version after the save, or the loaded version when nothing was saved (None: absent).
    version: int | None


async def transact(
    store: SessionStore,
    key: str,
    fn: Callable[[Versioned | None], tuple[T, bytes | None]],
    *,
    ttl_s: float,
    max_attempts: int = 5,
    backoff_s: float = 0.0005,
) -> TransactResult[T]:
    """Run ``fn`` on the current value of ``key`` and save its bytes with compare-and-set.

    ``fn`` may run more than once (once per attempt) and must not have side effects.
    Store errors propagate unchanged; ``TransactionConflictError`` after ``max_attempts``
    lost races.
    """
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be >= 1, not {max_attempts}")
    for attempt in range(1, max_attempts + 1):
        current = await store.load(key)
        value, data = fn(current)
        expected = None if current is None else current.version
        if data is None:
            return TransactResult(value, attempt, attempt > 1, False, expected)
        version = await store.compare_and_set(key, data, expected_version=expected, ttl_s=ttl_s)
        if version is not None:
            return TransactResult(value, attempt, attempt > 1, True, version)
        if attempt < max_attempts and backoff_s > 0:
            # Full jitter, growing per attempt; not a policy decision, so plain random is fine.
            await asyncio.sleep(random.uniform(0, backoff_s * attempt))
    raise TransactionConflictError(max_attempts)
