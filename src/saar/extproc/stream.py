"""One ext_proc stream = one HTTP request: phase state, bytes → facts, decision → mutations.

Theory of operation. Envoy opens one bidirectional stream per HTTP request and sends, in
order, the request headers, the buffered request body and, when saar asks for them, the
response headers (and, only when saar asks for it at response-header time, the response body
chunks). Every message is answered with exactly one response of the matching kind:

* request headers: answered at once, with a ``mode_override`` that says what else saar needs.
  A request that is not an LLM call (path or method) gets nothing more. Under
  ``server.response_path: access_log`` (the default, docs/design/0004) a Chat or Messages call
  ends after its body: the contract headers ride on the request for the route to copy, and
  status and served-by come from Envoy's access log. Responses API calls (and every call under
  ``stream``) also send the response headers.
* request body: parsed once into ``RequestFacts``; bad input gets an API-style error
  (``ImmediateResponse``) and changes no state; otherwise the router decides and the body
  response carries the cluster header, the affinity key, ``content-length`` and the rewritten
  body with ``clear_route_cache``. Any internal error **fails open**: the body continues
  unmodified to Envoy's default route, a counter ticks and a log line says why.
* response headers: the ``x-vsr-*`` contract is added, and what the status says is handed
  to the router's response path off the hot path. A Responses API stream observed under
  ``access_log`` is released once its response id is read: saar ends its side of the gRPC
  stream cleanly and Envoy carries on without it, so a long answer costs a few messages,
  not one per token.

Messages that arrive out of order or twice (a misbehaving peer, or the fuzz tests) are
answered with a plain "continue" of the matching kind; they never raise.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from typing import TYPE_CHECKING

import structlog
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep

from saar.eager import adopt
from saar.extproc import headers as h
from saar.extproc import responses
from saar.policy.facts import Api, RequestFacts, ResponseFacts
from saar.settings import ResponsePath
from saar.state import StoreError, TransactionConflictError
from saar.wire import ClientError, api_for_path, error_body, parse_request
from saar.wire.response import ResponseObserver, needs_body

if TYPE_CHECKING:
    from saar.observability.metrics import Metrics
    from saar.policy.decision import Decision
    from saar.router import Router
    from saar.settings import Settings

__all__ = ["ExtProcStream"]

_log = structlog.get_logger("saar.extproc")

_ROUTED_METHODS = frozenset({"POST"})


class ExtProcStream:
    """Per-stream state machine; ``on_message`` maps one request message to one response."""

    __slots__ = (
        "_api",
        "_decision",
        "_facts",
        "_headers",
        "_log_path",
        "_metrics",
        "_observer",
        "_release",
        "_router",
        "_served_by",
        "_settings",
        "_stage",
        "released",
    )

    def __init__(self, router: Router, metrics: Metrics) -> None:
        self._router = router
        self._metrics = metrics
        # One config snapshot per request: a reload mid-request cannot mix two configs.
        self._settings: Settings = router.settings
        self._headers: dict[str, str] = {}
        self._api: Api | None = None
        self._decision: Decision | None = None
        self._facts: RequestFacts | None = None
        self._observer: ResponseObserver | None = None
        self._served_by: str | None = None
        self._stage = "request_headers"
        self._log_path = False
        self._release = False
        self.released = False
        """True once saar is done with this stream early: the server ends it cleanly."""

    async def on_message(self, message: ep.ProcessingRequest) -> ep.ProcessingResponse:
        """Answer one message from Envoy; never raises for any input."""
        kind = message.WhichOneof("request")
        started = time.perf_counter()
        try:
            if kind == "request_headers":
                reply = self._on_request_headers(message)
            elif kind == "request_body":
                reply = await self._on_request_body(message)
            elif kind == "response_headers":
                reply = self._on_response_headers(message)
            elif kind == "response_body":
                reply = self._on_response_body(message)
            else:
                reply = _continue_for(kind)
        except Exception as exc:  # fail open: this request continues unmodified
            self._metrics.fail_open.labels(phase=str(kind), reason="internal_error").inc()
            _log.exception("extproc_internal_error", phase=kind, error=type(exc).__name__)
            reply = _continue_for(kind)
        self._metrics.message_seconds_for(str(kind)).observe(time.perf_counter() - started)
        return reply

    def _on_request_headers(self, message: ep.ProcessingRequest) -> ep.ProcessingResponse:
        if self._stage != "request_headers":
            return responses.continue_request_headers()
        self._stage = "request_body"
        headers = self._headers
        for entry in message.request_headers.headers.headers:
            headers[entry.key] = (
                entry.raw_value.decode("utf-8", "replace") if entry.raw_value else entry.value
            )
        path = headers.get(h.PATH, "")
        api = api_for_path(path) if headers.get(h.METHOD) in _ROUTED_METHODS else None
        self._api = api
        if api is not None and message.request_headers.end_of_stream:
            # A bodiless POST to an LLM path: passing it on would send it, unrouted, to the
            # default pool; it is the client's error like any other empty body.
            self._stage = "done"
            err = ClientError.invalid_json("request body is empty")
            return self._client_error(api, err)
        if api is None:
            self._stage = "done"
            self._metrics.passthrough.labels(reason="not_an_llm_call").inc()
            return responses.passthrough_request_headers()
        # Only the Responses API mints provider state (the response id) saar must read from
        # the response; everything else the response path needs is in the access log.
        self._log_path = (
            self._settings.server.response_path is ResponsePath.ACCESS_LOG
            and api is not Api.RESPONSES
        )
        return responses.route_request_headers(response_headers=not self._log_path)

    async def _on_request_body(self, message: ep.ProcessingRequest) -> ep.ProcessingResponse:
        api = self._api
        if self._stage != "request_body" or api is None:
            return responses.continue_request_body()
        self._stage = "response_headers"
        settings = self._settings
        router = self._router
        try:
            parsed = parse_request(
                api,
                self._headers,
                message.request_body.body,
                request_id=router.new_request_id(),
                learning=settings.policy.learning,
                header_signals=settings.policy.header_signals,
                max_body_bytes=settings.server.max_body_bytes,
            )
            router.check_model(parsed.facts)
        except ClientError as err:
            return self._client_error(api, err)
        try:
            routing = router.route(parsed)
            started = time.perf_counter()
            try:
                # Driven by hand: a decision that never waits (the in-process store) needs no
                # budget timer, since nothing could interrupt it anyway (saar/eager.py).
                pending = routing.send(None)
            except StopIteration as done:
                decision = done.value
            else:
                # It waits (a store round trip): from here on the decision budget applies,
                # counted from the start. asyncio.timeout, not wait_for: no extra Task.
                budget_s = settings.server.decision_budget_ms / 1000.0
                async with asyncio.timeout(budget_s - (time.perf_counter() - started)):
                    decision = await adopt(routing, pending)
        except ClientError as err:
            # The request names state saar cannot serve (a previous_response_id whose backend
            # left the config): the client's answer, not a fail-open to the default pool.
            return self._client_error(api, err)
        except TimeoutError:
            return self._fail_open("decision_timeout", api, parsed.facts)
        except TransactionConflictError:
            return self._fail_open("state_conflict", api, parsed.facts)
        except StoreError as exc:
            return self._fail_open("store_error", api, parsed.facts, error=type(exc).__name__)
        self._decision = decision
        self._facts = parsed.facts
        if _log_debug():
            _log.debug(
                "decision",
                request_id=decision.replay_id,
                session=parsed.facts.session_id,
                decision=decision.decision_name,
                action=decision.action.value,
                reason=decision.reason.value,
                target=decision.target.key,
            )
        contract: tuple[tuple[str, str], ...] = ()
        if self._log_path:
            # No response message will come: the route copies the contract headers from the
            # request, and the access-log entry carrying the replay id closes the loop.
            self._stage = "done"
            router.await_log(decision)
            contract = router.response_headers(decision)
        return responses.route_request_body(
            cluster=decision.target.cluster,
            affinity_key=decision.affinity_key,
            body=parsed.rewrite_model(decision.target.model),
            contract=contract,
        )

    def _client_error(self, api: Api, err: ClientError) -> ep.ProcessingResponse:
        """Answer bad input with the API's error shape; it is counted and changes no state."""
        self._metrics.client_errors.labels(code=err.code).inc()
        _log.info("client_error", code=err.code, status=err.status, api=api.value)
        return responses.client_error(err.status, error_body(api, err), f"saar_{err.code}")

    def _fail_open(
        self, reason: str, api: Api, facts: RequestFacts, **fields: str
    ) -> ep.ProcessingResponse:
        self._metrics.fail_open.labels(phase="request_body", reason=reason).inc()
        # Ids are bound here, once; the session id is already a hash (never the raw header).
        _log.bind(request_id=facts.request_id, session=facts.session_id, api=api.value).warning(
            "fail_open", reason=reason, **fields
        )
        return responses.continue_request_body()

    def _on_response_headers(self, message: ep.ProcessingRequest) -> ep.ProcessingResponse:
        decision = self._decision
        facts = self._facts
        if self._stage != "response_headers" or decision is None or facts is None:
            self._stage = "done"
            return responses.continue_response_headers()
        self._stage = "done"
        status = 0
        content_type = ""
        for entry in message.response_headers.headers.headers:
            if entry.key == h.STATUS:
                value = (
                    entry.raw_value.decode("ascii", "replace") if entry.raw_value else entry.value
                )
                status = int(value) if value.isdigit() else 0
            elif entry.key == h.CONTENT_TYPE:
                content_type = entry.raw_value.decode("latin-1") if entry.raw_value else entry.value
        served_by = _upstream_address(message)
        headers = self._router.response_headers(decision)
        end_of_stream = message.response_headers.end_of_stream
        if (
            not end_of_stream
            and self._settings.server.learn_from_response_bodies
            and needs_body(
                facts.api,
                stream=facts.stream,
                has_tools=facts.has_tools,
                status=status,
                content_type=content_type,
            )
        ):
            # Learn tool calls, response ids and usage from the body: Envoy streams it to us
            # chunk by chunk and every chunk is answered unmodified at once.
            self._observer = ResponseObserver(
                facts.api, request_id=decision.replay_id, status=status, streaming=facts.stream
            )
            self._served_by = served_by
            self._release = self._settings.server.response_path is ResponsePath.ACCESS_LOG
            self._stage = "response_body"
            return responses.response_headers(headers, inspect_body=True)
        self._router.observe_response(decision, status=status, served_by=served_by)
        return responses.response_headers(headers)

    def _on_response_body(self, message: ep.ProcessingRequest) -> ep.ProcessingResponse:
        observer = self._observer
        if self._stage == "response_body" and observer is not None:
            body = message.response_body
            observer.feed(body.body)
            if body.end_of_stream:
                self._finish_body(complete=True)
            elif self._release and observer.response_id is not None:
                self._release_body(observer)
        return responses.continue_response_body()

    def _release_body(self, observer: ResponseObserver) -> None:
        """The response id is known: learn it now and let the rest of the stream go by."""
        self.released = True
        self._learn_body(observer.release())

    def close(self) -> None:
        """The stream ended: a body still being observed was cut short (client or upstream)."""
        if self._stage == "response_body":
            self._finish_body(complete=False)

    def _finish_body(self, *, complete: bool) -> None:
        observer = self._observer
        if observer is None:
            self._stage = "done"
            return
        self._learn_body(observer.finish(complete=complete))

    def _learn_body(self, facts: ResponseFacts) -> None:
        """Hand what the body taught to the router; this stream observes nothing more."""
        decision = self._decision
        self._stage = "done"
        self._observer = None
        if decision is None:
            return
        learned = replace(facts, served_by=self._served_by, physical=decision.target.key)
        self._router.learn(decision, learned)


def _log_debug() -> bool:
    """Whether debug logs are on (a per-request decision line is debug-level)."""
    return logging.getLogger().isEnabledFor(logging.DEBUG)


def _upstream_address(message: ep.ProcessingRequest) -> str | None:
    """The replica that served the response (Envoy's ``upstream.address`` attribute)."""
    for struct in message.attributes.values():
        value = struct.fields.get("upstream.address")
        if value is not None and value.string_value:
            address: str = value.string_value
            return address
    return None


def _continue_for(kind: str | None) -> ep.ProcessingResponse:
    if kind == "request_headers":
        return responses.continue_request_headers()
    if kind == "request_body":
        return responses.continue_request_body()
    if kind == "response_headers":
        return responses.continue_response_headers()
    if kind == "response_body":
        return responses.continue_response_body()
    if kind == "response_trailers":
        return ep.ProcessingResponse(response_trailers=ep.TrailersResponse())
    # Unknown or empty message kinds get a request-trailers answer: the only remaining kind.
    return ep.ProcessingResponse(request_trailers=ep.TrailersResponse())
