"""Where replay records live: the ``ReplayStore`` port and its embedded SQLite adapter.

Theory of operation: ``ReplayStore`` is the port; ``SqliteReplayStore`` the embedded default
(one file, WAL journal so readers never block the writer and the writer never blocks readers).
A shared backend such as Postgres plugs in by implementing the same Protocol: ``write`` maps to
one transaction of ``INSERT ... ON CONFLICT DO NOTHING`` plus the response merges, ``session``
and ``scan`` to indexed range queries, ``add_outcome`` to ``INSERT ... ON CONFLICT DO NOTHING
RETURNING``; the recorder and every query above it only see the Protocol. (Not built: one
process per host writes its own file today.)

Rows: ``records`` holds the record's JSON (``body``), the merged response JSON, the columns
queries filter on (replay id, session, conversation, time) and the protected key. Only the
indexes a query uses exist (id, time, session): every insert updates each b-tree, and one
keyed by a hash lands on a random page. Files written by earlier builds carry
an unused ``records_key`` index on the protected key; it is dropped on open (it cost the writer
10-20 µs a record on a 60k-200k row file).
``outcomes`` holds feedback, one row per ``(replay_id, key)`` so a retried POST is idempotent.
All times are Unix seconds.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final, Protocol

from saar.replay.record import (
    Outcome,
    ReplayRecord,
    ResponseRecord,
    decode_record,
    encode_record,
)
from saar.wire.json import TypedDecoder, dumps

__all__ = ["ReplayStore", "SqliteReplayStore", "merge_response"]

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS records (
    replay_id TEXT PRIMARY KEY,
    ts REAL NOT NULL,
    session_id TEXT,
    conversation_id TEXT,
    protected_key TEXT,
    body BLOB NOT NULL,
    response BLOB
);
CREATE INDEX IF NOT EXISTS records_ts ON records (ts);
CREATE INDEX IF NOT EXISTS records_session ON records (session_id, ts);
DROP INDEX IF EXISTS records_key;
CREATE TABLE IF NOT EXISTS outcomes (
    replay_id TEXT NOT NULL,
    key TEXT NOT NULL,
    kind TEXT NOT NULL,
    score REAL,
    note TEXT,
    ts REAL NOT NULL,
    PRIMARY KEY (replay_id, key)
);
"""

_response_decoder: TypedDecoder[ResponseRecord] = TypedDecoder(ResponseRecord)


class ReplayStore(Protocol):
    """Storage of replay records; every method is blocking (call it off the event loop)."""

    def write(
        self, records: Sequence[ReplayRecord], responses: Sequence[tuple[str, ResponseRecord]]
    ) -> None:
        """Insert ``records`` and merge ``responses`` (by replay id) in one transaction."""
        ...

    def get(self, replay_id: str) -> ReplayRecord | None:
        """One record with its response and outcomes, or ``None``."""
        ...

    def session(
        self, session_id: str, conversation_id: str | None = None, limit: int = 1000
    ) -> list[ReplayRecord]:
        """A session's records (optionally one conversation), oldest first."""
        ...

    def scan(
        self, since: float | None = None, until: float | None = None
    ) -> Iterator[ReplayRecord]:
        """Every record in time order (for priors and re-evaluation)."""
        ...

    def add_outcome(self, replay_id: str, outcome: Outcome) -> tuple[Outcome, bool]:
        """Store ``outcome`` unless ``(replay_id, key)`` exists.

        Returns the stored row and whether it was created; ``KeyError`` for an unknown id.
        """
        ...

    def prune(self, now: float, max_age_s: float | None, max_rows: int | None) -> int:
        """Apply retention; return how many records were deleted."""
        ...

    def count(self) -> int:
        """Number of stored records."""
        ...

    def close(self) -> None:
        """Release the connection."""
        ...


def merge_response(old: ResponseRecord | None, new: ResponseRecord) -> ResponseRecord:
    """Merge a later response observation into an earlier one: non-null fields of ``new`` win.

    The response path reports in steps (status at response headers, usage and tool calls at the
    end of the body), so each step only fills what it knows.
    """
    if old is None:
        return new
    return ResponseRecord(
        status=new.status if new.status is not None else old.status,
        served_by=new.served_by or old.served_by,
        physical=new.physical or old.physical,
        response_id=new.response_id or old.response_id,
        tool_call_ids=new.tool_call_ids or old.tool_call_ids,
        finish_reason=new.finish_reason or old.finish_reason,
        prompt_tokens=new.prompt_tokens if new.prompt_tokens is not None else old.prompt_tokens,
        cached_tokens=new.cached_tokens if new.cached_tokens is not None else old.cached_tokens,
        completion_tokens=(
            new.completion_tokens if new.completion_tokens is not None else old.completion_tokens
        ),
        complete=new.complete if new.complete is not None else old.complete,
        at=new.at if new.at is not None else old.at,
    )


