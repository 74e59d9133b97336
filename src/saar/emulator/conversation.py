"""Request bodies of the three APIs, normalised into one conversation shape.

Chat Completions, Responses and Anthropic Messages all reduce to a list of
:class:`~saar.emulator.tokens.Turn` plus the few request fields the emulator acts on. The
prompt renderer, the tool-call script and the fault matcher then work on that one shape.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from saar.emulator.tokens import ToolCall, Turn

__all__ = [
    "Api",
    "ParsedRequest",
    "Phase",
    "RequestError",
    "parse_chat",
    "parse_messages",
    "parse_responses",
]


class Api(StrEnum):
    """The generation APIs a replica serves; values appear in logs and fault rules."""

    CHAT = "chat"
    RESPONSES = "responses"
    MESSAGES = "messages"


class Phase(StrEnum):
    """Where a request sits in an agent loop (used by fault rules and the log).

    ``tool_result``: the last message is a tool result. ``continuation``: the request
    continues a stored response (``previous_response_id``) or ends with an assistant message
    (prefill continuation). ``user_turn``: anything else.
    """

    USER_TURN = "user_turn"
    TOOL_RESULT = "tool_result"
    CONTINUATION = "continuation"


class RequestError(Exception):
    """A client error with the HTTP status and OpenAI-style error fields vLLM would send."""

    def __init__(
        self, status: int, message: str, err_type: str = "BadRequestError", param: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.err_type = err_type
        self.param = param

    def body(self) -> dict[str, Any]:
        """Return the JSON error body, shaped like vLLM's ``ErrorResponse``."""
        return {
            "error": {
                "message": self.message,
                "type": self.err_type,
                "param": self.param,
                "code": self.status,
            }
        }


@dataclass(slots=True)
class ParsedRequest:
    """The parts of a generation request the emulator acts on.

    ``turns`` are the request's own messages; for Responses, :attr:`prefix_turns` (the
    instructions) and the stored conversation of ``previous_response_id`` come before them.
    """

    api: Api
    model: str
    turns: list[Turn]
    tools_text: str
    tool_names: tuple[str, ...]
    stream: bool
    include_usage: bool
    max_tokens: int | None
    cache_salt: str | None
    previous_response_id: str | None = None
    store: bool = True
    instructions: str | None = None


def _require_mapping(body: object) -> Mapping[str, Any]:
    if not isinstance(body, Mapping):
        raise RequestError(400, "The request body must be a JSON object.")
    return body


