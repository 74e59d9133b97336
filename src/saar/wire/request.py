"""Entry points of the hot path: request path → API, request bytes → ``ParsedRequest``.

Theory of operation: Envoy hands saar the whole request body (BUFFERED) with lower-cased
headers. ``parse_request`` checks the size, validates the bytes as UTF-8 JSON, decodes the
top level once into ``dict[str, Raw]`` (the conversation stays undecoded) and hands it to the
API parser (``saar.wire.openai`` or ``saar.wire.anthropic``), which decodes only what the
facts need. The span of the top-level ``model`` value is located here too (a walk over the
top-level keys, ~0.7 µs each), so a body the splice could get wrong (duplicate keys) is
rejected with the other client errors and ``rewrite_model`` cannot fail.
Every bad input raises ``ClientError``; nothing else escapes for any bytes (a Hypothesis
property pins this). An exception of any other type is a bug and fails open upstream.

Limits: the body size is the caller's ``max_body_bytes`` (413 above it); JSON nesting is
bounded by msgspec's recursion guard (the interpreter's recursion limit, ~1000 levels minus
the caller's stack), reported as 400 ``invalid_json``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from saar.policy.config import LearningConfig
from saar.policy.facts import Api, RequestFacts
from saar.wire.anthropic import messages_facts
from saar.wire.errors import ClientError, field_error
from saar.wire.identity import signal_headers
from saar.wire.json import (
    JsonDepthError,
    JsonError,
    JsonTypeError,
    Raw,
    TypedDecoder,
    decode_object,
)
from saar.wire.openai import chat_facts, responses_facts
from saar.wire.rewrite import find_model_span, splice

__all__ = ["LAST_USER_TEXT_CHARS", "ParsedRequest", "api_for_path", "parse_request"]

LAST_USER_TEXT_CHARS: Final = 8192
"""Characters of the last user message kept for keyword and regex signals."""

_PATHS: Final = {
    "/v1/chat/completions": Api.CHAT,
    "/v1/responses": Api.RESPONSES,
    "/v1/messages": Api.MESSAGES,
}

_PARSERS: Final = {
    Api.CHAT: chat_facts,
    Api.RESPONSES: responses_facts,
    Api.MESSAGES: messages_facts,
}

_MODEL: Final[TypedDecoder[str]] = TypedDecoder(str)


def api_for_path(path: str) -> Api | None:
    """Return the API a request path speaks, or None when it is not an LLM call (pass through).

    The query string and fragment are ignored and one trailing slash is tolerated.
    """
    for separator in ("?", "#"):
        index = path.find(separator)
        if index >= 0:
            path = path[:index]
    if len(path) > 1 and path.endswith("/"):
        path = path[:-1]
    return _PATHS.get(path)


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    """A parsed request: its facts, and the body kept for the ``model`` rewrite."""

    facts: RequestFacts
    body: bytes
    """The request body exactly as received."""
    model_span: tuple[int, int]
    """Byte offsets of the top-level ``model`` value (quotes included) in ``body``."""

    def rewrite_model(self, model: str) -> bytes:
        """Return the body with its top-level ``model`` set to ``model``, all else unchanged.

        Never raises: ``parse_request`` has already checked everything the splice relies on.
        """
        return splice(self.body, self.model_span, model)


def _top_level(body: bytes) -> dict[str, Raw]:
    if not body or body.isspace():  # isspace stops at the first other byte: no copy
        raise ClientError.invalid_json("request body is empty")
    if not body.isascii():
        # msgspec checks UTF-8 only in the strings it decodes; the conversation stays raw.
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            raise ClientError.invalid_json("request body is not valid UTF-8") from None
    try:
        return decode_object(body)
    except JsonTypeError:
        raise ClientError.invalid_request("request body must be a JSON object") from None
    except JsonDepthError:
        raise ClientError.invalid_json("request body JSON is nested too deeply") from None
    except JsonError as err:
        raise ClientError.invalid_json(f"request body is not valid JSON: {err}") from None


def parse_request(
    api: Api,
    headers: Mapping[str, str],
    body: bytes,
    *,
    request_id: str,
    learning: LearningConfig,
    header_signals: frozenset[str],
    max_body_bytes: int,
) -> ParsedRequest:
    """Parse one request body (and its lower-cased headers) into facts, once.

    Raises ``ClientError``: 413 ``body_too_large`` over ``max_body_bytes``; 400
    ``invalid_json`` for empty, malformed, truncated, non-UTF-8 or too deeply nested JSON;
    400 ``invalid_request`` for a non-object body, a missing, empty or non-string ``model``,
    a missing ``messages`` (chat, messages), a duplicate top-level key (the backend and the
    router could read different values), or a field of the wrong type (named in ``param``).
    """
    if len(body) > max_body_bytes:
        raise ClientError.body_too_large(len(body), max_body_bytes)
    top = _top_level(body)
    raw_model = top.get("model")
    if raw_model is None:
        raise ClientError.invalid_request("`model` is required", param="model")
    try:
        model = _MODEL.decode(raw_model)
    except JsonError as err:
        raise field_error("model", err) from None
    if not model.strip():
        raise ClientError.invalid_request("`model` must not be empty", param="model")
    span = find_model_span(body, top)
    if span is None:  # pragma: no cover - top has "model", so the walk finds it
        raise ClientError.invalid_request("`model` is required", param="model")
    facts = _PARSERS[api](
        top,
        request_id=request_id,
        model=model,
        headers=headers,
        signals=signal_headers(headers, header_signals),
        learning=learning,
        text_limit=LAST_USER_TEXT_CHARS,
    )
    return ParsedRequest(facts, body, span)
