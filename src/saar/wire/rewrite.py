r"""The body ``model`` rewrite: a byte splice, never a re-serialisation.

Theory of operation: bodies are 200 KB-1 MB for long agent histories. Re-encoding one costs
~4 µs per KB with stdlib json and can change bytes the client chose (number formatting such
as ``1.0``, escapes, key order). So parsing locates the top-level ``"model"`` value and
``rewrite_model`` copies the body once with only that span replaced (ARCHITECTURE.md §2
rule 8).

Locating it without scanning nested content in Python: msgspec has already validated the
document and decoded its top level into ``dict[str, Raw]``, and each ``Raw`` is the exact
bytes of its value. ``find_model_span`` walks the top-level keys, one C regex match each, and
for each key checks that the value at the cursor *is* that ``Raw`` (``bytes.startswith``,
a memcmp) and skips ``len(raw)`` bytes: a 500 KB ``messages`` value costs one memcmp, not a
Python loop. Key escapes are decoded (``"mod\u0065l"`` is ``model``), as msgspec does.

Duplicate top-level keys are rejected (400): the decoded dict keeps the last value, so a
skip by its length would misalign the walk, and a body whose backend (last wins) and router
could read different ``model`` values must not be routed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

from saar.wire.errors import ClientError
from saar.wire.json import JsonError, Raw, TypedDecoder, encode_string

__all__ = ["find_model_span", "splice"]

# A plain key (no escapes) with the separator before it and the colon after it, from the end
# of the previous value to the start of the next: one C call per top-level key.
_KEY: Final = re.compile(rb'[ \t\n\r,]*"([^"\\]*)"[ \t\n\r]*:[ \t\n\r]*')
# The same for a key with escapes (group 1 keeps the quotes, for the JSON decoder); the
# string pattern is the unrolled-loop form, linear in the key length.
_ESCAPED_KEY: Final = re.compile(
    rb'[ \t\n\r,]*("[^"\\]*(?:\\.[^"\\]*)*")[ \t\n\r]*:[ \t\n\r]*', re.DOTALL
)
_END: Final = re.compile(rb"[ \t\n\r]*}")
_KEY_STRING: Final[TypedDecoder[str]] = TypedDecoder(str)


def _duplicate(key: str) -> ClientError:
    shown = key if len(key) <= 64 else key[:64] + "…"
    return ClientError.invalid_request(
        f"request body has a duplicate top-level key {shown!r}", param=key[:64] or None
    )


def find_model_span(body: bytes, top: Mapping[str, Raw]) -> tuple[int, int] | None:
    """Return ``(start, end)`` of the top-level ``model`` value in ``body``, or None if absent.

    ``top`` must be ``body`` decoded by ``saar.wire.json.decode_object``. Raises
    ``ClientError`` (400) when the object has a duplicate top-level key.
    """
    # The walk trusts the grammar msgspec has just validated: between top-level values there
    # is only whitespace, one comma, a key string, whitespace and one colon.
    span: tuple[int, int] | None = None
    count = 0
    key = ""
    pos = body.find(b"{") + 1
    while True:
        match = _KEY.match(body, pos)
        if match is not None:
            key = match.group(1).decode("utf-8", "surrogatepass")
        else:
            # Every decoded key seen: this must be the end of the object.
            if count == len(top) and _END.match(body, pos):
                return span
            match = _ESCAPED_KEY.match(body, pos)
            if match is None:  # a misaligned walk (see below)
                raise _duplicate(key)
            try:
                key = _KEY_STRING.decode(match.group(1))
            except JsonError:  # pragma: no cover - msgspec validated this very key already
                raise _duplicate(key) from None
        start = match.end()
        raw = top.get(key)
        # The value here must be exactly the decoded one, or the key occurs twice and the
        # dict kept the other occurrence. A number that is a prefix of another (1 vs 12)
        # passes startswith, but then a digit follows, which no key pattern accepts.
        if raw is None or not body.startswith(raw, start):
            raise _duplicate(key)
        pos = start + len(raw)
        if key == "model":
            span = (start, pos)
        count += 1


def splice(body: bytes, span: tuple[int, int], value: str) -> bytes:
    """Return ``body`` with ``span`` replaced by ``value`` as a JSON string (one copy)."""
    start, end = span
    view = memoryview(body)
    return b"".join((view[:start], encode_string(value), view[end:]))
