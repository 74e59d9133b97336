"""Anthropic Messages request bodies → ``RequestFacts``.

Theory of operation: as in ``saar.wire.openai``, only the fields the facts need are decoded,
into typed Structs that skip unknown fields (tool inputs, tool result contents, images).

Tool-loop state per ``tool_use`` id, from the trailing exchange only. Upstream counted
``tool_use`` per block but ``tool_result`` per message, so two parallel calls answered in
one user message left calls > results and locked the session forever
(upstream-saar-behaviour.md §6.1, §13 item 9). Here:

* ``tool_result_ids``: the ``tool_use_id`` of every ``tool_result`` block in the trailing
  user message(s) after the last assistant message. A user message *with* ``tool_result``
  blocks is a result message even when it also carries text (Claude Code appends
  ``<system-reminder>`` text to results); a user message without any ends the loop.
* ``pending_tool_call_ids``: ``tool_use`` ids of the last assistant message with no result
  in those trailing messages, counted only while nothing else follows that message.
* ``last_user_text`` is the last user message that is not a result message, i.e. what the
  human asked, as in Chat where results have their own ``tool`` role.

Provider state:

======================  ========  =======  ==================================================
reason                  API       pin      why
======================  ========  =======  ==================================================
``thinking_signature``  messages  MODEL    assistant ``thinking`` blocks with a ``signature``
                                           or ``redacted_thinking`` blocks with ``data`` are
                                           verified/decrypted by the model that wrote them
``container``           messages  BACKEND  a code-execution container (string id or
                                           ``{"id"}``) lives on the backend that created it
======================  ========  =======  ==================================================

``context_tokens`` = byte length of the raw ``messages``, ``system`` and ``tools`` / 4.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from saar.policy.config import LearningConfig
from saar.policy.facts import Api, Pin, ProviderState, RequestFacts
from saar.wire.errors import ClientError, decode_field
from saar.wire.identity import OPENER_TEXT_CHARS, IdentityHints, resolve_identity
from saar.wire.json import Raw, Struct, TypedDecoder, is_nonempty_array

__all__ = ["messages_facts"]


class _Block(Struct, gc=False):
    """A content block; only the fields that text, tool-loop and state facts read."""

    type: str = ""
    text: str | None = None
    id: str | None = None
    tool_use_id: str | None = None
    signature: str | None = None
    data: str | None = None


class _Message(Struct, gc=False):
    role: str
    content: str | list[_Block]


class _Metadata(Struct, gc=False):
    user_id: str | None = None


class _ContainerRef(Struct, gc=False):
    id: str | None = None


_MESSAGES: Final[TypedDecoder[list[_Message]]] = TypedDecoder(list[_Message])
_SYSTEM: Final[TypedDecoder[str | list[_Block] | None]] = TypedDecoder(str | list[_Block] | None)
_METADATA: Final[TypedDecoder[_Metadata | None]] = TypedDecoder(_Metadata | None)
_CONTAINER: Final[TypedDecoder[str | _ContainerRef | None]] = TypedDecoder(
    str | _ContainerRef | None
)
_BOOL: Final[TypedDecoder[bool | None]] = TypedDecoder(bool | None)
_SIZED: Final = ("messages", "system", "tools")


def _text(content: str | Sequence[_Block] | None, limit: int) -> str:
    """Join the text blocks of ``content`` by newlines, keeping at most ``limit`` characters."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content[:limit]
    texts: list[str] = []
    size = 0
    for block in content:
        if block.type == "text" and block.text is not None:
            texts.append(block.text)
            size += len(block.text) + 1
            if size >= limit:
                break
    return "\n".join(texts)[:limit]


def _result_ids(message: _Message) -> list[str] | None:
    """Return the ``tool_result`` ids of a user message; None when it is not a result message."""
    if message.role != "user" or isinstance(message.content, str):
        return None
    ids = [b.tool_use_id or "" for b in message.content if b.type == "tool_result"]
    return ids or None


def _size(top: Mapping[str, Raw]) -> int:
    return sum(len(raw) for name in _SIZED if (raw := top.get(name)) is not None)


def messages_facts(
    top: Mapping[str, Raw],
    *,
    request_id: str,
    model: str,
    headers: Mapping[str, str],
    signals: Mapping[str, str],
    learning: LearningConfig,
    text_limit: int,
) -> RequestFacts:
    """Build the facts of an Anthropic Messages request from its decoded top level."""
    messages = decode_field(top, "messages", _MESSAGES)
    if messages is None:
        raise ClientError.invalid_request("`messages` is required", param="messages")
    system = decode_field(top, "system", _SYSTEM)

    turns = 0
    calls = 0
    last_assistant = -1
    signed = False
    for index, message in enumerate(messages):
        if message.role != "assistant":
            continue
        turns += 1
        last_assistant = index
        if isinstance(message.content, str):
            continue
        for block in message.content:
            if block.type == "tool_use":
                calls += 1
            elif (block.type == "thinking" and block.signature) or (
                block.type == "redacted_thinking" and block.data
            ):
                signed = True

    # Trailing result messages (consecutive user turns are merged by the API, so several
    # may follow one assistant message).
    tail = len(messages)
    trailing: list[list[str]] = []
    while tail > 0 and (ids := _result_ids(messages[tail - 1])) is not None:
        trailing.append(ids)
        tail -= 1
    results = [i for ids in reversed(trailing) for i in ids if i]
    pending: list[str] = []
    if last_assistant >= 0 and tail == last_assistant + 1:
        answered = set(results)
        content = messages[last_assistant].content
        if not isinstance(content, str):
            pending = [
                b.id for b in content if b.type == "tool_use" and b.id and b.id not in answered
            ]

    last_user = ""
    for message in reversed(messages):
        if message.role == "user" and _result_ids(message) is None:
            last_user = _text(message.content, text_limit)
            break

    def opener() -> tuple[str, str]:
        first_user = next(
            (_text(m.content, OPENER_TEXT_CHARS) for m in messages if m.role == "user"), ""
        )
        return _text(system, OPENER_TEXT_CHARS), first_user

    metadata = decode_field(top, "metadata", _METADATA)
    identity = resolve_identity(
        headers,
        learning,
        IdentityHints(user=metadata.user_id if metadata else None, opener=opener),
    )

    states: list[ProviderState] = []
    if signed:
        states.append(ProviderState("thinking_signature", Pin.MODEL))
    container = decode_field(top, "container", _CONTAINER)
    if isinstance(container, _ContainerRef):
        container = container.id
    if container:
        states.append(ProviderState("container", Pin.BACKEND))

    tools_raw = top.get("tools")
    has_tools = False
    if tools_raw is not None:
        present = is_nonempty_array(tools_raw)
        if present is None:
            raise ClientError.invalid_request("`tools` must be an array", param="tools")
        has_tools = present

    return RequestFacts(
        request_id=request_id,
        api=Api.MESSAGES,
        logical_model=model,
        stream=decode_field(top, "stream", _BOOL) is True,
        session_id=identity.session_id,
        session_source=identity.session_source,
        conversation_id=identity.conversation_id,
        conversation_source=identity.conversation_source,
        headers=signals,
        last_user_text=last_user,
        context_tokens=_size(top) // 4,
        turn_index=turns,
        message_count=len(messages),
        has_tools=has_tools,
        tool_result_ids=tuple(dict.fromkeys(results)),
        pending_tool_call_ids=tuple(dict.fromkeys(pending)),
        tool_call_count=calls,
        provider_state=tuple(states),
    )
