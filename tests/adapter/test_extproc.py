"""The ext_proc adapter over a real gRPC channel: mutations, errors, fail-open, odd streams."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from saar.policy import parse_pairs, response_index_key
from saar.policy.facts import BackendPin
from saar.settings import Settings
from saar.state import MemoryStore, Versioned
from saar.testing.extproc import (
    ExtProcHarness,
    request_body_message,
    request_headers_message,
    response_headers_message,
)

ROOT = Path(__file__).resolve().parents[2]


def chat(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "user", "content": text}], **extra}


SESSION = {"x-session-id": "s-1", "x-conversation-id": "c-1"}


async def test_routes_rewrites_and_clears_route_cache(settings: Settings) -> None:
    """A chat request gets the pool header, affinity key, exact content-length and new model."""
    body = json.dumps(chat("hello there"), indent=1).encode()
    async with ExtProcHarness(settings) as saar:
        turn = await saar.exchange(body=body, headers=SESSION)
    assert "pool_mi300_small" == turn.cluster
    assert turn.clear_route_cache
    assert turn.body is not None
    assert body.replace(b'"auto"', b'"qwen3-8b"') == turn.body
    assert str(len(turn.body)) == turn.request_header_mutations["content-length"]
    assert turn.affinity_key is not None and turn.affinity_key.startswith("ak-")
    headers = turn.response_headers
    assert "qwen3-8b" == headers["x-vsr-selected-model"]
    assert "mi300-small" == headers["x-vsr-selected-pool"]
    assert {"session_aware": "establish_baseline"} == dict(
        parse_pairs(headers["x-vsr-learning-actions"])
    )
    assert {"session_aware": "apply"} == dict(parse_pairs(headers["x-vsr-learning-modes"]))
    assert {"session_aware": "conversation"} == dict(parse_pairs(headers["x-vsr-learning-scopes"]))
    assert 32 == len(headers["x-vsr-replay-id"])


async def test_affinity_key_is_stable_per_conversation(settings: Settings) -> None:
    """Turns of one conversation share an affinity key; another conversation gets another."""
    async with ExtProcHarness(settings) as saar:
        first = await saar.exchange(body=chat("hi"), headers=SESSION)
        second = await saar.exchange(body=chat("and now?"), headers=SESSION)
        other = await saar.exchange(
            body=chat("hi"), headers={"x-session-id": "s-1", "x-conversation-id": "c-2"}
        )
    assert first.affinity_key == second.affinity_key
    assert first.affinity_key != other.affinity_key


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b'{"model": "auto", "messages": [', 400, "invalid_json"),
        (b"\xff\xfe not json", 400, "invalid_json"),
        (b'{"model": "auto", "messages": "hi"}', 400, "invalid_request"),
        (json.dumps(chat("hi") | {"model": "gpt-9"}).encode(), 404, "model_not_found"),
    ],
)
async def test_client_errors_answer_directly_and_change_nothing(
    settings: Settings, body: bytes, status: int, code: str
) -> None:
    """Bad input gets an OpenAI-style error with the right status and no state update."""
    store = MemoryStore()
    async with ExtProcHarness(settings, store=store) as saar:
        turn = await saar.exchange(body=body, headers=SESSION)
    assert turn.immediate is not None
    assert status == turn.immediate.status.code
    error = json.loads(turn.immediate.body)["error"]
    assert code == error["code"]
    assert 0 == await store.approx_len()
    assert turn.cluster is None


async def test_anthropic_errors_use_anthropic_shape(settings: Settings) -> None:
    """A Messages request with bad JSON gets an Anthropic-style error body."""
    async with ExtProcHarness(settings) as saar:
        turn = await saar.exchange(body=b"{", path="/v1/messages", headers=SESSION)
    assert turn.immediate is not None
    payload = json.loads(turn.immediate.body)
    assert "error" == payload["type"]
    assert "invalid_request_error" == payload["error"]["type"]


async def test_oversized_body_is_rejected_with_413(settings: Settings) -> None:
    """A body over server.max_body_bytes is refused with 413 before it is parsed."""
    small = replace(settings, server=replace(settings.server, max_body_bytes=2048))
    async with ExtProcHarness(small) as saar:
        turn = await saar.exchange(body=chat("x" * 4096), headers=SESSION)
    assert turn.immediate is not None
    assert 413 == turn.immediate.status.code


async def test_not_an_llm_call_passes_through(settings: Settings) -> None:
    """GET /v1/models is continued with a mode override that asks for nothing more."""
    async with ExtProcHarness(settings) as saar:
        turn = await saar.exchange(body=b"", path="/v1/models", method="GET")
    reply = turn.request_headers_reply
    assert reply.HasField("mode_override")
    assert 0 == reply.mode_override.request_body_mode  # NONE
    assert turn.request_body_reply is None


async def test_previous_response_on_a_backend_gone_from_config_gets_409(
    settings: Settings,
) -> None:
    """A previous_response_id minted by a backend no longer configured is the client's 409.

    It is not a fail-open: the unmodified request would only reach a backend that never
    stored that response.
    """
    store = MemoryStore()
    gone = BackendPin("qwen3-8b@pool_retired", "ak-0123456789abcdef01234567").encode()
    key = response_index_key("resp_retired")
    assert await store.compare_and_set(key, gone, expected_version=None, ttl_s=60.0) is not None
    body = {"model": "auto", "input": "and then?", "previous_response_id": "resp_retired"}
    async with ExtProcHarness(settings, store=store) as saar:
        turn = await saar.exchange(body=body, path="/v1/responses", headers=SESSION)
        metrics = saar.metrics
        failed_open = metrics.fail_open.labels(phase="request_body", reason="internal_error")
        counted = metrics.client_errors.labels(code="previous_response_unavailable")
    assert turn.immediate is not None
    assert 409 == turn.immediate.status.code
    error = json.loads(turn.immediate.body)["error"]
    assert "previous_response_unavailable" == error["code"]
    assert "previous_response_id" == error["param"]
    assert turn.cluster is None
    assert 0.0 == failed_open._value.get()
    assert 1.0 == counted._value.get()


class BrokenStore(MemoryStore):
    """A store whose every load fails, as an internal error would."""

    async def load(self, key: str) -> Versioned | None:
        raise RuntimeError("disk on fire")


class SlowStore(MemoryStore):
    """A store slower than the decision budget."""

    async def load(self, key: str) -> Versioned | None:
        await asyncio.sleep(1.0)
        return None


class WaitingStore(MemoryStore):
    """A store that waits a little on every load, as a network round trip would."""

    async def load(self, key: str) -> Versioned | None:
        await asyncio.sleep(0.005)
        return await super().load(key)


async def test_a_decision_that_waits_finishes_within_its_budget(settings: Settings) -> None:
    """A decision that suspends is finished under the budget and routes like any other."""
    budget = replace(settings, server=replace(settings.server, decision_budget_ms=500.0))
    async with ExtProcHarness(budget, store=WaitingStore()) as saar:
        first = await saar.exchange(body=chat("hello"), headers=SESSION)
        second = await saar.exchange(body=chat("and again"), headers=SESSION)
        timeouts = saar.metrics.fail_open.labels(phase="request_body", reason="decision_timeout")
    assert "pool_mi300_small" == first.cluster == second.cluster
    assert first.affinity_key == second.affinity_key
    assert "session_aware=establish_baseline" in first.response_headers["x-vsr-learning-actions"]
    assert (
        "session_aware=establish_baseline" not in second.response_headers["x-vsr-learning-actions"]
    )
    assert 0.0 == timeouts._value.get()


@pytest.mark.parametrize(
    ("store", "reason"), [(BrokenStore(), "internal_error"), (SlowStore(), "decision_timeout")]
)
async def test_internal_errors_fail_open(
    settings: Settings, store: MemoryStore, reason: str
) -> None:
    """An internal error or a slow decision continues the body unmodified and is counted."""
    fast = replace(settings, server=replace(settings.server, decision_budget_ms=50.0))
    async with ExtProcHarness(fast, store=store) as saar:
        turn = await saar.exchange(body=chat("hello"), headers=SESSION)
        counted = saar.metrics.fail_open.labels(phase="request_body", reason=reason)._value.get()
    assert turn.immediate is None
    assert turn.request_body_reply is not None
    assert not turn.request_body_reply.request_body.HasField("response")
    assert turn.cluster is None
    assert {} == turn.response_headers
    assert 1.0 == counted


async def test_out_of_order_and_duplicate_messages_get_matching_answers(
    settings: Settings,
) -> None:
    """Messages out of order or twice are answered with the matching kind, never an error."""
    async with ExtProcHarness(settings) as saar:
        stream = saar.open()
        reply = await stream.send(response_headers_message(200))
        assert "response_headers" == reply.WhichOneof("response")
        reply = await stream.send(request_body_message(json.dumps(chat("hi")).encode()))
        assert "request_body" == reply.WhichOneof("response")
        headers = {":path": "/v1/chat/completions", ":method": "POST", **SESSION}
        reply = await stream.send(request_headers_message(headers))
        assert "request_headers" == reply.WhichOneof("response")
        reply = await stream.send(request_headers_message(headers))
        assert "request_headers" == reply.WhichOneof("response")
        await stream.close()


async def test_missing_session_uses_fallback_method(settings: Settings) -> None:
    """Without any identity the base selector decides and the header says fallback."""
    async with ExtProcHarness(settings) as saar:
        body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
        turn = await saar.exchange(body=body, headers={})
    actions = dict(parse_pairs(turn.response_headers["x-vsr-learning-actions"]))
    assert actions["session_aware"] in {"fallback", "establish_baseline"}
    assert turn.cluster is not None


async def test_metrics_count_decisions(settings: Settings) -> None:
    """Every routed request ticks saar_decisions_total with its action and reason."""
    async with ExtProcHarness(settings) as saar:
        await saar.exchange(body=chat("hello"), headers=SESSION)
        await saar.exchange(body=chat("hello again"), headers=SESSION)
        text = saar.metrics.registry.get_sample_value(
            "saar_routed_requests_total", {"model": "qwen3-8b", "pool": "mi300-small"}
        )
    assert 2.0 == text
