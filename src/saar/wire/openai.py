"""OpenAI Chat Completions and Responses request bodies → ``RequestFacts``.

Theory of operation: ``saar.wire.request`` has already decoded the body's top level into
``dict[str, Raw]``; these parsers decode only the fields the facts need, into typed Structs
that skip every unknown field in C. Wrong types become ``ClientError`` naming the field
(``messages[3].content must be ...``).

Tool-loop state is derived per call id from the *trailing exchange* only, which avoids the
upstream bugs (upstream-saar-behaviour.md §6.1, §13 item 9): cumulative counts that locked a
session forever after one dangling call.

* ``tool_result_ids``: ids answered by the trailing run of results (Chat: ``role: "tool"``
  messages' ``tool_call_id``; Responses: ``*_call_output`` items' ``call_id``). A message of
  any other kind after them (typically the user's next prompt) ends the loop: no results.
* ``pending_tool_call_ids``: calls of the last assistant turn not answered in the request,
  counted only while nothing but results follows that turn.
* Responses: an assistant turn is a maximal run of model output items (assistant messages,
  ``reasoning``, ``*_call`` items), so ``[reasoning, function_call, function_call]`` is one
  turn, as one assistant message with two ``tool_calls`` is in Chat. Input made only of
  ``function_call_output`` items after a ``previous_response_id`` yields results and no
  pending calls (the calls live in the stored response).

Provider state (what pins a request to where its state lives; ecosystem.md §4.3-4.4):

==========================  =========  =======  ============================================
reason                      API        pin      why
==========================  =========  =======  ============================================
``previous_response_id``    responses  BACKEND  vLLM keeps stored responses in one replica's
                                                process memory; elsewhere it answers 404
``responses_conversation``  responses  BACKEND  a server-side conversation object lives
                                                where it was created
``item_reference``          responses  BACKEND  references a stored item by id, as above
``encrypted_reasoning``     responses  MODEL    ``reasoning`` items' ``encrypted_content``:
                                                only the model that wrote it can decrypt it
``encrypted_content``       responses  MODEL    any other item carrying ``encrypted_content``
                                                (e.g. compaction items), same reason
==========================  =========  =======  ============================================

Chat Completions carries no server-side state in a request (``store`` only affects the
response), so chat requests never pin.

``context_tokens`` is the byte length of the raw ``messages``/``input``, ``instructions`` and
tool definitions divided by 4: no decoding, and it errs high by the JSON syntax (~10-20%), a
fair margin for a routing threshold. Legacy ``functions``/``function_call`` are counted as
tools but carry no call ids, so they take no part in tool-loop state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from saar.policy.config import LearningConfig
from saar.policy.facts import Api, Pin, ProviderState, RequestFacts
from saar.wire.errors import ClientError, decode_field
from saar.wire.identity import OPENER_TEXT_CHARS, IdentityHints, resolve_identity
from saar.wire.json import Raw, Struct, TypedDecoder, is_nonempty_array

__all__ = ["MAX_PROVIDER_ID_CHARS", "chat_facts", "responses_facts"]

MAX_PROVIDER_ID_CHARS: Final = 256
"""Characters kept of ``previous_response_id``: backends mint ~40-character ids, so a longer
value was never minted and cannot match the router's response index anyway."""


class _Part(Struct, gc=False):
    """A content part; only text-bearing parts matter."""

    type: str = ""
    text: str | None = None


class _ToolCall(Struct, gc=False):
    id: str | None = None


class _ChatMessage(Struct, gc=False):
    role: str
    content: str | list[_Part] | None = None
    tool_calls: list[_ToolCall] | None = None
    tool_call_id: str | None = None


class _Item(Struct, gc=False):
    """A Responses input item; ``type`` may be omitted for an easy input message."""

    type: str | None = None
    role: str | None = None
    content: str | list[_Part] | None = None
    call_id: str | None = None
    encrypted_content: str | None = None


class _ConversationRef(Struct, gc=False):
    id: str | None = None


_MESSAGES: Final[TypedDecoder[list[_ChatMessage]]] = TypedDecoder(list[_ChatMessage])
_INPUT: Final[TypedDecoder[str | list[_Item] | None]] = TypedDecoder(str | list[_Item] | None)
_STR: Final[TypedDecoder[str | None]] = TypedDecoder(str | None)
_BOOL: Final[TypedDecoder[bool | None]] = TypedDecoder(bool | None)
_CONVERSATION: Final[TypedDecoder[str | _ConversationRef | None]] = TypedDecoder(
    str | _ConversationRef | None
)

