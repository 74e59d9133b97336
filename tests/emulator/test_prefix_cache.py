"""The prefix cache, tokenizer and tool-call markers, in-process and over HTTP."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from openai import AsyncOpenAI

from saar.emulator import EmulatorPools, EmulatorSpec, PrefixCache
from saar.emulator.script import parse_markers
from saar.emulator.tokens import Turn, render, tokenize


def test_tokenizer_splits_words_and_punctuation() -> None:
    """Each word run and each punctuation mark is one token; whitespace is free."""
    assert tokenize("Hello, world!  x_y 42") == ["Hello", ",", "world", "!", "x_y", "42"]


def test_next_turn_extends_previous_prompt() -> None:
    """Rendering turn N+1 starts with turn N's full token sequence."""
    turn_n = [Turn("system", "sys"), Turn("user", "hi there")]
    turn_n1 = [*turn_n, Turn("assistant", "hello"), Turn("user", "more")]
    first = render("", turn_n)
    assert render("", turn_n1)[: len(first)] == first


def test_cache_hits_only_whole_shared_blocks() -> None:
    """A repeated prompt hits its full blocks; a diverging block and all after it miss."""
    cache = PrefixCache(capacity_blocks=100, block_size=4)
    tokens = [str(i) for i in range(10)]  # 2 full blocks + 2 tokens
    assert cache.lookup_and_insert(cache.chain(tokens, "m", None)) == 0
    assert cache.lookup_and_insert(cache.chain(tokens, "m", None)) == 8
    diverged = [*tokens[:5], "x", *tokens[6:]]
    assert cache.lookup_and_insert(cache.chain(diverged, "m", None)) == 4


def test_cache_salt_and_model_partition_the_cache() -> None:
    """The same tokens under another salt or model share nothing."""
    cache = PrefixCache(capacity_blocks=100, block_size=4)
    tokens = [str(i) for i in range(8)]
    cache.lookup_and_insert(cache.chain(tokens, "m", None))
    assert cache.lookup_and_insert(cache.chain(tokens, "m", "tenant-a")) == 0
    assert cache.lookup_and_insert(cache.chain(tokens, "other", None)) == 0
    assert cache.lookup_and_insert(cache.chain(tokens, "m", "tenant-a")) == 8


def test_cache_evicts_least_recently_used_blocks() -> None:
    """With room for 2 blocks, inserting a third prompt evicts the oldest."""
    cache = PrefixCache(capacity_blocks=2, block_size=2)
    a, b, c = ["a", "a"], ["b", "b"], ["c", "c"]
    for tokens in (a, b):
        cache.lookup_and_insert(cache.chain(tokens, "m", None))
    assert cache.lookup_and_insert(cache.chain(a, "m", None)) == 2  # refreshes a
    cache.lookup_and_insert(cache.chain(c, "m", None))  # evicts b, the LRU
    assert len(cache) == 2
    assert cache.lookup_and_insert(cache.chain(b, "m", None)) == 0
    assert cache.usage == 1.0


def test_markers_parse_names_and_json_args() -> None:
    """Markers yield (name, compact JSON args), defaulting to {}."""
    text = 'a [[call:ls]] b [[call:read {"path": "x"}]] [[call:bad {nope}]]'
    assert parse_markers(text) == [
        ("ls", "{}"),
        ("read", '{"path":"x"}'),
        ("bad", '{"raw":"{nope}"}'),
    ]


async def test_cached_tokens_grow_on_one_replica_and_are_zero_on_another(
    pools: EmulatorPools,
) -> None:
    """A conversation's cached tokens grow on its replica; the same prompt elsewhere is cold."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": "context " * 60}]
    cached: list[int] = []
    r0 = AsyncOpenAI(base_url=pools.replica("mi300-small", 0).url + "/v1", api_key="x")
    r1 = AsyncOpenAI(base_url=pools.replica("mi300-small", 1).url + "/v1", api_key="x")
    async with r0, r1:
        for turn in range(3):
            resp = await r0.chat.completions.create(model="qwen3-8b", messages=messages)
            assert resp.usage is not None and resp.usage.prompt_tokens_details is not None
            cached.append(resp.usage.prompt_tokens_details.cached_tokens or 0)
            messages += [
                {"role": "assistant", "content": resp.choices[0].message.content},
                {"role": "user", "content": f"turn {turn} " * 10},
            ]
        other = await r1.chat.completions.create(model="qwen3-8b", messages=messages)
    assert cached[0] == 0
    assert cached[0] < cached[1] < cached[2]
    assert other.usage is not None and other.usage.prompt_tokens_details is not None
    assert other.usage.prompt_tokens_details.cached_tokens == 0
    # Backend truth agrees with what the client saw.
    assert [r["cached_tokens"] for r in pools.log(pool="mi300-small", replica=0)] == cached


async def test_lru_eviction_over_http_with_tiny_capacity(
    make_config: Callable[..., dict[str, Any]],
) -> None:
    """With a 4-block cache a second long prompt evicts the first one's blocks."""
    spec = EmulatorSpec.from_mapping(make_config(cache_blocks=4, block_size=4))
    async with EmulatorPools(spec) as pools:
        c = AsyncOpenAI(base_url=pools.replica("mi300-small", 0).url + "/v1", api_key="x")
        async with c:

            async def cached(text: str) -> int:
                resp = await c.chat.completions.create(
                    model="qwen3-8b", messages=[{"role": "user", "content": text}], max_tokens=1
                )
                assert resp.usage is not None and resp.usage.prompt_tokens_details is not None
                return resp.usage.prompt_tokens_details.cached_tokens or 0

            a, b = "alpha " * 12, "beta " * 12
            assert await cached(a) == 0
            assert await cached(a) == 12  # 3 of its 4 full blocks (the last token is recomputed)
            assert await cached(b) == 0  # fills the 4-block cache, evicting a
            assert await cached(a) == 0
        assert len(pools.replica("mi300-small", 0).cache) == 4


async def test_prefill_time_is_saved_by_cache_hits(
    make_config: Callable[..., dict[str, Any]],
) -> None:
    """TTFT charges prefill only for uncached tokens: a repeated long prompt answers faster."""
    config = make_config()
    config["pools"]["mi300-small"]["emulator"].update(prefill_us_per_token=200, ttft_base_ms=1)
    async with EmulatorPools(EmulatorSpec.from_mapping(config)) as pools:
        c = AsyncOpenAI(base_url=pools.replica("mi300-small", 0).url + "/v1", api_key="x")
        messages: Any = [{"role": "user", "content": "token " * 600}]
        async with c:
            elapsed = []
            for _ in range(2):
                started = time.monotonic()
                await c.chat.completions.create(model="qwen3-8b", messages=messages)
                elapsed.append(time.monotonic() - started)
    cold, warm = elapsed
    assert cold >= 0.12  # 1 ms + 603 uncached tokens x 200 us
    assert warm < 0.08  # at most one block (16 tokens) left to prefill
