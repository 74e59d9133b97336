"""Chat Completions through the official openai SDK."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import openai
import pytest
from openai import AsyncOpenAI

from saar.emulator import EmulatorPools, EmulatorSpec

TOOLS = [
    {"type": "function", "function": {"name": "read_file", "parameters": {"type": "object"}}},
    {"type": "function", "function": {"name": "list_dir", "parameters": {"type": "object"}}},
]


def client(pools: EmulatorPools, pool: str = "mi300-small", index: int = 0) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=pools.replica(pool, index).url + "/v1", api_key="x", max_retries=0)


async def test_chat_non_streaming_answers_with_model_and_pool(pools: EmulatorPools) -> None:
    """A plain chat request returns max_tokens_default tokens tagged with model@pool."""
    async with client(pools) as c:
        resp = await c.chat.completions.create(
            model="qwen3-8b", messages=[{"role": "user", "content": "alpha beta"}]
        )
    assert resp.object == "chat.completion"
    assert resp.model == "qwen3-8b"
    assert resp.choices[0].message.content == "[qwen3-8b@mi300-small] alpha beta alpha beta alpha"
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage is not None
    assert resp.usage.completion_tokens == 6
    assert resp.usage.prompt_tokens_details is not None
    assert resp.usage.prompt_tokens_details.cached_tokens == 0


async def test_chat_alias_resolves_to_first_served_model(pools: EmulatorPools) -> None:
    """The alias `auto` is served by the pool's first model, which the response names."""
    async with client(pools) as c:
        resp = await c.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "hi"}], max_tokens=3
        )
    assert resp.model == "qwen3-8b"
    assert resp.usage is not None and resp.usage.completion_tokens == 3


