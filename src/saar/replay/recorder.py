"""The hot-path side of Router Replay: enqueue in O(1), write in batches on one thread.

Theory of operation (ARCHITECTURE "Nothing slow on the hot path"): ``submit(decision, facts)``
does three things only: compare the queue depth with its bound, append the *frozen*
``(Decision, RequestFacts, time)`` tuple to a ``collections.deque`` (``append`` is atomic
under the GIL) and tick a counter. It never blocks, never raises into the request, and
**never wakes the writer**: a wake-up per record costs a futex call and a GIL hand-off per
request, which cost the event loop ~10% of its throughput in the hot-path benchmark (replay
on vs off, bench/results/hotpath.md). When the queue is full the record is dropped and
counted (``queue_full``).

The writer thread sleeps for ``flush_interval_ms``, then drains everything queued in one go:
it builds the ``ReplayRecord`` s (the trace dict, hashing handles), folds each response that
arrived in the same batch into its record (one INSERT instead of an INSERT and an UPDATE),
and commits at most ``batch_size`` items per SQLite transaction. A decision whose response has
not arrived yet is held back for one more interval (once): under the default access-log
response path the status comes ~0.1-0.3 s after the decision, and holding the record lets it
be inserted together with its response instead of inserted and then merged (a SELECT, a
decode and an UPDATE per request). ``flush()`` and ``close()`` write everything held.
Between chunks of work it
yields the GIL (``time.sleep(0)``) so the event loop never waits a whole switch interval
behind it. Response-path updates go through the same queue, so a record is always inserted
before its response is merged. A database that is locked or a disk that is full makes the
batch fail: its records are counted as dropped with the reason, a warning is logged, and the
writer carries on. Retention runs on the same thread every ``retention_interval_s``.
``flush()`` and ``close()`` wake the writer at once.

Metrics: the recorder imports no metrics library; the lead passes a ``ReplayObserver`` and
reads ``queue_depth()`` from a gauge callback.
"""

from __future__ import annotations

import contextlib
import ctypes
import sqlite3
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Protocol

import structlog

from saar.policy.decision import Decision
from saar.policy.facts import RequestFacts, ResponseFacts
from saar.replay.config import ReplayConfig
from saar.replay.record import ReplayRecord, ResponseRecord, build_record, response_record
from saar.replay.store import ReplayStore, SqliteReplayStore, merge_response

__all__ = [
    "WRITER_THREAD_NAME",
    "DropReason",
    "NullObserver",
    "RecorderStats",
    "ReplayObserver",
    "ReplayRecorder",
    "name_os_thread",
]

_log = structlog.get_logger("saar.replay")


class DropReason:
    """Why a record (or response update) was not stored; the observer's label values."""

    QUEUE_FULL: Final = "queue_full"
    CLOSED: Final = "closed"
    DB_LOCKED: Final = "db_locked"
    DISK_FULL: Final = "disk_full"
    DB_ERROR: Final = "db_error"
    ENCODE_ERROR: Final = "encode_error"
    WRITER_EXITED: Final = "writer_exited"
    """The writer process died with the item handed to it (``replay.writer: process``)."""


class ReplayObserver(Protocol):
    """Metrics hooks, called from two threads: implementations must be thread-safe and cheap.

    ``on_enqueued`` and ``queue_full`` drops run on the hot path; the rest on the writer thread.
    """

    def on_enqueued(self) -> None:
        """One item entered the queue."""
        ...

    def on_dropped(self, reason: str) -> None:
        """One item was dropped for ``reason`` (a ``DropReason`` value)."""
        ...

    def on_written(self, n: int, seconds: float) -> None:
        """A batch of ``n`` items was committed in ``seconds``."""
        ...

    def on_writer_started(self, restart: bool) -> None:
        """The writer process started (``restart``: it replaces one that exited)."""
        ...


