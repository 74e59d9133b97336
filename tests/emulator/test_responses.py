"""Responses API through the official openai SDK: store, previous_response_id, tools."""

from __future__ import annotations

import json

import aiohttp
import openai
import pytest
from openai import AsyncOpenAI

from saar.emulator import EmulatorPools

TOOLS = [{"type": "function", "name": "search", "parameters": {"type": "object"}}]


def client(pools: EmulatorPools, index: int = 0) -> AsyncOpenAI:
    return AsyncOpenAI(
        base_url=pools.replica("mi300-small", index).url + "/v1", api_key="x", max_retries=0
    )


async def test_responses_non_streaming_text_and_usage(pools: EmulatorPools) -> None:
    """A text response carries output_text and usage.input_tokens_details.cached_tokens."""
    async with client(pools) as c:
        resp = await c.responses.create(model="qwen3-8b", input="red green blue")
    assert resp.id.startswith("resp_")
    assert resp.status == "completed"
    assert resp.output_text == "[qwen3-8b@mi300-small] red green blue red green"
    assert resp.usage is not None
    assert resp.usage.output_tokens == 6
    assert resp.usage.input_tokens_details.cached_tokens == 0


async def test_responses_streaming_events(pools: EmulatorPools) -> None:
    """Streaming emits created, text deltas and completed with the full response and usage."""
    async with client(pools) as c:
        stream = await c.responses.create(model="qwen3-8b", input="a b c", stream=True)
        events = [event async for event in stream]
    types = [e.type for e in events]
    assert types[0] == "response.created"
    assert types[-1] == "response.completed"
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == "[qwen3-8b@mi300-small] a b c a b"
    done = events[-1].response
    assert done.output_text == deltas
    assert done.usage is not None
    assert done.usage.input_tokens_details.cached_tokens == 0
    assert [e.sequence_number for e in events] == list(range(len(events)))


async def test_responses_function_calls_and_output_continuation(pools: EmulatorPools) -> None:
    """Markers become function_call items; the tool output continues via previous_response_id."""
    async with client(pools) as c:
        first = await c.responses.create(
            model="qwen3-8b",
            tools=TOOLS,
            input='[[call:search {"q": "x"}]] [[call:search {"q": "y"}]]',
        )
        calls = [item for item in first.output if item.type == "function_call"]
        assert [(c.name, json.loads(c.arguments)) for c in calls] == [
            ("search", {"q": "x"}),
            ("search", {"q": "y"}),
        ]
        second = await c.responses.create(
            model="qwen3-8b",
            tools=TOOLS,
            previous_response_id=first.id,
            input=[
                {"type": "function_call_output", "call_id": c.call_id, "output": f"found {i}"}
                for i, c in enumerate(calls)
            ],
            max_output_tokens=40,
        )
    assert second.output_text == (
        "[qwen3-8b@mi300-small] Tool search returned found 0; Tool search returned found 1"
    )
    assert second.previous_response_id == first.id
    records = pools.log(api="responses")
    assert records[0]["tool_call_ids"] == [c.call_id for c in calls]
    assert records[1]["tool_result_ids"] == [c.call_id for c in calls]
    assert records[1]["previous_response_id"] == first.id
    assert records[1]["phase"] == "tool_result"
    # The stored conversation is the prefix of the continuation: it hits the cache.
    assert second.usage is not None
    assert second.usage.input_tokens_details.cached_tokens > 0


async def test_responses_streaming_function_call_events(pools: EmulatorPools) -> None:
    """A streamed function call has output_item.added/done and argument deltas."""
    async with client(pools) as c:
        stream = await c.responses.create(
            model="qwen3-8b",
            tools=TOOLS,
            input='[[call:search {"q": "streamed query"}]]',
            stream=True,
        )
        events = [event async for event in stream]
    types = [e.type for e in events]
    assert "response.output_item.added" in types
    assert "response.output_item.done" in types
    args = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert json.loads(args) == {"q": "streamed query"}
    done = [e.item for e in events if e.type == "response.output_item.done"]
    assert done[0].type == "function_call"
    assert done[0].name == "search"


async def test_previous_response_id_on_minting_replica_grows_cache(pools: EmulatorPools) -> None:
    """previous_response_id works on the replica that minted it and reuses its cached prefix."""
    async with client(pools, 0) as c:
        first = await c.responses.create(model="qwen3-8b", input="word " * 40)
        second = await c.responses.create(
            model="qwen3-8b", previous_response_id=first.id, input="and more words"
        )
    assert second.status == "completed"
    assert second.usage is not None and first.usage is not None
    assert second.usage.input_tokens > first.usage.input_tokens
    assert second.usage.input_tokens_details.cached_tokens >= 32


async def test_previous_response_id_is_404_on_another_replica(pools: EmulatorPools) -> None:
    """Another replica of the same pool does not know the id and answers vLLM's 404."""
    async with client(pools, 0) as c0:
        first = await c0.responses.create(model="qwen3-8b", input="hello")
    async with aiohttp.ClientSession() as session:
        resp = await session.post(
            pools.replica("mi300-small", 1).url + "/v1/responses",
            json={"model": "qwen3-8b", "previous_response_id": first.id, "input": "again"},
        )
        body = await resp.json()
    assert resp.status == 404
    assert body == {
        "error": {
            "message": f"Response with id '{first.id}' not found.",
            "type": "invalid_request_error",
            "param": "previous_response_id",
            "code": 404,
        }
    }
    async with client(pools, 1) as c1:
        with pytest.raises(openai.NotFoundError):
            await c1.responses.create(
                model="qwen3-8b", previous_response_id=first.id, input="again"
            )


async def test_store_false_does_not_store(pools: EmulatorPools) -> None:
    """A response created with store=false cannot be continued, even on the same replica."""
    async with client(pools) as c:
        first = await c.responses.create(model="qwen3-8b", input="hello", store=False)
        with pytest.raises(openai.NotFoundError):
            await c.responses.create(model="qwen3-8b", previous_response_id=first.id, input="x")
    assert [r["stored"] for r in pools.log(api="responses")] == [False, False]
