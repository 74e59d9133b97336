"""Faults: router memory gone, replay disk full or locked, saar restarted or killed mid-flight.

The promise under test is the house rule "anything internal fails open": requests keep
flowing with a clear, counted reason, and whatever state survives is still right.
"""

from __future__ import annotations

import asyncio
import re
import resource
import signal
import sqlite3
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import openai
import pytest
from dataplane.conftest import Stack, StackFactory, use_redis

from saar.policy import parse_pairs
from saar.settings import Settings
from saar.state import build_store
from saar.testing.extproc import ExtProcHarness

TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {"name": "read_file", "parameters": {"type": "object", "properties": {}}},
    }
]


def api(stack: Stack, session: str, **kwargs: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=f"{stack.base_url}/v1",
        api_key="x",
        max_retries=0,
        default_headers={"x-session-id": session, "x-conversation-id": f"{session}-c"},
        **kwargs,
    )


def reason(headers: Any) -> str:
    return str(dict(parse_pairs(headers["x-vsr-learning-reasons"]))["session_aware"])


def action(headers: Any) -> str:
    return str(dict(parse_pairs(headers["x-vsr-learning-actions"]))["session_aware"])


def metric_sum(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for match in re.finditer(rf"^{re.escape(name)}(?:\{{([^}}]*)\}})? (\S+)$", text, re.MULTILINE):
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match.group(2))
    return total


async def test_fail_open_to_none_routes_every_turn_as_fresh(
    settings: Settings, redis_server: Any
) -> None:
    """With Redis down and fail_open_to none, turns are routed, each as a new session."""
    state = replace(
        settings.state,
        backend="redis",
        redis_url=redis_server.url,
        fail_open_to="none",
        timeout_ms=50.0,
    )
    shared = replace(settings, state=state)
    store = build_store(shared.state)
    body = {"model": "auto", "messages": [{"role": "user", "content": "hello"}]}
    session = {"x-session-id": "none-s", "x-conversation-id": "none-c"}
    # Connect and load the CAS script before the timed turns: on a loaded machine the first
    # round trip alone can exceed the decision budget, which fails that turn open (by design).
    await store.compare_and_set("warm-up", b"x", expected_version=None, ttl_s=60)
    async with ExtProcHarness(shared, store=store) as saar:
        await saar.exchange(body=body, headers=session)
        second = await saar.exchange(body=body, headers=session)
        assert "establish_baseline" != action(second.response_headers)
        redis_server.stop(kill=True)
        started = time.perf_counter()
        outage = [await saar.exchange(body=body, headers=session) for _ in range(4)]
        elapsed = time.perf_counter() - started
        await saar.router.drain()
    for turn in outage:
        assert turn.immediate is None
        assert turn.cluster is not None
        # "No memory": every turn is decided as a session's first, none from stale state.
        assert "establish_baseline" == action(turn.response_headers)
    assert elapsed < 2.0, "the breaker did not stop paying the Redis timeout"


def child_pids(pid: int) -> list[int]:
    """The live child processes of ``pid``."""
    return [
        int(child)
        for task in Path(f"/proc/{pid}/task").iterdir()
        for child in (task / "children").read_text().split()
    ]


def with_replay(path: Path, **extra: Any) -> Any:
    def edit(raw: dict[str, Any]) -> None:
        raw["replay"] = {"enabled": True, "path": str(path), "flush_interval_ms": 20, **extra}

    return edit


async def chat_turns(stack: Stack, count: int, session: str) -> list[Any]:
    async with api(stack, session) as client:
        replies = []
        for index in range(count):
            started = time.perf_counter()
            raw = await client.chat.completions.with_raw_response.create(
                model="auto", messages=[{"role": "user", "content": f"turn {index}"}]
            )
            replies.append((raw, time.perf_counter() - started))
        return replies


@pytest.mark.dataplane
async def test_replay_disk_full_drops_and_counts_while_requests_flow(
    make_stack: StackFactory, tmp_path: Path
) -> None:
    """A replay file that cannot grow (RLIMIT_FSIZE) drops records, counts them, routes on."""
    db = tmp_path / "replay" / "replay.sqlite3"
    stack = await make_stack(with_replay(db))
    await chat_turns(stack, 2, "disk")
    await asyncio.sleep(0.3)
    saar = stack.local.children["saar"]
    assert saar.process is not None
    sizes = [p.stat().st_size for p in db.parent.iterdir()] + [saar.log_path.stat().st_size]
    # Every file saar writes may grow by a few KiB at most: the WAL fills at once.
    limit = max(sizes) + 8192
    # The replay writer is saar's child process (replay.writer: process): limit it too.
    writers = child_pids(saar.process.pid)
    assert writers, "saar started no replay writer process"
    for pid in (saar.process.pid, *writers):
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (limit, limit))
    replies = await chat_turns(stack, 40, "disk")
    await asyncio.sleep(0.5)
    text = stack.metrics_text()
    assert [200] * 40 == [raw.status_code for raw, _ in replies]
    assert all("x-vsr-selected-model" in raw.headers for raw, _ in replies)
    dropped = metric_sum(text, "saar_replay_dropped_total", reason="disk_full")
    assert dropped >= 1, saar.output()[-2000:]
    assert saar.alive()
    assert "Traceback" not in saar.output()


