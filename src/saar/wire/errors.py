"""Client errors: bad input that the client must fix, with an HTTP status and a safe message.

Theory of operation: this is one of the house's two error families (ARCHITECTURE.md §2 rule
5). Anything that is the client's fault (malformed JSON, wrong types, an oversize body, an
unknown model) raises ``ClientError``; ``extproc/responses.py`` turns it into an immediate
response whose body ``error_body`` renders in the style of the API the client speaks, so the
official SDKs raise their usual exception types. Messages never echo request bytes back.

``field_error`` is the one place that turns codec errors (``saar.wire.json.JsonError``) into
client errors that name the field by its JSON path (``messages[3].content``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, TypeVar

from saar.policy.facts import Api
from saar.wire.json import JsonDepthError, JsonError, JsonSyntaxError, Raw, TypedDecoder, dumps

__all__ = ["ClientError", "ErrorCode", "decode_field", "error_body", "field_error"]

T = TypeVar("T")


class ErrorCode:
    """The ``code`` values a ``ClientError`` carries (OpenAI ``error.code`` style)."""

    INVALID_JSON: Final = "invalid_json"
    """The body is not JSON (malformed, truncated, invalid UTF-8, nested too deep)."""
    INVALID_REQUEST: Final = "invalid_request"
    """Well-formed JSON that is not a valid request (wrong type, missing field)."""
    BODY_TOO_LARGE: Final = "body_too_large"
    """The body exceeds the configured limit (HTTP 413)."""
    MODEL_NOT_FOUND: Final = "model_not_found"
    """The requested model is not served here (HTTP 404)."""


class ClientError(Exception):
    """A request the client must fix: HTTP status, stable code, safe message, offending field."""

    def __init__(self, status: int, code: str, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        """HTTP status to answer with (400, 404, 413)."""
        self.code = code
        """Stable machine-readable code, one of ``ErrorCode``."""
        self.message = message
        """Human-readable, safe to show: never contains request bytes."""
        self.param = param
        """The offending request field as a JSON path (``messages[3].content``), if any."""

    def __repr__(self) -> str:
        return (
            f"ClientError(status={self.status}, code={self.code!r}, "
            f"message={self.message!r}, param={self.param!r})"
        )

    @classmethod
    def invalid_json(cls, message: str) -> ClientError:
        """Build the error for a body that is not JSON (400)."""
        return cls(400, ErrorCode.INVALID_JSON, message)

    @classmethod
    def invalid_request(cls, message: str, *, param: str | None = None) -> ClientError:
        """Build the error for well-formed JSON that is not a valid request (400)."""
        return cls(400, ErrorCode.INVALID_REQUEST, message, param=param)

    @classmethod
    def body_too_large(cls, size: int, limit: int) -> ClientError:
        """Build the error for a body over the configured limit (413)."""
        return cls(
            413,
            ErrorCode.BODY_TOO_LARGE,
            f"request body is {size} bytes, larger than the limit of {limit} bytes",
        )

    @classmethod
    def model_not_found(cls, model: str) -> ClientError:
        """Build the error for a model nothing here serves (404); the name shown is bounded."""
        shown = model if len(model) <= 64 else model[:64] + "…"
        return cls(
            404,
            ErrorCode.MODEL_NOT_FOUND,
            f"the model {shown!r} does not exist or is not served here",
            param="model",
        )


# msgspec names JSON types; clients read English.
_TYPE_WORDS: Final = {
    "str": "a string",
    "bool": "a boolean",
    "int": "an integer",
    "float": "a number",
    "array": "an array",
    "object": "an object",
    "null": "null",
}


def _words(types: str) -> str:
    names = [t.strip().strip("`") for t in types.split("|")]
    words = [_TYPE_WORDS.get(name, name) for name in names if name != "null"]
    return " or ".join(words) if words else "null"


def field_error(field: str, err: JsonError) -> ClientError:
    """Turn a codec error while decoding top-level ``field`` into a ``ClientError``.

    ``Expected `str | array | null`, got `int``` at ``[3].content`` of ``messages`` becomes
    "`messages[3].content` must be a string or an array of content parts, got an integer".
    """
    param = field + err.path
    if isinstance(err, JsonDepthError):
        return ClientError.invalid_json(f"`{param}` is nested too deeply")
    if isinstance(err, JsonSyntaxError):
        return ClientError.invalid_json(f"`{param}`: {err.reason}")
    reason = err.reason
    if reason.startswith("Expected `") and "`, got `" in reason:
        expected, _, got = reason[len("Expected `") :].partition("`, got `")
        wanted = _words(expected)
        if param.endswith("content") and "array" in expected:
            wanted = wanted.replace("an array", "an array of content parts")
        return ClientError.invalid_request(
            f"`{param}` must be {wanted}, got {_words(got.rstrip('`'))}", param=param
        )
    if reason.startswith("Object missing required field `"):
        name = reason[len("Object missing required field `") :].rstrip("`")
        param = f"{param}.{name}"
        return ClientError.invalid_request(f"`{param}` is required", param=param)
    return ClientError.invalid_request(f"`{param}`: {reason}", param=param)


def decode_field(top: Mapping[str, Raw], name: str, decoder: TypedDecoder[T]) -> T | None:
    """Decode top-level field ``name``: None when absent, ``ClientError`` when malformed."""
    raw = top.get(name)
    if raw is None:
        return None
    try:
        return decoder.decode(raw)
    except JsonError as err:
        raise field_error(name, err) from None


_ANTHROPIC_TYPES: Final = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
}


def error_body(api: Api | None, err: ClientError) -> bytes:
    """Render ``err`` as a JSON error body in the style of ``api`` (OpenAI style when unknown).

    OpenAI (chat, responses, unknown): ``{"error": {"message", "type", "param", "code"}}``.
    Anthropic (messages): ``{"type": "error", "error": {"type", "message"}}``.
    """
    if api is Api.MESSAGES:
        kind = _ANTHROPIC_TYPES.get(err.status, "invalid_request_error")
        return dumps({"type": "error", "error": {"type": kind, "message": err.message}})
    return dumps(
        {
            "error": {
                "message": err.message,
                "type": "invalid_request_error",
                "param": err.param,
                "code": err.code,
            }
        }
    )
