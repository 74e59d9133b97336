"""ProcessReplayRecorder and the writer process: same records as in-process, losses counted."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from replay_builders import facts, make_config
from test_replay_recorder import CountingObserver

from saar.policy import ResponseFacts, decide
from saar.replay.config import ReplayConfig, ReplayConfigError
from saar.replay.process import ProcessReplayRecorder
from saar.replay.record import build_record, response_record
from saar.replay.recorder import WRITER_THREAD_NAME, DropReason
from saar.replay.store import SqliteReplayStore
from saar.replay.writer import (
    KIND_DECISION,
    KIND_DROPPED,
    KIND_HELLO,
    KIND_RESPONSE,
    KIND_WRITTEN,
    WRITER_NICE,
    Hello,
    encode_frame,
    serve,
    split_frames,
)


def _decision(i: int):
    f = facts(f"r{i:05d}", tool_result_ids=("call-a",), previous_response_id="resp-1")
    decision, _ = decide(None, f, make_config(), 1000.0 + i)
    return decision, f


def _wait(predicate, within_s: float = 10.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


async def _until(predicate, within_s: float = 10.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.02)
    return predicate()


async def test_process_writer_stores_what_the_thread_writer_would(tmp_path: Path) -> None:
    """Decisions and responses cross the pipe intact: the stored rows equal build_record's."""
    observer = CountingObserver()
    config = ReplayConfig(path=str(tmp_path / "r.db"), flush_interval_ms=20)
    now = time.time()  # not an old time: retention would prune it
    recorder = ProcessReplayRecorder(config, observer=observer, clock=lambda: now)
    recorder.start()
    pairs = [_decision(i) for i in range(30)]
    for decision, f in pairs:
        assert recorder.submit(decision, f, latency_s=0.002)
    response = ResponseFacts(pairs[0][0].replay_id, 200, cached_tokens=5, tool_call_ids=("c",))
    assert recorder.record_response(response)
    assert await recorder.flush(10)
    await recorder.close()
    store = SqliteReplayStore(config.path)
    assert 30 == store.count()
    for decision, f in pairs[1:]:
        expected = build_record(decision, f, at=now, latency_ms=2.0)
        assert expected == store.get(decision.replay_id)
    first = store.get(pairs[0][0].replay_id)
    assert response_record(response, at=now) == first.response
    assert 31 == recorder.stats.written == sum(observer.batches)
    assert 31 == recorder.stats.enqueued == observer.enqueued
    assert {} == recorder.stats.dropped
    assert [False] == observer.starts


async def test_writer_process_is_named_and_exits_with_the_recorder(tmp_path: Path) -> None:
    """ps shows the writer as saar-replay at a lower priority; close() leaves no process."""
    recorder = ProcessReplayRecorder(ReplayConfig(path=str(tmp_path / "r.db")))
    recorder.start()
    assert await recorder.flush(10)
    pid = recorder.pid
    assert pid is not None
    assert WRITER_THREAD_NAME == Path(f"/proc/{pid}/comm").read_text().strip()
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    assert os.getpriority(os.PRIO_PROCESS, 0) + WRITER_NICE == int(stat[16])  # nice
    await recorder.close()
    assert recorder.pid is None
    assert not Path(f"/proc/{pid}").exists()


