"""``ResilientStore``: the failure policy around the shared store.

Theory of operation: routing must never wait on, or fail because of, router memory
(ARCHITECTURE.md rule 5, fail open). Every call goes to the primary (Redis), which bounds
its own time per operation. When the primary raises ``StoreUnavailableError`` (error or
timeout), the call is served by the fallback instead and ``StoreObserver.on_fallback``
fires:

* ``fail_open_to: local`` — an in-process ``MemoryStore``. Sessions keep their memory on
  this replica during the outage; it starts empty and is cleared when the primary
  recovers, so a later outage never resurrects state from an earlier one.
* ``fail_open_to: none`` — "no memory": ``load`` returns ``None`` and ``compare_and_set``
  succeeds as a no-op returning ``NO_VERSION`` (0). Each turn is decided as a fresh one.

A circuit breaker stops the timeout from being paid on every request (upstream paid up to
3 x 50 ms per turn with no breaker, upstream-saar-behaviour §13.4): after
``failure_threshold`` consecutive failures it opens and no call reaches the primary; after
``cooldown_s`` exactly one call probes it (half-open) while the others keep using the
fallback; a successful probe closes the breaker, a failed one re-opens it. Recovery needs
no operator.

Versions handed out by the fallback are negated, so a version can always tell which store
it came from: a compare-and-set that carries a fallback version while the primary is
healthy is answered as a conflict, and ``transact`` re-loads the shared state, which wins.
Likewise a primary version is a conflict for the fallback.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from saar.state.base import (
    NO_VERSION,
    NULL_OBSERVER,
    BreakerState,
    FallbackReason,
    SessionStore,
    StoreObserver,
    StoreTimeoutError,
    StoreUnavailableError,
    Versioned,
    storage_key,
)
from saar.state.memory import MemoryStore

__all__ = ["ResilientStats", "ResilientStore"]

_R = TypeVar("_R")


@dataclass(frozen=True, slots=True)
class ResilientStats:
    """Snapshot of the failure policy's state."""

    breaker: BreakerState
    consecutive_failures: int
    fallbacks: int
    local_entries: int | None