@pytest.mark.dataplane
async def test_replay_db_locked_drops_and_counts_while_requests_flow(
    make_stack: StackFactory, tmp_path: Path
) -> None:
    """Another process holding the replay file's write lock costs records, never requests."""
    db = tmp_path / "replay.sqlite3"
    stack = await make_stack(with_replay(db, queue_size=16, batch_size=4))
    await chat_turns(stack, 1, "lock")
    holder = sqlite3.connect(db, timeout=0.1, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        replies = await chat_turns(stack, 40, "lock")
        await asyncio.sleep(2.5)  # past the writer's busy timeout
        text = stack.metrics_text()
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert [200] * 40 == [raw.status_code for raw, _ in replies]
    assert all("x-vsr-selected-model" in raw.headers for raw, _ in replies)
    # The hot path never waits for the writer: a turn stays far below the 2 s busy timeout.
    assert max(elapsed for _, elapsed in replies) < 1.0
    dropped = metric_sum(text, "saar_replay_dropped_total", reason="db_locked") + metric_sum(
        text, "saar_replay_dropped_total", reason="queue_full"
    )
    assert dropped >= 1
    # Once the lock is gone, records are written again.
    written_before = metric_sum(text, "saar_replay_written_total")
    await chat_turns(stack, 3, "lock-after")
    await asyncio.sleep(2.5)
    assert metric_sum(stack.metrics_text(), "saar_replay_written_total") > written_before


async def open_tool_loop(stack: Stack, session: str) -> tuple[list[Any], Any]:
    """First turn of an agent: the backend answers with a tool call."""
    messages: list[Any] = [{"role": "user", "content": "look at it [[call:read_file]]"}]
    async with api(stack, session) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="auto", messages=messages, tools=TOOLS
        )
    call = raw.parse().choices[0].message
    assert call.tool_calls
    messages.append(call.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.tool_calls[0].id, "content": "data"})
    return messages, raw


async def answer_tool(stack: Stack, session: str, messages: list[Any]) -> Any:
    async with api(stack, session) as client:
        return await client.chat.completions.with_raw_response.create(
            model="auto", messages=messages, tools=TOOLS
        )


@pytest.mark.dataplane
async def test_restart_with_redis_keeps_the_tool_loop_lock(
    make_stack: StackFactory, redis_server: Any
) -> None:
    """A tool result sent after saar restarts is still held on the replica that issued the call."""
    stack = await make_stack(use_redis(redis_server.url))
    messages, first = await open_tool_loop(stack, "restart-redis")
    assert 0 == await stack.local.stop_saar()
    await stack.local.start_saar()
    await chat_turns(stack, 1, "warm-up")  # a cold first message may pass Envoy's 1 s timeout
    held = await answer_tool(stack, "restart-redis", messages)
    assert reason(held.headers).startswith("hard_lock=tool_loop")
    assert first.headers["x-emulator-replica"] == held.headers["x-emulator-replica"]
    assert first.headers["x-emulator-pool"] == held.headers["x-emulator-pool"]


@pytest.mark.dataplane
async def test_restart_with_embedded_store_restarts_the_session_cleanly(
    make_stack: StackFactory,
) -> None:
    """With in-process memory a restart forgets the loop, and the decision says so."""
    stack = await make_stack()
    messages, _ = await open_tool_loop(stack, "restart-local")
    assert 0 == await stack.local.stop_saar()
    await stack.local.start_saar()
    await chat_turns(stack, 1, "warm-up")  # a cold first message may pass Envoy's 1 s timeout
    after = await answer_tool(stack, "restart-local", messages)
    assert 200 == after.status_code
    assert "establish_baseline" == action(after.headers)
    assert "tool_loop_owner_unknown" in reason(after.headers)


def slow_pools(raw: dict[str, Any]) -> None:
    """Answers take about a second, so requests are in flight when saar dies."""
    for pool in raw["pools"].values():
        pool["emulator"]["decode_us_per_token"] = 150_000
        pool["emulator"]["max_tokens_default"] = 8


@pytest.mark.dataplane
async def test_sigkill_mid_flight_requests_complete_by_failing_open(
    make_stack: StackFactory,
) -> None:
    """saar killed (SIGKILL) with requests upstream: they complete; new ones fail open."""
    stack = await make_stack(slow_pools)
    async with api(stack, "kill") as client:

        async def ask(index: int) -> Any:
            return await client.chat.completions.with_raw_response.create(
                model="auto", messages=[{"role": "user", "content": f"question {index}"}]
            )

        in_flight = [asyncio.create_task(ask(i)) for i in range(6)]
        await asyncio.sleep(0.4)  # routed, now waiting on the slow backend
        stack.local.children["saar"].signal(signal.SIGKILL)
        replies = await asyncio.gather(*in_flight)
        late = await ask(99)
    # Routed before the kill: the route and rewritten body stand; Envoy loses only the
    # response-headers exchange, which failure_mode_allow skips (no x-vsr-* on those).
    assert [200] * 6 == [r.status_code for r in replies]
    assert all(r.parse().model == "qwen3-8b" for r in replies)
    assert 200 == late.status_code
    assert "x-vsr-selected-model" not in late.headers
    assert "mi300-small" == late.headers["x-emulator-pool"]