async def test_a_killed_writer_is_replaced_and_its_losses_counted(tmp_path: Path) -> None:
    """SIGKILL on the writer: what it held counts as writer_exited, a new one takes over."""
    observer = CountingObserver()
    config = ReplayConfig(path=str(tmp_path / "r.db"), flush_interval_ms=10_000)
    recorder = ProcessReplayRecorder(config, observer=observer)
    recorder.start()
    assert await recorder.flush(10)  # the writer is up
    first = recorder.pid
    for i in range(5):
        recorder.submit(*_decision(i))
    recorder._pump()  # handed over now, not committed: the writer batches every 10 s
    assert 0 == recorder.queue_depth()
    await asyncio.sleep(0.2)  # read by the writer, waiting in its queue
    os.kill(first, signal.SIGKILL)
    assert await _until(lambda: recorder.stats.dropped.get(DropReason.WRITER_EXITED) == 5)
    assert await _until(lambda: recorder.pid not in (None, first))
    recorder.submit(*_decision(9))
    assert await recorder.flush(10)
    await recorder.close()
    assert [False, True] == observer.starts
    assert 1 == recorder.stats.restarts
    assert 5 == observer.dropped[DropReason.WRITER_EXITED]
    assert 1 == SqliteReplayStore(config.path).count()


async def test_a_writer_that_never_reads_costs_the_request_path_nothing(tmp_path: Path) -> None:
    """A wedged writer: enqueues past queue_size drop at once, close() kills it in time."""
    never_reads = [sys.executable, "-c", "import time; time.sleep(60)"]
    config = ReplayConfig(
        path=str(tmp_path / "r.db"), queue_size=500, batch_size=10, flush_interval_ms=5
    )
    recorder = ProcessReplayRecorder(config, command=never_reads)
    recorder.start()
    pid = recorder.pid
    accepted = 0
    for i in range(1500):  # more than the 1 MiB pipe and the queue hold together
        started = time.perf_counter()
        accepted += recorder.submit(*_decision(i % 50))
        assert time.perf_counter() - started < 0.05
        if i % 100 == 0:
            await asyncio.sleep(0.01)  # let the timer hand frames to the pipe
    assert recorder.stats.dropped[DropReason.QUEUE_FULL] > 0
    assert 1500 == accepted + recorder.stats.dropped[DropReason.QUEUE_FULL]
    assert await recorder.flush(0.3) is False  # nobody confirms it
    started = time.perf_counter()
    await recorder.close(grace_s=0.5)
    assert time.perf_counter() - started < 10
    assert pid is not None and not Path(f"/proc/{pid}").exists()
    assert 1500 == sum(recorder.stats.dropped.values())  # every one accounted for


async def test_a_writer_that_cannot_start_loses_nothing_silently(tmp_path: Path) -> None:
    """No writer binary: items wait, flush() says False, close() counts them."""
    config = ReplayConfig(path=str(tmp_path / "r.db"), flush_interval_ms=5)
    recorder = ProcessReplayRecorder(config, command=[str(tmp_path / "missing")])
    recorder.start()
    for i in range(3):
        assert recorder.submit(*_decision(i))
    assert await recorder.flush(0.3) is False
    await recorder.close(grace_s=1.0)
    assert {DropReason.WRITER_EXITED: 3} == recorder.stats.dropped


