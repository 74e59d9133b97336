"""Fuzz the ext_proc stream state machine over a real gRPC channel.

Random sequences of every ProcessingRequest kind (headers, bodies, response headers and
bodies, trailers, empty messages, duplicates, missing phases, random bytes as bodies) are
played at saar's real server. Envoy's contract, which saar must keep for any peer: every
message gets exactly one answer of the matching kind (or an immediate response where one is
allowed), the server never takes the internal-error path, and the stream ends with OK.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from google.protobuf import struct_pb2
from hypothesis import given
from hypothesis import strategies as st

from saar.settings import Settings
from saar.state import MemoryStore
from saar.testing.extproc import ExtProcHarness

from .fuzz_budget import budget

# The answer kinds Envoy accepts for each message kind.
ALLOWED: dict[str | None, set[str]] = {
    "request_headers": {"request_headers", "immediate_response"},
    "request_body": {"request_body", "immediate_response"},
    "request_trailers": {"request_trailers"},
    "response_headers": {"response_headers"},
    "response_body": {"response_body"},
    "response_trailers": {"response_trailers"},
    None: {"request_trailers"},
}

VALID_BODIES = [
    json.dumps({"model": "auto", "messages": [{"role": "user", "content": "hi"}]}).encode(),
    json.dumps(
        {
            "model": "auto",
            "stream": True,
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "messages": [{"role": "user", "content": "fix the bug"}],
        }
    ).encode(),
    json.dumps({"model": "auto", "input": "hi", "store": True}).encode(),
    json.dumps(
        {"model": "auto", "max_tokens": 4, "messages": [{"role": "user", "content": "x"}]}
    ).encode(),
    b'data: {"choices":[{"delta":{"tool_calls":[{"id":"c1"}]}}]}\n\n',
]

header_values = st.one_of(
    st.text(max_size=40).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.binary(max_size=40),
)
paths = st.sampled_from(
    [
        "/v1/chat/completions",
        "/v1/responses",
        "/v1/messages",
        "/v1/models",
        "/",
        "",
        "/v1/messages?x",
    ]
)
methods = st.sampled_from(["POST", "GET", "PUT", "", "post"])


@st.composite
def header_map(draw: st.DrawFn, *, response: bool) -> base_pb2.HeaderMap:
    entries: list[base_pb2.HeaderValue] = []
    if response:
        status = draw(
            st.sampled_from([b"200", b"429", b"500", b"abc", b"", b"99999999999999999999"])
        )
        entries.append(base_pb2.HeaderValue(key=":status", raw_value=status))
        content_type = draw(
            st.sampled_from([b"application/json", b"text/event-stream", b"", b"\xff\xfe"])
        )
        entries.append(base_pb2.HeaderValue(key="content-type", raw_value=content_type))
    else:
        entries.append(base_pb2.HeaderValue(key=":path", raw_value=draw(paths).encode()))
        entries.append(base_pb2.HeaderValue(key=":method", raw_value=draw(methods).encode()))
        for name in draw(
            st.lists(
                st.sampled_from(
                    [
                        "x-session-id",
                        "x-conversation-id",
                        "x-claude-code-session-id",
                        "content-type",
                    ]
                ),
                max_size=3,
            )
        ):
            entries.append(base_pb2.HeaderValue(key=name, raw_value=draw(header_values)))
        if draw(st.booleans()):
            # Old-style `value` instead of raw_value, as older Envoys send.
            entries.append(
                base_pb2.HeaderValue(key="x-session-id", value=draw(st.text(max_size=10)))
            )
    return base_pb2.HeaderMap(headers=entries)


bodies = st.one_of(st.sampled_from(VALID_BODIES), st.binary(max_size=200))


@st.composite
def message(draw: st.DrawFn) -> ep.ProcessingRequest:
    kind = draw(
        st.sampled_from(
            [
                "request_headers",
                "request_body",
                "request_trailers",
                "response_headers",
                "response_body",
                "response_trailers",
                None,
            ]
        )
    )
    eos = draw(st.booleans())
    request = ep.ProcessingRequest()
    if kind == "request_headers":
        request.request_headers.CopyFrom(
            ep.HttpHeaders(headers=draw(header_map(response=False)), end_of_stream=eos)
        )
    elif kind == "request_body":
        request.request_body.CopyFrom(ep.HttpBody(body=draw(bodies), end_of_stream=eos))
    elif kind == "response_headers":
        request.response_headers.CopyFrom(
            ep.HttpHeaders(headers=draw(header_map(response=True)), end_of_stream=eos)
        )
        if draw(st.booleans()):
            attrs = struct_pb2.Struct()
            attrs.update(
                {"upstream.address": draw(st.sampled_from(["127.0.0.1:1", "", "x" * 300]))}
            )
            request.attributes["envoy.filters.http.ext_proc"].CopyFrom(attrs)
    elif kind == "response_body":
        request.response_body.CopyFrom(ep.HttpBody(body=draw(bodies), end_of_stream=eos))
    elif kind == "request_trailers":
        request.request_trailers.CopyFrom(ep.HttpTrailers())
    elif kind == "response_trailers":
        request.response_trailers.CopyFrom(ep.HttpTrailers())
    return request


@st.composite
def scripts(draw: st.DrawFn) -> list[ep.ProcessingRequest]:
    """Mostly Envoy-like prefixes with noise, sometimes pure chaos."""
    if draw(st.booleans()):
        return draw(st.lists(message(), max_size=12))
    headers = ep.HttpHeaders(
        headers=base_pb2.HeaderMap(
            headers=[
                base_pb2.HeaderValue(key=":path", raw_value=draw(paths).encode()),
                base_pb2.HeaderValue(key=":method", raw_value=b"POST"),
                base_pb2.HeaderValue(key="x-session-id", raw_value=draw(header_values)),
            ]
        )
    )
    script = [
        ep.ProcessingRequest(request_headers=headers),
        ep.ProcessingRequest(request_body=ep.HttpBody(body=draw(bodies), end_of_stream=True)),
        ep.ProcessingRequest(
            response_headers=ep.HttpHeaders(headers=draw(header_map(response=True)))
        ),
    ]
    script += [
        ep.ProcessingRequest(response_body=ep.HttpBody(body=b, end_of_stream=False))
        for b in draw(st.lists(bodies, max_size=4))
    ]
    noise = draw(st.lists(st.tuples(st.integers(0, len(script)), message()), max_size=3))
    for index, extra in noise:
        script.insert(index, extra)
    if draw(st.booleans()) and script:
        del script[draw(st.integers(0, len(script) - 1))]
    return script


@pytest.fixture
async def saar(settings: Settings) -> AsyncIterator[ExtProcHarness]:
    """saar's real server on a private socket, alive across all examples of a test."""
    async with ExtProcHarness(settings, store=MemoryStore()) as harness:
        yield harness
        await harness.router.drain()


