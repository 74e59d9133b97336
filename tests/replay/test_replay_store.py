"""SqliteReplayStore: round trip, response merge, feedback, retention, WAL concurrency."""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import replace
from pathlib import Path

import msgspec
import pytest
from replay_builders import Run, facts, make_config

from saar.policy import ResponseFacts, decide
from saar.replay.record import (
    Outcome,
    build_record,
    decode_record,
    encode_record,
    handle_hash,
    response_record,
)
from saar.replay.store import SqliteReplayStore


@pytest.fixture
def store(tmp_path: Path) -> SqliteReplayStore:
    s = SqliteReplayStore(tmp_path / "replay.sqlite3")
    yield s
    s.close()


def _record(request_id: str = "r1", at: float = 1000.0, **fields: object):
    config = make_config()
    f = facts(request_id, **fields)
    decision, _ = decide(None, f, config, at)
    return build_record(decision, f, at=at)


def test_record_round_trip_keeps_facts_and_trace(store: SqliteReplayStore) -> None:
    """A stored record reads back equal, and rebuilds the facts it was made from (minus text)."""
    f = facts("r1", tool_result_ids=("call_1",), has_tools=True, turn_index=3)
    decision, _ = decide(None, f, make_config(), 1000.0)
    record = build_record(decision, f, at=1000.0, latency_ms=0.2)
    store.write([record], [])
    back = store.get("r1")
    assert back == record
    assert decode_record(encode_record(record)) == record
    rebuilt = back.to_facts()
    assert rebuilt == replace(f, last_user_text="", tool_result_ids=(handle_hash("call_1"),))
    assert back.decision.trace == decision.trace.to_dict()
    # Tool-call ids are stored hashed, never raw.
    assert "call_1" not in encode_record(record).decode()


def test_prompt_text_only_with_capture_prompts() -> None:
    """last_user_text is stored only when capture_prompts is on."""
    f = facts("r1", text="secret plan")
    decision, _ = decide(None, f, make_config(), 1000.0)
    assert build_record(decision, f, at=1.0).request.last_user_text is None
    assert b"secret" not in encode_record(build_record(decision, f, at=1.0))
    assert build_record(decision, f, at=1.0, capture_prompts=True).request.last_user_text == (
        "secret plan"
    )


def test_response_updates_merge_field_by_field(store: SqliteReplayStore) -> None:
    """Status first, usage later: the stored response holds both."""
    store.write([_record("r1")], [])
    store.write([], [("r1", response_record(ResponseFacts("r1", 200), at=1001.0))])
    usage = ResponseFacts(
        "r1",
        200,
        prompt_tokens=900,
        cached_tokens=800,
        completion_tokens=20,
        tool_call_ids=("call_9",),
        finish_reason="tool_calls",
    )
    store.write([], [("r1", response_record(usage, at=1002.0))])
    resp = store.get("r1").response
    assert (resp.status, resp.prompt_tokens, resp.cached_tokens, resp.completion_tokens) == (
        200,
        900,
        800,
        20,
    )
    assert resp.finish_reason == "tool_calls"
    assert len(resp.tool_call_ids) == 1


def test_a_record_written_again_with_its_response_merges_into_the_stored_one(
    store: SqliteReplayStore,
) -> None:
    """Records carrying responses in one batch: new ids insert both, a known id merges."""
    store.write([_record("old")], [])
    store.write([], [("old", response_record(ResponseFacts("old", 503), at=1001.0))])
    usage = ResponseFacts("old", 200, prompt_tokens=50, completion_tokens=7)
    again = _record("old").with_results(response_record(usage, at=1002.0), ())
    fresh = _record("new").with_results(response_record(ResponseFacts("new", 429), at=1003.0), ())
    store.write([again, fresh], [])
    old = store.get("old").response
    assert (old.status, old.prompt_tokens, old.completion_tokens) == (200, 50, 7)
    assert store.get("new").response.status == 429
    assert store.count() == 2


def test_response_for_unknown_record_is_ignored(store: SqliteReplayStore) -> None:
    """A response whose record was dropped does not fail the batch."""
    store.write([_record("r1")], [("nope", response_record(ResponseFacts("nope", 500), at=1.0))])
    assert store.count() == 1


def test_feedback_is_idempotent_per_key(store: SqliteReplayStore) -> None:
    """The same (replay_id, key) is stored once; the first value wins."""
    store.write([_record("r1")], [])
    _, created = store.add_outcome("r1", Outcome(key="k", kind="feedback", score=0.9, at=1.0))
    again, created_again = store.add_outcome(
        "r1", Outcome(key="k", kind="feedback", score=0.1, at=2.0)
    )
    store.add_outcome("r1", Outcome(key="k2", kind="feedback", score=0.5, at=3.0))
    assert (created, created_again) == (True, False)
    assert again.score == 0.9
    assert store.get("r1").feedback_score == pytest.approx(0.7)
    with pytest.raises(KeyError):
        store.add_outcome("missing", Outcome(key="k", kind="feedback", score=1.0))


