"""An agent session through real Envoy: tool loops hold, "continue" stays, idle/drift reselect."""

from __future__ import annotations

import asyncio
from typing import Any

import openai
import pytest

from saar.policy import parse_pairs

from .conftest import StackFactory

pytestmark = pytest.mark.dataplane

TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": name,
            "description": f"{name} tool",
            "parameters": {"type": "object", "properties": {}},
        },
    }
    for name in ("read_file", "run_tests")
]


def short_idle(raw: dict[str, Any]) -> None:
    """Every decision reopens its choice after one idle second."""
    for decision in raw["routing"]["decisions"]:
        decision["algorithm"].setdefault("session_aware", {})["idle_timeout_seconds"] = 1


class Agent:
    """A minimal agent loop over the openai SDK that records saar's verdict per request."""

    def __init__(self, api: openai.AsyncOpenAI) -> None:
        self.api = api
        self.messages: list[Any] = []
        self.verdicts: list[tuple[str, str]] = []
        self.served: list[str] = []

    async def send(self) -> Any:
        raw = await self.api.chat.completions.with_raw_response.create(
            model="auto", messages=self.messages, tools=TOOLS
        )
        reasons = dict(parse_pairs(raw.headers["x-vsr-learning-reasons"]))["session_aware"]
        action, _, reason = reasons.partition("=")
        self.verdicts.append((action, reason))
        self.served.append(raw.headers["x-emulator-replica"])
        message = raw.parse().choices[0].message
        self.messages.append(message.model_dump(exclude_none=True))
        return message

    async def user(self, text: str) -> Any:
        self.messages.append({"role": "user", "content": text})
        return await self.send()

    async def answer_tools(self, message: Any) -> Any:
        for call in message.tool_calls:
            self.messages.append(
                {"role": "tool", "tool_call_id": call.id, "content": f"{call.function.name}: ok"}
            )
        return await self.send()


@pytest.mark.parametrize(
    ("response_path", "owner_reason"),
    [
        # The default: the body is not observed, so the call's owner is the model router
        # memory recorded for the turn that produced the calls.
        ("access_log", "tool_loop_last_model"),
        # Bodies observed to the end: the owner is known by call id.
        ("stream", "tool_loop"),
    ],
)
async def test_agent_session_holds_stays_and_reselects(
    make_stack: StackFactory, response_path: str, owner_reason: str
) -> None:
    """Tool results are held on the issuing replica, "continue" stays, idle/drift reselect."""

    def edit(raw: dict[str, Any]) -> None:
        short_idle(raw)
        raw.setdefault("server", {})["response_path"] = response_path

    stack = await make_stack(edit)
    headers = {"x-session-id": "agent-1", "x-conversation-id": "run-1"}
    async with openai.AsyncOpenAI(
        base_url=f"{stack.base_url}/v1", api_key="x", default_headers=headers, max_retries=0
    ) as api:
        agent = Agent(api)
        first = await agent.user("refactor utils.py please [[call:read_file]]")
        assert first.tool_calls, "the emulator should have called read_file"
        await agent.answer_tools(first)
        second = await agent.user("now fix the failing test [[call:run_tests]]")
        assert second.tool_calls
        await agent.answer_tools(second)
        await agent.user("continue")
        await asyncio.sleep(1.3)
        await agent.user("continue")
        await agent.user("prove the invariant step by step")

    actions = [action for action, _ in agent.verdicts]
    assert [
        "establish_baseline",
        "hard_lock",
        "stay",
        "hard_lock",
        "stay",
        "reselect",
        "reselect",
    ] == actions
    assert ("hard_lock", owner_reason) == agent.verdicts[1]
    assert ("hard_lock", owner_reason) == agent.verdicts[3]
    assert ("reselect", "idle_reset") == agent.verdicts[5]
    assert ("reselect", "decision_drift") == agent.verdicts[6]

    # Backend truth: each tool result went to the replica that issued the call.
    log = [r for r in stack.backend_log() if r.get("session_id") == "agent-1"]
    assert 7 == len(log)
    issued = {call: r["pool"] + "/" + str(r["replica"]) for r in log for call in r["tool_call_ids"]}
    answered = [(call, f"{r['pool']}/{r['replica']}") for r in log for call in r["tool_result_ids"]]
    assert len(answered) >= 2
    for call, replica in answered:
        assert issued[call] == replica
    assert agent.served[0] == agent.served[1]
    assert agent.served[2] == agent.served[3]