_CHAT_TEXT: Final = frozenset({"text"})
_RESPONSES_TEXT: Final = frozenset({"input_text", "output_text", "text"})
_SYSTEM_ROLES: Final = frozenset({"system", "developer"})


def _text(content: str | Sequence[_Part] | None, kinds: frozenset[str], limit: int) -> str:
    """Join the text parts of ``content`` by newlines, keeping at most ``limit`` characters."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content[:limit]
    texts: list[str] = []
    size = 0
    for part in content:
        if part.text is not None and part.type in kinds:
            texts.append(part.text)
            size += len(part.text) + 1
            if size >= limit:
                break
    return "\n".join(texts)[:limit]


def _tools(top: Mapping[str, Raw], name: str) -> bool:
    raw = top.get(name)
    if raw is None:
        return False
    present = is_nonempty_array(raw)
    if present is None:
        raise ClientError.invalid_request(f"`{name}` must be an array", param=name)
    return present


def _stream(top: Mapping[str, Raw]) -> bool:
    return decode_field(top, "stream", _BOOL) is True


def _user(top: Mapping[str, Raw]) -> str | None:
    user = decode_field(top, "user", _STR)
    if user is None or not user.strip():
        user = decode_field(top, "safety_identifier", _STR)
    return user


def _size(top: Mapping[str, Raw], *names: str) -> int:
    return sum(len(raw) for name in names if (raw := top.get(name)) is not None)


def _provider_id(value: str | None) -> str | None:
    """Trim a provider object id; blank is absent, and it is bounded like any client string."""
    value = (value or "").strip()
    return value[:MAX_PROVIDER_ID_CHARS] or None


def _unique(ids: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(ids))


def chat_facts(
    top: Mapping[str, Raw],
    *,
    request_id: str,
    model: str,
    headers: Mapping[str, str],
    signals: Mapping[str, str],
    learning: LearningConfig,
    text_limit: int,
) -> RequestFacts:
    """Build the facts of a Chat Completions request from its decoded top level."""
    messages = decode_field(top, "messages", _MESSAGES)
    if messages is None:
        raise ClientError.invalid_request("`messages` is required", param="messages")

    turns = 0
    calls = 0
    last_assistant = -1
    for index, message in enumerate(messages):
        if message.role == "assistant":
            turns += 1
            last_assistant = index
            if message.tool_calls:
                calls += len(message.tool_calls)

    # The trailing run of tool messages: answers to the last assistant turn's calls.
    tail = len(messages)
    while tail > 0 and messages[tail - 1].role == "tool":
        tail -= 1
    results = [m.tool_call_id for m in messages[tail:] if m.tool_call_id]
    pending: list[str] = []
    if last_assistant >= 0 and tail <= last_assistant + 1:
        answered = set(results)
        tool_calls = messages[last_assistant].tool_calls or ()
        pending = [c.id for c in tool_calls if c.id and c.id not in answered]

    last_user = ""
    for message in reversed(messages):
        if message.role == "user":
            last_user = _text(message.content, _CHAT_TEXT, text_limit)
            break

    def opener() -> tuple[str, str]:
        system: list[str] = []
        for message in messages:
            if message.role in _SYSTEM_ROLES:
                system.append(_text(message.content, _CHAT_TEXT, OPENER_TEXT_CHARS))
            elif message.role == "user":
                return "\n".join(system), _text(message.content, _CHAT_TEXT, OPENER_TEXT_CHARS)
        return "\n".join(system), ""

    hints = IdentityHints(
        prompt_cache_key=decode_field(top, "prompt_cache_key", _STR),
        user=_user(top),
        opener=opener,
    )
    identity = resolve_identity(headers, learning, hints)
    return RequestFacts(
        request_id=request_id,
        api=Api.CHAT,
        logical_model=model,
        stream=_stream(top),
        session_id=identity.session_id,
        session_source=identity.session_source,
        conversation_id=identity.conversation_id,
        conversation_source=identity.conversation_source,
        headers=signals,
        last_user_text=last_user,
        context_tokens=_size(top, "messages", "tools", "functions") // 4,
        turn_index=turns,
        message_count=len(messages),
        has_tools=_tools(top, "tools") or _tools(top, "functions"),
        tool_result_ids=_unique(results),
        pending_tool_call_ids=_unique(pending),
        tool_call_count=calls,
    )


def _is_message(item: _Item) -> bool:
    """A message item; easy input messages omit the type."""
    return item.type is None or item.type == "message"


def _is_result(item: _Item) -> bool:
    return item.call_id is not None and item.type is not None and item.type.endswith("_output")


def responses_facts(
    top: Mapping[str, Raw],
    *,
    request_id: str,
    model: str,
    headers: Mapping[str, str],
    signals: Mapping[str, str],
    learning: LearningConfig,
    text_limit: int,
) -> RequestFacts:
    """Build the facts of a Responses request from its decoded top level."""
    raw_input = decode_field(top, "input", _INPUT)
    items: list[_Item] = (
        [_Item(type="message", role="user", content=raw_input)]
        if isinstance(raw_input, str)
        else raw_input or []
    )
    previous = _provider_id(decode_field(top, "previous_response_id", _STR))
    conversation_field = decode_field(top, "conversation", _CONVERSATION)
    conversation = (
        conversation_field.id
        if isinstance(conversation_field, _ConversationRef)
        else conversation_field
    )
    if conversation is not None and not conversation.strip():
        conversation = None

    turns = 0
    calls = 0
    last_output_start = last_output_end = -1
    in_output = False
    reasons: dict[str, Pin] = {}
    if previous is not None:
        reasons["previous_response_id"] = Pin.BACKEND
    if conversation is not None:
        reasons["responses_conversation"] = Pin.BACKEND
    # One pass, classification inlined: this loop runs once per item of long histories.
    for index, item in enumerate(items):
        kind = item.type
        if kind == "message" or kind is None:
            # A message (the type may be omitted); model output when the assistant wrote it.
            output = item.role == "assistant"
        else:
            output = kind == "reasoning" or kind.endswith("_call")
            if output and item.call_id is not None:
                calls += 1
            elif kind == "item_reference":
                reasons["item_reference"] = Pin.BACKEND
        if item.encrypted_content:
            encrypted = "encrypted_reasoning" if kind == "reasoning" else "encrypted_content"
            reasons[encrypted] = Pin.MODEL
        if output:
            if not in_output:
                turns += 1
                last_output_start = index
                in_output = True
            last_output_end = index + 1
        else:
            in_output = False

    tail = len(items)
    while tail > 0 and _is_result(items[tail - 1]):
        tail -= 1
    results = [item.call_id for item in items[tail:] if item.call_id]
    pending: list[str] = []
    if last_output_end >= 0 and tail <= last_output_end:
        answered = set(results)
        pending = [
            item.call_id
            for item in items[last_output_start:last_output_end]
            if item.call_id and not _is_message(item) and item.call_id not in answered
        ]

    last_user = ""
    for item in reversed(items):
        if _is_message(item) and item.role == "user":
            last_user = _text(item.content, _RESPONSES_TEXT, text_limit)
            break

    def opener() -> tuple[str, str]:
        system: list[str] = []
        raw = top.get("instructions")
        # ``instructions`` is a string in requests; other shapes only count toward the size.
        if raw is not None and bytes(memoryview(raw)[:1]) == b'"':
            system.append((decode_field(top, "instructions", _STR) or "")[:OPENER_TEXT_CHARS])
        for item in items:
            if _is_message(item) and item.role in _SYSTEM_ROLES:
                system.append(_text(item.content, _RESPONSES_TEXT, OPENER_TEXT_CHARS))
            elif _is_message(item) and item.role == "user":
                return "\n".join(system), _text(item.content, _RESPONSES_TEXT, OPENER_TEXT_CHARS)
        return "\n".join(system), ""

    hints = IdentityHints(
        prompt_cache_key=decode_field(top, "prompt_cache_key", _STR),
        user=_user(top),
        conversation=conversation,
        previous_response_id=previous,
        opener=opener,
    )
    identity = resolve_identity(headers, learning, hints)
    return RequestFacts(
        request_id=request_id,
        api=Api.RESPONSES,
        logical_model=model,
        stream=_stream(top),
        session_id=identity.session_id,
        session_source=identity.session_source,
        conversation_id=identity.conversation_id,
        conversation_source=identity.conversation_source,
        headers=signals,
        last_user_text=last_user,
        context_tokens=_size(top, "input", "instructions", "tools") // 4,
        turn_index=turns,
        message_count=len(items),
        has_tools=_tools(top, "tools"),
        tool_result_ids=_unique(results),
        pending_tool_call_ids=_unique(pending),
        tool_call_count=calls,
        provider_state=tuple(ProviderState(reason, pin) for reason, pin in reasons.items()),
        previous_response_id=previous,
    )
