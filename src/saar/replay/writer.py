"""The replay writer process: ``python -m saar.replay.writer``, fed by ``ProcessReplayRecorder``.

Theory of operation (docs/design/0006): the serving process encodes each decision and response
as one compact msgpack frame on the event loop (~5 µs, C code) and a loop timer writes them to
this process's stdin in batches, non-blocking. Here they are decoded back into the same frozen
``Decision``/``RequestFacts``/``ResponseFacts`` and handed to an ordinary thread
``ReplayRecorder``, so the batching, holding a decision back for its response, retention and
drop accounting are the exact code the in-process writer runs. What that code costs in Python
(building the record, the trace dict, JSON, the SQLite loop) now holds *this* interpreter's
GIL, not the serving event loop's.

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

import signal
import struct
import sys
import threading
from collections.abc import Callable, Mapping
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
    "Hello",
    "encode_frame",
    "main",
    "read_frame",
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


def read_frame(stream: IO[bytes]) -> tuple[int, bytes] | None:
    """The next ``(kind, body)`` from ``stream``; ``None`` at a clean end of file.

    Raises ``EOFError`` when the stream ends inside a frame and ``ValueError`` for a length
    that cannot be a frame (the stream is out of step and cannot be resynchronised).
    """
    head = stream.read(HEAD.size)
    if not head:
        return None
    if len(head) < HEAD.size:
        raise EOFError("replay writer stream ended inside a frame header")
    length, kind = HEAD.unpack(head)
    if not 1 <= length <= _MAX_FRAME:
        msg = f"replay writer frame length {length} is out of range"
        raise ValueError(msg)
    body = stream.read(length - 1)
    if len(body) < length - 1:
        raise EOFError("replay writer stream ended inside a frame")
    return kind, body


_HELLO: Final = msgspec.msgpack.Decoder(Hello)
_DECISION: Final = msgspec.msgpack.Decoder(tuple[Decision, RequestFacts, float, float | None])
_RESPONSE: Final = msgspec.msgpack.Decoder(tuple[ResponseFacts, float])
_FLUSH: Final = msgspec.msgpack.Decoder(int)


class _Reporter:
    """The writer's observer: each event becomes a frame on stdout (two threads write)."""

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self._lock = threading.Lock()

    def send(self, kind: int, body: object) -> None:
        frame = encode_frame(kind, body)
        with self._lock:
            self._out.write(frame)
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
    """Run the writer on two byte streams until ``stdin`` ends; returns the exit code."""
    log = structlog.get_logger("saar.replay")
    first = read_frame(stdin)
    if first is None:
        return 0  # the serving process went away before it said anything
    kind, body = first
    if kind != KIND_HELLO:
        print(f"saar replay writer: expected HELLO, got frame kind {kind}", file=sys.stderr)
        return 2
    hello = _HELLO.decode(body)
    configure_logging(hello.log_level, json=hello.log_json)
    reporter = _Reporter(stdout)
    recorder = ReplayRecorder.from_config(hello.config, observer=reporter)
    recorder.start()
    handlers: dict[int, Callable[[bytes], None]] = {}

    def decision(data: bytes) -> None:
        d, facts, at, latency = _DECISION.decode(data)
        recorder.submit(d, facts, latency_s=latency, at=at)

    def response(data: bytes) -> None:
        r, at = _RESPONSE.decode(data)
        recorder.record_response(r, at=at)

    def flush(data: bytes) -> None:
        token = _FLUSH.decode(data)
        reporter.send(KIND_FLUSHED, (token, recorder.flush(30.0)))

    handlers[KIND_DECISION] = decision
    handlers[KIND_RESPONSE] = response
    handlers[KIND_FLUSH] = flush
    code = 0
    try:
        while (frame := read_frame(stdin)) is not None:
            kind, body = frame
            handler = handlers.get(kind)
            try:
                if handler is None:
                    msg = f"unknown frame kind {kind}"
                    raise ValueError(msg)
                handler(body)
            except (msgspec.DecodeError, msgspec.ValidationError, ValueError, TypeError):
                # One bad item is lost and counted; the frames around it are intact.
                reporter.on_dropped(DropReason.ENCODE_ERROR)
                log.exception("replay_writer_bad_frame", kind=kind)
    except (EOFError, ValueError, OSError) as exc:
        # The stream is out of step (or gone): write what we hold and let the serving
        # process start a fresh writer.
        log.error("replay_writer_stream_broken", error=str(exc))
        code = 1
    finally:
        recorder.close(30.0)
    return code


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m saar.replay.writer`` (started by the serving process)."""
    del argv  # everything arrives in the HELLO frame
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    name_os_thread(WRITER_THREAD_NAME)  # the process shows as saar-replay in ps and top
    stdin = sys.stdin.buffer
    stdout = sys.stdout.buffer
    # stdout is the protocol: a stray print must not corrupt it.
    sys.stdout = sys.stderr
    return serve(stdin, stdout)


if __name__ == "__main__":
    sys.exit(main())
