"""Request-body builders shared by the wire tests: one neutral conversation, three APIs."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from saar.policy.config import LearningConfig
from saar.policy.facts import Api, RequestFacts
from saar.wire import ParsedRequest, parse_request

# A neutral conversation: ("system", text), ("user", text), ("assistant", text),
# ("calls", [ids]) = one assistant turn with parallel tool calls,
# ("results", [ids]) = the answers, in the API's own shape.
Event = tuple[str, Any]

APIS = (Api.CHAT, Api.RESPONSES, Api.MESSAGES)


def _chat(events: Sequence[Event]) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    for kind, value in events:
        if kind in ("system", "user", "assistant"):
            messages.append({"role": kind, "content": value})
        elif kind == "calls":
            calls = [
                {"id": i, "type": "function", "function": {"name": "read", "arguments": "{}"}}
                for i in value
            ]
            messages.append({"role": "assistant", "content": None, "tool_calls": calls})
        elif kind == "results":
            messages.extend({"role": "tool", "tool_call_id": i, "content": "ok"} for i in value)
    return {"model": "auto", "messages": messages}


def _responses(events: Sequence[Event]) -> dict[str, Any]:
    items: list[dict[str, Any]] = []
    instructions = None
    for kind, value in events:
        if kind == "system":
            instructions = value
        elif kind == "user":
            items.append(
                {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": value}],
                }
            )
        elif kind == "assistant":
            items.append(
                {
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": value}],
                }
            )
        elif kind == "calls":
            items.extend(
                {"type": "function_call", "call_id": i, "name": "read", "arguments": "{}"}
                for i in value
            )
        elif kind == "results":
            items.extend(
                {"type": "function_call_output", "call_id": i, "output": "ok"} for i in value
            )
    body: dict[str, Any] = {"model": "auto", "input": items}
    if instructions is not None:
        body["instructions"] = instructions
    return body


def _messages(events: Sequence[Event]) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    body: dict[str, Any] = {"model": "auto", "max_tokens": 64}
    for kind, value in events:
        if kind == "system":
            body["system"] = value
        elif kind == "user":
            messages.append({"role": "user", "content": [{"type": "text", "text": value}]})
        elif kind == "assistant":
            messages.append({"role": "assistant", "content": [{"type": "text", "text": value}]})
        elif kind == "calls":
            blocks = [{"type": "tool_use", "id": i, "name": "read", "input": {}} for i in value]
            messages.append({"role": "assistant", "content": blocks})
        elif kind == "results":
            blocks = [{"type": "tool_result", "tool_use_id": i, "content": "ok"} for i in value]
            messages.append({"role": "user", "content": blocks})
    body["messages"] = messages
    return body


BUILDERS = {Api.CHAT: _chat, Api.RESPONSES: _responses, Api.MESSAGES: _messages}


def body_for(api: Api, events: Sequence[Event], **extra: Any) -> dict[str, Any]:
    """Return the request body (as a dict) of ``events`` in ``api``'s shape, plus ``extra``."""
    return {**BUILDERS[api](events), **extra}


def parse(
    api: Api,
    body: Mapping[str, Any] | bytes,
    headers: Mapping[str, str] | None = None,
    *,
    learning: LearningConfig | None = None,
    header_signals: frozenset[str] = frozenset(),
    max_body_bytes: int = 10_000_000,
) -> ParsedRequest:
    """Parse ``body`` (a dict is JSON-encoded) as ``api`` with test defaults."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return parse_request(
        api,
        headers or {},
        data,
        request_id="req-1",
        learning=learning or LearningConfig(),
        header_signals=header_signals,
        max_body_bytes=max_body_bytes,
    )


def facts(
    api: Api, events: Sequence[Event], headers: Mapping[str, str] | None = None, **extra: Any
) -> RequestFacts:
    """Return the facts of ``events`` spoken in ``api``."""
    return parse(api, body_for(api, events, **extra), headers).facts
