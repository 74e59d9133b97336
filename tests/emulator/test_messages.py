"""Anthropic Messages through the official anthropic SDK."""

from __future__ import annotations

from anthropic import AsyncAnthropic

from saar.emulator import EmulatorPools

TOOLS = [{"name": "get_weather", "input_schema": {"type": "object"}}]


def client(pools: EmulatorPools, index: int = 0) -> AsyncAnthropic:
    return AsyncAnthropic(
        base_url=pools.replica("mi300-small", index).url, api_key="x", max_retries=0
    )


async def test_messages_non_streaming_text(pools: EmulatorPools) -> None:
    """A text answer ends with end_turn and reports cache_read_input_tokens."""
    async with client(pools) as c:
        msg = await c.messages.create(
            model="qwen3-8b",
            max_tokens=4,
            system="be brief",
            messages=[{"role": "user", "content": "sun moon"}],
        )
    assert msg.type == "message"
    assert msg.stop_reason == "end_turn"
    assert [b.text for b in msg.content if b.type == "text"] == [
        "[qwen3-8b@mi300-small] sun moon sun"
    ]
    assert msg.usage.output_tokens == 4
    assert msg.usage.cache_read_input_tokens == 0


async def test_messages_cache_read_grows_along_conversation(pools: EmulatorPools) -> None:
    """The second turn of a conversation reads its prefix from the replica's cache."""
    history = [{"role": "user", "content": "lorem " * 50}]
    async with client(pools) as c:
        first = await c.messages.create(model="qwen3-8b", max_tokens=8, messages=history)
        history += [
            {"role": "assistant", "content": first.content[0].text},
            {"role": "user", "content": "next"},
        ]
        second = await c.messages.create(model="qwen3-8b", max_tokens=8, messages=history)
    prompt = second.usage.input_tokens + (second.usage.cache_read_input_tokens or 0)
    assert (second.usage.cache_read_input_tokens or 0) >= 48
    assert prompt > first.usage.input_tokens


async def test_messages_parallel_tool_use_and_result(pools: EmulatorPools) -> None:
    """Markers become tool_use blocks; tool_result blocks are answered with text."""
    async with client(pools) as c:
        first = await c.messages.create(
            model="qwen3-8b",
            max_tokens=64,
            tools=TOOLS,
            messages=[
                {
                    "role": "user",
                    "content": (
                        '[[call:get_weather {"city": "Oslo"}]] '
                        '[[call:get_weather {"city": "Rome"}]]'
                    ),
                }
            ],
        )
        uses = [b for b in first.content if b.type == "tool_use"]
        assert first.stop_reason == "tool_use"
        assert [(u.name, u.input) for u in uses] == [
            ("get_weather", {"city": "Oslo"}),
            ("get_weather", {"city": "Rome"}),
        ]
        second = await c.messages.create(
            model="qwen3-8b",
            max_tokens=64,
            tools=TOOLS,
            messages=[
                {"role": "user", "content": "[[call:get_weather]]"},
                {"role": "assistant", "content": [u.model_dump() for u in uses]},
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": u.id, "content": "sunny"}
                        for u in uses
                    ],
                },
            ],
        )
    assert second.stop_reason == "end_turn"
    assert second.content[0].text == (
        "[qwen3-8b@mi300-small] Tool get_weather returned sunny; Tool get_weather returned sunny"
    )
    assert pools.log(api="messages")[-1]["tool_result_ids"] == [u.id for u in uses]


async def test_messages_streaming_text_and_tool_use(pools: EmulatorPools) -> None:
    """Streaming text and tool_use both reassemble through the SDK's stream helper."""
    async with client(pools) as c:
        async with c.messages.stream(
            model="qwen3-8b", max_tokens=5, messages=[{"role": "user", "content": "up down"}]
        ) as stream:
            text = "".join([t async for t in stream.text_stream])
            final = await stream.get_final_message()
        assert text == "[qwen3-8b@mi300-small] up down up down"
        assert final.usage.output_tokens == 5
        assert final.usage.cache_read_input_tokens == 0
        async with c.messages.stream(
            model="qwen3-8b",
            max_tokens=64,
            tools=TOOLS,
            messages=[{"role": "user", "content": '[[call:get_weather {"city": "Lima"}]]'}],
        ) as stream:
            final = await stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert [(b.name, b.input) for b in final.content if b.type == "tool_use"] == [
        ("get_weather", {"city": "Lima"})
    ]
