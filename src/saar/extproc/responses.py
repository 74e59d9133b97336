"""The one place that turns decisions and errors into ext_proc ``ProcessingResponse`` messages.

Rules this module encodes (each learnt the hard way by others, see docs/design/0001):

* A route change needs ``clear_route_cache`` **in the same response as a header mutation**;
  Envoy ignores the flag otherwise (envoyproxy/envoy#26388).
* A BUFFERED body rewrite must set a matching ``content-length`` in the same response, or
  Envoy answers 500.
* A ``mode_override`` replaces the body modes too (the zero value of a body mode is NONE), so
  every override restates the modes it keeps.
* Only this module builds ``ImmediateResponse``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from envoy.type.v3 import http_status_pb2

from saar.extproc import headers as h

__all__ = [
    "client_error",
    "continue_request_body",
    "continue_request_headers",
    "continue_response_body",
    "continue_response_headers",
    "passthrough_request_headers",
    "response_headers",
    "route_request_body",
    "route_request_headers",
]

_Mode = processing_mode_pb2.ProcessingMode
_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD


def _header(name: str, value: str) -> base_pb2.HeaderValueOption:
    # raw_value: Envoy 1.40 reads raw_value and ignores value when both are present.
    return base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=name, raw_value=value.encode("utf-8", "replace")),
        append_action=_OVERWRITE,
    )


def continue_request_headers() -> ep.ProcessingResponse:
    """Answer request headers at once: nothing to change until the body is seen."""
    return ep.ProcessingResponse(request_headers=ep.HeadersResponse())


def _mode(
    *, response_headers: bool, request_body: int, response_body: int
) -> processing_mode_pb2.ProcessingMode:
    """A complete ``ProcessingMode``: every override restates all the modes it keeps."""
    return _Mode(
        request_header_mode=_Mode.SEND,
        response_header_mode=_Mode.SEND if response_headers else _Mode.SKIP,
        request_body_mode=request_body,
        response_body_mode=response_body,
        request_trailer_mode=_Mode.SKIP,
        response_trailer_mode=_Mode.SKIP,
    )


# Built once: protobuf messages are serialized on write and these are never mutated.
_ROUTED_HEADERS_TWO = ep.ProcessingResponse(
    request_headers=ep.HeadersResponse(),
    mode_override=_mode(
        response_headers=False, request_body=_Mode.BUFFERED, response_body=_Mode.NONE
    ),
)
_ROUTED_HEADERS_THREE = ep.ProcessingResponse(
    request_headers=ep.HeadersResponse(),
    mode_override=_mode(
        response_headers=True, request_body=_Mode.BUFFERED, response_body=_Mode.NONE
    ),
)
_INSPECT_BODY = _mode(
    response_headers=True, request_body=_Mode.BUFFERED, response_body=_Mode.STREAMED
)


def route_request_headers(*, response_headers: bool) -> ep.ProcessingResponse:
    """Continue the request headers of a call saar routes, stating the modes it needs.

    Without ``response_headers`` the stream ends after the body answer (two messages): the
    route copies the contract headers and the access log brings status and served-by
    (docs/design/0004). With it, Envoy also sends the response headers, and saar may ask for
    the body there. The override is explicit either way, so saar works with an Envoy whose
    static ``response_header_mode`` is SEND or SKIP. The returned message is shared: never
    mutate it.
    """
    return _ROUTED_HEADERS_THREE if response_headers else _ROUTED_HEADERS_TWO


def passthrough_request_headers() -> ep.ProcessingResponse:
    """Continue a request saar does not route, and ask Envoy for nothing more of it.

    The override restates every mode it means (BodySendMode's zero value is NONE).
    """
    return ep.ProcessingResponse(
        request_headers=ep.HeadersResponse(),
        mode_override=_mode(
            response_headers=False, request_body=_Mode.NONE, response_body=_Mode.NONE
        ),
    )


def continue_request_body() -> ep.ProcessingResponse:
    """Continue the request body unmodified (fail-open, or a model saar does not route)."""
    return ep.ProcessingResponse(request_body=ep.BodyResponse())


def route_request_body(
    *,
    cluster: str,
    affinity_key: str,
    body: bytes,
    contract: Iterable[tuple[str, str]] = (),
) -> ep.ProcessingResponse:
    """Route to ``cluster`` with ``affinity_key`` and the rewritten ``body``.

    ``contract`` headers are set on the request, for the route to copy to the response
    (``%REQ(name)%``) when the response headers do not come back to saar.
    """
    # Built in place: passing a sub-message to a constructor copies it, and with upb each
    # copy of a body mutation costs ~0.6 ms per 500 KB (measured: 968 -> 20 µs per reply).
    reply = ep.ProcessingResponse()
    common = reply.request_body.response
    set_headers = common.header_mutation.set_headers
    _set(set_headers, h.CLUSTER, cluster)
    _set(set_headers, h.AFFINITY_KEY, affinity_key)
    _set(set_headers, h.CONTENT_LENGTH, str(len(body)))
    for name, value in contract:
        _set(set_headers, name, value)
    common.body_mutation.body = body
    common.clear_route_cache = True
    return reply


def _set(set_headers: Any, name: str, value: str) -> None:
    entry = set_headers.add()
    # raw_value: Envoy 1.40 reads raw_value and ignores value when both are present.
    entry.header.key = name
    entry.header.raw_value = value.encode("utf-8", "replace")
    entry.append_action = _OVERWRITE


def client_error(status: int, body: bytes, details: str) -> ep.ProcessingResponse:
    """Answer the client directly with an API-style JSON error; nothing goes upstream."""
    return ep.ProcessingResponse(
        immediate_response=ep.ImmediateResponse(
            status=http_status_pb2.HttpStatus(code=status),
            headers=ep.HeaderMutation(set_headers=[_header(h.CONTENT_TYPE, "application/json")]),
            body=body,
            details=details,
        )
    )


def response_headers(
    headers: Iterable[tuple[str, str]], *, inspect_body: bool = False
) -> ep.ProcessingResponse:
    """Add the ``x-vsr-*`` contract to the client's response headers.

    With ``inspect_body`` the response body is streamed to saar chunk by chunk so the
    response path can learn tool calls, response ids and usage; each chunk is answered
    unmodified at once, so the token stream is never held back.
    """
    mutation = ep.HeaderMutation(set_headers=[_header(name, value) for name, value in headers])
    message = ep.ProcessingResponse(
        response_headers=ep.HeadersResponse(response=ep.CommonResponse(header_mutation=mutation))
    )
    if inspect_body:
        message.mode_override.CopyFrom(_INSPECT_BODY)
    return message


def continue_response_headers() -> ep.ProcessingResponse:
    """Continue response headers unmodified (a request saar did not route)."""
    return ep.ProcessingResponse(response_headers=ep.HeadersResponse())


def continue_response_body() -> ep.ProcessingResponse:
    """Pass a response body chunk through untouched."""
    return ep.ProcessingResponse(response_body=ep.BodyResponse())
