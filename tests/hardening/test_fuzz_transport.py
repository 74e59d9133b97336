"""Fuzz the h2 transport (``server.transport: h2``) with random HTTP/2 frames on a raw socket.

Each example opens a connection to saar's real server, sends the client preface and then a
random mix of frames: HEADERS for Process, the access log, forwarded and unknown methods
(with odd content types, encodings and timeouts), DATA carrying real or broken gRPC messages
on known and unknown streams, RST_STREAM, WINDOW_UPDATE, SETTINGS, PING, PRIORITY, GOAWAY,
frames of unknown types and raw garbage. Whatever arrives, saar must never take its
internal-error path, must release every stream it opened, and must go on serving a
well-formed call on a fresh connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace

import grpc
import pytest
from hpack import Encoder
from hyperframe.frame import (
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)
from hypothesis import given
from hypothesis import strategies as st

from saar.settings import Settings, Transport
from saar.state import MemoryStore
from saar.testing.extproc import ExtProcHarness, request_headers_message

from .fuzz_budget import budget
from .test_fuzz_stream import message

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
PATHS = [
    b"/envoy.service.ext_proc.v3.ExternalProcessor/Process",
    b"/envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs",
    b"/grpc.health.v1.Health/Check",
    b"/saar.api.admin.v1.Admin/Describe",
    b"/no.Such/Method",
    b"",
]
stream_ids = st.sampled_from([1, 3, 5, 7, 2, 101, 2**31 - 1])


@st.composite
def grpc_payload(draw: st.DrawFn) -> bytes:
    """A gRPC-framed message: a real ProcessingRequest, or bytes with a plausible prefix."""
    if draw(st.booleans()):
        body = draw(message()).SerializeToString()
    else:
        body = draw(st.binary(max_size=64))
    flag = draw(st.sampled_from([0, 0, 0, 1, 255]))
    length = draw(st.one_of(st.just(len(body)), st.integers(0, 2**32 - 1)))
    framed = bytes([flag]) + length.to_bytes(4, "big") + body
    cut = draw(st.integers(0, len(framed)))
    return framed if draw(st.booleans()) else framed[:cut]


@st.composite
def headers_frame(draw: st.DrawFn) -> tuple[int, list[tuple[bytes, bytes]], set[str]]:
    headers = [
        (b":method", draw(st.sampled_from([b"POST", b"GET"]))),
        (b":scheme", b"http"),
        (b":path", draw(st.sampled_from(PATHS))),
        (b":authority", b"saar"),
        (
            b"content-type",
            draw(st.sampled_from([b"application/grpc", b"application/grpc+proto", b"text/x"])),
        ),
    ]
    if draw(st.booleans()):
        headers.append(
            (b"grpc-timeout", draw(st.sampled_from([b"1m", b"5S", b"x", b"999999999S"])))
        )
    if draw(st.booleans()):
        headers.append((b"grpc-encoding", draw(st.sampled_from([b"identity", b"gzip"]))))
    if draw(st.booleans()):
        headers.append((b"x-extra-bin", draw(st.sampled_from([b"AAEC", b"!!", b""]))))
    flags = {"END_HEADERS"} if draw(st.integers(0, 9)) else set()
    if draw(st.booleans()):
        flags.add("END_STREAM")
    return draw(stream_ids), headers, flags


@st.composite
def frames(
    draw: st.DrawFn,
) -> list[Frame | bytes | tuple[int, list[tuple[bytes, bytes]], set[str]]]:
    kinds = st.sampled_from(
        [
            "headers",
            "data",
            "data",
            "data",
            "rst",
            "window",
            "settings",
            "ping",
            "priority",
            "goaway",
            "garbage",
        ]
    )
    out: list[Frame | bytes | tuple[int, list[tuple[bytes, bytes]], set[str]]] = []
    if draw(st.booleans()):
        # Mostly a well-formed start, so the noise reaches open streams, not just h2's checks.
        valid = [
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", PATHS[0]),
            (b":authority", b"saar"),
            (b"content-type", b"application/grpc"),
        ]
        out.append((1, valid, {"END_HEADERS"}))
        body = draw(message()).SerializeToString()
        out.append(DataFrame(1, len(body).to_bytes(5, "big") + body))
    for kind in draw(st.lists(kinds, max_size=14)):
        sid = draw(stream_ids)
        if kind == "headers":
            out.append(draw(headers_frame()))
        elif kind == "data":
            flags = {"END_STREAM"} if draw(st.booleans()) else set()
            out.append(DataFrame(sid, draw(grpc_payload()), flags=flags))
        elif kind == "rst":
            out.append(RstStreamFrame(sid, error_code=draw(st.integers(0, 13))))
        elif kind == "window":
            frame = WindowUpdateFrame(draw(st.sampled_from([0, 1, 3])))
            frame.window_increment = draw(st.sampled_from([1, 1000, 2**31 - 1]))
            out.append(frame)
        elif kind == "settings":
            out.append(
                SettingsFrame(
                    0,
                    settings=draw(
                        st.dictionaries(
                            st.sampled_from([1, 2, 3, 4, 5, 6, 99]),
                            st.sampled_from([0, 1, 16_384, 65_535, 2**31 - 1]),
                            max_size=3,
                        )
                    ),
                )
            )
        elif kind == "ping":
            out.append(PingFrame(0, opaque_data=b"12345678"))
        elif kind == "priority":
            out.append(PriorityFrame(sid, depends_on=draw(stream_ids), stream_weight=16))
        elif kind == "goaway":
            out.append(GoAwayFrame(0, last_stream_id=sid, error_code=draw(st.integers(0, 2))))
        else:
            out.append(draw(st.binary(min_size=1, max_size=40)))
    return out


@pytest.fixture
async def saar(settings: Settings) -> AsyncIterator[ExtProcHarness]:
    """saar's real server on the h2 transport, alive across all examples."""
    h2_settings = replace(settings, server=replace(settings.server, transport=Transport.H2))
    async with ExtProcHarness(h2_settings, store=MemoryStore()) as harness:
        yield harness
        await harness.router.drain()


