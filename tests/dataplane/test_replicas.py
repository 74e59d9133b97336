"""Two saar replicas behind two Envoys sharing one Redis: locks, races and Redis outages."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import openai
import pytest
import redis.asyncio as aioredis

from saar.policy import SessionState, parse_pairs

from .conftest import StackFactory, use_redis

pytestmark = pytest.mark.dataplane

TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {"name": "read_file", "parameters": {"type": "object", "properties": {}}},
    }
]


def api_for(stack: Any, session: str, conversation: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=f"{stack.base_url}/v1",
        api_key="x",
        max_retries=0,
        default_headers={"x-session-id": session, "x-conversation-id": conversation},
    )


async def sessions_in_redis(url: str) -> list[SessionState]:
    """Every session record saar stored in Redis, decoded."""
    client = aioredis.from_url(url)
    try:
        states = []
        async for key in client.scan_iter(match="saar:v1:*"):
            raw = await client.get(key)
            if raw is None:
                continue
            _, _, data = raw.partition(b"\n")
            try:
                states.append(SessionState.decode(data))
            except ValueError:
                continue  # not a session (e.g. a response index entry)
        return states
    finally:
        await client.aclose()


def metric(text: str, name: str, **labels: str) -> float:
    """One sample of a Prometheus exposition (0 when absent)."""
    selector = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = (
        "^" + re.escape(name) + (r"\{" + re.escape(selector) + r"\}" if labels else "") + r" (\S+)$"
    )
    match = re.search(pattern, text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def test_tool_loop_lock_survives_alternating_replicas(
    make_stack: StackFactory, redis_server: Any
) -> None:
    """A tool call answered through the other replica is held on the issuing backend."""
    first = await make_stack(use_redis(redis_server.url))
    second = await make_stack(use_redis(redis_server.url), share_emulator=first)
    messages: list[Any] = [{"role": "user", "content": "refactor it [[call:read_file]]"}]
    async with api_for(first, "alt", "c") as via_a, api_for(second, "alt", "c") as via_b:
        raw = await via_a.chat.completions.with_raw_response.create(
            model="auto", messages=messages, tools=TOOLS
        )
        call = raw.parse().choices[0].message
        assert call.tool_calls
        messages.append(call.model_dump(exclude_none=True))
        messages.append(
            {"role": "tool", "tool_call_id": call.tool_calls[0].id, "content": "file contents"}
        )
        held = await via_b.chat.completions.with_raw_response.create(
            model="auto", messages=messages, tools=TOOLS
        )
    reasons = dict(parse_pairs(held.headers["x-vsr-learning-reasons"]))["session_aware"]
    assert reasons.startswith("hard_lock=tool_loop")
    assert raw.headers["x-emulator-replica"] == held.headers["x-emulator-replica"]
    assert raw.headers["x-vsr-selected-pool"] == held.headers["x-vsr-selected-pool"]


async def test_concurrent_turns_lose_no_update(make_stack: StackFactory, redis_server: Any) -> None:
    """Concurrent turns of one session through both replicas are all counted, none lost."""

    def patient(raw: dict[str, Any]) -> None:
        # This test is about lost updates, not latency: on a loaded 2-core runner a turn
        # that retries many races must not fail open on the decision budget.
        use_redis(redis_server.url)(raw)
        raw["server"]["decision_budget_ms"] = 3000

    first = await make_stack(patient)
    second = await make_stack(patient, share_emulator=first)
    turns = 16
    async with api_for(first, "race", "c") as via_a, api_for(second, "race", "c") as via_b:

        async def turn(index: int) -> Any:
            api = via_a if index % 2 == 0 else via_b
            return await api.chat.completions.with_raw_response.create(
                model="auto", messages=[{"role": "user", "content": f"hello number {index}"}]
            )

        replies = await asyncio.gather(*(turn(i) for i in range(turns)))
    routed = [r for r in replies if "x-vsr-selected-model" in r.headers]
    assert turns == len(routed)
    states = await sessions_in_redis(redis_server.url)
    assert [turns] == [state.turn_count for state in states]
    served = {r.headers["x-vsr-selected-pool"] for r in routed}
    assert 1 == len(served)


async def test_redis_outage_falls_back_and_recovers(
    make_stack: StackFactory, redis_server: Any
) -> None:
    """With Redis killed requests keep flowing and the fallback shows; then it recovers."""
    stack = await make_stack(
        use_redis(
            redis_server.url,
            timeout_ms=50,
            redis={"url": redis_server.url, "breaker_cooldown_seconds": 0.5},
        )
    )
    async with api_for(stack, "outage", "c") as api:

        async def ask(text: str) -> Any:
            started = time.perf_counter()
            raw = await api.chat.completions.with_raw_response.create(
                model="auto", messages=[{"role": "user", "content": text}]
            )
            return raw, time.perf_counter() - started

        ok, _ = await ask("before the outage")
        assert "x-vsr-selected-model" in ok.headers
        redis_server.stop(kill=True)
        during = [await ask(f"during the outage {i}") for i in range(6)]
        assert all(r.status_code == 200 and "x-vsr-selected-model" in r.headers for r, _ in during)
        assert max(elapsed for _, elapsed in during) < 1.0
        text = stack.metrics_text()
        fallbacks = sum(
            float(v)
            for v in re.findall(r"^saar_store_fallbacks_total\{[^}]*\} (\S+)$", text, re.MULTILINE)
        )
        assert fallbacks >= 1
        assert 1.0 == metric(text, "saar_store_breaker_open")
        redis_server.start()
        # Recovery needs no operator: traffic keeps probing half-open until Redis answers.
        deadline = time.monotonic() + 10.0
        while metric(stack.metrics_text(), "saar_store_breaker_open") != 0.0:
            assert time.monotonic() < deadline, "the breaker never closed after Redis returned"
            reply, _ = await ask("after the outage")
            assert "x-vsr-selected-model" in reply.headers
            await asyncio.sleep(0.2)
    assert await sessions_in_redis(redis_server.url)
