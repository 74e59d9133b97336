"""The replay writer process: ``python -m saar.replay.writer``, fed by ``ProcessReplayRecorder``.

Theory of operation (docs/design/0006): the serving process encodes each decision and response
as one compact msgpack frame on the event loop (~5 µs, C code) and a loop timer writes them to
this process's stdin in batches, non-blocking. Here they are decoded back into the same frozen
``Decision``/``RequestFacts``/``ResponseFacts`` and queued on an ordinary ``ReplayRecorder``
that this process drains itself every ``flush_interval_ms`` (``ReplayRecorder.drain``, no
writer thread: one thread reads and writes), so the batching, holding a decision back for its
response, retention and drop accounting are the exact code the in-process writer runs. What
that code costs in Python (building the record, the trace dict, JSON, the SQLite loop) now
holds *this* interpreter's GIL, not the serving event loop's.

Wire format, both directions: a frame is ``<u32 little-endian length><u8 kind><msgpack body>``,
the length counting the kind byte and the body. The first frame on stdin is ``HELLO`` (the
replay config and the log settings); then ``DECISION``, ``RESPONSE`` and ``FLUSH`` in the
order the serving process queued them. On stdout the writer reports ``WRITTEN`` (per committed
batch), ``DROPPED`` (per lost item, with the reason) and ``FLUSHED`` (the answer to a
``FLUSH``), which the serving process turns into its metrics. stdout carries nothing else:
``print`` goes to stderr here.

Lifetime: the serving process owns it. End of file on stdin (the serving process closed the
pipe, exited or was killed) makes the writer commit everything it holds and exit. SIGINT and
SIGTERM are ignored, so a Ctrl-C in a terminal or a signal sent to the whole process group
cannot cut a flush short; the serving process closes the pipe when it drains.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import struct
import sys
import time
from collections.abc import Mapping
from typing import IO, Final

import msgspec
import structlog

from saar.observability.logging import configure_logging
from saar.policy.decision import Decision
from saar.policy.facts import RequestFacts, ResponseFacts
from saar.replay.config import ReplayConfig
from saar.replay.recorder import (
    WRITER_THREAD_NAME,
    DropReason,
    ReplayRecorder,
    name_os_thread,
)

__all__ = [
    "HEAD",
    "KIND_DECISION",
    "KIND_DROPPED",
    "KIND_FLUSH",
    "KIND_FLUSHED",
    "KIND_HELLO",
    "KIND_RESPONSE",
    "KIND_WRITTEN",
    "WRITER_NICE",
    "Hello",
    "encode_frame",
    "main",
    "split_frames",
]

HEAD: Final = struct.Struct("<IB")
"""Frame header: the length of kind byte plus body, then the kind."""

# serving process -> writer
KIND_HELLO: Final = 0
KIND_DECISION: Final = 1
KIND_RESPONSE: Final = 2
KIND_FLUSH: Final = 3
# writer -> serving process
KIND_WRITTEN: Final = 10
KIND_DROPPED: Final = 11
KIND_FLUSHED: Final = 12

_MAX_FRAME: Final = 64 << 20
"""A length above this is a corrupt stream, not a frame (a decision is ~2.5 KB)."""
_READ_BYTES: Final = 1 << 20
WRITER_NICE: Final = 10
"""How much lower the writer process's CPU priority is than saar's (``nice``)."""


class Hello(msgspec.Struct, frozen=True):
    """The first frame: what the writer needs to run like the in-process one."""

    config: ReplayConfig
    log_level: str = "info"
    log_json: bool = True


def _enc_hook(value: object) -> object:
    # ``RequestFacts.headers`` is a read-only mapping proxy; msgpack writes it as a map.
    if isinstance(value, Mapping):
        return dict(value)
    msg = f"cannot encode {type(value).__name__} for the replay writer"
    raise TypeError(msg)


_ENCODER: Final = msgspec.msgpack.Encoder(enc_hook=_enc_hook)


def encode_frame(kind: int, body: object) -> bytearray:
    """One frame: header and msgpack ``body`` in a single buffer (no copy of the body)."""
    buf = bytearray(HEAD.size)
    _ENCODER.encode_into(body, buf, HEAD.size)
    HEAD.pack_into(buf, 0, len(buf) - 4, kind)
    return buf


def split_frames(buf: bytearray) -> list[tuple[int, bytes]]:
    """Take the whole frames at the start of ``buf`` as ``(kind, body)``; keep the rest.

    Raises ``ValueError`` for a length that cannot be a frame (the stream is out of step and
    cannot be resynchronised).
    """
    out: list[tuple[int, bytes]] = []
    start = 0
    while len(buf) - start >= HEAD.size:
        length, kind = HEAD.unpack_from(buf, start)
        if not 1 <= length <= _MAX_FRAME:
            msg = f"replay writer frame length {length} is out of range"
            raise ValueError(msg)
        end = start + 4 + length
        if end > len(buf):
            break
        out.append((kind, bytes(buf[start + HEAD.size : end])))
        start = end
    del buf[:start]
    return out


_HELLO: Final = msgspec.msgpack.Decoder(Hello)
_DECISION: Final = msgspec.msgpack.Decoder(tuple[Decision, RequestFacts, float, float | None])
_RESPONSE: Final = msgspec.msgpack.Decoder(tuple[ResponseFacts, float])
_FLUSH: Final = msgspec.msgpack.Decoder(int)


class _Reporter:
    """The writer's observer: each event becomes a frame on stdout."""

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out

    def send(self, kind: int, body: object) -> None:
        self._out.write(encode_frame(kind, body))
        self._out.flush()

    def on_enqueued(self) -> None:
        """The serving process counts its own enqueues."""

    def on_dropped(self, reason: str) -> None:
        """Report one lost item."""
        self.send(KIND_DROPPED, (reason, 1))

    def on_written(self, n: int, seconds: float) -> None:
        """Report one committed batch."""
        self.send(KIND_WRITTEN, (n, seconds))

    def on_writer_started(self, restart: bool) -> None:
        """Not called here: this process is the writer."""