def _require_model(body: Mapping[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise RequestError(400, "Field 'model' is required and must be a string.", param="model")
    return model


def _optional_int(body: Mapping[str, Any], *keys: str) -> int | None:
    for key in keys:
        value = body.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise RequestError(400, f"'{key}' must be a positive integer.", param=key)
        return value
    return None


def _content_text(content: object) -> str:
    """Flatten string or list-of-parts content; non-text parts become a placeholder."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        parts: list[str] = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, Mapping):
                text = part.get("text")
                if isinstance(text, str):
                    parts.append(text)
                elif part.get("type") in {"image_url", "input_image", "image"}:
                    parts.append("<image>")
                elif part.get("type") in {"input_file", "file", "document"}:
                    parts.append("<file>")
        return "\n".join(parts)
    return str(content)


def _canonical_json(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _arguments(value: object) -> str:
    if isinstance(value, str):
        return value
    return _canonical_json(value if value is not None else {})


def _tools(body: Mapping[str, Any], api: Api) -> tuple[str, tuple[str, ...]]:
    tools = body.get("tools")
    if not tools:
        return "", ()
    choice = body.get("tool_choice")
    # tool_choice "none" (OpenAI) or {"type": "none"} (Anthropic): tools stay in the prompt
    # but the model may not call them, so no names are offered to the script.
    calls_allowed = choice != "none" and not (
        isinstance(choice, Mapping) and choice.get("type") == "none"
    )
    if not isinstance(tools, Sequence) or isinstance(tools, str):
        raise RequestError(400, "'tools' must be a list.", param="tools")
    names: list[str] = []
    for tool in tools:
        if not isinstance(tool, Mapping):
            raise RequestError(400, "Each tool must be an object.", param="tools")
        if api is Api.CHAT:
            fn = tool.get("function")
            name = fn.get("name") if isinstance(fn, Mapping) else None
        else:
            name = tool.get("name")
        if isinstance(name, str):
            names.append(name)
    return _canonical_json(tools), tuple(names) if calls_allowed else ()


def _cache_salt(body: Mapping[str, Any]) -> str | None:
    salt = body.get("cache_salt")
    if salt is None:
        return None
    if not isinstance(salt, str):
        raise RequestError(400, "'cache_salt' must be a string.", param="cache_salt")
    return salt


def parse_chat(raw: object) -> ParsedRequest:
    """Parse a ``/v1/chat/completions`` body."""
    body = _require_mapping(raw)
    model = _require_model(body)
    messages = body.get("messages")
    if not isinstance(messages, Sequence) or isinstance(messages, str) or not messages:
        raise RequestError(400, "'messages' must be a non-empty list.", param="messages")
    turns: list[Turn] = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, Mapping) or not isinstance(msg.get("role"), str):
            raise RequestError(400, f"messages[{i}] must have a 'role'.", param="messages")
        role = msg["role"]
        text = _content_text(msg.get("content"))
        if role in {"system", "developer"}:
            turns.append(Turn("system", text))
        elif role == "user":
            turns.append(Turn("user", text))
        elif role == "assistant":
            calls: list[ToolCall] = []
            for call in msg.get("tool_calls") or ():
                if not isinstance(call, Mapping):
                    continue
                fn = call.get("function")
                fn = fn if isinstance(fn, Mapping) else {}
                calls.append(
                    ToolCall(
                        call_id=str(call.get("id", "")),
                        name=str(fn.get("name", "")),
                        arguments=_arguments(fn.get("arguments")),
                    )
                )
            turns.append(Turn("assistant", text, tuple(calls)))
        elif role in {"tool", "function"}:
            call_id = msg.get("tool_call_id") or msg.get("name") or ""
            turns.append(Turn("tool", text, tool_result_id=str(call_id)))
        else:
            raise RequestError(400, f"messages[{i}].role '{role}' is not supported.", "messages")
    tools_text, tool_names = _tools(body, Api.CHAT)
    stream_options = body.get("stream_options")
    include_usage = isinstance(stream_options, Mapping) and bool(
        stream_options.get("include_usage")
    )
    return ParsedRequest(
        api=Api.CHAT,
        model=model,
        turns=turns,
        tools_text=tools_text,
        tool_names=tool_names,
        stream=bool(body.get("stream")),
        include_usage=include_usage,
        max_tokens=_optional_int(body, "max_completion_tokens", "max_tokens"),
        cache_salt=_cache_salt(body),
    )


def _append_tool_call(turns: list[Turn], call: ToolCall) -> None:
    # Consecutive function_call items are one assistant turn with parallel calls.
    if turns and turns[-1].role == "assistant":
        last = turns[-1]
        turns[-1] = replace(last, tool_calls=(*last.tool_calls, call))
    else:
        turns.append(Turn("assistant", "", (call,)))


def parse_responses(raw: object) -> ParsedRequest:
    """Parse a ``/v1/responses`` body."""
    body = _require_mapping(raw)
    model = _require_model(body)
    items = body.get("input")
    turns: list[Turn] = []
    if isinstance(items, str):
        turns.append(Turn("user", items))
    elif isinstance(items, Sequence) and items:
        for i, item in enumerate(items):
            if not isinstance(item, Mapping):
                raise RequestError(400, f"input[{i}] must be an object.", param="input")
            kind = item.get("type", "message")
            if kind == "message" or (kind is None and "role" in item):
                role = str(item.get("role", "user"))
                text = _content_text(item.get("content"))
                if role == "assistant":
                    turns.append(Turn("assistant", text))
                else:
                    turns.append(
                        Turn("system" if role in {"system", "developer"} else "user", text)
                    )
            elif kind == "function_call":
                _append_tool_call(
                    turns,
                    ToolCall(
                        call_id=str(item.get("call_id", "")),
                        name=str(item.get("name", "")),
                        arguments=_arguments(item.get("arguments")),
                    ),
                )
            elif kind == "function_call_output":
                output = item.get("output")
                text = output if isinstance(output, str) else _content_text(output)
                turns.append(Turn("tool", text, tool_result_id=str(item.get("call_id", ""))))
            # reasoning items and references carry nothing the emulator renders.
    else:
        raise RequestError(400, "'input' must be a string or a non-empty list.", param="input")
    instructions = body.get("instructions")
    tools_text, tool_names = _tools(body, Api.RESPONSES)
    prev = body.get("previous_response_id")
    if prev is not None and not isinstance(prev, str):
        raise RequestError(400, "'previous_response_id' must be a string.", "previous_response_id")
    store = body.get("store", True)
    return ParsedRequest(
        api=Api.RESPONSES,
        model=model,
        turns=turns,
        tools_text=tools_text,
        tool_names=tool_names,
        stream=bool(body.get("stream")),
        include_usage=True,
        max_tokens=_optional_int(body, "max_output_tokens"),
        cache_salt=_cache_salt(body),
        previous_response_id=prev,
        store=store is not False,
        instructions=instructions if isinstance(instructions, str) and instructions else None,
    )


def parse_messages(raw: object) -> ParsedRequest:
    """Parse an Anthropic ``/v1/messages`` body."""
    body = _require_mapping(raw)
    model = _require_model(body)
    messages = body.get("messages")
    if not isinstance(messages, Sequence) or isinstance(messages, str) or not messages:
        raise RequestError(400, "'messages' must be a non-empty list.", param="messages")
    turns: list[Turn] = []
    system = body.get("system")
    if system:
        turns.append(Turn("system", _content_text(system)))
    for i, msg in enumerate(messages):
        if not isinstance(msg, Mapping) or msg.get("role") not in {"user", "assistant"}:
            raise RequestError(400, f"messages[{i}].role must be user or assistant.", "messages")
        role = msg["role"]
        content = msg.get("content")
        if isinstance(content, str):
            turns.append(Turn(role, content))
            continue
        if not isinstance(content, Sequence):
            raise RequestError(400, f"messages[{i}].content must be a string or list.", "messages")
        texts: list[str] = []
        calls: list[ToolCall] = []
        for block in content:
            if not isinstance(block, Mapping):
                continue
            kind = block.get("type")
            if kind == "text":
                texts.append(str(block.get("text", "")))
            elif kind == "tool_use":
                calls.append(
                    ToolCall(
                        call_id=str(block.get("id", "")),
                        name=str(block.get("name", "")),
                        arguments=_arguments(block.get("input")),
                    )
                )
            elif kind == "tool_result":
                turns.append(
                    Turn(
                        "tool",
                        _content_text(block.get("content")),
                        tool_result_id=str(block.get("tool_use_id", "")),
                    )
                )
            elif kind in {"image", "document"}:
                texts.append(f"<{kind}>")
        if texts or calls or not turns or turns[-1].role != "tool":
            turns.append(Turn(role, "\n".join(texts), tuple(calls)))
    tools_text, tool_names = _tools(body, Api.MESSAGES)
    return ParsedRequest(
        api=Api.MESSAGES,
        model=model,
        turns=turns,
        tools_text=tools_text,
        tool_names=tool_names,
        stream=bool(body.get("stream")),
        include_usage=True,
        max_tokens=_optional_int(body, "max_tokens"),
        cache_salt=_cache_salt(body),
    )
