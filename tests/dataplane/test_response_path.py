"""The response path through real Envoy: statuses from the access log, ids, calls and usage.

By default (``server.response_path: access_log``, docs/design/0004) a Chat call is two ext_proc
messages and its status and replica come from Envoy's gRPC access log; a Responses API
stream is watched only until its id. Under ``stream`` saar observes bodies to the end and
learns tool call ids and usage from them.
"""

from __future__ import annotations

import asyncio
from typing import Any

import openai
import pytest

from saar.policy import parse_pairs

from .conftest import StackFactory, use_redis
from .test_operations import samples
from .test_replicas import sessions_in_redis

pytestmark = pytest.mark.dataplane

TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {"name": "grep", "parameters": {"type": "object", "properties": {}}},
    }
]
RESPONSES_TOOLS: list[Any] = [
    {"type": "function", "name": "grep", "parameters": {"type": "object", "properties": {}}}
]


def client(stack: Any, session: str, conversation: str, **kwargs: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=f"{stack.base_url}/v1",
        api_key="x",
        default_headers={"x-session-id": session, "x-conversation-id": conversation},
        **{"max_retries": 0, **kwargs},
    )


def verdict(headers: Any) -> str:
    return dict(parse_pairs(headers["x-vsr-learning-reasons"]))["session_aware"]


def stream_path(raw: dict[str, Any]) -> None:
    """Observe response bodies to the end (tool call ids, usage)."""
    raw.setdefault("server", {})["response_path"] = "stream"


async def test_streamed_tool_calls_open_the_loop(make_stack: StackFactory) -> None:
    """Tool calls emitted in an SSE stream are learned; their results are held on that model."""
    stack = await make_stack(stream_path)
    messages: list[Any] = [{"role": "user", "content": "find the bug [[call:grep]] [[call:grep]]"}]
    async with client(stack, "stream-tools", "c") as api:
        raw = await api.chat.completions.with_raw_response.create(
            model="auto", messages=messages, tools=TOOLS, stream=True
        )
        calls: dict[int, str] = {}
        async for chunk in raw.parse():
            for delta in chunk.choices[0].delta.tool_calls or [] if chunk.choices else []:
                if delta.id:
                    calls[delta.index] = delta.id
        assert 2 == len(calls)
        messages.append(
            {
                "role": "assistant",
                "tool_calls": [
                    {"id": i, "type": "function", "function": {"name": "grep", "arguments": "{}"}}
                    for i in calls.values()
                ],
            }
        )
        messages += [
            {"role": "tool", "tool_call_id": i, "content": "match"} for i in calls.values()
        ]
        held = await api.chat.completions.with_raw_response.create(
            model="auto", messages=messages, tools=TOOLS
        )
        messages.append(held.parse().choices[0].message.model_dump(exclude_none=True))
        messages.append({"role": "user", "content": "thanks, what next?"})
        after = await api.chat.completions.with_raw_response.create(
            model="auto", messages=messages, tools=TOOLS
        )
    assert "hard_lock=tool_loop" == verdict(held.headers)
    assert raw.headers["x-emulator-replica"] == held.headers["x-emulator-replica"]
    # Both parallel calls were answered in one message: the loop is closed, not locked forever.
    assert not verdict(after.headers).startswith("hard_lock")


async def test_previous_response_id_follows_its_backend_across_conversations_and_replicas(
    make_stack: StackFactory, redis_server: Any
) -> None:
    """A response id minted via one replica is continued on its backend from another one."""
    first = await make_stack(use_redis(redis_server.url))
    second = await make_stack(use_redis(redis_server.url), share_emulator=first)
    async with (
        client(first, "chain", "conv-a") as via_a,
        client(second, "chain", "conv-b") as via_b,
    ):
        minted = await via_a.responses.with_raw_response.create(
            model="auto", input="outline the refactor of the parser"
        )
        response_id = minted.parse().id
        continued = await via_b.responses.with_raw_response.create(
            model="auto", input="and now write it", previous_response_id=response_id
        )
    assert 200 == continued.status_code
    assert verdict(continued.headers).startswith("hard_lock=provider_state")
    assert minted.headers["x-emulator-replica"] == continued.headers["x-emulator-replica"]
    log = [r for r in first.backend_log() if r.get("previous_response_id") == response_id]
    assert [200] == [r["status"] for r in log]


async def test_cache_warmth_evidence_rises_along_a_session(
    make_stack: StackFactory, redis_server: Any
) -> None:
    """The cached tokens saar learns from usage grow turn by turn on the session's replica."""
    redis = use_redis(redis_server.url)

    def edit(raw: dict[str, Any]) -> None:
        redis(raw)
        stream_path(raw)

    stack = await make_stack(edit)
    messages: list[Any] = [{"role": "system", "content": "You are a careful assistant. " * 20}]
    evidence: list[int] = []
    async with client(stack, "warm", "c") as api:
        for turn in range(4):
            messages.append({"role": "user", "content": f"step {turn}: keep going with the plan"})
            raw = await api.chat.completions.with_raw_response.create(
                model="auto", messages=messages
            )
            messages.append(raw.parse().choices[0].message.model_dump(exclude_none=True))
            await _settle()
            (state,) = await sessions_in_redis(redis_server.url)
            evidence.append(state.evidence_cached)
    assert 0 == evidence[0]
    assert evidence == sorted(evidence)
    assert evidence[-1] > evidence[1] > 0


