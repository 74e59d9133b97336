"""``MemoryStore``: the embedded, zero-setup ``SessionStore`` and the test double.

Theory of operation: one ``OrderedDict`` kept in least-recently-used order. Every operation
is O(1): a hit is ``move_to_end``, eviction is ``popitem(last=False)``. Expiry is checked on
access, plus an amortised sweep that looks at no more than ``sweep_batch`` entries at the LRU
end per write, so no request ever pays for a scan of the whole map (upstream swept all
50,000 entries under a global lock on every write, upstream-saar-behaviour §13.24). Memory
is bounded by ``max_entries``: a write that would exceed it evicts the least recently used
entry, so a flood of client-chosen session ids can only push out idle sessions.

All methods run to completion without awaiting, so on one event loop each operation is
atomic; the class is not thread-safe (saar runs one loop per process).

Versions come from one counter per table, never reused, so a key's version keeps
increasing across deletes and expiry (no ABA, see ``saar.state.base``).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from saar.state.base import (
    NULL_OBSERVER,
    OpOutcome,
    StoreObserver,
    Versioned,
    check_prefix,
    check_ttl,
    storage_key,
)

__all__ = ["DEFAULT_SWEEP_BATCH", "MemoryStore", "MemoryStoreStats"]

#: Entries the amortised sweep may inspect per write.
DEFAULT_SWEEP_BATCH: Final = 8


@dataclass(slots=True)
class _Entry:
    data: bytes
    version: int
    expires_at: float


@dataclass(frozen=True, slots=True)
class MemoryStoreStats:
    """Counters of a ``MemoryStore`` table (shared by all its prefix views)."""

    entries: int
    evictions: int
    expirations: int
    sweep_checks: int


class _Table:
    """The shared state behind one or more ``MemoryStore`` prefix views."""

    __slots__ = (
        "clock",
        "entries",
        "evictions",
        "expirations",
        "idle_ttl_s",
        "max_entries",
        "next_version",
        "sweep_batch",
        "sweep_checks",
    )

    def __init__(
        self,
        *,
        max_entries: int,
        idle_ttl_s: float | None,
        clock: Callable[[], float],
        sweep_batch: int,
    ) -> None:
        self.entries: OrderedDict[str, _Entry] = OrderedDict()
        self.max_entries = max_entries
        self.idle_ttl_s = idle_ttl_s
        self.clock = clock
        self.sweep_batch = sweep_batch
        self.next_version = 1
        self.evictions = 0
        self.expirations = 0
        self.sweep_checks = 0

    def sweep(self, now: float) -> None:
        """Drop expired entries from the LRU end, inspecting at most ``sweep_batch``."""
        entries = self.entries
        for _ in range(self.sweep_batch):
            if not entries:
                return
            key = next(iter(entries))
            self.sweep_checks += 1
            if entries[key].expires_at > now:
                # The LRU end is not expired: stop here. Expired entries further in are
                # caught on access or pushed out by LRU eviction; never scan for them.
                return
            del entries[key]
            self.expirations += 1


class MemoryStore:
    """Bounded in-process ``SessionStore`` with LRU eviction and TTL expiry.

    ``ttl_s`` given to ``compare_and_set`` restarts at every write (as Redis ``PX`` does);
    ``idle_ttl_s``, when set, caps it for this store (the local fallback uses a shorter one).
    ``clock`` is injectable so tests control time.
    """

    __slots__ = ("_name", "_observer", "_prefix", "_table")

    def __init__(
        self,
        *,
        max_entries: int = 100_000,
        idle_ttl_s: float | None = None,
        key_prefix: str = "",
        clock: Callable[[], float] = time.monotonic,
        sweep_batch: int = DEFAULT_SWEEP_BATCH,
        name: str = "memory",
        observer: StoreObserver | None = None,
    ) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, not {max_entries}")
        if idle_ttl_s is not None:
            check_ttl(idle_ttl_s)
        if sweep_batch < 1:
            raise ValueError(f"sweep_batch must be >= 1, not {sweep_batch}")
        self._table = _Table(
            max_entries=max_entries, idle_ttl_s=idle_ttl_s, clock=clock, sweep_batch=sweep_batch
        )
        self._prefix = check_prefix(key_prefix)
        self._name = name
        self._observer = observer if observer is not None else NULL_OBSERVER

    def view(self, key_prefix: str) -> MemoryStore:
        """Return another handle on the same table under ``key_prefix``.

        Handles share capacity, clock and versions, like two applications sharing one
        Redis database with different prefixes.
        """
        other = object.__new__(MemoryStore)
        other._table = self._table
        other._prefix = check_prefix(key_prefix)
        other._name = self._name
        other._observer = self._observer
        return other

    @property
    def name(self) -> str:
        """Backend name for metrics and logs."""
        return self._name

    async def load(self, key: str) -> Versioned | None:
        """Return the live value under ``key`` (and mark it recently used), else ``None``."""
        started = time.perf_counter()
        skey = storage_key(self._prefix, key)
        table = self._table
        entry = table.entries.get(skey)
        result: Versioned | None = None
        if entry is not None:
            if entry.expires_at <= table.clock():
                del table.entries[skey]
                table.expirations += 1
            else:
                table.entries.move_to_end(skey)
                result = Versioned(entry.data, entry.version)
        self._observer.on_operation(self._name, "load", time.perf_counter() - started, OpOutcome.OK)
        return result

    async def compare_and_set(
        self, key: str, data: bytes, *, expected_version: int | None, ttl_s: float
    ) -> int | None:
        """Write ``data`` if the live version equals ``expected_version``; see SessionStore."""
        started = time.perf_counter()
        skey = storage_key(self._prefix, key)
        check_ttl(ttl_s)
        if not isinstance(data, bytes):
            raise TypeError(f"data must be bytes, not {type(data).__name__}")
        table = self._table
        now = table.clock()
        entry = table.entries.get(skey)
        if entry is not None and entry.expires_at <= now:
            del table.entries[skey]
            table.expirations += 1
            entry = None
        current = None if entry is None else entry.version
        if current != expected_version:
            self._observer.on_operation(
                self._name, "cas", time.perf_counter() - started, OpOutcome.CONFLICT
            )
            return None
        if table.idle_ttl_s is not None:
            ttl_s = min(ttl_s, table.idle_ttl_s)
        version = table.next_version
        table.next_version += 1
        if entry is None:
            table.entries[skey] = _Entry(data, version, now + ttl_s)
            if len(table.entries) > table.max_entries:
                table.entries.popitem(last=False)
                table.evictions += 1
        else:
            entry.data = data
            entry.version = version
            entry.expires_at = now + ttl_s
            table.entries.move_to_end(skey)
        table.sweep(now)
        self._observer.on_operation(self._name, "cas", time.perf_counter() - started, OpOutcome.OK)
        return version

    async def delete(self, key: str) -> None:
        """Remove ``key`` if present."""
        self._table.entries.pop(storage_key(self._prefix, key), None)

    async def approx_len(self) -> int | None:
        """Entries in the table (all prefix views), expired-but-unswept ones included."""
        return len(self._table.entries)

    def stats(self) -> MemoryStoreStats:
        """Return the table's counters."""
        table = self._table
        return MemoryStoreStats(
            entries=len(table.entries),
            evictions=table.evictions,
            expirations=table.expirations,
            sweep_checks=table.sweep_checks,
        )

    def clear(self) -> None:
        """Drop every entry of the table (all prefix views). Versions keep increasing."""
        self._table.entries.clear()

    async def close(self) -> None:
        """Nothing to release; present for the protocol."""
