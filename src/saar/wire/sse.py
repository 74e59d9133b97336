r"""An incremental Server-Sent Events framer: bytes in arbitrary chunks → whole events.

Theory of operation: Envoy hands the response body over in chunks cut wherever the network
cut them, so an event, a line, even a ``\r\n`` pair may straddle two chunks. The framer
keeps only the unfinished tail (the partial line and the ``data:`` lines of the event being
built) and follows the WHATWG parsing rules
(https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation):

* lines end with ``\n``, ``\r\n`` or a lone ``\r``; a ``\r`` at the end of a chunk
  swallows a ``\n`` that starts the next one;
* a blank line dispatches the event; ``data:`` lines are joined by ``\n``; one space after
  the colon is dropped; lines starting with ``:`` are comments; ``id``/``retry`` and unknown
  fields are ignored; an event with no ``data`` line is not dispatched.

Work per chunk is O(len(chunk)): line ends are found by C-level searches, and a line split
across many chunks is joined once, when its end arrives. Memory is bounded by
``max_event_bytes``; an event larger than that stops the framer for good (``overflowed``),
because an observer cannot trust what follows a dropped event.

At end of stream (``close``) an event whose lines all ended but whose blank line never came
is still dispatched (``data: [DONE]\n`` then EOF loses nothing); a line cut in the middle
is discarded, as the specification says.
"""

from __future__ import annotations

from typing import Final, NamedTuple

__all__ = ["DEFAULT_MAX_EVENT_BYTES", "SseEvent", "SseFramer"]

DEFAULT_MAX_EVENT_BYTES: Final = 4 * 1024 * 1024
"""Largest event kept by default (a Responses ``response.completed`` echoes the whole
response, instructions and tools included, so single events can be large)."""

_CR: Final = 13
_COLON: Final = 58


class SseEvent(NamedTuple):
    """One dispatched event: its ``event:`` name (``b""`` when absent) and joined data."""

    event: bytes
    """The ``event:`` field, raw bytes; ``b""`` when the event had none."""
    data: bytes
    """The ``data:`` lines joined by newlines (none at the end)."""


class SseFramer:
    """Turn SSE bytes, chunked anywhere, into ``SseEvent``s (see the module docstring)."""

    __slots__ = (
        "_cr",
        "_data",
        "_event",
        "_max",
        "_partial",
        "_partial_size",
        "_size",
        "overflowed",
    )

    def __init__(self, *, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self._max = max_event_bytes
        self._partial: list[bytes] = []
        self._partial_size = 0
        self._cr = False
        self._data: list[bytes] = []
        self._event = b""
        self._size = 0
        self.overflowed = False
        """True once an event outgrew ``max_event_bytes``; the framer then ignores input."""

    @property
    def buffered_bytes(self) -> int:
        """Bytes held for the unfinished line and event (never above ``max_event_bytes``)."""
        return self._partial_size + self._size

    def feed(self, chunk: bytes) -> list[SseEvent]:
        """Consume one chunk; return the events it completed, in order."""
        out: list[SseEvent] = []
        if self.overflowed or not chunk:
            return out
        if self._cr:
            # The previous chunk ended in "\r": a "\n" here is the rest of that line end.
            self._cr = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
                if not chunk:
                    return out
        end = max(chunk.rfind(b"\n"), chunk.rfind(b"\r"))
        if end < 0:
            self._hold(chunk)
            return out
        head = chunk[: end + 1]
        if self._partial:
            head = b"".join(self._partial) + head
            self._partial.clear()
            self._partial_size = 0
        if chunk[end] == _CR:
            self._cr = True
        limit = self._max
        for line in head.splitlines():
            # Hot path inlined (one blank and one data line per event in LLM streams): a
            # method call per line costs as much as the rest of the framing.
            if not line:
                data = self._data
                if data:
                    event = data[0] if len(data) == 1 else b"\n".join(data)
                    out.append(SseEvent(self._event, event))
                    self._data = []
                self._event = b""
                self._size = 0
            elif line.startswith(b"data: "):
                self._size += len(line) - 5
                if self._size > limit:
                    self._overflow()
                    return out
                self._data.append(line[6:])
            else:
                self._line(line, out)
                if self.overflowed:
                    return out
        if end + 1 < len(chunk):
            self._hold(chunk[end + 1 :])
        return out

    def close(self) -> list[SseEvent]:
        """End of stream: dispatch an event whose lines all ended; drop a cut line."""
        out: list[SseEvent] = []
        if not self.overflowed and self._data:
            out.append(SseEvent(self._event, b"\n".join(self._data)))
        self._partial.clear()
        self._partial_size = 0
        self._data = []
        self._event = b""
        self._size = 0
        return out

    def _hold(self, piece: bytes) -> None:
        self._partial_size += len(piece)
        if self._partial_size + self._size > self._max:
            self._overflow()
            return
        self._partial.append(piece)

    def _overflow(self) -> None:
        self.overflowed = True
        self._partial.clear()
        self._partial_size = 0
        self._data = []
        self._size = 0

    def _line(self, line: bytes, out: list[SseEvent]) -> None:
        if not line:
            if self._data:
                data = self._data
                out.append(SseEvent(self._event, data[0] if len(data) == 1 else b"\n".join(data)))
                self._data = []
            self._event = b""
            self._size = 0
            return
        if line[0] == _COLON:
            return
        name, sep, value = line.partition(b":")
        if sep and value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            self._size += len(value) + 1
            if self._size > self._max:
                self._overflow()
                return
            self._data.append(value)
        elif name == b"event":
            self._event = value