def serve(stdin: IO[bytes], stdout: IO[bytes]) -> int:
    """Run the writer on two byte streams until ``stdin`` ends; returns the exit code.

    One thread does everything: wait for input until the next flush is due, queue what
    arrived, write what is queued every ``flush_interval_ms``. A second thread would be woken
    on every GIL release of this one (each read) and cost more than it saves.
    """
    log = structlog.get_logger("saar.replay")
    # Every read goes through _Frames (one buffer): a buffered reader would keep bytes that
    # select() then never reports.
    frames = _Frames(stdin)
    batch: list[tuple[int, bytes]] | None = []
    while batch == []:
        batch = frames.wait(None)
    if not batch:
        return 0  # the serving process went away before it said anything
    kind, body = batch.pop(0)
    if kind != KIND_HELLO:
        print(f"saar replay writer: expected HELLO, got frame kind {kind}", file=sys.stderr)
        return 2
    hello = _HELLO.decode(body)
    configure_logging(hello.log_level, json=hello.log_json)
    reporter = _Reporter(stdout)
    recorder = ReplayRecorder.from_config(hello.config, observer=reporter, yield_gil=False)
    interval = hello.config.flush_interval_ms / 1000.0
    code = 0
    due = time.monotonic() + interval
    try:
        while batch is not None:
            for kind, body in batch:
                try:
                    if kind == KIND_DECISION:
                        d, facts, at, latency = _DECISION.decode(body)
                        recorder.submit(d, facts, latency_s=latency, at=at)
                    elif kind == KIND_RESPONSE:
                        response, at = _RESPONSE.decode(body)
                        recorder.record_response(response, at=at)
                    elif kind == KIND_FLUSH:
                        recorder.drain(final=True)
                        reporter.send(KIND_FLUSHED, (_FLUSH.decode(body), True))
                    else:
                        msg = f"unknown frame kind {kind}"
                        raise ValueError(msg)
                except (msgspec.DecodeError, msgspec.ValidationError, ValueError, TypeError):
                    # One bad item is lost and counted; the frames around it are intact.
                    reporter.on_dropped(DropReason.ENCODE_ERROR)
                    log.exception("replay_writer_bad_frame", kind=kind)
            if time.monotonic() >= due:
                recorder.drain()
                due = time.monotonic() + interval
            batch = frames.wait(max(0.0, due - time.monotonic()))  # None: end of input
    except (EOFError, ValueError, OSError) as exc:
        # The stream is out of step (or gone): write what we hold and let the serving
        # process start a fresh writer.
        log.error("replay_writer_stream_broken", error=str(exc))
        code = 1
    finally:
        recorder.close()
    return code


class _Frames:
    """Whole frames from a pipe, as they arrive, waiting at most until a deadline."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._buf = bytearray()
        try:
            self._fd: int | None = stream.fileno()
        except (OSError, ValueError):  # an in-memory stream (tests): read it whole
            self._fd = None

    def wait(self, within_s: float | None) -> list[tuple[int, bytes]] | None:
        """The frames that arrived within ``within_s`` (``None``: no limit; maybe none).

        ``None`` at end of input.

        Raises ``EOFError`` when the input ends inside a frame.
        """
        if self._fd is None:
            data = self._stream.read(_READ_BYTES)
        else:
            ready, _, _ = select.select([self._fd], [], [], within_s)
            if not ready:
                return []
            data = os.read(self._fd, _READ_BYTES)
        if not data:
            if self._buf:
                raise EOFError("replay writer stream ended inside a frame")
            return None
        self._buf += data
        return split_frames(self._buf)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m saar.replay.writer`` (started by the serving process)."""
    del argv  # everything arrives in the HELLO frame
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    name_os_thread(WRITER_THREAD_NAME)  # the process shows as saar-replay in ps and top
    # Background work: when it shares cores with Envoy and the event loop, they go first.
    # Its bursts (a whole interval's records at once) otherwise delay the requests in flight.
    with contextlib.suppress(OSError):
        os.nice(WRITER_NICE)
    stdin = sys.stdin.buffer
    stdout = sys.stdout.buffer
    # stdout is the protocol: a stray print must not corrupt it.
    sys.stdout = sys.stderr
    return serve(stdin, stdout)


if __name__ == "__main__":
    sys.exit(main())