def counter(harness: ExtProcHarness, name: str, reason: str) -> float:
    """The sum of ``name``'s samples with this reason, across its other labels."""
    return sum(
        sample.value
        for metric in harness.metrics.registry.collect()
        for sample in metric.samples
        if sample.name == name and sample.labels.get("reason") == reason
    )


@budget(120)
@given(script=frames())
async def test_random_frames_never_break_the_server(
    saar: ExtProcHarness,
    script: list[Frame | bytes | tuple[int, list[tuple[bytes, bytes]], set[str]]],
) -> None:
    """No internal error, no leaked stream, and the next well-formed call is served."""
    reader, writer = await asyncio.open_unix_connection(saar.socket)
    encoder = Encoder()
    writer.write(PREFACE + SettingsFrame(0).serialize())
    for item in script:
        if isinstance(item, tuple):
            sid, headers, flags = item
            writer.write(HeadersFrame(sid, encoder.encode(headers), flags=flags).serialize())
        elif isinstance(item, Frame):
            writer.write(item.serialize())
        else:
            writer.write(item)
    with contextlib.suppress(ConnectionError):
        await writer.drain()
    # Read what saar answers until it closes the connection or goes quiet.
    with contextlib.suppress(TimeoutError, ConnectionError):
        async with asyncio.timeout(0.2):
            while await reader.read(65536):
                pass
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()
    for _ in range(200):  # connection_lost runs on the loop
        if saar.metrics.inflight._value.get() == 0:
            break
        await asyncio.sleep(0.01)
    assert 0 == saar.metrics.inflight._value.get()
    assert 0.0 == counter(saar, "saar_transport_errors_total", "internal_error")
    assert 0.0 == counter(saar, "saar_fail_open_total", "internal_error")
    stream = saar.open()
    reply = await stream.send(
        request_headers_message({":path": "/v1/chat/completions", ":method": "POST"})
    )
    assert reply.HasField("request_headers")
    await stream.close()
    assert grpc.StatusCode.OK == await stream._call.code()
