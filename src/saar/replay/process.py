"""``ProcessReplayRecorder``: the serving side of a replay writer that runs in its own process.

Theory of operation (docs/design/0006): in-process, the replay writer thread cost the event loop
far more than its own CPU. Its Python work (the record, the trace dict, JSON: ~35 µs of GIL per
decision) ran under the loop's GIL, and worse, a Python thread that wants the GIL while the loop
runs is woken on *every* GIL release of the loop (each system call) until it wins one: measured
in-process, one thread that merely wakes five times a second made the loop thread switch ~600
times a second and cost it 30-80 µs of CPU per request. So nothing here is a thread:

* the loop encodes each decision and response into one msgpack frame (~5 µs, in C; the frame
  is a ``bytearray``, which the garbage collector does not track) and appends it to a deque;
* every ``flush_interval_ms`` a loop timer joins the queued frames and writes them to the writer
  process's stdin, non-blocking: what the pipe (1 MiB) cannot take now is written when
  ``add_writer`` says it can, and meanwhile new frames wait in the deque, bounded by
  ``queue_size`` (past it they drop as ``queue_full``);
* the writer's reports (committed batches, drops, flush answers) arrive on its stdout, which
  ``add_reader`` watches, and become ``stats`` and observer calls (the Prometheus metrics).

The writer process (``saar.replay.writer``) runs the ordinary ``ReplayRecorder`` on what it
decodes, so batching, holding a decision for its response, retention and drop accounting are
the code the in-process writer runs.

Failure handling: a writer that exits (crash, OOM kill) is logged and started again after a
back-off (0.5 s doubling to 30 s, reset by its first committed batch). Items handed to a writer
that died with them count as dropped (``writer_exited``): the recorder counts what it handed to
each writer and what that writer reported written or dropped. While no writer runs, items wait
in the deque. All methods run on the event loop thread (the router calls ``submit`` and
``record_response`` there).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import os
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

import msgspec
import structlog

from saar.policy.decision import Decision
from saar.policy.facts import RequestFacts, ResponseFacts
from saar.replay.config import ReplayConfig
from saar.replay.recorder import DropReason, NullObserver, RecorderStats, ReplayObserver
from saar.replay.writer import (
    KIND_DECISION,
    KIND_DROPPED,
    KIND_FLUSH,
    KIND_FLUSHED,
    KIND_HELLO,
    KIND_RESPONSE,
    KIND_WRITTEN,
    Hello,
    encode_frame,
    split_frames,
)

__all__ = ["WRITER_COMMAND", "ProcessReplayRecorder"]

_log = structlog.get_logger("saar.replay")

WRITER_COMMAND: Final = (sys.executable, "-m", "saar.replay.writer")
"""How the writer process is started: the serving interpreter, so it runs the same code."""

_MIN_BACKOFF_S: Final = 0.5
_MAX_BACKOFF_S: Final = 30.0
# Linux F_SETPIPE_SZ: a 1 MiB pipe takes a whole interval's frames at ~2,000 decisions/s in one
# write (the default 64 KiB takes ~25 decisions).
_F_SETPIPE_SZ: Final = 1031
_PIPE_BYTES: Final = 1 << 20
_READ_BYTES: Final = 1 << 16

_WRITTEN: Final = msgspec.msgpack.Decoder(tuple[int, float])
_DROPPED: Final = msgspec.msgpack.Decoder(tuple[str, int])
_FLUSHED: Final = msgspec.msgpack.Decoder(tuple[int, bool])


class _Flush:
    """A flush request waiting in the frame queue for its turn."""

    __slots__ = ("future",)

    def __init__(self, future: asyncio.Future[bool]) -> None:
        self.future = future

    def answer(self, ok: bool) -> None:
        if not self.future.done():
            self.future.set_result(ok)


@dataclass(slots=True, eq=False)
class _Writer:
    """One writer process and what is in flight to and from it."""

    proc: subprocess.Popen[bytes]
    stdin: int
    stdout: int
    outbuf: memoryview | None = None
    """Bytes handed over but not yet taken by the pipe."""
    writable_watch: bool = False
    inbuf: bytearray = field(default_factory=bytearray)
    flushes: dict[int, _Flush] = field(default_factory=dict)
    sent: int = 0
    """Items handed to this writer."""
    accounted: int = 0
    """Items it reported written or dropped; ``sent - accounted`` die with it."""
    lost: bool = False
    gone: asyncio.Future[None] | None = None
    """Resolved once its reports ended (it exited or was given up on)."""


class ProcessReplayRecorder:
    """Queues encoded decisions and responses; a child process builds and writes the records."""

    def __init__(
        self,
        config: ReplayConfig,
        *,
        observer: ReplayObserver | None = None,
        clock: Callable[[], float] = time.time,
        command: Sequence[str] = WRITER_COMMAND,
        log_level: str = "info",
        log_json: bool = True,
    ) -> None:
        self._config = config
        self._observer: ReplayObserver = observer if observer is not None else NullObserver()
        self._clock = clock
        self._command = list(command)
        self._hello = bytes(encode_frame(KIND_HELLO, Hello(config, log_level, log_json)))
        self._frames: deque[bytearray | _Flush] = deque()
        self._queued = 0  # decisions and responses in _frames
        self._max = config.queue_size
        self._interval = config.flush_interval_ms / 1000.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writer: _Writer | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._restart: asyncio.TimerHandle | None = None
        self._closed = False
        self._tokens = itertools.count(1)
        self._backoff = _MIN_BACKOFF_S
        self._starts = 0
        self._reaping: set[asyncio.Task[None]] = set()
        self.stats = RecorderStats()

    @classmethod
    def from_config(
        cls, config: ReplayConfig, *, observer: ReplayObserver | None = None
    ) -> ProcessReplayRecorder:
        """A recorder whose writer process writes the SQLite file ``config.path`` (not started)."""
        from saar.observability.logging import logging_settings  # noqa: PLC0415 - no cycle

        level, json = logging_settings()
        return cls(config, observer=observer, log_level=level, log_json=json)

    @property
    def pid(self) -> int | None:
        """The running writer process's pid (``None`` when none runs)."""
        writer = self._writer
        return writer.proc.pid if writer is not None and not writer.lost else None

    def start(self) -> None:
        """Start the writer process and the flush timer; call it on the running loop."""
        if self._loop is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._spawn()
        self._timer = self._loop.call_later(self._interval, self._tick)

    # -- hot path -------------------------------------------------------------------------

    def submit(
        self, decision: Decision, facts: RequestFacts, *, latency_s: float | None = None
    ) -> bool:
        """Enqueue one decision: one msgpack frame, O(1), never blocks or raises."""
        return self._enqueue(KIND_DECISION, (decision, facts, self._clock(), latency_s))

    def record_response(self, response: ResponseFacts) -> bool:
        """Enqueue what the response path learned about ``response.request_id``."""
        return self._enqueue(KIND_RESPONSE, (response, self._clock()))

    def _enqueue(self, kind: int, body: tuple[object, ...]) -> bool:
        if self._closed or self._queued >= self._max:
            self._drop(DropReason.CLOSED if self._closed else DropReason.QUEUE_FULL)
            return False
        try:
            frame = encode_frame(kind, body)
        except Exception:  # an item that cannot be encoded must not fail the request
            self._drop(DropReason.ENCODE_ERROR)
            _log.exception("replay_encode_error")
            return False
        self._frames.append(frame)
        self._queued += 1
        self.stats.enqueued += 1
        self._observer.on_enqueued()
        return True

    def queue_depth(self) -> int:
        """Items waiting in this process for the writer (for a gauge)."""
        return self._queued

    # -- control --------------------------------------------------------------------------

    async def flush(self, within_s: float = 5.0) -> bool:
        """Wait until everything enqueued before this call is committed (or dropped).

        False when the writer did not confirm within ``within_s`` (not started, closed,
        restarting).
        """
        if self._closed or self._loop is None:
            return False
        marker = _Flush(self._loop.create_future())
        self._frames.append(marker)
        self._pump()
        try:
            return await asyncio.wait_for(asyncio.shield(marker.future), within_s)
        except TimeoutError:
            return False

    async def close(self, grace_s: float = 5.0) -> None:
        """Stop accepting, hand the writer what is queued, wait for it to commit and exit.

        A writer that has not exited after ``grace_s`` is killed (what it held counts as
        ``writer_exited``).
        """
        if self._closed:
            return
        self._closed = True
        deadline = time.monotonic() + grace_s
        for handle in (self._timer, self._restart):
            if handle is not None:
                handle.cancel()
        writer = self._writer
        if writer is not None and not writer.lost:
            self._pump()
            while (writer.outbuf is not None or self._frames) and not writer.lost:
                if time.monotonic() >= deadline:
                    break
                await asyncio.sleep(0.005)  # the pipe drains as the writer reads
                self._pump()
            self._end_input(writer)  # end of file: the writer commits what it holds, exits
            if writer.gone is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        asyncio.shield(writer.gone), max(0.05, deadline - time.monotonic())
                    )
            if not writer.lost:
                _log.warning("replay_writer_killed", pid=writer.proc.pid)
                self._lose(writer)
        # Whatever never reached a writer.
        self._drop(DropReason.WRITER_EXITED, self._queued)
        for item in self._frames:
            if isinstance(item, _Flush):
                item.answer(False)
        self._frames.clear()
        self._queued = 0
        if writer is not None:
            await self._reap(writer, max(0.05, deadline - time.monotonic()))

    # -- internals ------------------------------------------------------------------------

    def _drop(self, reason: str, n: int = 1) -> None:
        if n <= 0:
            return
        dropped = self.stats.dropped
        dropped[reason] = dropped.get(reason, 0) + n
        for _ in range(n):
            self._observer.on_dropped(reason)

    def _tick(self) -> None:
        assert self._loop is not None
        try:
            self._pump()
        except Exception:  # a bug here must not stop the timer: records would pile up
            _log.exception("replay_pump_error")
        finally:
            self._timer = self._loop.call_later(self._interval, self._tick)

    def _spawn(self) -> None:
        """Start a writer process (on the loop: ~2 ms of fork and exec, at start and restarts)."""
        loop = self._loop
        assert loop is not None
        self._restart = None
        restart = self._starts > 0
        self._starts += 1
        try:
            proc = subprocess.Popen(
                self._command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True
            )
        except OSError as exc:
            _log.error("replay_writer_start_failed", error=str(exc))
            self._retry_later()
            return
        assert proc.stdin is not None and proc.stdout is not None
        stdin, stdout = proc.stdin.fileno(), proc.stdout.fileno()
        os.set_blocking(stdin, False)
        os.set_blocking(stdout, False)
        with contextlib.suppress(OSError):
            fcntl.fcntl(stdin, _F_SETPIPE_SZ, _PIPE_BYTES)
        writer = _Writer(proc, stdin, stdout, outbuf=memoryview(self._hello))
        writer.gone = loop.create_future()
        self._writer = writer
        loop.add_reader(stdout, self._on_reports, writer)
        self._observer.on_writer_started(restart)
        if restart:
            self.stats.restarts += 1
        _log.info("replay_writer_started", pid=proc.pid, restart=restart)
        self._pump()

    def _retry_later(self) -> None:
        if self._closed or self._loop is None:
            return
        self._restart = self._loop.call_later(self._backoff, self._spawn)
        self._backoff = min(_MAX_BACKOFF_S, self._backoff * 2.0)

    def _pump(self) -> None:
        """Hand queued frames to the writer as far as its pipe takes them, never blocking."""
        writer = self._writer
        if writer is None or writer.lost or writer.stdin < 0:
            return
        while True:
            if writer.outbuf is None:
                if not self._frames:
                    break
                writer.outbuf = memoryview(self._take(writer))
            try:
                written = os.write(writer.stdin, writer.outbuf)
            except BlockingIOError:
                written = 0
            except OSError as exc:  # BrokenPipeError: the writer is gone
                _log.warning("replay_writer_unreachable", pid=writer.proc.pid, error=str(exc))
                self._lose(writer)
                return
            rest = writer.outbuf[written:]
            if rest:
                writer.outbuf = rest
                break
            writer.outbuf = None
        want = writer.outbuf is not None
        if want != writer.writable_watch and self._loop is not None:
            if want:
                self._loop.add_writer(writer.stdin, self._pump)
            else:
                self._loop.remove_writer(writer.stdin)
            writer.writable_watch = want

    def _take(self, writer: _Writer) -> bytes:
        """Everything queued as one buffer; flush requests get their tokens here."""
        parts: list[bytes | bytearray] = []
        frames = self._frames
        items = 0
        while frames:
            item = frames.popleft()
            if isinstance(item, _Flush):
                token = next(self._tokens)
                writer.flushes[token] = item
                parts.append(encode_frame(KIND_FLUSH, token))
            else:
                parts.append(item)
                items += 1
        self._queued -= items
        writer.sent += items
        return b"".join(parts)

    def _on_reports(self, writer: _Writer) -> None:
        try:
            data = os.read(writer.stdout, _READ_BYTES)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._lose(writer)
            return
        writer.inbuf += data
        try:
            for kind, body in split_frames(writer.inbuf):
                self._report(writer, kind, body)
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
            _log.error("replay_writer_report_broken", error=str(exc))
            self._lose(writer)

    def _report(self, writer: _Writer, kind: int, body: bytes) -> None:
        if kind == KIND_WRITTEN:
            n, seconds = _WRITTEN.decode(body)
            self.stats.written += n
            self.stats.batches += 1
            writer.accounted += n
            self._backoff = _MIN_BACKOFF_S  # it works: a later failure retries soon
            self._observer.on_written(n, seconds)
        elif kind == KIND_DROPPED:
            reason, n = _DROPPED.decode(body)
            writer.accounted += n
            self._drop(reason, n)
        elif kind == KIND_FLUSHED:
            token, ok = _FLUSHED.decode(body)
            marker = writer.flushes.pop(token, None)
            if marker is not None:
                marker.answer(ok)
        else:
            msg = f"unknown report kind {kind}"
            raise ValueError(msg)

    def _end_input(self, writer: _Writer) -> None:
        if writer.stdin < 0:
            return
        if writer.writable_watch and self._loop is not None:
            self._loop.remove_writer(writer.stdin)
            writer.writable_watch = False
        assert writer.proc.stdin is not None
        with contextlib.suppress(OSError):
            writer.proc.stdin.close()
        writer.stdin = -1

    def _lose(self, writer: _Writer) -> None:
        """The writer's reports ended: count what died with it, answer its flushes, restart."""
        if writer.lost:
            return
        writer.lost = True
        self._end_input(writer)
        if self._loop is not None:
            self._loop.remove_reader(writer.stdout)
        assert writer.proc.stdout is not None
        with contextlib.suppress(OSError):
            writer.proc.stdout.close()
        self._drop(DropReason.WRITER_EXITED, writer.sent - writer.accounted)
        for marker in writer.flushes.values():
            marker.answer(False)
        writer.flushes.clear()
        if writer.gone is not None and not writer.gone.done():
            writer.gone.set_result(None)
        if not self._closed:
            code = writer.proc.poll()
            _log.warning(
                "replay_writer_exited", pid=writer.proc.pid, code=code, retry_s=self._backoff
            )
            if code is None:
                writer.proc.kill()  # its reports broke: it cannot be trusted to go on
            self._retry_later()
            if self._loop is not None:
                task = self._loop.create_task(self._reap(writer, 5.0))
                self._reaping.add(task)
                task.add_done_callback(self._reaping.discard)

    @staticmethod
    async def _reap(writer: _Writer, grace_s: float) -> None:
        """Wait for the process to exit (no zombie left behind); kill it past ``grace_s``."""
        # A thread blocked in waitpid holds no GIL; it wakes once, when the writer is gone.
        for wait_s, kill in ((grace_s, True), (5.0, False)):
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(writer.proc.wait, wait_s)
                return
            if kill:
                writer.proc.kill()
        _log.error("replay_writer_unreapable", pid=writer.proc.pid)