async def _settle() -> None:
    """Give the off-path response learning a moment to land."""
    await asyncio.sleep(0.2)


async def test_injected_503_in_a_tool_loop_retries_on_the_same_backend(
    make_stack: StackFactory,
) -> None:
    """A 503 on a tool-result turn keeps the lock: the SDK's retry lands on the same replica."""
    stack = await make_stack()
    stack.control_post(
        "/_emulator/faults",
        {
            "rules": [
                {"match": {"session": "flaky", "phase": "tool_result"}, "status": 503, "times": 1}
            ]
        },
    )
    messages: list[Any] = [{"role": "user", "content": "look it up [[call:grep]]"}]
    async with client(stack, "flaky", "c", max_retries=2) as api:
        raw = await api.chat.completions.with_raw_response.create(
            model="auto", messages=messages, tools=TOOLS
        )
        call = raw.parse().choices[0].message
        messages.append(call.model_dump(exclude_none=True))
        messages.append({"role": "tool", "tool_call_id": call.tool_calls[0].id, "content": "ok"})
        retried = await api.chat.completions.with_raw_response.create(
            model="auto", messages=messages, tools=TOOLS
        )
    assert 200 == retried.status_code
    log = [r for r in stack.backend_log() if r.get("session_id") == "flaky"]
    results = [r for r in log if r["tool_result_ids"]]
    assert [503, 200] == [r["status"] for r in results]
    replicas = {f"{r['pool']}/{r['replica']}" for r in log}
    assert 1 == len(replicas)
    assert "hard_lock=tool_loop" == verdict(retried.headers)


def slow_decode(raw: dict[str, Any]) -> None:
    """Tokens come out 3 ms apart, so a stream reaches Envoy in many chunks."""
    for pool in raw["pools"].values():
        pool["emulator"]["decode_us_per_token"] = 3_000


async def test_responses_stream_is_released_after_its_id_and_still_reaches_the_client(
    make_stack: StackFactory,
) -> None:
    """saar leaves a Responses stream once the id is read; the client still gets all of it."""
    stack = await make_stack(slow_decode)
    async with client(stack, "released", "c-1") as api:
        events = [
            event
            async for event in await api.responses.create(
                model="auto", input="outline the plan", stream=True, max_output_tokens=60
            )
        ]
        kinds = [event.type for event in events]
        assert "response.created" == kinds[0]
        assert "response.completed" == kinds[-1]
        deltas = kinds.count("response.output_text.delta")
        assert deltas >= 30
        response_id = events[-1].response.id
        continued = await api.responses.with_raw_response.create(
            model="auto", input="and now write it", previous_response_id=response_id
        )
    assert 200 == continued.status_code
    assert verdict(continued.headers).startswith("hard_lock=provider_state")
    # The first stream: a chunk or two reached saar, not one per token.
    counts = samples(stack.metrics_text(), "saar_extproc_message_seconds_count")
    assert counts['{phase="response_body"}'] <= 4 < deltas
    log = [r for r in stack.backend_log() if r.get("session_id") == "released"]
    assert [200, 200] == [r["status"] for r in log]
    assert log[0]["replica"] == log[1]["replica"]


async def test_statuses_come_from_the_access_log_and_forged_contract_headers_are_dropped(
    make_stack: StackFactory,
) -> None:
    """Status and replica of each routed chat call arrive batched; a client cannot forge them."""
    stack = await make_stack()
    stack.control_post(
        "/_emulator/faults",
        {"rules": [{"match": {"session": "logged"}, "status": 503, "times": 1}]},
    )
    forged = {"x-vsr-replay-id": "forged-id", "x-vsr-selected-model": "gpt-forged"}
    async with client(stack, "logged", "c") as api:
        with pytest.raises(openai.InternalServerError) as raised:
            await api.chat.completions.create(
                model="auto", messages=[{"role": "user", "content": "hello"}], extra_headers=forged
            )
        assert raised.value.response.headers["x-vsr-replay-id"] != "forged-id"
        ok = await api.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": "hello"}], extra_headers=forged
        )
    assert "gpt-forged" != ok.headers["x-vsr-selected-model"]
    assert "forged-id" != ok.headers["x-vsr-replay-id"]
    entries: dict[str, float] = {}
    for _ in range(40):  # Envoy flushes its access-log batch every 100 ms
        entries = samples(stack.metrics_text(), "saar_access_log_entries_total")
        if entries.get('{outcome="matched"}') == 2:
            break
        await asyncio.sleep(0.05)
    assert {'{outcome="matched"}': 2.0} == entries
    responses = samples(stack.metrics_text(), "saar_upstream_responses_total")
    by_class = {
        cls: sum(v for labels, v in responses.items() if f'status_class="{cls}"' in labels)
        for cls in ("2xx", "5xx")
    }
    assert {"2xx": 1.0, "5xx": 1.0} == by_class