def test_writer_outlives_a_killed_server_long_enough_to_commit(tmp_path: Path) -> None:
    """SIGKILL on the serving process: the writer sees end of file, commits, and exits."""
    db = tmp_path / "r.db"
    script = textwrap.dedent(
        f"""
        import asyncio, sys, time
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from replay_builders import facts, make_config
        from saar.observability.logging import configure_logging
        from saar.policy import decide
        from saar.replay.config import ReplayConfig
        from saar.replay.process import ProcessReplayRecorder
        configure_logging("warning")  # stdout carries the pid only

        async def main():
            recorder = ProcessReplayRecorder(
                ReplayConfig(path={str(db)!r}, flush_interval_ms=20)
            )
            recorder.start()
            for i in range(8):
                f = facts(f"k{{i}}")
                recorder.submit(decide(None, f, make_config(), time.time())[0], f)
            while recorder.queue_depth():
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.1)
            print(recorder.pid, flush=True)
            time.sleep(60)  # blocks the loop: nothing more is handed over

        asyncio.run(main())
        """
    )
    server = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        writer_pid = int(server.stdout.readline())
        server.kill()
        server.wait(10)
    finally:
        server.kill()

    def gone() -> bool:
        try:
            state = Path(f"/proc/{writer_pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        return state == "Z"  # exited, not yet reaped by whoever adopted it

    assert _wait(gone)
    assert 8 == SqliteReplayStore(db).count()


def _frames(*frames: bytearray) -> io.BytesIO:
    return io.BytesIO(b"".join(frames))


def _reports(out: io.BytesIO) -> list[tuple[int, bytes]]:
    buf = bytearray(out.getvalue())
    reports = split_frames(buf)
    assert not buf  # nothing but whole frames
    return reports


def test_a_bad_frame_is_dropped_and_its_neighbours_written(tmp_path: Path) -> None:
    """One frame that does not decode is reported as encode_error; the rest is stored."""
    config = ReplayConfig(path=str(tmp_path / "r.db"), flush_interval_ms=1)
    (d1, f1), (d2, f2) = _decision(1), _decision(2)
    now = time.time()
    stdin = _frames(
        encode_frame(KIND_HELLO, Hello(config)),
        encode_frame(KIND_DECISION, (d1, f1, now, None)),
        encode_frame(KIND_DECISION, ("not", "a", "decision")),
        encode_frame(KIND_RESPONSE, (ResponseFacts(d1.replay_id, 502), now)),
        encode_frame(KIND_DECISION, (d2, f2, now, None)),
    )
    out = io.BytesIO()
    assert 0 == serve(stdin, out)
    kinds = [kind for kind, _ in _reports(out)]
    assert 1 == kinds.count(KIND_DROPPED)
    assert KIND_WRITTEN in kinds
    store = SqliteReplayStore(config.path)
    assert 2 == store.count()
    assert 502 == store.get(d1.replay_id).response.status


def test_a_stream_cut_inside_a_frame_still_commits_what_came_before(tmp_path: Path) -> None:
    """A truncated stream ends the writer with code 1 after committing the whole frames."""
    config = ReplayConfig(path=str(tmp_path / "r.db"), flush_interval_ms=1)
    d1, f1 = _decision(1)
    whole = encode_frame(KIND_DECISION, (d1, f1, time.time(), None))
    stdin = _frames(encode_frame(KIND_HELLO, Hello(config)), whole, whole[:-3])
    assert 1 == serve(stdin, io.BytesIO())
    assert 1 == SqliteReplayStore(config.path).count()


def test_split_frames_keeps_a_partial_frame_and_refuses_an_impossible_length() -> None:
    """Whole frames are taken, a partial one waits; a length past the limit is an error."""
    whole = encode_frame(KIND_WRITTEN, (3, 0.5))
    buf = bytearray(whole + whole[:4])
    assert [(KIND_WRITTEN, bytes(whole[5:]))] == split_frames(buf)
    assert bytes(whole[:4]) == bytes(buf)
    with pytest.raises(ValueError, match="out of range"):
        split_frames(bytearray(b"\xff\xff\xff\xff\x01"))


def test_writer_setting_is_validated() -> None:
    """replay.writer accepts process and thread only, and says so."""
    assert "process" == ReplayConfig().writer
    with pytest.raises(ReplayConfigError, match=r"replay\.writer must be one of process, thread"):
        ReplayConfig.from_mapping({"replay": {"writer": "fork"}})


def test_an_item_that_cannot_be_encoded_is_counted_not_raised(tmp_path: Path) -> None:
    """A fact msgpack cannot carry drops that one item as encode_error; the call returns."""
    recorder = ProcessReplayRecorder(ReplayConfig(path=str(tmp_path / "r.db")))
    decision, f = _decision(1)
    odd = facts("odd", headers={"x-odd": object()})
    assert recorder.submit(decision, odd) is False
    assert recorder.submit(decision, f) is True
    assert {DropReason.ENCODE_ERROR: 1} == recorder.stats.dropped
    assert 1 == recorder.queue_depth()
