"""The control port: fault plans, replica down/up, the merged truth log; and /metrics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from saar.emulator import EmulatorPools, EmulatorSpec, FaultPlan

CHAT = {"model": "qwen3-8b", "messages": [{"role": "user", "content": "hi"}]}


async def post_chat(
    session: aiohttp.ClientSession,
    pools: EmulatorPools,
    index: int = 0,
    headers: dict[str, str] | None = None,
    body: dict[str, Any] | None = None,
) -> aiohttp.ClientResponse:
    url = pools.replica("mi300-small", index).url + "/v1/chat/completions"
    resp = await session.post(url, json=body or CHAT, headers=headers or {})
    await resp.read()
    return resp


async def test_fault_plan_503_once_then_success(pools: EmulatorPools) -> None:
    """A rule with times=1 fails the first matching request with 503 and then lets requests by."""
    plan = {
        "rules": [
            {
                "match": {"session": "s1", "pool": "mi300-small", "replica": 0, "api": "chat"},
                "status": 503,
                "times": 1,
            }
        ]
    }
    async with aiohttp.ClientSession() as session:
        set_resp = await session.post(f"{pools.control_url}/_emulator/faults", json=plan)
        assert set_resp.status == 200
        other = await post_chat(session, pools, headers={"x-session-id": "s2"})
        first = await post_chat(session, pools, headers={"x-session-id": "s1"})
        second = await post_chat(session, pools, headers={"x-session-id": "s1"})
        state = await (await session.get(f"{pools.control_url}/_emulator/faults")).json()
    assert [other.status, first.status, second.status] == [200, 503, 200]
    assert first.headers["x-emulator-replica"] == "mi300-small/0"
    assert state["rules"][0]["times"] == 0
    assert [r["fault"] for r in pools.log(session_id="s1")] == ["503", None]


async def test_fault_rule_matches_turn_and_phase(pools: EmulatorPools) -> None:
    """turn counts assistant messages already present; phase tool_result matches tool results."""
    pools.set_faults(
        {"rules": [{"match": {"turn": 1, "phase": "tool_result"}, "status": 429, "times": None}]}
    )
    tool_turn = {
        "model": "qwen3-8b",
        "messages": [
            {"role": "user", "content": "go"},
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "f", "arguments": "{}"},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "ok"},
        ],
    }
    user_turn = {
        **tool_turn,
        "messages": [*tool_turn["messages"], {"role": "user", "content": "x"}],
    }
    async with aiohttp.ClientSession() as session:
        statuses = [
            (await post_chat(session, pools, body=tool_turn)).status,
            (await post_chat(session, pools, body=tool_turn)).status,
            (await post_chat(session, pools, body=user_turn)).status,
            (await post_chat(session, pools)).status,
        ]
    assert statuses == [429, 429, 200, 200]


async def test_timeout_fault_holds_then_answers_504(pools: EmulatorPools) -> None:
    """A timeout rule holds the request for delay_s and then answers 504."""
    pools.set_faults({"rules": [{"match": {}, "status": "timeout", "delay_s": 0.2}]})
    async with aiohttp.ClientSession() as session:
        started = time.monotonic()
        resp = await post_chat(session, pools)
        elapsed = time.monotonic() - started
    assert resp.status == 504
    assert elapsed >= 0.2


async def test_bad_fault_plan_is_rejected_with_path(pools: EmulatorPools) -> None:
    """A malformed plan is a 400 naming the offending path, and the old plan stays."""
    async with aiohttp.ClientSession() as session:
        resp = await session.post(
            f"{pools.control_url}/_emulator/faults", json={"rules": [{"status": 418}]}
        )
        body = await resp.json()
    assert resp.status == 400
    assert body["error"]["message"].startswith("rules[0].status must be one of")
    with pytest.raises(ValueError, match=r"rules\[0\]\.match has unknown keys: colour"):
        FaultPlan.from_mapping({"rules": [{"match": {"colour": "red"}, "status": 503}]})


async def test_faults_delete_clears_plan(pools: EmulatorPools) -> None:
    """DELETE /_emulator/faults removes every rule."""
    pools.set_faults({"rules": [{"status": 500, "times": None}]})
    async with aiohttp.ClientSession() as session:
        assert (await post_chat(session, pools)).status == 500
        await session.delete(f"{pools.control_url}/_emulator/faults")
        assert (await post_chat(session, pools)).status == 200


async def test_replica_down_then_up(pools: EmulatorPools) -> None:
    """A down replica answers 503 on /health and generation; up restores both."""
    control = pools.control_url
    replica = pools.replica("mi300-small", 1)
    async with aiohttp.ClientSession() as session:
        down = await session.post(f"{control}/_emulator/replicas/mi300-small/1/down")
        assert (await down.json())["state"] == "down"
        health_down = (await session.get(replica.url + "/health")).status
        chat_down = (await post_chat(session, pools, index=1)).status
        other = (await session.get(pools.replica("mi300-small", 0).url + "/health")).status
        listing = await (await session.get(f"{control}/_emulator/replicas")).json()
        await session.post(f"{control}/_emulator/replicas/mi300-small/1/up")
        health_up = (await session.get(replica.url + "/health")).status
        chat_up = (await post_chat(session, pools, index=1)).status
    assert [health_down, chat_down, other, health_up, chat_up] == [503, 503, 200, 200, 200]
    assert [(r["name"], r["state"]) for r in listing] == [
        ("mi300-small/0", "up"),
        ("mi300-small/1", "down"),
        ("h100-large/0", "up"),
    ]
    assert listing[1]["port"] == replica.port


async def test_log_records_affinity_session_and_router_headers(pools: EmulatorPools) -> None:
    """The truth log keeps identity headers and x-saar-/x-vsr- headers, on both log endpoints."""
    headers = {
        "x-saar-affinity-key": "aff-1",
        "x-session-id": "sess-9",
        "x-conversation-id": "conv-3",
        "x-vsr-selected-model": "qwen3-8b",
        "authorization": "Bearer secret",
    }
    async with aiohttp.ClientSession() as session:
        await post_chat(session, pools, headers=headers)
        merged = await (
            await session.get(f"{pools.control_url}/_emulator/log?session_id=sess-9")
        ).json()
        local = await (
            await session.get(pools.replica("mi300-small", 0).url + "/_emulator/log")
        ).json()
    assert merged == local
    (record,) = merged
    assert (record["pool"], record["replica"], record["status"]) == ("mi300-small", 0, 200)
    assert (record["affinity_key"], record["session_id"], record["conversation_id"]) == (
        "aff-1",
        "sess-9",
        "conv-3",
    )
    assert record["headers"] == {
        "x-saar-affinity-key": "aff-1",
        "x-vsr-selected-model": "qwen3-8b",
    }
    assert record["response_id"].startswith("chatcmpl-")


async def test_log_records_previous_response_id(pools: EmulatorPools) -> None:
    """Responses continuations log the previous_response_id and the id they minted."""
    url = pools.replica("mi300-small", 0).url + "/v1/responses"
    async with aiohttp.ClientSession() as session:
        first = await (await session.post(url, json={"model": "auto", "input": "a"})).json()
        await session.post(
            url, json={"model": "auto", "input": "b", "previous_response_id": first["id"]}
        )
    records = pools.log(api="responses")
    assert [(r["previous_response_id"], r["response_id"] == first["id"]) for r in records] == [
        (None, True),
        (first["id"], False),
    ]
    assert [r["phase"] for r in records] == ["user_turn", "continuation"]


async def test_metrics_expose_vllm_names(pools: EmulatorPools) -> None:
    """/metrics uses vLLM's metric names with a model_name label and counts tokens."""
    async with aiohttp.ClientSession() as session:
        await post_chat(session, pools)
        await post_chat(session, pools)
        text = await (await session.get(pools.replica("mi300-small", 0).url + "/metrics")).text()
    for name in (
        "vllm:prefix_cache_queries_total",
        "vllm:prefix_cache_hits_total",
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:prompt_tokens_total",
        "vllm:generation_tokens_total",
        "vllm:request_success_total",
        "vllm:kv_cache_usage_perc",
        "vllm:time_to_first_token_seconds_bucket",
    ):
        lines = [line for line in text.splitlines() if line.startswith(name + "{")]
        assert lines, name
        assert all('model_name="qwen3-8b"' in line for line in lines), name
    samples = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    records = pools.log(replica=0, pool="mi300-small")
    assert samples['vllm:prompt_tokens_total{model_name="qwen3-8b"}'] == sum(
        r["prompt_tokens"] for r in records
    )
    assert samples['vllm:prefix_cache_hits_total{model_name="qwen3-8b"}'] == sum(
        r["cached_tokens"] for r in records
    )
    assert samples['vllm:generation_tokens_total{model_name="qwen3-8b"}'] == 12
    assert samples['vllm:num_requests_running{model_name="qwen3-8b"}'] == 0


async def test_client_hanging_up_mid_stream_is_logged_as_499(
    make_config: Callable[..., dict[str, Any]],
) -> None:
    """A stream the client abandons is logged as 499 and leaves no running request behind."""
    config = make_config()
    config["pools"]["mi300-small"]["emulator"]["decode_us_per_token"] = 20_000
    async with EmulatorPools(EmulatorSpec.from_mapping(config)) as pools:
        replica = pools.replica("mi300-small", 0)
        body = {**CHAT, "stream": True, "max_tokens": 200}
        async with aiohttp.ClientSession() as session:
            resp = await session.post(replica.url + "/v1/chat/completions", json=body)
            await resp.content.readline()
            resp.close()
        for _ in range(50):
            if pools.log():
                break
            await asyncio.sleep(0.02)
        assert [r["status"] for r in pools.log()] == [499]
        metrics = replica.metrics.render().decode()
    assert 'vllm:num_requests_running{model_name="qwen3-8b"} 0.0' in metrics
