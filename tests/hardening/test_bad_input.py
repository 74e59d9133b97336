"""Bad input through saar's real gRPC server: a clear API-style error or a documented pass-through.

Every rejected request must leave router memory untouched: a client that can write state
with a request saar refuses could poison a session it does not own.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from saar.policy import parse_pairs
from saar.settings import Settings
from saar.state import MemoryStore
from saar.testing.extproc import (
    ExtProcHarness,
    request_body_message,
    request_headers_message,
)

SESSION = {"x-session-id": "hard-s", "x-conversation-id": "hard-c"}
LIMIT = 64 * 1024


def chat(**extra: Any) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "user", "content": "hi"}], **extra}


def padded(size: int) -> bytes:
    """A valid chat body of exactly ``size`` bytes."""
    head = b'{"model":"auto","messages":[{"role":"user","content":"'
    tail = b'"}]}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


def nested(depth: int) -> bytes:
    return b'{"model":"auto","messages":' + b"[" * depth + b"]" * depth + b"}"


# (id, path, body, status, OpenAI code)
OPENAI_CASES: list[tuple[str, str, bytes, int, str]] = [
    ("not-json", "/v1/chat/completions", b"hello, router", 400, "invalid_json"),
    (
        "truncated",
        "/v1/chat/completions",
        b'{"model": "auto", "messages": [{"ro',
        400,
        "invalid_json",
    ),
    ("empty", "/v1/chat/completions", b"", 400, "invalid_json"),
    ("whitespace", "/v1/chat/completions", b" \r\n\t ", 400, "invalid_json"),
    (
        "invalid-utf8-in-content",
        "/v1/chat/completions",
        b'{"model":"auto","messages":[{"role":"user","content":"\xc3\x28"}]}',
        400,
        "invalid_json",
    ),
    ("lone-surrogate-escape", "/v1/chat/completions", b'{"model":"\\ud800"}', 400, "invalid_json"),
    ("deeply-nested", "/v1/chat/completions", nested(20_000), 400, "invalid_json"),
    ("form-encoded", "/v1/chat/completions", b"model=auto&messages=hi", 400, "invalid_json"),
    ("array-top-level", "/v1/chat/completions", b"[1, 2, 3]", 400, "invalid_request"),
    ("null-top-level", "/v1/chat/completions", b"null", 400, "invalid_request"),
    ("model-missing", "/v1/chat/completions", b'{"messages": []}', 400, "invalid_request"),
    (
        "model-number",
        "/v1/chat/completions",
        b'{"model": 7, "messages": []}',
        400,
        "invalid_request",
    ),
    (
        "model-blank",
        "/v1/chat/completions",
        json.dumps(chat(model=" ")).encode(),
        400,
        "invalid_request",
    ),
    (
        "unknown-model",
        "/v1/chat/completions",
        json.dumps(chat(model="gpt-9")).encode(),
        404,
        "model_not_found",
    ),
    (
        "unknown-model-60kb-name",
        "/v1/chat/completions",
        json.dumps(chat(model="m" * 60_000)).encode(),
        404,
        "model_not_found",
    ),
    (
        "pool-name-as-model",
        "/v1/chat/completions",
        json.dumps(chat(model="pool_h100_frontier")).encode(),
        404,
        "model_not_found",
    ),
    (
        "duplicate-model-key",
        "/v1/chat/completions",
        b'{"model":"auto","model":"deepseek-r1","messages":[]}',
        400,
        "invalid_request",
    ),
    (
        "messages-string",
        "/v1/chat/completions",
        b'{"model":"auto","messages":"hi"}',
        400,
        "invalid_request",
    ),
    ("messages-missing", "/v1/chat/completions", b'{"model":"auto"}', 400, "invalid_request"),
    (
        "messages-of-numbers",
        "/v1/chat/completions",
        b'{"model":"auto","messages":[1,2]}',
        400,
        "invalid_request",
    ),
    (
        "role-number",
        "/v1/chat/completions",
        b'{"model":"auto","messages":[{"role":5,"content":"x"}]}',
        400,
        "invalid_request",
    ),
    (
        "content-number",
        "/v1/chat/completions",
        b'{"model":"auto","messages":[{"role":"user","content":5}]}',
        400,
        "invalid_request",
    ),
    (
        "tools-object",
        "/v1/chat/completions",
        json.dumps(chat(tools={"a": 1})).encode(),
        400,
        "invalid_request",
    ),
    ("over-limit", "/v1/chat/completions", padded(LIMIT + 1), 413, "body_too_large"),
    (
        "responses-input-number",
        "/v1/responses",
        b'{"model":"auto","input":5}',
        400,
        "invalid_request",
    ),
    ("responses-not-json", "/v1/responses", b"{]", 400, "invalid_json"),
]

# (id, body, status, Anthropic error type)
ANTHROPIC_CASES: list[tuple[str, bytes, int, str]] = [
    ("not-json", b"<xml/>", 400, "invalid_request_error"),
    (
        "messages-string",
        b'{"model":"auto","max_tokens":1,"messages":"hi"}',
        400,
        "invalid_request_error",
    ),
    (
        "content-number",
        b'{"model":"auto","max_tokens":1,"messages":[{"role":"user","content":1}]}',
        400,
        "invalid_request_error",
    ),
    ("unknown-model", b'{"model":"claude-x","max_tokens":1,"messages":[]}', 404, "not_found_error"),
    (
        "over-limit",
        padded(LIMIT + 1).replace(b'"messages"', b'"max_tokens":1,"messages"'),
        413,
        "request_too_large",
    ),
]


@pytest.fixture
def small(settings: Settings) -> Settings:
    """Local settings with a 64 KiB body limit, so limit tests stay cheap."""
    return replace(settings, server=replace(settings.server, max_body_bytes=LIMIT))


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [case[1:] for case in OPENAI_CASES],
    ids=[case[0] for case in OPENAI_CASES],
)
async def test_openai_bad_input_gets_an_openai_error_and_no_state(
    small: Settings, path: str, body: bytes, status: int, code: str
) -> None:
    """Each bad OpenAI-API body is answered with its status and code; the store stays empty."""
    store = MemoryStore()
    async with ExtProcHarness(small, store=store) as saar:
        turn = await saar.exchange(body=body, path=path, headers=SESSION)
        await saar.router.drain()
    assert turn.immediate is not None, "saar let a bad request through"
    assert status == turn.immediate.status.code
    assert {"content-type": "application/json"} == {
        o.header.key: o.header.raw_value.decode() for o in turn.immediate.headers.set_headers
    }
    error = json.loads(turn.immediate.body)["error"]
    assert code == error["code"]
    assert "invalid_request_error" == error["type"]
    assert len(turn.immediate.body) < 1024, "the error echoes request bytes"
    assert 0 == await store.approx_len()


@pytest.mark.parametrize(
    ("body", "status", "kind"),
    [case[1:] for case in ANTHROPIC_CASES],
    ids=[case[0] for case in ANTHROPIC_CASES],
)
async def test_anthropic_bad_input_gets_an_anthropic_error_and_no_state(
    small: Settings, body: bytes, status: int, kind: str
) -> None:
    """Each bad Messages body is answered in Anthropic's error shape; the store stays empty."""
    store = MemoryStore()
    async with ExtProcHarness(small, store=store) as saar:
        turn = await saar.exchange(body=body, path="/v1/messages", headers=SESSION)
    assert turn.immediate is not None
    assert status == turn.immediate.status.code
    payload = json.loads(turn.immediate.body)
    assert {"type": "error", "error": {"type": kind, "message": payload["error"]["message"]}} == (
        payload
    )
    assert 0 == await store.approx_len()


