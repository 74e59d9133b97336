r"""Session and conversation identity, resolved once at ingress and never kept raw.

Theory of operation: upstream derived identity at several points from different sources,
so memory, telemetry and replay could land on different keys (upstream-saar-behaviour.md
§13 items 6-8). Here ``resolve_identity`` runs once per request, on the headers and the
``IdentityHints`` that the API parsers pull out of the body, and the facts carry its answer.

Session id precedence (ecosystem.md §0 item 7), first non-empty value wins:

=====  ==========================  ===================================================
rank   source                      value
=====  ==========================  ===================================================
1      ``HEADER``                  ``learning.session_header`` (default ``x-session-id``)
2      ``HARNESS_HEADER``          ``x-claude-code-session-id``, then ``x-session-affinity``
3      ``PROMPT_CACHE_KEY``        body ``prompt_cache_key`` (OpenAI)
4      ``USER``                    body ``user`` / ``safety_identifier`` (OpenAI),
                                   ``metadata.user_id`` (Anthropic)
5      ``RESPONSES_CONVERSATION``  body ``conversation`` (string or ``{"id"}``)
6      ``PREVIOUS_RESPONSE``       body ``previous_response_id``: a provisional id; the
                                   router may replace it with the session that minted
                                   that response
7      ``FINGERPRINT``             hash of the conversation opener (below)
8      ``NONE``                    nothing usable
=====  ==========================  ===================================================

Conversation id: ``learning.conversation_header`` (``HEADER``), then the Responses
``conversation`` (``RESPONSES_CONVERSATION``), else none.

Hashing: a value is trimmed (empty after trimming = absent), bounded to its first
``MAX_HASHED_BYTES`` bytes plus its full length, and hashed as
``blake2b(b"saar/" + kind + b"/" + source + b"\x00" + value, digest_size=16)``, hex:
32 characters, safe as a store key or log field whatever the client sent (hostile charsets
and lengths included). ``kind`` is ``session`` or ``conversation`` and ``source`` the
``IdentitySource`` value, so the same raw string from two sources, or used as a session and as
a conversation, never yields the same id.

The opener fingerprint hashes the system prompt and the first user message's text, both
length-prefixed. Both stay fixed while a conversation grows, so every turn of one
conversation maps to one id (upstream's ``cc-full-`` hash of all messages changed every
turn). What it merges: conversations that open with the same system prompt *and* the same
first user message, e.g. the same scripted task run twice. That is safe enough for a last
resort: identity only selects router memory (which model to stay on), never content, so a
merge costs at worst a less informed stay-or-switch choice, and any client that cares sends
an explicit id, which always wins. A harness that rewrites history (compaction) starts a new
fingerprint, i.e. a fresh session.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Final, Literal, NamedTuple

from saar.policy.config import LearningConfig
from saar.policy.facts import IdentitySource

__all__ = [
    "HARNESS_SESSION_HEADERS",
    "MAX_HASHED_BYTES",
    "MAX_SIGNAL_HEADER_CHARS",
    "OPENER_TEXT_CHARS",
    "Identity",
    "IdentityHints",
    "hash_identity",
    "opener_fingerprint",
    "resolve_identity",
    "signal_headers",
]

HARNESS_SESSION_HEADERS: Final = ("x-claude-code-session-id", "x-session-affinity")
"""Agent-harness session headers, in precedence order (lower-cased, as Envoy sends them)."""

MAX_HASHED_BYTES: Final = 4096
"""Bytes of a value that are hashed; longer values are told apart by their length only."""

MAX_SIGNAL_HEADER_CHARS: Final = 256
"""Characters kept of a header value that decision signals match on."""

OPENER_TEXT_CHARS: Final = 65536
"""Characters of the system prompt and of the first user message that the fingerprint hashes:
an opener that differs only after 64 Ki characters is the same opener for routing purposes."""

_EMPTY_HEADERS: Final[Mapping[str, str]] = MappingProxyType({})


def _domain(kind: str, source: IdentitySource) -> bytes:
    return f"saar/{kind}/{source.value}".encode() + b"\x00"


# Hash prefixes of the hot path, precomputed: building one (or even hashing the enum for a
# dict lookup, which runs Python code) costs more than the blake2b call.
_S_HEADER: Final = (IdentitySource.HEADER, _domain("session", IdentitySource.HEADER))
_S_HARNESS: Final = (
    IdentitySource.HARNESS_HEADER,
    _domain("session", IdentitySource.HARNESS_HEADER),
)
_S_CACHE_KEY: Final = (
    IdentitySource.PROMPT_CACHE_KEY,
    _domain("session", IdentitySource.PROMPT_CACHE_KEY),
)
_S_USER: Final = (IdentitySource.USER, _domain("session", IdentitySource.USER))
_S_CONVERSATION: Final = (
    IdentitySource.RESPONSES_CONVERSATION,
    _domain("session", IdentitySource.RESPONSES_CONVERSATION),
)
_S_PREVIOUS: Final = (
    IdentitySource.PREVIOUS_RESPONSE,
    _domain("session", IdentitySource.PREVIOUS_RESPONSE),
)
_C_HEADER: Final = _domain("conversation", IdentitySource.HEADER)
_C_CONVERSATION: Final = _domain("conversation", IdentitySource.RESPONSES_CONVERSATION)


# NamedTuples, not frozen dataclasses: built on every request, and a frozen dataclass pays an
# object.__setattr__ per field (~1 µs for these).
class IdentityHints(NamedTuple):
    """Identity-bearing values found in a request body (raw; hashed only on resolution)."""

    prompt_cache_key: str | None = None
    user: str | None = None
    """OpenAI ``user`` or ``safety_identifier``, Anthropic ``metadata.user_id``."""
    conversation: str | None = None
    """Responses ``conversation`` id."""
    previous_response_id: str | None = None
    opener: Callable[[], tuple[str, str]] | None = None
    """Returns ``(system prompt, first user message text)`` for the fingerprint; called only
    when no stronger source exists, so the common path never builds these strings."""


class Identity(NamedTuple):
    """Resolved, hashed identity of one request."""

    session_id: str | None
    session_source: IdentitySource
    conversation_id: str | None
    conversation_source: IdentitySource


def _bounded(value: str) -> bytes:
    data = value.encode("utf-8", "surrogatepass")
    if len(data) <= MAX_HASHED_BYTES:
        return data
    return data[:MAX_HASHED_BYTES] + b"\x00" + str(len(data)).encode()


def hash_identity(
    kind: Literal["session", "conversation"], source: IdentitySource, value: str
) -> str | None:
    """Return the fixed-size id for ``value`` from ``source``; None when blank after trimming.

    ``kind`` is ``session`` or ``conversation`` (a domain separator, see the module doc).
    """
    return _hash(_domain(kind, source), value)


def _hash(domain: bytes, value: str) -> str | None:
    value = value.strip()
    if not value:
        return None
    return hashlib.blake2b(domain + _bounded(value), digest_size=16).hexdigest()


def opener_fingerprint(system_text: str, first_user_text: str) -> str | None:
    """Return the session id fingerprinting a conversation opener; None when both are blank."""
    if not system_text.strip() and not first_user_text.strip():
        return None
    h = hashlib.blake2b(_domain("session", IdentitySource.FINGERPRINT), digest_size=16)
    for part in (system_text, first_user_text):
        data = part.encode("utf-8", "surrogatepass")
        # Length prefixes keep ("ab", "c") and ("a", "bc") apart.
        h.update(b"\x00" + str(len(data)).encode() + b"\x00")
        h.update(data)
    return h.hexdigest()


def _session(
    headers: Mapping[str, str], session_header: str, hints: IdentityHints
) -> tuple[str | None, IdentitySource]:
    harness_first, harness_second = HARNESS_SESSION_HEADERS
    candidates = (
        (_S_HEADER, headers.get(session_header)),
        (_S_HARNESS, headers.get(harness_first)),
        (_S_HARNESS, headers.get(harness_second)),
        (_S_CACHE_KEY, hints.prompt_cache_key),
        (_S_USER, hints.user),
        (_S_CONVERSATION, hints.conversation),
        (_S_PREVIOUS, hints.previous_response_id),
    )
    for (source, domain), value in candidates:
        if value is not None:
            hashed = _hash(domain, value)
            if hashed is not None:
                return hashed, source
    if hints.opener is not None:
        fingerprint = opener_fingerprint(*hints.opener())
        if fingerprint is not None:
            return fingerprint, IdentitySource.FINGERPRINT
    return None, IdentitySource.NONE


def resolve_identity(
    headers: Mapping[str, str], learning: LearningConfig, hints: IdentityHints
) -> Identity:
    """Resolve the session and conversation ids of one request (precedence in the module doc).

    ``headers`` must have lower-cased names (Envoy sends them so); the configured header
    names are lower-cased here.
    """
    session_id, session_source = _session(headers, learning.session_header.lower(), hints)
    conversation_id: str | None = None
    conversation_source = IdentitySource.NONE
    header_value = headers.get(learning.conversation_header.lower())
    if header_value is not None:
        conversation_id = _hash(_C_HEADER, header_value)
        if conversation_id is not None:
            conversation_source = IdentitySource.HEADER
    if conversation_id is None and hints.conversation is not None:
        conversation_id = _hash(_C_CONVERSATION, hints.conversation)
        if conversation_id is not None:
            conversation_source = IdentitySource.RESPONSES_CONVERSATION
    return Identity(session_id, session_source, conversation_id, conversation_source)


def signal_headers(headers: Mapping[str, str], names: frozenset[str]) -> Mapping[str, str]:
    """Keep only the headers decision signals match on, values bounded, as a read-only map."""
    if not names:
        return _EMPTY_HEADERS
    kept = {
        name: value[:MAX_SIGNAL_HEADER_CHARS]
        for name in names
        if (value := headers.get(name)) is not None
    }
    return MappingProxyType(kept) if kept else _EMPTY_HEADERS
