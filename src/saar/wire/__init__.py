"""Pure bytes ⇄ facts: request parsing, identity, the ``model`` splice and client errors.

``saar.wire`` turns the request body and headers Envoy hands over into the frozen
``RequestFacts`` the policy decides on, parsing once, and later rewrites the body's
top-level ``model`` by splicing bytes. It does no I/O (an import-linter contract keeps it
so); msgspec, behind ``saar.wire.json``, is the project's single JSON codec.
"""

from saar.wire.errors import ClientError, ErrorCode, error_body
from saar.wire.request import LAST_USER_TEXT_CHARS, ParsedRequest, api_for_path, parse_request
from saar.wire.response import ResponseObserver, needs_body
from saar.wire.sse import SseEvent, SseFramer

__all__ = [
    "LAST_USER_TEXT_CHARS",
    "ClientError",
    "ErrorCode",
    "ParsedRequest",
    "ResponseObserver",
    "SseEvent",
    "SseFramer",
    "api_for_path",
    "error_body",
    "needs_body",
    "parse_request",
]
