"""Router Replay through real Envoy: the session timeline from the CLI, gRPC and HTTP APIs."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.request
from typing import Any

import grpc
import openai
import pytest

from saar.api.replay.v1 import replay_pb2, replay_pb2_grpc
from saar.stack import free_port

from .conftest import StackFactory

pytestmark = pytest.mark.dataplane

TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {"name": "read_file", "parameters": {"type": "object", "properties": {}}},
    }
]


async def test_session_timeline_and_explain(make_stack: StackFactory) -> None:
    """After a session the CLI, gRPC and HTTP show its turns; explain names the lock."""
    http_port = free_port()

    def replay_http(raw: dict[str, Any]) -> None:
        raw.setdefault("replay", {})["http_address"] = f"127.0.0.1:{http_port}"

    stack = await make_stack(replay_http)
    db = stack.local.config_path.parent / "replay-0.sqlite3"
    headers = {"x-session-id": "replayed", "x-conversation-id": "run-1"}
    replay_ids: list[str] = []
    async with openai.AsyncOpenAI(
        base_url=f"{stack.base_url}/v1", api_key="x", max_retries=0, default_headers=headers
    ) as api:
        messages: list[Any] = [{"role": "user", "content": "refactor it [[call:read_file]]"}]
        raw = await api.chat.completions.with_raw_response.create(
            model="auto", messages=messages, tools=TOOLS
        )
        replay_ids.append(raw.headers["x-vsr-replay-id"])
        call = raw.parse().choices[0].message
        messages.append(call.model_dump(exclude_none=True))
        messages.append({"role": "tool", "tool_call_id": call.tool_calls[0].id, "content": "ok"})
        raw = await api.chat.completions.with_raw_response.create(
            model="auto", messages=messages, tools=TOOLS
        )
        replay_ids.append(raw.headers["x-vsr-replay-id"])
        messages.append(raw.parse().choices[0].message.model_dump(exclude_none=True))
        messages.append({"role": "user", "content": "thanks"})
        raw = await api.chat.completions.with_raw_response.create(model="auto", messages=messages)
        replay_ids.append(raw.headers["x-vsr-replay-id"])

    async with grpc.aio.insecure_channel(f"unix:{stack.local.socket_path}") as channel:
        stub = replay_pb2_grpc.ReplayStub(channel)
        for _ in range(50):  # the writer flushes every 200 ms
            listed = await stub.ListSession(replay_pb2.ListSessionRequest(session_id="replayed"))
            if len(listed.records) == 3 and all(r.status for r in listed.records):
                break
            await asyncio.sleep(0.1)
    assert replay_ids == [r.replay_id for r in listed.records]
    assert ["establish_baseline", "hard_lock", "stay"] == [r.action for r in listed.records]
    assert [200, 200, 200] == [r.status for r in listed.records]

    timeline = subprocess.run(
        [sys.executable, "-m", "saar", "replay", "session", "replayed", "--db", str(db), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert replay_ids == [turn["replay_id"] for turn in json.loads(timeline.stdout)["turns"]]

    explained = subprocess.run(
        [sys.executable, "-m", "saar", "explain", replay_ids[1], "--db", str(db)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "tool_loop" in explained.stdout
    assert "hard" in explained.stdout.lower()

    url = f"http://127.0.0.1:{http_port}/v1/replay?session_id=replayed"
    with urllib.request.urlopen(url, timeout=5) as reply:
        listed_http = json.loads(reply.read())
    assert replay_ids == [turn["replay_id"] for turn in listed_http["turns"]]
