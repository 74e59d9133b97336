"""SseFramer: WHATWG event-stream framing over chunks cut anywhere."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from saar.wire.sse import SseEvent, SseFramer


def frame(*chunks: bytes, max_event_bytes: int = 1 << 20) -> list[SseEvent]:
    """Feed every chunk, then close; return all events."""
    framer = SseFramer(max_event_bytes=max_event_bytes)
    events = [e for c in chunks for e in framer.feed(c)]
    return events + framer.close()


def test_named_and_unnamed_events() -> None:
    """`event:` names the event; without it the name is empty."""
    got = frame(b"event: ping\ndata: {}\n\ndata: x\n\n")
    assert [SseEvent(b"ping", b"{}"), SseEvent(b"", b"x")] == got


def test_multi_line_data_is_joined_by_newlines() -> None:
    """Several data lines form one event, joined by a newline."""
    assert [SseEvent(b"", b'{"a":\n1}')] == frame(b'data: {"a":\ndata: 1}\n\n')


def test_comments_id_retry_and_unknown_fields_are_ignored() -> None:
    """Lines starting with ':' and fields other than data/event change nothing."""
    got = frame(b": keep-alive\n\nid: 7\nretry: 100\nfoo: bar\ndata: x\n: note\n\n")
    assert [SseEvent(b"", b"x")] == got


def test_only_one_space_after_the_colon_is_dropped() -> None:
    """`data:x` and `data:  x` keep what follows the one optional space."""
    assert [SseEvent(b"", b"x"), SseEvent(b"", b" x")] == frame(b"data:x\n\ndata:  x\n\n")


def test_field_without_colon_and_empty_data() -> None:
    """A bare `data` line is an empty data line; the event is dispatched with empty data."""
    assert [SseEvent(b"", b""), SseEvent(b"", b"\n")] == frame(b"data\n\ndata\ndata:\n\n")


def test_event_without_data_is_not_dispatched() -> None:
    """Blank-line-terminated blocks with no data line dispatch nothing and reset the name."""
    assert [SseEvent(b"", b"y")] == frame(b"event: lonely\n\ndata: y\n\n")


@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b"\r"], ids=["lf", "crlf", "cr"])
def test_line_endings(ending: bytes) -> None:
    """LF, CRLF and lone CR all end lines."""
    text = b"event: a" + ending + b"data: 1" + ending + ending + b"data: 2" + ending + ending
    assert [SseEvent(b"a", b"1"), SseEvent(b"", b"2")] == frame(text)


def test_crlf_split_between_chunks_is_one_line_end() -> None:
    """A \\r ending one chunk and a \\n starting the next are one line end, not two."""
    assert [SseEvent(b"", b"1"), SseEvent(b"", b"2")] == frame(
        b"data: 1\r", b"\n\r", b"\ndata: 2\r\n\r", b"\n"
    )


def test_crlf_split_inside_an_event_keeps_its_name_and_lines() -> None:
    """A CRLF cut after `event:` or between data lines must not end the event early."""
    got = frame(b"event: a\r", b"\ndata: 1\r", b"\ndata: 2\r\n\r\n")
    assert [SseEvent(b"a", b"1\n2")] == got


def test_close_dispatches_finished_lines_and_drops_a_cut_line() -> None:
    """At EOF an event whose lines ended is dispatched; a line cut mid-way is dropped."""
    assert [SseEvent(b"", b"[DONE]")] == frame(b"data: [DONE]\n")
    assert [] == frame(b'data: {"cut')


def test_overflow_stops_the_framer_with_bounded_memory() -> None:
    """An event over the bound is dropped, the framer stops and holds nothing."""
    framer = SseFramer(max_event_bytes=100)
    held = []
    for piece in (b"data: ", *([b"z" * 30] * 10), b"\n\ndata: later\n\n"):
        assert [] == framer.feed(piece)
        held.append(framer.buffered_bytes)
    assert (True, True, []) == (framer.overflowed, max(held) <= 100, framer.close())


def test_many_data_lines_count_toward_the_bound() -> None:
    """Many short data lines in one event also hit the bound."""
    framer = SseFramer(max_event_bytes=100)
    framer.feed(b"data: 0123456789\n" * 20)
    assert (True, 0) == (framer.overflowed, framer.buffered_bytes)


STREAM = (
    b': hello\r\n\r\nevent: message_start\r\ndata: {"a": 1}\r\n\r\n'
    b"data: line1\ndata: line2\n\nevent: x\rdata: y\r\r"
    b"data: [DONE]\n\n"
)


@settings(max_examples=300, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=30))
def test_any_chunking_gives_the_same_events(cuts: list[int]) -> None:
    """Splitting the byte stream anywhere never changes the events."""
    edges = [0, *sorted(set(cuts)), len(STREAM)]
    chunks = [STREAM[a:b] for a, b in itertools.pairwise(edges)]
    assert frame(STREAM) == frame(*chunks)


def test_the_reference_stream_frames_as_expected() -> None:
    """The mixed-ending reference stream used by the chunking property frames correctly."""
    expected = [
        SseEvent(b"message_start", b'{"a": 1}'),
        SseEvent(b"", b"line1\nline2"),
        SseEvent(b"x", b"y"),
        SseEvent(b"", b"[DONE]"),
    ]
    assert expected == frame(STREAM)