class ResilientStore:
    """``SessionStore`` that serves from ``fallback`` (or from nothing) while ``primary`` fails.

    ``fallback=None`` selects the "no memory" policy. ``clock`` (seconds, monotonic) drives
    the breaker cool-down and is injectable for tests.
    """

    __slots__ = (
        "_clock",
        "_cooldown_s",
        "_failures",
        "_fallback",
        "_fallbacks",
        "_name",
        "_observer",
        "_opened_at",
        "_primary",
        "_state",
        "_threshold",
    )

    def __init__(
        self,
        primary: SessionStore,
        *,
        fallback: MemoryStore | None,
        failure_threshold: int = 3,
        cooldown_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        observer: StoreObserver | None = None,
        name: str = "resilient",
    ) -> None:
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be >= 1, not {failure_threshold}")
        if not cooldown_s > 0:
            raise ValueError(f"cooldown_s must be > 0, not {cooldown_s}")
        self._primary = primary
        self._fallback = fallback
        self._threshold = failure_threshold
        self._cooldown_s = cooldown_s
        self._clock = clock
        self._observer = observer if observer is not None else NULL_OBSERVER
        self._name = name
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._fallbacks = 0

    @property
    def name(self) -> str:
        """Name for metrics and logs."""
        return self._name

    @property
    def breaker_state(self) -> BreakerState:
        """Current circuit breaker state."""
        return self._state

    async def load(self, key: str) -> Versioned | None:
        """Load from the primary, or from the fallback when the primary is unavailable."""
        storage_key("", key)  # reject a bad key the same way whichever store answers
        return await self._run(lambda: self._primary.load(key), lambda r: self._fb_load(key, r))

    async def compare_and_set(
        self, key: str, data: bytes, *, expected_version: int | None, ttl_s: float
    ) -> int | None:
        """Compare-and-set on the store that issued ``expected_version``; see module doc."""
        storage_key("", key)
        if expected_version is not None and expected_version <= NO_VERSION:
            # Loaded from the fallback. A healthy primary's state wins: report a conflict
            # so the caller re-loads from it. Otherwise stay on the fallback, no probe.
            if self._state is BreakerState.CLOSED:
                return None
            return await self._fb_cas(
                key, data, expected_version, ttl_s, FallbackReason.BREAKER_OPEN
            )
        return await self._run(
            lambda: self._primary.compare_and_set(
                key, data, expected_version=expected_version, ttl_s=ttl_s
            ),
            lambda r: self._fb_cas(key, data, expected_version, ttl_s, r),
        )

    async def delete(self, key: str) -> None:
        """Delete from both stores, so the fallback never resurrects a deleted session."""
        storage_key("", key)
        if self._fallback is not None:
            await self._fallback.delete(key)
        await self._run(lambda: self._primary.delete(key), self._fb_noop)

    async def approx_len(self) -> int | None:
        """``None``: the primary is shared; see ``stats()`` for the local fallback's size."""
        return None

    def stats(self) -> ResilientStats:
        """Return breaker state, failure and fallback counts, and local entries."""
        local = None if self._fallback is None else self._fallback.stats().entries
        return ResilientStats(self._state, self._failures, self._fallbacks, local)

    async def close(self) -> None:
        """Close the primary and the fallback."""
        await self._primary.close()
        if self._fallback is not None:
            await self._fallback.close()

    # -- breaker --------------------------------------------------------------------------

    async def _run(
        self,
        primary: Callable[[], Awaitable[_R]],
        fallback: Callable[[FallbackReason], Awaitable[_R]],
    ) -> _R:
        probe = False
        if self._state is not BreakerState.CLOSED:
            if not self._begin_probe():
                return await fallback(FallbackReason.BREAKER_OPEN)
            probe = True
        try:
            result = await primary()
        except StoreUnavailableError as exc:
            self._record_failure()
            timed_out = isinstance(exc, StoreTimeoutError)
            return await fallback(FallbackReason.TIMEOUT if timed_out else FallbackReason.ERROR)
        except BaseException:
            # Cancelled, or a caller error (bad key, corrupt value): no verdict on the
            # primary's health. Re-open so the next call probes again instead of leaving
            # the breaker stuck half-open with no probe in flight.
            if probe and self._state is BreakerState.HALF_OPEN:
                self._transition(BreakerState.OPEN)  # keeps _opened_at: probe again at once
            raise
        self._record_success()
        return result

    def _begin_probe(self) -> bool:
        """In OPEN after the cool-down, let exactly one call through (HALF_OPEN)."""
        if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self._cooldown_s:
            self._transition(BreakerState.HALF_OPEN)
            return True
        return False  # OPEN within cool-down, or HALF_OPEN with a probe already in flight

    def _record_failure(self) -> None:
        if self._state is BreakerState.HALF_OPEN:
            self._open()
            return
        self._failures += 1
        if self._state is BreakerState.CLOSED and self._failures >= self._threshold:
            self._open()

    def _record_success(self) -> None:
        self._failures = 0
        if self._state is not BreakerState.CLOSED:
            self._transition(BreakerState.CLOSED)
            if self._fallback is not None:
                # Outage state is superseded by the shared store; keeping it would let a
                # later outage serve sessions from this one.
                self._fallback.clear()

    def _open(self) -> None:
        self._opened_at = self._clock()
        self._transition(BreakerState.OPEN)

    def _transition(self, state: BreakerState) -> None:
        self._state = state
        self._observer.on_breaker(state)

    # -- fallback -------------------------------------------------------------------------

    def _note_fallback(self, reason: FallbackReason) -> None:
        self._fallbacks += 1
        self._observer.on_fallback(reason)

    async def _fb_load(self, key: str, reason: FallbackReason) -> Versioned | None:
        self._note_fallback(reason)
        if self._fallback is None:
            return None
        found = await self._fallback.load(key)
        return None if found is None else Versioned(found.data, -found.version)

    async def _fb_cas(
        self,
        key: str,
        data: bytes,
        expected_version: int | None,
        ttl_s: float,
        reason: FallbackReason,
    ) -> int | None:
        self._note_fallback(reason)
        if self._fallback is None:
            return NO_VERSION
        if expected_version is not None and expected_version > NO_VERSION:
            return None  # a primary version never matches the fallback: re-load
        local_expected = None if expected_version is None else -expected_version
        version = await self._fallback.compare_and_set(
            key, data, expected_version=local_expected, ttl_s=ttl_s
        )
        return None if version is None else -version

    async def _fb_noop(self, reason: FallbackReason) -> None:
        self._note_fallback(reason)