class NullObserver:
    """An observer that records nothing (the default)."""

    def on_enqueued(self) -> None:
        """Ignore."""

    def on_dropped(self, reason: str) -> None:
        """Ignore."""

    def on_written(self, n: int, seconds: float) -> None:
        """Ignore."""

    def on_writer_started(self, restart: bool) -> None:
        """Ignore."""


@dataclass(slots=True)
class RecorderStats:
    """The recorder's own counters (for tests and ``saar`` diagnostics)."""

    enqueued: int = 0
    written: int = 0
    batches: int = 0
    pruned: int = 0
    restarts: int = 0
    """Writer processes started to replace one that exited (``replay.writer: process``)."""
    dropped: dict[str, int] = field(default_factory=dict)

    @property
    def dropped_total(self) -> int:
        """All drops, every reason."""
        return sum(self.dropped.values())


class _Flush:
    __slots__ = ("event",)

    def __init__(self) -> None:
        self.event = threading.Event()


_STOP: Final = object()
WRITER_THREAD_NAME: Final = "saar-replay"
"""The writer's OS-level thread name: ``top -H``, ``ps -L`` and ``/proc/<pid>/task/*/comm``
show it, and the hot-path benchmark splits saar's CPU by it."""
_PR_SET_NAME: Final = 15
# Items built between two voluntary GIL releases on the writer thread.
_YIELD_EVERY: Final = 16


# SQLite result codes that mean "the file cannot grow": a full disk (SQLITE_FULL), or a write
# refused by the OS (IOERR_WRITE: ENOSPC on some filesystems, a quota, a file-size limit).
_DISK_FULL_CODES: Final = frozenset({"SQLITE_FULL", "SQLITE_IOERR_WRITE"})
_LOCKED_CODES: Final = frozenset({"SQLITE_BUSY", "SQLITE_LOCKED"})


def _classify(exc: sqlite3.Error) -> str:
    name = str(getattr(exc, "sqlite_errorname", ""))
    text = str(exc).lower()
    if name in _DISK_FULL_CODES or "full" in text:
        return DropReason.DISK_FULL
    if name.startswith(tuple(_LOCKED_CODES)) or "locked" in text or "busy" in text:
        return DropReason.DB_LOCKED
    return DropReason.DB_ERROR


