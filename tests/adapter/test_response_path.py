"""The response path off the ext_proc stream (docs/design/0004), over a real gRPC channel.

Under ``server.response_path: access_log`` a Chat or Messages call costs two messages: the
contract headers ride on the request for the route to copy, and status and served-by come
from Envoy's gRPC access log. A Responses API stream is observed only until its id.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep

from saar.policy.decision import Decision
from saar.policy.facts import ResponseFacts
from saar.policy.headers import CONTRACT_HEADERS, HEADER_REPLAY_ID
from saar.settings import ResponsePath, Settings
from saar.state import MemoryStore, Versioned
from saar.testing.extproc import (
    ExtProcHarness,
    access_log_message,
    request_body_message,
    request_headers_message,
    response_headers_message,
)

ROOT = Path(__file__).resolve().parents[2]
Mode = processing_mode_pb2.ProcessingMode
SESSION = {"x-session-id": "s-1", "x-conversation-id": "c-1"}


def with_server(settings: Settings, **changes: Any) -> Settings:
    return replace(settings, server=replace(settings.server, **changes))


def chat(text: str) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "user", "content": text}]}


class LearnSpy:
    """Records what reaches ``Router.learn`` (the one door into router memory)."""

    def __init__(self, saar: ExtProcHarness) -> None:
        self.calls: list[tuple[Decision, ResponseFacts]] = []
        original = saar.router.learn

        def learn(decision: Decision, response: ResponseFacts, *, now: bool = False) -> None:
            self.calls.append((decision, response))
            original(decision, response, now=now)

        saar.router.learn = learn  # type: ignore[method-assign]


def capture_routed(saar: ExtProcHarness) -> list[Decision]:
    """Every decision the router keeps for its access-log entry, in order."""
    routed: list[Decision] = []
    original = saar.router.await_log

    def capture(decision: Decision) -> None:
        routed.append(decision)
        original(decision)

    saar.router.await_log = capture  # type: ignore[method-assign]
    return routed


def counter(saar: ExtProcHarness, name: str, **labels: str) -> float:
    value = saar.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def test_default_chat_call_is_two_messages_with_the_contract_on_the_request(
    settings: Settings,
) -> None:
    assert ResponsePath.ACCESS_LOG is settings.server.response_path
    async with ExtProcHarness(settings) as saar:
        turn = await saar.exchange(body=chat("hello"), headers=SESSION, status=200)
        await saar.router.drain()
    mode = turn.request_headers_reply.mode_override
    assert Mode.SKIP == mode.response_header_mode
    assert Mode.BUFFERED == mode.request_body_mode
    assert Mode.NONE == mode.response_body_mode
    assert turn.response_headers_reply is None
    assert set(CONTRACT_HEADERS) <= set(turn.request_header_mutations)
    assert "qwen3-8b" == turn.response_headers["x-vsr-selected-model"]
    assert "session_aware=establish_baseline" == turn.response_headers["x-vsr-learning-actions"]
    assert 1.0 == counter(saar, "saar_access_log_entries_total", outcome="matched")


async def test_access_log_entry_runs_the_response_path_once(settings: Settings) -> None:
    async with ExtProcHarness(settings) as saar:
        spy = LearnSpy(saar)
        # A raw stream, so the test sends the access-log entries itself.
        stream = saar.open()
        body = json.dumps(chat("hello")).encode()
        headers = {":path": "/v1/chat/completions", ":method": "POST", **SESSION}
        await stream.send(request_headers_message(headers))
        routed = await stream.send(request_body_message(body))
        await stream.close()
        mutations = {
            o.header.key: o.header.raw_value.decode()
            for o in routed.request_body.response.header_mutation.set_headers
        }
        replay_id = mutations[HEADER_REPLAY_ID]
        assert [] == spy.calls  # nothing is learned before Envoy reports the response
        await saar.log(access_log_message(replay_id, 503, "127.0.0.1:18101"))
        await saar.log(access_log_message(replay_id, 200, "127.0.0.1:18102"))  # a duplicate
        await saar.log(access_log_message("not-a-replay-id", 200))
        await saar.router.drain()
    assert 1 == len(spy.calls)
    decision, response = spy.calls[0]
    assert replay_id == decision.replay_id == response.request_id
    assert 503 == response.status
    assert "127.0.0.1:18101" == response.served_by
    assert decision.target.key == response.physical
    assert 1.0 == counter(saar, "saar_access_log_entries_total", outcome="matched")
    assert 2.0 == counter(saar, "saar_access_log_entries_total", outcome="unknown")
    assert 1.0 == counter(
        saar, "saar_upstream_responses_total", pool=decision.target.pool, status_class="5xx"
    )


async def test_a_failure_from_the_log_keeps_the_tool_loop_on_its_owner(
    settings: Settings,
) -> None:
    """A tool result whose turn failed (learned from the log) is retried on the same model."""
    tool_turn = {
        "model": "auto",
        "messages": [
            {"role": "user", "content": "read the file"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "read", "arguments": "{}"},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "x = 1"},
        ],
    }
    async with ExtProcHarness(settings) as saar:
        first = await saar.exchange(body=chat("prove this theorem step by step"), headers=SESSION)
        await saar.router.drain()
        owner = first.cluster
        failed = await saar.exchange(body=tool_turn, headers=SESSION, status=503)
        await saar.router.drain()
        retry = await saar.exchange(body=tool_turn, headers=SESSION)
    assert owner == failed.cluster == retry.cluster
    assert retry.response_headers["x-vsr-learning-actions"] == "session_aware=hard_lock"


async def test_stream_mode_answers_the_response_headers_itself(settings: Settings) -> None:
    async with ExtProcHarness(with_server(settings, response_path=ResponsePath.STREAM)) as saar:
        turn = await saar.exchange(body=chat("hello"), headers=SESSION)
    assert Mode.SEND == turn.request_headers_reply.mode_override.response_header_mode
    assert not set(CONTRACT_HEADERS) & set(turn.request_header_mutations)
    assert turn.response_headers_reply is not None
    assert set(CONTRACT_HEADERS) == set(turn.response_headers)
    assert 0.0 == counter(saar, "saar_access_log_entries_total", outcome="matched")


CREATED = (
    b"event: response.created\n"
    b'data: {"type":"response.created","response":{"id":"resp_abc123","object":"response",'
    b'"status":"in_progress","output":[]}}\n\n'
)
DELTA = (
    b"event: response.output_text.delta\n"
    b'data: {"type":"response.output_text.delta","delta":"hi"}\n\n'
)


def body_chunk(data: bytes, *, end: bool = False) -> ep.ProcessingRequest:
    return ep.ProcessingRequest(response_body=ep.HttpBody(body=data, end_of_stream=end))


async def responses_stream(saar: ExtProcHarness) -> tuple[Any, ep.ProcessingResponse]:
    stream = saar.open()
    body = json.dumps({"model": "auto", "input": "hello", "stream": True}).encode()
    headers = {":path": "/v1/responses", ":method": "POST", **SESSION}
    first = await stream.send(request_headers_message(headers))
    assert Mode.SEND == first.mode_override.response_header_mode
    await stream.send(request_body_message(body))
    reply = await stream.send(response_headers_message(200, {"content-type": "text/event-stream"}))
    return stream, reply


async def test_responses_stream_is_released_once_its_id_is_known(settings: Settings) -> None:
    async with ExtProcHarness(settings) as saar:
        spy = LearnSpy(saar)
        stream, reply = await responses_stream(saar)
        assert Mode.STREAMED == reply.mode_override.response_body_mode
        assert "x-vsr-replay-id" in {
            o.header.key for o in reply.response_headers.response.header_mutation.set_headers
        }
        assert reply.response_headers.HasField("response")
        answer = await stream.send(body_chunk(CREATED))
        assert answer.HasField("response_body")
        # saar ended its side: the next read is the end of the stream, with status OK.
        call = stream._call
        assert grpc.aio.EOF == await call.read()
        assert grpc.StatusCode.OK == await call.code()
        await saar.router.drain()
    assert 1 == len(spy.calls)
    response = spy.calls[0][1]
    assert "resp_abc123" == response.response_id
    assert 200 == response.status
    assert response.complete


async def test_stream_mode_observes_the_responses_stream_to_the_end(settings: Settings) -> None:
    async with ExtProcHarness(with_server(settings, response_path=ResponsePath.STREAM)) as saar:
        spy = LearnSpy(saar)
        stream, _ = await responses_stream(saar)
        await stream.send(body_chunk(CREATED))
        await stream.send(body_chunk(DELTA))  # still answered: the stream is not released
        assert [] == spy.calls
        await stream.send(body_chunk(b"", end=True))
        await stream.close()
        await saar.router.drain()
    assert 1 == len(spy.calls)
    assert "resp_abc123" == spy.calls[0][1].response_id


async def test_pending_requests_are_bounded_by_count_and_age(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]
    monkeypatch.setattr("saar.router.time.monotonic", lambda: now[0])
    bounded = with_server(settings, access_log_pending_max=1_000, access_log_pending_seconds=60.0)
    async with ExtProcHarness(bounded) as saar:
        router = saar.router
        routed = capture_routed(saar)
        for i in range(3):
            # Routed, but Envoy never logs them (as with a bootstrap without saar's logger).
            stream = saar.open()
            headers = {":path": "/v1/chat/completions", ":method": "POST", "x-session-id": f"p{i}"}
            await stream.send(request_headers_message(headers))
            await stream.send(request_body_message(json.dumps(chat("hi")).encode()))
            await stream.close()
        assert 3.0 == counter(saar, "saar_access_log_pending")
        now[0] += 61.0
        await saar.exchange(body=chat("later"), headers={"x-session-id": "late"})
        assert 3.0 == counter(saar, "saar_access_log_expired_total", reason="age")
        assert 0.0 == counter(saar, "saar_access_log_pending")
        # The count bound drops the oldest first.
        for i in range(1_001):
            router.await_log(replace(routed[0], replay_id=f"synthetic-{i}", protected_key=None))
        assert 1.0 == counter(saar, "saar_access_log_expired_total", reason="overflow")
        assert 1_000.0 == counter(saar, "saar_access_log_pending")
        assert not router.observe_logged("synthetic-0", status=200, served_by=None)
        assert router.observe_logged("synthetic-1000", status=200, served_by=None)
        await router.drain()


class WaitingStore(MemoryStore):
    """A store that waits a little on every load, as a network round trip would."""

    async def load(self, key: str) -> Versioned | None:
        await asyncio.sleep(0.002)
        return await super().load(key)


@pytest.mark.parametrize("waits", [False, True])
async def test_an_access_log_entry_is_learned_at_once_unless_the_store_waits(
    settings: Settings, waits: bool
) -> None:
    """The access log's learning runs inline; only work that waits on the store gets a Task."""
    store = WaitingStore() if waits else MemoryStore()
    async with ExtProcHarness(settings, store=store) as saar:
        router = saar.router
        routed = capture_routed(saar)
        # Routed; its log entry is handed to the router below, by hand.
        stream = saar.open()
        await stream.send(
            request_headers_message({":path": "/v1/chat/completions", ":method": "POST", **SESSION})
        )
        await stream.send(request_body_message(json.dumps(chat("hello")).encode()))
        await stream.close()
        (decision,) = routed
        key = decision.protected_key
        assert key is not None
        before = await store.load(key)
        assert before is not None
        assert router.observe_logged(decision.replay_id, status=503, served_by="127.0.0.1:18101")
        # A memory-store load never suspends: no Task could have run in between.
        now = await MemoryStore.load(store, key)
        assert now is not None
        if waits:
            assert before.version == now.version
            await router.drain()
            now = await store.load(key)
            assert now is not None
        assert before.version + 1 == now.version
        assert 0.0 == (
            saar.metrics.registry.get_sample_value(
                "saar_background_errors_total", {"task": "learn_response"}
            )
            or 0.0
        )
