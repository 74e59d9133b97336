"""Drive saar's ext_proc servicer with scripted streams, as Envoy would.

For operators and for saar's own adapter tests: start the real grpc.aio server in-process on
a private Unix socket, with a given config, a fake clock and any session store, then play
ext_proc streams at it over a real gRPC channel and read back what it answered.

Example::

    async with ExtProcHarness(load_settings("config/local.yaml"), clock=clock) as saar:
        turn = await saar.exchange(body={"model": "auto", "messages": [...]},
                                   headers={"x-session-id": "s1"})
        assert turn.cluster == "pool_mi300_small"
        assert turn.response_headers["x-vsr-learning-actions"] == "session_aware=establish_baseline"

The harness plays Envoy's part as ``envoy/local.yaml`` configures it: it honours saar's
``mode_override`` (a Chat or Messages call under ``response_path: access_log`` ends after the
body answer), copies the contract headers from the request to the response as the route does
(``%REQ(name)%``), and sends the access-log entry of a routed request to saar's
``AccessLogService`` over the same socket, as Envoy's gRPC access logger would.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2
from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ep_grpc

from saar.extproc.server import ExtProcServer
from saar.observability.metrics import Metrics
from saar.policy.headers import CONTRACT_HEADERS, HEADER_REPLAY_ID
from saar.router import Router
from saar.settings import Settings
from saar.state import SessionStore, build_store
from saar.wire.json import dumps

__all__ = [
    "Exchange",
    "ExtProcHarness",
    "ScriptedStream",
    "access_log_message",
    "request_body_message",
    "request_headers_message",
    "response_headers_message",
]


def _header_map(headers: Mapping[str, str]) -> base_pb2.HeaderMap:
    return base_pb2.HeaderMap(
        headers=[
            base_pb2.HeaderValue(key=name.lower(), raw_value=value.encode())
            for name, value in headers.items()
        ]
    )


def request_headers_message(
    headers: Mapping[str, str], *, end_of_stream: bool = False
) -> ep.ProcessingRequest:
    """A ``request_headers`` message (pseudo-headers such as ``:path`` included)."""
    return ep.ProcessingRequest(
        request_headers=ep.HttpHeaders(headers=_header_map(headers), end_of_stream=end_of_stream)
    )


def request_body_message(body: bytes) -> ep.ProcessingRequest:
    """A BUFFERED ``request_body`` message carrying the whole body."""
    return ep.ProcessingRequest(request_body=ep.HttpBody(body=body, end_of_stream=True))


def response_headers_message(
    status: int, headers: Mapping[str, str] | None = None
) -> ep.ProcessingRequest:
    """A ``response_headers`` message with ``:status`` and extra headers."""
    merged = {":status": str(status), **(headers or {})}
    return ep.ProcessingRequest(response_headers=ep.HttpHeaders(headers=_header_map(merged)))


def access_log_message(
    replay_id: str, status: int, served_by: str | None = None
) -> als_pb2.StreamAccessLogsMessage:
    """One batch with one entry, as Envoy's gRPC access logger sends a routed response."""
    entry = accesslog_pb2.HTTPAccessLogEntry(
        request=accesslog_pb2.HTTPRequestProperties(request_headers={HEADER_REPLAY_ID: replay_id}),
    )
    entry.response.response_code.value = status
    if served_by is not None:
        host, _, port = served_by.rpartition(":")
        entry.common_properties.upstream_remote_address.CopyFrom(
            address_pb2.Address(
                socket_address=address_pb2.SocketAddress(address=host, port_value=int(port))
            )
        )
    return als_pb2.StreamAccessLogsMessage(
        http_logs=als_pb2.StreamAccessLogsMessage.HTTPAccessLogEntries(log_entry=[entry])
    )


def _set_headers(mutation: ep.HeaderMutation) -> dict[str, str]:
    return {
        option.header.key: option.header.raw_value.decode() or option.header.value
        for option in mutation.set_headers
    }


@dataclass(frozen=True)
class Exchange:
    """What saar answered to one scripted request."""

    request_headers_reply: ep.ProcessingResponse
    request_body_reply: ep.ProcessingResponse | None
    response_headers_reply: ep.ProcessingResponse | None

    @property
    def immediate(self) -> ep.ImmediateResponse | None:
        """The direct answer to the client (a client error), if saar sent one."""
        reply = self.request_body_reply
        if reply is not None and reply.HasField("immediate_response"):
            return reply.immediate_response
        return None

    @property
    def request_header_mutations(self) -> dict[str, str]:
        """Request headers saar set in the body response (cluster, affinity key, length)."""
        reply = self.request_body_reply
        if reply is None or not reply.HasField("request_body"):
            return {}
        return _set_headers(reply.request_body.response.header_mutation)

    @property
    def cluster(self) -> str | None:
        """The upstream cluster saar chose, or None when it did not route."""
        return self.request_header_mutations.get("x-saar-cluster")

    @property
    def affinity_key(self) -> str | None:
        """The cache-affinity key saar set."""
        return self.request_header_mutations.get("x-saar-affinity-key")

    @property
    def body(self) -> bytes | None:
        """The rewritten request body, or None when saar left it alone."""
        reply = self.request_body_reply
        if reply is None or not reply.HasField("request_body"):
            return None
        mutation = reply.request_body.response.body_mutation
        return mutation.body if mutation.HasField("body") else None

    @property
    def clear_route_cache(self) -> bool:
        """Whether the body response asked Envoy to re-select the route."""
        reply = self.request_body_reply
        return bool(reply is not None and reply.request_body.response.clear_route_cache)

    @property
    def response_headers(self) -> dict[str, str]:
        """Response headers the client gets from saar.

        They are set on the response-headers message, or, when saar skipped that message,
        copied from the request by the route.
        """
        reply = self.response_headers_reply
        if reply is None:
            mutations = self.request_header_mutations
            return {name: mutations[name] for name in CONTRACT_HEADERS if name in mutations}
        return _set_headers(reply.response_headers.response.header_mutation)