class ReplayRecorder:
    """Queues decisions and responses on the hot path; one thread writes them to a store."""

    def __init__(
        self,
        store: ReplayStore,
        config: ReplayConfig | None = None,
        *,
        observer: ReplayObserver | None = None,
        clock: Callable[[], float] = time.time,
        yield_gil: bool = True,
    ) -> None:
        """Write to ``store``; ``yield_gil`` releases the GIL between chunks of a batch.

        The GIL hand-off is for an event loop in the same process; the writer process has
        none and skips the system call (~0.1 ms each on the development machine).
        """
        self._yield_gil = yield_gil
        self._store = store
        self._config = config if config is not None else ReplayConfig()
        self._observer: ReplayObserver = observer if observer is not None else NullObserver()
        self._clock = clock
        self._queue: deque[object] = deque()
        # Set only by flush() and close(): ordinary records never wake the writer.
        self._wake = threading.Event()
        self._max = self._config.queue_size
        self._capture = self._config.capture_prompts
        self._closed = False
        self._thread: threading.Thread | None = None
        self.stats = RecorderStats()
        # Decisions held back one interval for their response (writer thread only).
        self._held: list[object] = []
        self._next_prune = time.monotonic()

    @classmethod
    def from_config(
        cls,
        config: ReplayConfig,
        *,
        observer: ReplayObserver | None = None,
        yield_gil: bool = True,
    ) -> ReplayRecorder:
        """A recorder on the SQLite file ``config.path`` (not started)."""
        # A short busy timeout: the writer must not stall behind a long-running reader.
        return cls(
            SqliteReplayStore(config.path, busy_timeout_ms=1000),
            config,
            observer=observer,
            yield_gil=yield_gil,
        )

    @property
    def store(self) -> ReplayStore:
        """The store the writer thread writes to."""
        return self._store

    def start(self) -> None:
        """Start the writer thread (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="saar-replay-writer", daemon=True
            )
            self._thread.start()

    # -- hot path -------------------------------------------------------------------------

    def sink(self, decision: Decision, facts: RequestFacts) -> None:
        """``Router.add_sink`` receiver: enqueue one decision; O(1), never blocks or raises."""
        # ``submit`` inlined: this runs once per request on the event loop.
        if self._closed or len(self._queue) >= self._max:
            self._drop(DropReason.CLOSED if self._closed else DropReason.QUEUE_FULL)
            return
        self._queue.append((decision, facts, self._clock(), None))
        self.stats.enqueued += 1
        self._observer.on_enqueued()

    def submit(
        self,
        decision: Decision,
        facts: RequestFacts,
        *,
        latency_s: float | None = None,
        at: float | None = None,
    ) -> bool:
        """Enqueue one decision (with the decision latency when the caller knows it).

        ``at`` is when it was decided (default: now); the writer process passes the time the
        serving process stamped.
        """
        if self._closed:
            self._drop(DropReason.CLOSED)
            return False
        if len(self._queue) >= self._max:
            self._drop(DropReason.QUEUE_FULL)
            return False
        self._queue.append((decision, facts, self._clock() if at is None else at, latency_s))
        self.stats.enqueued += 1
        self._observer.on_enqueued()
        return True

    def record_response(self, response: ResponseFacts, *, at: float | None = None) -> bool:
        """Enqueue what the response path learned about ``response.request_id``.

        Call it as often as the response path learns something (status at response headers,
        usage and tool calls at the end of the body); the store merges non-null fields.
        ``at`` is when it was learned (default: now).
        """
        if self._closed:
            self._drop(DropReason.CLOSED)
            return False
        if len(self._queue) >= self._max:
            self._drop(DropReason.QUEUE_FULL)
            return False
        self._queue.append((response, self._clock() if at is None else at))
        self.stats.enqueued += 1
        self._observer.on_enqueued()
        return True

    def queue_depth(self) -> int:
        """Items waiting for the writer (for a gauge)."""
        return len(self._queue)

    # -- control --------------------------------------------------------------------------

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything enqueued before this call is committed (or dropped)."""
        if self._thread is None or not self._thread.is_alive():
            return False
        marker = _Flush()
        self._queue.append(marker)
        self._wake.set()
        return marker.event.wait(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Stop accepting, write what is queued, stop the thread and close the store."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None and self._thread.is_alive():
            self._queue.append(_STOP)
            self._wake.set()
            self._thread.join(timeout)
        else:  # never started (or run by a writer process without its thread)
            self.drain(final=True)
        self._store.close()

    # -- writer thread --------------------------------------------------------------------

    def _drop(self, reason: str, n: int = 1) -> None:
        dropped = self.stats.dropped
        dropped[reason] = dropped.get(reason, 0) + n
        for _ in range(n):
            self._observer.on_dropped(reason)

    def _run(self) -> None:
        name_os_thread(WRITER_THREAD_NAME)
        config = self._config
        interval = config.flush_interval_ms / 1000.0
        stopping = False
        while not stopping:
            # Sleep a flush interval (or until flush()/close()), then take everything queued.
            self._wake.wait(max(0.0, min(interval, self._next_prune - time.monotonic())))
            self._wake.clear()
            stopping = self.drain()

    def drain(self, *, final: bool = False) -> bool:
        """Write what is queued now, on the calling thread; True once a ``close`` was queued.

        The writer thread calls it every interval; a writer process that runs the recorder
        without its thread (``saar.replay.writer``) calls it itself. ``final`` also writes the
        decisions held back for their responses (as a ``flush`` does). Retention runs here
        when it is due.
        """
        pending = self._queue
        stopping = False
        batch: list[object] = []
        flushes: list[_Flush] = []
        while pending:
            item = pending.popleft()
            if item is _STOP:
                stopping = True
            elif isinstance(item, _Flush):
                flushes.append(item)
            else:
                batch.append(item)
        batch = self._hold_unanswered(batch, final=final or stopping or bool(flushes))
        batch_size = self._config.batch_size
        for start in range(0, len(batch), batch_size):
            self._write(batch[start : start + batch_size])
        for marker in flushes:
            marker.event.set()
        if time.monotonic() >= self._next_prune:
            self._prune()
            self._next_prune = time.monotonic() + self._config.retention_interval_s
        return stopping

    def _hold_unanswered(self, batch: list[object], *, final: bool) -> list[object]:
        """Put last round's held decisions first; hold this round's unanswered ones back."""
        held = self._held
        self._held = []
        if final:
            return held + batch
        answered = {
            item[0].request_id
            for item in batch
            if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], ResponseFacts)
        }
        keep: list[object] = []
        for item in batch:
            if (
                isinstance(item, tuple)
                and len(item) == 4
                and isinstance(item[0], Decision)
                and item[0].replay_id not in answered
            ):
                self._held.append(item)
            else:
                keep.append(item)
        # Held items come first: a record is always built before a response merged into it.
        return held + keep

    def _write(self, items: list[object]) -> None:
        records: list[ReplayRecord] = []
        responses: list[tuple[str, ResponseRecord]] = []
        by_id: dict[str, int] = {}
        merged = 0
        capture = self._capture
        for i, item in enumerate(items):
            if self._yield_gil and i and i % _YIELD_EVERY == 0:
                time.sleep(0)  # hand the GIL to the event loop between chunks of work
            try:
                if isinstance(item, tuple) and len(item) == 4:
                    decision, facts, at, latency = item
                    record = build_record(
                        decision,
                        facts,
                        at=at,
                        latency_ms=None if latency is None else latency * 1000.0,
                        capture_prompts=capture,
                    )
                    by_id[record.replay_id] = len(records)
                    records.append(record)
                elif isinstance(item, tuple) and len(item) == 2:
                    response, at = item
                    stored = response_record(response, at=at)
                    index = by_id.get(response.request_id)
                    if index is None:
                        responses.append((response.request_id, stored))
                    else:
                        # Its record is in this batch: store them together (no UPDATE).
                        record = records[index]
                        records[index] = record.with_results(
                            merge_response(record.response, stored), record.outcomes
                        )
                        merged += 1
            except Exception:  # a record that cannot be built must not stop the writer
                self._drop(DropReason.ENCODE_ERROR)
                _log.exception("replay_encode_error")
        n = len(records) + len(responses) + merged
        if n == 0:
            return
        started = time.perf_counter()
        try:
            self._store.write(records, responses)
        except sqlite3.Error as exc:
            reason = _classify(exc)
            self._drop(reason, n)
            _log.warning("replay_write_failed", reason=reason, dropped=n, error=str(exc))
            return
        except Exception as exc:
            self._drop(DropReason.DB_ERROR, n)
            _log.warning(
                "replay_write_failed", reason=DropReason.DB_ERROR, dropped=n, error=repr(exc)
            )
            return
        seconds = time.perf_counter() - started
        self.stats.written += n
        self.stats.batches += 1
        self._observer.on_written(n, seconds)

    def _prune(self) -> None:
        config = self._config
        if config.retention_seconds is None and config.max_rows is None:
            return
        try:
            self.stats.pruned += self._store.prune(
                self._clock(), config.retention_seconds, config.max_rows
            )
            checkpoint = getattr(self._store, "checkpoint", None)
            if checkpoint is not None:
                checkpoint()
        except sqlite3.Error as exc:
            _log.warning("replay_retention_failed", error=str(exc))


def name_os_thread(name: str) -> None:
    """Give the calling thread ``name`` at the OS level (Linux; at most 15 bytes are kept).

    Python names threads for itself only; without this every saar thread shows as
    ``python`` in ``top -H``.
    """
    if sys.platform != "linux":
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_NAME, name.encode()[:15], 0, 0, 0)