def test_retention_by_age_and_rows(store: SqliteReplayStore) -> None:
    """Records older than the age limit go, then the oldest beyond max_rows."""
    store.write([_record(f"r{i}", at=1000.0 + i) for i in range(10)], [])
    store.add_outcome("r0", Outcome(key="k", kind="feedback", score=1.0, at=1.0))
    assert store.prune(now=1005.5, max_age_s=3.0, max_rows=None) == 3  # r0, r1, r2
    assert store.prune(now=1005.5, max_age_s=None, max_rows=4) == 3
    assert [r.replay_id for r in store.scan()] == ["r6", "r7", "r8", "r9"]
    assert store.count() == 4


def test_session_query_filters_conversation_and_orders_by_time(store: SqliteReplayStore) -> None:
    """session() returns one session's rows oldest first, optionally one conversation."""
    store.write(
        [
            _record("b", at=2.0),
            _record("a", at=1.0),
            _record("other", at=1.5, conversation_id="d" * 32),
            _record("x", at=1.2, session_id="z" * 32),
        ],
        [],
    )
    assert [r.replay_id for r in store.session("s" * 32)] == ["a", "other", "b"]
    assert [r.replay_id for r in store.session("s" * 32, "c" * 32)] == ["a", "b"]
    assert [r.replay_id for r in store.session("s" * 32, limit=2)] == ["other", "b"]


def test_scan_pages_in_time_order(store: SqliteReplayStore) -> None:
    """scan() yields every record once, in time order, across pages."""
    store.write([_record(f"r{i:04d}", at=float(i // 3)) for i in range(1203)], [])
    ids = [r.replay_id for r in store.scan()]
    assert ids == sorted(ids)
    assert len(ids) == 1203
    assert [r.replay_id for r in store.scan(since=400.0, until=400.0)] == [
        "r1200",
        "r1201",
        "r1202",
    ]


def test_wal_reader_reads_while_writer_writes(tmp_path: Path) -> None:
    """A second connection reads consistently while another thread commits batches."""
    path = tmp_path / "replay.sqlite3"
    writer = SqliteReplayStore(path)
    reader = SqliteReplayStore(path)
    run = Run(make_config())
    records = [run.turn() for _ in range(5)]
    stop = threading.Event()
    counts: list[int] = []

    def write() -> None:
        for i in range(200):
            writer.write([msgspec.structs.replace(records[i % 5], replay_id=f"w{i}")], [])
        stop.set()

    thread = threading.Thread(target=write)
    thread.start()
    while not stop.is_set():
        counts.append(reader.count())
    thread.join()
    assert journal_mode(path) == "wal"
    assert counts == sorted(counts)  # never goes backwards, never errors
    assert reader.count() == 200
    writer.close()
    reader.close()


def journal_mode(path: Path) -> str:
    with sqlite3.connect(path) as db:
        return str(db.execute("PRAGMA journal_mode").fetchone()[0])


def test_only_indexes_a_query_uses_exist_and_an_old_files_extra_index_is_dropped(
    tmp_path: Path,
) -> None:
    """Every index costs each insert a b-tree update: the writer keeps none that no query reads."""
    path = tmp_path / "old.sqlite3"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE records (replay_id TEXT PRIMARY KEY, ts REAL NOT NULL, session_id TEXT, "
        "conversation_id TEXT, protected_key TEXT, body BLOB NOT NULL, response BLOB);"
        "CREATE INDEX records_key ON records (protected_key, ts);"
    )
    old.close()
    store = SqliteReplayStore(path)
    store.write([_record("r1", session_id="s1")], [])
    store.close()
    db = sqlite3.connect(path)
    names = {
        row[0]
        for row in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'records'"
        )
    }
    assert names == {"sqlite_autoindex_records_1", "records_ts", "records_session"}
    plans = {
        "session": "SELECT body FROM records WHERE session_id = ? ORDER BY ts DESC LIMIT 5",
        "scan": "SELECT body FROM records WHERE ts >= ? AND ts <= ? ORDER BY ts, replay_id",
        "get": "SELECT body FROM records WHERE replay_id = ?",
    }
    expected = {
        "session": "records_session",
        "scan": "records_ts",
        "get": "sqlite_autoindex_records_1",
    }
    for name, sql in plans.items():
        plan = " ".join(
            str(row[-1])
            for row in db.execute(f"EXPLAIN QUERY PLAN {sql}", (1, 2)[: sql.count("?")])
        )
        assert expected[name] in plan, (name, plan)
    db.close()