async def play(
    harness: ExtProcHarness, script: list[ep.ProcessingRequest]
) -> tuple[list[str | None], grpc.StatusCode]:
    """Send each message, read exactly one answer, half-close; return answer kinds and status."""
    assert harness._stub is not None
    call = harness._stub.Process()
    kinds: list[str | None] = []
    for request in script:
        await call.write(request)
        reply = await asyncio.wait_for(call.read(), 10.0)
        assert reply is not grpc.aio.EOF, "saar closed the stream early"
        kinds.append(reply.WhichOneof("response"))
    await call.done_writing()
    extra = await asyncio.wait_for(call.read(), 10.0)
    assert extra is grpc.aio.EOF, f"an unasked-for answer: {extra}"
    return kinds, await call.code()


def internal_errors(harness: ExtProcHarness) -> float:
    registry = harness.metrics.registry
    total = 0.0
    for metric in registry.collect():
        for sample in metric.samples:
            if (
                sample.name == "saar_fail_open_total"
                and sample.labels.get("reason") == "internal_error"
            ):
                total += sample.value
    return total


@budget(150)
@given(script=scripts())
async def test_every_message_gets_one_matching_answer_and_the_stream_closes_ok(
    saar: ExtProcHarness, script: list[ep.ProcessingRequest]
) -> None:
    """Any message sequence: one answer of the matching kind each, no internal error, OK close."""
    kinds, code = await play(saar, script)
    for request, answer in zip(script, kinds, strict=True):
        sent = request.WhichOneof("request")
        assert answer in ALLOWED[sent], (sent, answer)
    assert grpc.StatusCode.OK == code
    assert 0.0 == internal_errors(saar)


@budget(40)
@given(script=scripts())
async def test_abandoned_streams_are_cleaned_up(
    saar: ExtProcHarness, script: list[ep.ProcessingRequest]
) -> None:
    """A stream cancelled mid-way (Envoy resetting) leaves no in-flight gauge or error behind."""

    assert saar._stub is not None
    call = saar._stub.Process()
    for request in script:
        await call.write(request)
        await asyncio.wait_for(call.read(), 10.0)
    call.cancel()
    # The servicer's finally block runs when the cancellation reaches it.
    for _ in range(200):
        if saar.metrics.inflight._value.get() == 0:
            break
        await asyncio.sleep(0.01)
    assert 0 == saar.metrics.inflight._value.get()
    assert 0.0 == internal_errors(saar)
