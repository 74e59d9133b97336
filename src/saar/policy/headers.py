"""``x-vsr-*`` response header values, and a parser for their grammar.

Theory of operation: the headers are derived from the ``Decision`` only (never recomputed) and
are sent on every routed response, not only under debug (upstream weakness #22).

Grammar (ABNF-ish; ``method`` is ``session_aware`` today)::

    methods-value = method *( "," method )
    pairs-value   = pair *( "," pair )
    pair          = method "=" value          ; split on the FIRST "=": values may contain "="
    value         = *( unreserved / escaped ) ; any text, with the four separators escaped
    escaped       = "%25" / "%2C" / "%3B" / "%0D" / "%0A"    ; % , ; CR LF
    method        = 1*( ALPHA / DIGIT / "_" )

The reasons header's value is ``<action>=<reason>`` (the published form
``x-vsr-learning-reasons: session_aware=hard_lock=tool_loop``), so a reason is never read
without its action. ``%`` itself is escaped so the encoding is reversible
(``unescape(escape(x)) == x`` for every string). Plain headers (selected model, pool,
decision, phase, replay id) use the same value escaping, so a model name with a comma
cannot break a downstream list parser.
"""

from __future__ import annotations

import re
from typing import Final

from saar.policy.decision import Decision

__all__ = [
    "CONTRACT_HEADERS",
    "HEADER_ACTIONS",
    "HEADER_METHODS",
    "HEADER_MODES",
    "HEADER_PHASE",
    "HEADER_REASONS",
    "HEADER_REPLAY_ID",
    "HEADER_SCOPES",
    "HEADER_SELECTED_DECISION",
    "HEADER_SELECTED_MODEL",
    "HEADER_SELECTED_POOL",
    "METHOD",
    "HeaderGrammarError",
    "escape_value",
    "parse_methods",
    "parse_pairs",
    "response_headers",
    "unescape_value",
]

METHOD: Final = "session_aware"
HEADER_METHODS: Final = "x-vsr-learning-methods"
HEADER_ACTIONS: Final = "x-vsr-learning-actions"
HEADER_SCOPES: Final = "x-vsr-learning-scopes"
HEADER_REASONS: Final = "x-vsr-learning-reasons"
HEADER_MODES: Final = "x-vsr-learning-modes"
HEADER_SELECTED_MODEL: Final = "x-vsr-selected-model"
HEADER_SELECTED_POOL: Final = "x-vsr-selected-pool"
HEADER_SELECTED_DECISION: Final = "x-vsr-selected-decision"
HEADER_PHASE: Final = "x-vsr-session-phase"
HEADER_REPLAY_ID: Final = "x-vsr-replay-id"

CONTRACT_HEADERS: Final = (
    HEADER_SELECTED_MODEL,
    HEADER_SELECTED_POOL,
    HEADER_SELECTED_DECISION,
    HEADER_PHASE,
    HEADER_REPLAY_ID,
    HEADER_METHODS,
    HEADER_ACTIONS,
    HEADER_SCOPES,
    HEADER_REASONS,
    HEADER_MODES,
)
"""Every contract header name, in the order ``response_headers`` emits them. The Envoy
bootstrap strips these from client requests and has the routed route copy each one from the
request to the response (``%REQ(name)%``); both are generated from this tuple."""

_ESCAPES: Final = (("%", "%25"), (",", "%2C"), (";", "%3B"), ("\r", "%0D"), ("\n", "%0A"))
_UNESCAPE: Final = {code: char for char, code in _ESCAPES}
_ESCAPED: Final = re.compile(r"%(?:25|2C|3B|0D|0A)")
_METHOD: Final = re.compile(r"[A-Za-z0-9_]+")


class HeaderGrammarError(ValueError):
    """A header value does not follow the documented grammar."""


def escape_value(value: str) -> str:
    """Escape ``%`` ``,`` ``;`` CR LF so ``value`` fits in one list element."""
    for char, code in _ESCAPES:
        if char in value:
            value = value.replace(char, code)
    return value


def unescape_value(value: str) -> str:
    """Inverse of ``escape_value`` (single pass, so ``%252C`` becomes ``%2C``)."""
    if "%" not in value:
        return value
    return _ESCAPED.sub(lambda m: _UNESCAPE[m.group(0)], value)


def parse_methods(value: str) -> tuple[str, ...]:
    """Parse a ``methods-value``; raises ``HeaderGrammarError`` on a malformed value."""
    methods = tuple(value.split(","))
    for method in methods:
        if _METHOD.fullmatch(method) is None:
            msg = f"bad method {method!r} in {value!r}"
            raise HeaderGrammarError(msg)
    return methods


def parse_pairs(value: str) -> tuple[tuple[str, str], ...]:
    """Parse a ``pairs-value`` into ``(method, unescaped value)`` pairs."""
    pairs: list[tuple[str, str]] = []
    for item in value.split(","):
        method, sep, raw = item.partition("=")
        if not sep or _METHOD.fullmatch(method) is None:
            msg = f"bad pair {item!r} in {value!r}"
            raise HeaderGrammarError(msg)
        if ";" in raw or "\r" in raw or "\n" in raw:
            msg = f"unescaped separator in {item!r}"
            raise HeaderGrammarError(msg)
        pairs.append((method, unescape_value(raw)))
    return tuple(pairs)


def _pair(value: str) -> str:
    return f"{METHOD}={escape_value(value)}"


def response_headers(decision: Decision) -> tuple[tuple[str, str], ...]:
    """Every ``x-vsr-*`` header for ``decision``, in a fixed order."""
    target = decision.target
    return (
        (HEADER_SELECTED_MODEL, escape_value(target.model)),
        (HEADER_SELECTED_POOL, escape_value(target.pool)),
        (HEADER_SELECTED_DECISION, escape_value(decision.decision_name)),
        (HEADER_PHASE, decision.phase.value),
        (HEADER_REPLAY_ID, escape_value(decision.replay_id)),
        (HEADER_METHODS, METHOD),
        (HEADER_ACTIONS, _pair(decision.action.value)),
        (HEADER_SCOPES, _pair(decision.scope.value)),
        (HEADER_REASONS, _pair(f"{decision.action.value}={decision.reason.value}")),
        (HEADER_MODES, _pair(decision.mode.value)),
    )