class ScriptedStream:
    """One raw ext_proc stream: send any message, in any order, and read the answer."""

    def __init__(self, call: Any) -> None:
        self._call = call

    async def send(self, message: ep.ProcessingRequest) -> ep.ProcessingResponse:
        """Send one message and wait for saar's answer to it."""
        await self._call.write(message)
        reply: ep.ProcessingResponse = await self._call.read()
        return reply

    async def close(self) -> None:
        """Half-close the stream, as Envoy does when the HTTP request ends."""
        await self._call.done_writing()


class ExtProcHarness:
    """saar's real gRPC server in this process, on a private socket; an async context manager."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], float] | None = None,
        store: SessionStore | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.store = store or build_store(settings.state)
        self.router = (
            Router(settings, self.store, self.metrics)
            if clock is None
            else Router(settings, self.store, self.metrics, clock=clock)
        )
        self._tmp = tempfile.TemporaryDirectory(prefix="saar-harness-")
        self.socket = str(Path(self._tmp.name) / "saar.sock")
        self._server = ExtProcServer(self.router, self.metrics)
        self._channel: grpc.aio.Channel | None = None
        self._stub: ep_grpc.ExternalProcessorStub | None = None
        self._logs: als_pb2_grpc.AccessLogServiceStub | None = None

    async def __aenter__(self) -> ExtProcHarness:
        self._server.bind_unix(self.socket)
        await self._server.start()
        self._channel = grpc.aio.insecure_channel(f"unix:{self.socket}")
        self._stub = ep_grpc.ExternalProcessorStub(self._channel)
        self._logs = als_pb2_grpc.AccessLogServiceStub(self._channel)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._channel is not None:
            await self._channel.close()
        await self._server.stop(grace=1.0)
        self._tmp.cleanup()

    def open(self) -> ScriptedStream:
        """Open a raw stream for scripted, possibly out-of-order, messages."""
        assert self._stub is not None, "use the harness as an async context manager"
        return ScriptedStream(self._stub.Process())

    async def log(self, *messages: als_pb2.StreamAccessLogsMessage) -> None:
        """Send access-log batches on one logger stream; returns once saar has read them all."""
        assert self._logs is not None, "use the harness as an async context manager"
        call = self._logs.StreamAccessLogs()
        for message in messages:
            await call.write(message)
        await call.done_writing()
        await call

    async def exchange(
        self,
        *,
        body: bytes | Mapping[str, Any],
        headers: Mapping[str, str] | None = None,
        path: str = "/v1/chat/completions",
        method: str = "POST",
        status: int = 200,
        response_headers: Mapping[str, str] | None = None,
    ) -> Exchange:
        """Play one whole request through saar: request headers, body, response headers."""
        raw = body if isinstance(body, bytes) else dumps(dict(body))
        stream = self.open()
        all_headers = {
            ":path": path,
            ":method": method,
            "content-type": "application/json",
            "content-length": str(len(raw)),
            **(headers or {}),
        }
        first = await stream.send(request_headers_message(all_headers))
        if first.HasField("mode_override") and first.mode_override.request_body_mode == 0:
            await stream.close()
            return Exchange(first, None, None)
        second = await stream.send(request_body_message(raw))
        if second.HasField("immediate_response"):
            await stream.close()
            return Exchange(first, second, None)
        skip = first.HasField("mode_override") and (
            first.mode_override.response_header_mode == processing_mode_pb2.ProcessingMode.SKIP
        )
        if skip:
            # Envoy sends nothing more on this stream; the response reaches saar through the
            # access log, for requests that carry saar's replay-id header (the log's filter).
            await stream.close()
            exchange = Exchange(first, second, None)
            replay_id = exchange.request_header_mutations.get(HEADER_REPLAY_ID)
            if replay_id:
                await self.log(access_log_message(replay_id, status))
            return exchange
        third = await stream.send(response_headers_message(status, response_headers))
        await stream.close()
        return Exchange(first, second, third)
