"""The project's single JSON codec: msgspec behind a small, library-neutral surface.

Theory of operation: every module that reads or writes JSON (request parsing, replay
records, the admin endpoint, settings dumps) goes through this module, so there is one
codec, one set of error types and one place to change it. msgspec was chosen for the hot
path (docs/dependencies.md, perf-spike.md): decoding a request's top level into
``dict[str, Raw]`` costs ~6 µs per 20 KB and leaves the conversation undecoded, and typed
``Struct`` decoding validates and skips unknown fields in C.

Errors leave this module as ``JsonError`` subclasses carrying a JSON path relative to the
decoded value (``[3].content``), never as msgspec exceptions, so callers can turn them into
client errors that name the offending field.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

import msgspec
from msgspec import Raw, Struct

__all__ = [
    "JsonDepthError",
    "JsonError",
    "JsonSyntaxError",
    "JsonTypeError",
    "Raw",
    "Struct",
    "TypedDecoder",
    "decode_object",
    "dumps",
    "encode_string",
    "is_nonempty_array",
    "loads",
]

T = TypeVar("T")

_JSON_WS = b" \t\n\r"


class JsonError(ValueError):
    """JSON that cannot be decoded as asked: the base of this module's errors."""

    def __init__(self, reason: str, path: str = "") -> None:
        super().__init__(f"{reason} at {path}" if path else reason)
        self.reason = reason
        """What is wrong, safe to show to a client (no input bytes are echoed)."""
        self.path = path
        """Where, relative to the decoded value: ``""`` (the value itself), ``[3].content``."""


class JsonSyntaxError(JsonError):
    """Not JSON at all: malformed, truncated, trailing bytes or invalid UTF-8."""


class JsonTypeError(JsonError):
    """Well-formed JSON of the wrong shape (a wrong type, a missing required field)."""


class JsonDepthError(JsonError):
    """Nesting deeper than the decoder allows (the interpreter's recursion limit)."""


def _convert(err: msgspec.DecodeError) -> JsonError:
    message = str(err)
    reason, sep, where = message.partition(" - at `")
    path = where.rstrip("`")[1:] if sep else ""
    if isinstance(err, msgspec.ValidationError):
        return JsonTypeError(reason, path)
    return JsonSyntaxError(reason, path)


class TypedDecoder(Generic[T]):
    """A reusable decoder of JSON into one type (typically a ``Struct`` or a list of them)."""

    __slots__ = ("_decoder",)

    def __init__(self, type_: type[T] | Any) -> None:
        self._decoder: msgspec.json.Decoder[T] = msgspec.json.Decoder(type_)

    def decode(self, data: bytes | Raw) -> T:
        """Decode ``data``; raises a ``JsonError`` subclass on any bad input."""
        try:
            return self._decoder.decode(data)
        except msgspec.DecodeError as err:
            raise _convert(err) from None
        except UnicodeDecodeError:
            # msgspec validates UTF-8 only in the strings it materialises.
            raise JsonSyntaxError("invalid UTF-8 in a string") from None
        except RecursionError:
            raise JsonDepthError("JSON nesting is too deep") from None


_object_decoder: TypedDecoder[dict[str, Raw]] = TypedDecoder(dict[str, Raw])
_any_decoder: TypedDecoder[Any] = TypedDecoder(Any)
_encoder = msgspec.json.Encoder()


def decode_object(data: bytes) -> dict[str, Raw]:
    """Decode a JSON object's top level only: each value stays an undecoded ``Raw`` view.

    The whole document is still validated as JSON (syntax, not types): ~6 µs per 20 KB.
    """
    return _object_decoder.decode(data)


def loads(data: bytes | str | Raw) -> Any:
    """Decode any JSON document into Python builtins; raises ``JsonError``."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    return _any_decoder.decode(data)


def dumps(obj: object) -> bytes:
    """Encode ``obj`` (builtins, dataclasses, Structs, enums) as compact UTF-8 JSON."""
    return _encoder.encode(obj)


def encode_string(value: str) -> bytes:
    """Return ``value`` as a JSON string literal, quotes included (for byte splicing)."""
    return _encoder.encode(value)


def is_nonempty_array(raw: Raw) -> bool | None:
    """Tell a non-empty JSON array (True) from ``[]``/``null`` (False) and anything else (None).

    Decides from the raw bytes without decoding the elements (``tools`` can be many KB).
    """
    head = bytes(memoryview(raw)[:64])
    if head == b"null":
        return False
    if not head.startswith(b"["):
        return None
    rest = head[1:].lstrip(_JSON_WS)
    if rest:
        return not rest.startswith(b"]")
    # More than 63 bytes of whitespace after "[": rare enough to pay for a full copy.
    return bool(bytes(raw)[1:-1].strip(_JSON_WS))