class SqliteReplayStore:
    """``ReplayStore`` on one SQLite file in WAL mode.

    One instance holds one connection guarded by a lock, so it may be shared by threads; the
    recorder's writer thread owns one instance and readers (CLI, admin endpoints) open their
    own. ``busy_timeout_ms`` bounds how long a call waits for another process's write lock.
    """

    def __init__(
        self, path: str | Path, *, busy_timeout_ms: int = 2000, readonly: bool = False
    ) -> None:
        self.path = Path(path)
        if readonly:
            uri = f"file:{self.path.resolve()}?mode=ro"
            self._db = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                str(self.path), check_same_thread=False, isolation_level=None
            )
        self._lock = threading.Lock()
        self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        if not readonly:
            self._db.execute("PRAGMA journal_mode = WAL")
            # NORMAL in WAL mode survives a process crash; a power cut may lose the last batch,
            # which is acceptable for diagnostics and halves the fsyncs.
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._db.executescript(_SCHEMA)

    def write(
        self, records: Sequence[ReplayRecord], responses: Sequence[tuple[str, ResponseRecord]]
    ) -> None:
        """Insert ``records`` and merge ``responses`` in one transaction (rolled back on error)."""
        # The body holds the decision only; a response or outcomes that come with a record
        # (an import, a test) go to their own column and table, so nothing is stored twice.
        rows = [
            (
                r.replay_id,
                r.time,
                r.session_id,
                r.conversation_id,
                r.protected_key,
                encode_record(r.with_results(None, ()) if r.response or r.outcomes else r),
                None if r.response is None else dumps(r.response),
            )
            for r in records
        ]
        # A record written with its response stores both in one INSERT; only a record that
        # already exists (an import, a retry) needs the response merged into the stored one.
        with_response = {r.replay_id: r.response for r in records if r.response is not None}
        merges = list(responses)
        outcomes = [
            (r.replay_id, o.key, o.kind, o.score, o.note, o.at) for r in records for o in r.outcomes
        ]
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                insert = (
                    "INSERT OR IGNORE INTO records (replay_id, ts, session_id, conversation_id, "
                    "protected_key, body, response) VALUES (?, ?, ?, ?, ?, ?, ?)"
                )
                before = db.total_changes
                db.executemany(insert, rows)
                if with_response and db.total_changes - before < len(rows):
                    # Some ids existed already (an import, a retry) and kept their row: merge
                    # every carried response. For a row inserted just now the merge is a no-op
                    # (its stored response is this one), so which rows were skipped need not be
                    # known; the common all-new batch stays one executemany.
                    merges.extend(with_response.items())
                if outcomes:
                    db.executemany(
                        "INSERT OR IGNORE INTO outcomes (replay_id, key, kind, score, note, ts) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        outcomes,
                    )
                for replay_id, response in merges:
                    row = db.execute(
                        "SELECT response FROM records WHERE replay_id = ?", (replay_id,)
                    ).fetchone()
                    if row is None:
                        continue  # the record was dropped or pruned: nothing to attach to
                    old = _response_decoder.decode(row[0]) if row[0] is not None else None
                    merged = merge_response(old, response)
                    db.execute(
                        "UPDATE records SET response = ? WHERE replay_id = ?",
                        (dumps(merged), replay_id),
                    )
                db.execute("COMMIT")
            except BaseException:
                # SQLite may already have rolled back (SQLITE_FULL does): a second ROLLBACK
                # would raise "no transaction is active" and hide the real error.
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise

    def get(self, replay_id: str) -> ReplayRecord | None:
        """One record with its response and outcomes, or ``None``."""
        with self._lock:
            row = self._db.execute(
                "SELECT replay_id, body, response FROM records WHERE replay_id = ?", (replay_id,)
            ).fetchone()
            if row is None:
                return None
            return self._attach([row])[0]

    def session(
        self, session_id: str, conversation_id: str | None = None, limit: int = 1000
    ) -> list[ReplayRecord]:
        """A session's records (optionally one conversation), oldest first."""
        sql = "SELECT replay_id, body, response FROM records WHERE session_id = ?"
        args: list[object] = [session_id]
        if conversation_id is not None:
            sql += " AND conversation_id = ?"
            args.append(conversation_id)
        # Newest ``limit`` rows, returned oldest first.
        sql += " ORDER BY ts DESC LIMIT ?"
        args.append(int(limit))
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
            records = self._attach(rows)
        return sorted(records, key=lambda r: (r.time, r.replay_id))

    def scan(
        self, since: float | None = None, until: float | None = None
    ) -> Iterator[ReplayRecord]:
        """Every record in time order, read in pages so a large file never sits in memory."""
        low = float("-inf") if since is None else since
        high = float("inf") if until is None else until
        sql = (
            "SELECT replay_id, body, response, ts FROM records WHERE ts >= ? AND ts <= ? "
            "ORDER BY ts, replay_id LIMIT 500"
        )
        args: tuple[object, ...] = (low, high)
        while True:
            with self._lock:
                rows = self._db.execute(sql, args).fetchall()
                page = self._attach([(r[0], r[1], r[2]) for r in rows])
            if not rows:
                return
            yield from page
            # Keyset pagination on (ts, replay_id): stable while the writer appends.
            last_id, last_ts = rows[-1][0], rows[-1][3]
            sql = (
                "SELECT replay_id, body, response, ts FROM records "
                "WHERE (ts > ? OR (ts = ? AND replay_id > ?)) AND ts <= ? "
                "ORDER BY ts, replay_id LIMIT 500"
            )
            args = (last_ts, last_ts, last_id, high)

    def add_outcome(self, replay_id: str, outcome: Outcome) -> tuple[Outcome, bool]:
        """Store ``outcome`` unless ``(replay_id, key)`` exists (idempotent retries)."""
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                if (
                    db.execute("SELECT 1 FROM records WHERE replay_id = ?", (replay_id,)).fetchone()
                    is None
                ):
                    raise KeyError(replay_id)
                cursor = db.execute(
                    "INSERT OR IGNORE INTO outcomes (replay_id, key, kind, score, note, ts) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (replay_id, outcome.key, outcome.kind, outcome.score, outcome.note, outcome.at),
                )
                created = cursor.rowcount == 1
                row = db.execute(
                    "SELECT key, kind, score, note, ts FROM outcomes "
                    "WHERE replay_id = ? AND key = ?",
                    (replay_id, outcome.key),
                ).fetchone()
                db.execute("COMMIT")
            except BaseException:
                # SQLite may already have rolled back (SQLITE_FULL does): a second ROLLBACK
                # would raise "no transaction is active" and hide the real error.
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        stored = Outcome(key=row[0], kind=row[1], score=row[2], note=row[3], at=row[4])
        return stored, created

    def prune(self, now: float, max_age_s: float | None, max_rows: int | None) -> int:
        """Delete records older than ``max_age_s`` and the oldest beyond ``max_rows``."""
        deleted = 0
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                if max_age_s is not None:
                    deleted += db.execute(
                        "DELETE FROM records WHERE ts < ?", (now - max_age_s,)
                    ).rowcount
                if max_rows is not None:
                    row = db.execute(
                        "SELECT ts FROM records ORDER BY ts DESC LIMIT 1 OFFSET ?",
                        (max(0, max_rows - 1),),
                    ).fetchone()
                    if row is not None:
                        deleted += db.execute(
                            "DELETE FROM records WHERE ts < ?", (row[0],)
                        ).rowcount
                if deleted:
                    db.execute(
                        "DELETE FROM outcomes WHERE NOT EXISTS "
                        "(SELECT 1 FROM records r WHERE r.replay_id = outcomes.replay_id)"
                    )
                db.execute("COMMIT")
            except BaseException:
                # SQLite may already have rolled back (SQLITE_FULL does): a second ROLLBACK
                # would raise "no transaction is active" and hide the real error.
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        return deleted

    def count(self) -> int:
        """Number of stored records."""
        with self._lock:
            row = self._db.execute("SELECT COUNT(*) FROM records").fetchone()
        return int(row[0])

    def checkpoint(self) -> None:
        """Fold the WAL back into the main file (run by the writer after retention)."""
        with self._lock:
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def close(self) -> None:
        """Release the connection."""
        with self._lock:
            self._db.close()

    def _attach(self, rows: Sequence[tuple[str, bytes, bytes | None]]) -> list[ReplayRecord]:
        # Caller holds the lock.
        if not rows:
            return []
        outcomes: dict[str, list[Outcome]] = {}
        ids = [row[0] for row in rows]
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for rid, key, kind, score, note, ts in self._db.execute(
                "SELECT replay_id, key, kind, score, note, ts FROM outcomes "
                f"WHERE replay_id IN ({marks}) ORDER BY ts, key",
                chunk,
            ):
                outcomes.setdefault(rid, []).append(
                    Outcome(key=key, kind=kind, score=score, note=note, at=ts)
                )
        result = []
        for rid, body, response in rows:
            record = decode_record(bytes(body))
            resp = _response_decoder.decode(bytes(response)) if response is not None else None
            result.append(record.with_results(resp, tuple(outcomes.get(rid, ()))))
        return result