async def test_chat_streaming_with_include_usage(pools: EmulatorPools) -> None:
    """Streaming sends a role chunk, one chunk per token, finish_reason, then a usage chunk."""
    async with client(pools) as c:
        stream = await c.chat.completions.create(
            model="qwen3-8b",
            messages=[{"role": "user", "content": "one two three"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    assert {ch.object for ch in chunks} == {"chat.completion.chunk"}
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == "[qwen3-8b@mi300-small] one two three one two"
    finishes = [ch.choices[0].finish_reason for ch in chunks if ch.choices]
    assert finishes[-1] == "stop"
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.completion_tokens == 6
    assert last.usage.prompt_tokens_details is not None
    assert last.usage.prompt_tokens_details.cached_tokens == 0


async def test_chat_streaming_without_include_usage_has_no_usage_chunk(
    pools: EmulatorPools,
) -> None:
    """Without stream_options.include_usage no chunk carries usage."""
    async with client(pools) as c:
        stream = await c.chat.completions.create(
            model="qwen3-8b", messages=[{"role": "user", "content": "x"}], stream=True
        )
        chunks = [chunk async for chunk in stream]
    assert [ch.usage for ch in chunks if ch.usage is not None] == []
    assert all(ch.choices for ch in chunks)


async def test_chat_parallel_tool_calls_from_markers(pools: EmulatorPools) -> None:
    """Two markers in the last user message yield two tool calls with call_ ids."""
    async with client(pools) as c:
        resp = await c.chat.completions.create(
            model="qwen3-8b",
            tools=TOOLS,
            messages=[
                {
                    "role": "user",
                    "content": 'go [[call:read_file {"path": "a.txt"}]] and [[call:list_dir]]',
                }
            ],
        )
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls or []
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("read_file", {"path": "a.txt"}),
        ("list_dir", {}),
    ]
    assert all(c.id.startswith("call_") for c in calls)


async def test_chat_streaming_tool_calls_reassemble(pools: EmulatorPools) -> None:
    """Streamed delta.tool_calls fragments reassemble into the full calls."""
    async with client(pools) as c:
        stream = await c.chat.completions.create(
            model="qwen3-8b",
            tools=TOOLS,
            messages=[
                {"role": "user", "content": '[[call:read_file {"path": "some/long/path.txt"}]]'}
            ],
            stream=True,
        )
        ids: dict[int, str] = {}
        names: dict[int, str] = {}
        args: dict[int, str] = {}
        finish = None
        async for chunk in stream:
            for choice in chunk.choices:
                finish = choice.finish_reason or finish
                for tc in choice.delta.tool_calls or []:
                    if tc.id:
                        ids[tc.index] = tc.id
                    if tc.function and tc.function.name:
                        names[tc.index] = tc.function.name
                    if tc.function and tc.function.arguments:
                        args[tc.index] = args.get(tc.index, "") + tc.function.arguments
    assert finish == "tool_calls"
    assert names == {0: "read_file"}
    assert json.loads(args[0]) == {"path": "some/long/path.txt"}
    assert ids[0].startswith("call_")


async def test_chat_tool_result_is_answered_with_text(pools: EmulatorPools) -> None:
    """A conversation ending in a tool result gets a text answer naming the tool."""
    async with client(pools) as c:
        first = await c.chat.completions.create(
            model="qwen3-8b",
            tools=TOOLS,
            messages=[{"role": "user", "content": "[[call:read_file]]"}],
        )
        call = (first.choices[0].message.tool_calls or [])[0]
        second = await c.chat.completions.create(
            model="qwen3-8b",
            tools=TOOLS,
            messages=[
                {"role": "user", "content": "[[call:read_file]]"},
                first.choices[0].message.model_dump(exclude_none=True),
                {"role": "tool", "tool_call_id": call.id, "content": "hello from file"},
            ],
            max_tokens=50,
        )
    assert second.choices[0].finish_reason == "stop"
    assert (
        second.choices[0].message.content
        == "[qwen3-8b@mi300-small] Tool read_file returned hello from file"
    )
    records = pools.log(api="chat")
    assert records[-1]["tool_result_ids"] == [call.id]
    assert records[-1]["phase"] == "tool_result"
    assert records[-1]["turn"] == 1
    assert records[0]["tool_call_ids"] == [call.id]


async def test_chat_marker_without_tools_is_plain_text(pools: EmulatorPools) -> None:
    """Markers are ignored when the request declares no tools."""
    async with client(pools) as c:
        resp = await c.chat.completions.create(
            model="qwen3-8b", messages=[{"role": "user", "content": "[[call:read_file]]"}]
        )
    assert resp.choices[0].message.tool_calls in (None, [])
    assert resp.choices[0].finish_reason == "stop"


async def test_unknown_model_is_404_like_vllm(pools: EmulatorPools) -> None:
    """An unknown model name answers vLLM's 404 NotFoundError body."""
    async with aiohttp.ClientSession() as session:
        resp = await session.post(
            pools.replica("mi300-small", 0).url + "/v1/chat/completions",
            json={"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]},
        )
        body = await resp.json()
    assert resp.status == 404
    assert body == {
        "error": {
            "message": "The model `gpt-9` does not exist.",
            "type": "NotFoundError",
            "param": "model",
            "code": 404,
        }
    }
    assert resp.headers["x-emulator-replica"] == "mi300-small/0"


async def test_unknown_model_raises_not_found_in_sdk(pools: EmulatorPools) -> None:
    """The openai SDK sees the 404 as NotFoundError."""
    async with client(pools, "h100-large") as c:
        with pytest.raises(openai.NotFoundError):
            await c.chat.completions.create(
                model="qwen3-8b", messages=[{"role": "user", "content": "x"}]
            )


async def test_bad_json_is_400_with_emulator_headers(pools: EmulatorPools) -> None:
    """A body that is not JSON answers 400 with an OpenAI-style error and the identity headers."""
    async with aiohttp.ClientSession() as session:
        resp = await session.post(
            pools.replica("mi300-small", 1).url + "/v1/chat/completions",
            data=b"{not json",
            headers={"content-type": "application/json"},
        )
        body = await resp.json()
    assert resp.status == 400
    assert body["error"]["code"] == 400
    assert resp.headers["x-emulator-pool"] == "mi300-small"
    assert resp.headers["x-emulator-replica"] == "mi300-small/1"
    assert resp.headers["x-emulator-request-id"]


async def test_models_lists_served_models_and_aliases(pools: EmulatorPools) -> None:
    """GET /v1/models lists the pool's models then its aliases."""
    async with client(pools) as c:
        models = await c.models.list()
    assert [m.id for m in models.data] == ["qwen3-8b", "auto"]


async def test_tool_choice_none_suppresses_marker_calls(pools: EmulatorPools) -> None:
    """tool_choice="none" makes the model answer with text despite a marker."""
    async with client(pools) as c:
        resp = await c.chat.completions.create(
            model="qwen3-8b",
            tools=TOOLS,
            tool_choice="none",
            messages=[{"role": "user", "content": "[[call:read_file]]"}],
        )
    assert resp.choices[0].finish_reason == "stop"
    assert resp.choices[0].message.tool_calls in (None, [])


async def test_max_num_seqs_queues_and_reports_waiting(
    make_config: Callable[..., dict[str, Any]],
) -> None:
    """With max_num_seqs=1 a second concurrent request waits and shows in num_requests_waiting."""
    config = make_config()
    config["pools"]["mi300-small"]["emulator"].update(max_num_seqs=1, ttft_base_ms=300)
    async with EmulatorPools(EmulatorSpec.from_mapping(config)) as running:
        replica = running.replica("mi300-small", 0)
        async with AsyncOpenAI(base_url=replica.url + "/v1", api_key="x") as c:
            calls = [
                asyncio.create_task(
                    c.chat.completions.create(
                        model="qwen3-8b", messages=[{"role": "user", "content": str(i)}]
                    )
                )
                for i in range(2)
            ]
            await asyncio.sleep(0.15)
            metrics = replica.metrics.render().decode()
            started = time.monotonic()
            await asyncio.gather(*calls)
            elapsed = time.monotonic() - started
    assert 'vllm:num_requests_waiting{model_name="qwen3-8b"} 1.0' in metrics
    assert 'vllm:num_requests_running{model_name="qwen3-8b"} 1.0' in metrics
    assert elapsed >= 0.4  # the second request waited for the first one's 0.3 s