async def test_body_exactly_at_the_limit_is_routed(small: Settings) -> None:
    """A body of exactly max_body_bytes is routed; one byte more is 413 (the limit is inclusive)."""
    async with ExtProcHarness(small) as saar:
        at = await saar.exchange(body=padded(LIMIT), headers=SESSION)
        over = await saar.exchange(body=padded(LIMIT + 1), headers=SESSION)
    assert at.immediate is None
    assert at.cluster is not None
    assert over.immediate is not None and 413 == over.immediate.status.code


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "", "application/json; charset=latin-1"],
)
async def test_content_type_is_not_trusted_the_body_decides(
    settings: Settings, content_type: str
) -> None:
    """A JSON body is routed whatever content-type the client claims (the backend checks it)."""
    async with ExtProcHarness(settings) as saar:
        turn = await saar.exchange(body=chat(), headers={**SESSION, "content-type": content_type})
    assert turn.immediate is None
    assert turn.cluster is not None


async def test_empty_post_with_end_of_stream_headers_gets_a_400(settings: Settings) -> None:
    """A bodiless POST to an LLM path is refused by saar, not passed to the default pool."""
    store = MemoryStore()
    async with ExtProcHarness(settings, store=store) as saar:
        stream = saar.open()
        headers = {":path": "/v1/chat/completions", ":method": "POST", **SESSION}
        reply = await stream.send(request_headers_message(headers, end_of_stream=True))
        await stream.close()
        anthropic = saar.open()
        messages = {**headers, ":path": "/v1/messages"}
        anthropic_reply = await anthropic.send(
            request_headers_message(messages, end_of_stream=True)
        )
        await anthropic.close()
    assert reply.HasField("immediate_response")
    assert 400 == reply.immediate_response.status.code
    assert "invalid_json" == json.loads(reply.immediate_response.body)["error"]["code"]
    assert "error" == json.loads(anthropic_reply.immediate_response.body)["type"]
    assert 0 == await store.approx_len()


async def test_tool_result_without_a_call_passes_through_with_unknown_owner(
    settings: Settings,
) -> None:
    """A tool result whose call id saar never saw is routed as a tool loop with unknown owner."""
    body = {
        "model": "auto",
        "messages": [
            {"role": "user", "content": "read it"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_forged",
                        "type": "function",
                        "function": {"name": "read_file", "arguments": "{}"},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_forged", "content": "contents"},
        ],
    }
    orphan = {
        "model": "auto",
        "messages": [
            {"role": "user", "content": "read it"},
            {"role": "tool", "tool_call_id": "call_never_issued", "content": "contents"},
        ],
    }
    async with ExtProcHarness(settings) as saar:
        forged = await saar.exchange(body=body, headers=SESSION)
        lone = await saar.exchange(body=orphan, headers={"x-session-id": "lone"})
    for turn in (forged, lone):
        assert turn.immediate is None
        assert turn.cluster is not None
    reason = dict(parse_pairs(forged.response_headers["x-vsr-learning-reasons"]))["session_aware"]
    assert "tool_loop_owner_unknown" in reason


async def test_bad_body_then_more_messages_keeps_the_stream_alive(settings: Settings) -> None:
    """After an immediate error the stream still answers stray messages with matching kinds."""
    async with ExtProcHarness(settings) as saar:
        stream = saar.open()
        headers = {":path": "/v1/chat/completions", ":method": "POST", **SESSION}
        await stream.send(request_headers_message(headers))
        error = await stream.send(request_body_message(b"{"))
        again = await stream.send(request_body_message(json.dumps(chat()).encode()))
        await stream.close()
    assert error.HasField("immediate_response")
    assert "request_body" == again.WhichOneof("response")
    assert not again.request_body.HasField("response")
