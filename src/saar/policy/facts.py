"""Request facts: everything the policy may know about one request, parsed once at ingress.

Theory of operation: ``saar.wire`` turns a request body and its headers into one
``RequestFacts`` (identity resolved once, tool-loop state per call id, provider state with how
tightly it pins the request, context size, the text that decision signals match on). The
router may add what it resolved from storage (``response_pin``) with ``dataclasses.replace``
before calling ``policy.decide``. Nothing downstream re-reads the body.

Identities are never raw client strings: ``wire`` bounds and hashes them before they get here,
so a fact can be used as a store key or a log field as is.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

__all__ = [
    "Api",
    "BackendPin",
    "IdentitySource",
    "Pin",
    "ProviderState",
    "RequestFacts",
    "ResponseFacts",
]


class Api(StrEnum):
    """The client API a request speaks."""

    CHAT = "chat"
    """OpenAI Chat Completions (``/v1/chat/completions``)."""
    RESPONSES = "responses"
    """OpenAI Responses (``/v1/responses``)."""
    MESSAGES = "messages"
    """Anthropic Messages (``/v1/messages``)."""


class IdentitySource(StrEnum):
    """Where a session or conversation id came from, strongest first."""

    HEADER = "header"
    """The configured identity header (``x-session-id`` / ``x-conversation-id``)."""
    HARNESS_HEADER = "harness_header"
    """An agent harness header such as ``x-claude-code-session-id``."""
    PROMPT_CACHE_KEY = "prompt_cache_key"
    USER = "user"
    """Body ``user`` (OpenAI) or ``metadata.user_id`` (Anthropic)."""
    RESPONSES_CONVERSATION = "responses_conversation"
    PREVIOUS_RESPONSE = "previous_response"
    """The session of the response a ``previous_response_id`` continues."""
    FINGERPRINT = "fingerprint"
    """A hash of the conversation opener (system prompt and first user message)."""
    NONE = "none"


class Pin(StrEnum):
    """How tightly a piece of provider state binds a request to where it was created."""

    BACKEND = "backend"
    """Only the exact replica can serve it (same pool and affinity key), e.g. a stored response."""
    MODEL = "model"
    """Any replica of the same model can serve it, no other model can (e.g. encrypted reasoning)."""


@dataclass(frozen=True, slots=True)
class ProviderState:
    """One marker of non-portable provider state found in the request."""

    reason: str
    """Stable reason name, e.g. ``previous_response_id`` or ``encrypted_reasoning``."""
    pin: Pin


@dataclass(frozen=True, slots=True)
class BackendPin:
    """Where a piece of provider state lives: resolved by the router from the response index."""

    physical: str
    """``model@pool`` of the backend that minted the state."""
    affinity_key: str
    """The affinity key it was served with, so the consistent hash lands on the same replica."""

    def encode(self) -> bytes:
        """Compact, versioned bytes for the response index in the session store."""
        return json.dumps([1, self.physical, self.affinity_key], separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> BackendPin | None:
        """The pin stored by ``encode``, or ``None`` for anything else (never raises)."""
        try:
            version, physical, affinity_key = json.loads(data)
        except (ValueError, TypeError):
            return None
        if version != 1 or not isinstance(physical, str) or not isinstance(affinity_key, str):
            return None
        return cls(physical, affinity_key)


def _no_headers() -> Mapping[str, str]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """The parsed, bounded facts of one request."""

    request_id: str
    """Router-assigned id of this request; it becomes the replay id."""
    api: Api
    logical_model: str
    """The body's ``model`` as the client sent it."""
    stream: bool = False
    session_id: str | None = None
    session_source: IdentitySource = IdentitySource.NONE
    conversation_id: str | None = None
    conversation_source: IdentitySource = IdentitySource.NONE
    headers: Mapping[str, str] = field(default_factory=_no_headers)
    """Only the headers that decision signals match on, lower-cased names."""
    last_user_text: str = ""
    """The last user message's text, bounded, for keyword and regex signals."""
    context_tokens: int = 0
    """Estimated prompt tokens of the whole request."""
    turn_index: int = 0
    """Assistant turns already in the history (0 on the first turn)."""
    message_count: int = 0
    has_tools: bool = False
    """The request declares tools the model may call."""
    tool_result_ids: tuple[str, ...] = ()
    """Call ids answered by the trailing tool results (after the last assistant message)."""
    pending_tool_call_ids: tuple[str, ...] = ()
    """Call ids of the last assistant message that the request does not answer yet."""
    tool_call_count: int = 0
    """All tool calls in the history (informational)."""
    provider_state: tuple[ProviderState, ...] = ()
    previous_response_id: str | None = None
    response_pin: BackendPin | None = None
    """Filled by the router: the backend that minted ``previous_response_id``, if known."""

    @property
    def in_tool_loop(self) -> bool:
        """True when the request continues a tool exchange (results or dangling calls)."""
        return bool(self.tool_result_ids or self.pending_tool_call_ids)


@dataclass(frozen=True, slots=True)
class ResponseFacts:
    """What the response path learned about one served request (status, ids, usage)."""

    request_id: str
    """The request this response answers (its replay id)."""
    status: int
    """HTTP status the upstream answered with."""
    served_by: str | None = None
    """The replica that served it, when the upstream says so (e.g. ``10.0.0.7:8000``)."""
    response_id: str | None = None
    """Provider response id minted by the backend (Responses ``id``), if any."""
    tool_call_ids: tuple[str, ...] = ()
    """Tool calls the model emitted in this response."""
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    cached_tokens: int | None = None
    completion_tokens: int | None = None
    complete: bool = True
    """False when a stream ended without its final event (aborted or failed mid-stream)."""
    physical: str | None = None
    """``model@pool`` the request was routed to (``Decision.target.key``); ``None`` = the
    session's pending model for ``request_id``."""
