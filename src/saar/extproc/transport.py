"""Envoy's data-path gRPC streams on the event loop itself (``server.transport: h2``).

Theory of operation (docs/design/0005). grpcio hands every message across a C-core thread,
its poller thread and the asyncio loop, and back; on a small node those hand-offs cost more
than saar's own work. This transport serves the two services Envoy calls on every request,
``ExternalProcessor/Process`` and ``AccessLogService/StreamAccessLogs``, with python-hyper's
HTTP/2 state machine (``h2``) in an ``asyncio.Protocol``: bytes arrive on the loop, ``h2``
turns them into events, saar splits off the 5-byte gRPC message prefix, answers, and writes
the reply frames in the same callback. ``h2`` owns HTTP/2 (framing, HPACK, flow-control
accounting, PING); saar owns only the gRPC message framing and status trailers.

Per stream, messages are answered strictly in order. A message whose handler completes
without suspending (request headers, response headers: every message but the body) is
answered inline, with no Task. The request body runs in a Task (the decision budget is an
``asyncio.timeout``, which needs one; an awaiting store must not block other streams), and
messages that arrive meanwhile wait in the stream's queue.

Every other method (saar's Admin and Replay services, gRPC health) is forwarded, one call at
a time, to saar's grpc.aio server on a private Unix socket: rare calls keep grpcio's complete
implementation and the same socket keeps serving them, so probes, ``grpcurl`` and the replay
tools work unchanged. A method that is neither served nor forwarded gets ``UNIMPLEMENTED``.

Failure handling: a stream that cannot be answered (a message that does not parse, one above
the size limit, an internal error, an expired ``grpc-timeout``) ends with a gRPC error status,
so Envoy applies ``failure_mode_allow`` at once instead of waiting for a timeout; a protocol
error closes only its connection. Each is counted in ``saar_transport_errors_total`` and
logged. Drain sends GOAWAY (in-flight streams finish), then closes what is left at the grace
deadline.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import enum
import socket as socketlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Final, Protocol, TypeVar, cast

import grpc
import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import structlog
from envoy.service.accesslog.v3 import als_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from google.protobuf import descriptor_pool
from google.protobuf.message import DecodeError, Message
from h2.connection import ConnectionInputs, ConnectionState, H2ConnectionStateMachine
from hyperframe.frame import DataFrame, Frame, GoAwayFrame

from saar.eager import adopt
from saar.observability.metrics import Metrics

__all__ = ["Forwarder", "H2Server", "ProcessStream", "Services"]

_log = structlog.get_logger("saar.transport")
_M = TypeVar("_M", bound=Message)

PROCESS_PATH: Final = b"/envoy.service.ext_proc.v3.ExternalProcessor/Process"
ACCESS_LOG_PATH: Final = b"/envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs"

_REPLY_HEADERS: Final = ((b":status", b"200"), (b"content-type", b"application/grpc"))
_OK_TRAILERS: Final = ((b"grpc-status", b"0"),)
_EMPTY_LOG_REPLY: Final = als_pb2.StreamAccessLogsResponse().SerializeToString()
_TIMEOUT_UNITS: Final = {
    b"H": 3600.0,
    b"M": 60.0,
    b"S": 1.0,
    b"m": 1e-3,
    b"u": 1e-6,
    b"n": 1e-9,
}
# Headers that belong to the HTTP/2 or gRPC layer, not to a call's metadata.
# (Every ``grpc-*`` header is dropped too.)
_TRANSPORT_HEADERS: Final = frozenset({b"content-type", b"te", b"user-agent"})
# Windows as large as HTTP/2 allows: Envoy's buffered bodies arrive in one go, and saar
# consumes every byte as it arrives, so a smaller window would only add WINDOW_UPDATE trips.
_MAX_WINDOW: Final = 2**31 - 1
# Envoy opens one stream per HTTP request on a shared connection; h2's default (100) would
# make it queue requests under load. grpcio's own default is unlimited.
_MAX_STREAMS: Final = 65_536
_MAX_FRAME: Final = 1024 * 1024


def _data_frame_repr(frame: DataFrame) -> str:
    return f"<{len(frame.data)} bytes>"


# h2 formats every received frame for its trace log before the (disabled) logger sees it,
# and hyperframe's DATA frame repr copies and hex-encodes the whole payload to keep 20
# characters: 15% of saar's CPU on a 500 KB body. Only that repr changes, and only while
# hyperframe still uses its generic one.
if DataFrame._body_repr is Frame._body_repr:
    DataFrame._body_repr = _data_frame_repr  # type: ignore[method-assign,assignment]


class _GracefulGoAway(H2ConnectionStateMachine):
    """h2's connection state machine, except that a GOAWAY received leaves it open.

    RFC 9113 6.8: after a GOAWAY the peer opens no new streams, but the streams already open
    go on, frames and answers both. h2 closes its state machine on any GOAWAY and then
    refuses every later frame in either direction, which would cut the requests Envoy has in
    flight on that connection whenever it drains it.
    """

    _transitions = {  # noqa: RUF012 - h2 looks it up on the instance; never mutated
        **H2ConnectionStateMachine._transitions,
        (ConnectionState.IDLE, ConnectionInputs.RECV_GOAWAY): (None, ConnectionState.IDLE),
        (ConnectionState.SERVER_OPEN, ConnectionInputs.RECV_GOAWAY): (
            None,
            ConnectionState.SERVER_OPEN,
        ),
    }


def _status(code: grpc.StatusCode) -> int:
    value: tuple[int, str] = code.value
    return value[0]


class _Kind(enum.Enum):
    PROCESS = "process"
    ACCESS_LOG = "access_log"
    UNARY = "unary"
    SERVER_STREAM = "server_stream"


class ProcessStream(Protocol):
    """One ext_proc stream's handler (``saar.extproc.stream.ExtProcStream``)."""

    released: bool
    """True once the handler is done with the stream early: it is ended cleanly."""

    async def on_message(self, message: ep.ProcessingRequest) -> ep.ProcessingResponse:
        """Answer one message; never raises."""
        ...

    def close(self) -> None:
        """Release the stream's state (called exactly once)."""
        ...


@dataclass(frozen=True, slots=True)
class Services:
    """What the transport serves: the two data-path handlers and the forwarding target."""

    new_stream: Callable[[], ProcessStream]
    """One ext_proc state machine per HTTP request (``Process`` stream)."""
    consume_log: Callable[[als_pb2.StreamAccessLogsMessage], None]
    """The access-log response path (``StreamAccessLogs``); never raises."""
    forwarder: Forwarder | None
    """Where every other method goes (saar's grpc.aio server); ``None``: UNIMPLEMENTED."""
    max_message_bytes: int
    """Largest gRPC message accepted; larger ones end their stream RESOURCE_EXHAUSTED."""


class _RpcError(Exception):
    """Ends one stream with a gRPC status."""

    def __init__(self, code: grpc.StatusCode, message: str, reason: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason


class Forwarder:
    """Forwards unary and server-streaming calls to saar's grpc.aio server, as raw bytes."""

    def __init__(self, target: str, services: frozenset[str], max_message_bytes: int) -> None:
        self._target = target
        self._services = services
        self._channel: grpc.aio.Channel | None = None
        self._max = max_message_bytes
        self._kinds: dict[bytes, _Kind | None] = {}

    def kind(self, path: bytes) -> _Kind | None:
        """Whether ``path`` names a forwardable method of a served service, and its shape."""
        if path in self._kinds:
            return self._kinds[path]
        kind: _Kind | None = None
        service, _, method = path.decode("ascii", "replace").lstrip("/").partition("/")
        if service in self._services and method:
            with contextlib.suppress(KeyError):
                found = descriptor_pool.Default().FindMethodByName(f"{service}.{method}")
                if not found.client_streaming:
                    kind = _Kind.SERVER_STREAM if found.server_streaming else _Kind.UNARY
        if len(self._kinds) < 1024:  # bounded: paths come from the peer
            self._kinds[path] = kind
        return kind

    def _open(self) -> grpc.aio.Channel:
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(
                self._target,
                options=[
                    ("grpc.max_receive_message_length", self._max),
                    ("grpc.max_send_message_length", self._max),
                ],
            )
        return self._channel

    def call(
        self,
        path: bytes,
        request: bytes,
        metadata: tuple[tuple[str, str | bytes], ...],
        timeout: float | None,
        *,
        streaming: bool,
    ) -> Any:
        """Start a call: await it (unary) or iterate it (server streaming) for reply bytes."""
        channel = self._open()
        method = channel.unary_stream if streaming else channel.unary_unary
        return method(path.decode("ascii"))(request, metadata=metadata, timeout=timeout)

    async def close(self) -> None:
        """Close the channel to the grpc.aio server."""
        if self._channel is not None:
            await self._channel.close()
            self._channel = None


class _Call:
    """One HTTP/2 stream: one gRPC call."""

    __slots__ = (
        "chunks",
        "ext",
        "finished",
        "have",
        "headers_sent",
        "id",
        "kind",
        "metadata",
        "need",
        "outbound",
        "path",
        "queue",
        "remote_closed",
        "task",
        "timeout",
        "timer",
        "trailers",
    )

    def __init__(self, stream_id: int, path: bytes, kind: _Kind) -> None:
        self.id = stream_id
        self.path = path
        self.kind = kind
        self.chunks: list[bytes] = []
        """Received bytes not yet framed into a whole message."""
        self.have = 0
        """Their total length."""
        self.need = -1
        """Length of the message being received, prefix included; -1: prefix not read yet."""
        self.ext: ProcessStream | None = None
        self.queue: deque[bytes] = deque()
        self.task: asyncio.Future[Any] | None = None
        self.headers_sent = False
        self.remote_closed = False
        self.finished = False
        self.outbound = bytearray()
        self.trailers: tuple[tuple[bytes, bytes], ...] | None = None
        self.timeout: float | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.metadata: tuple[tuple[str, str | bytes], ...] = ()


class _Connection(asyncio.Protocol):
    """One HTTP/2 connection (from Envoy, a probe or a tool); all of it runs on the loop."""

    def __init__(self, server: H2Server) -> None:
        self._server = server
        self._services = server.services
        self._metrics = server.metrics
        config = h2.config.H2Configuration(
            client_side=False,
            header_encoding=None,
            # saar reads four headers and forwards the rest as grpc.aio metadata, which
            # validates them again; h2's per-header checks would cost on every stream.
            validate_inbound_headers=False,
            normalize_inbound_headers=False,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
        self._conn = h2.connection.H2Connection(config=config)
        self._conn.state_machine = _GracefulGoAway()
        self._calls: dict[int, _Call] = {}
        self._blocked: dict[int, _Call] = {}
        self._transport: asyncio.Transport | None = None
        self._goaway_sent = False
        self._peer_goaway = False
        self._closed = False

    # --- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Send the server preface with the largest windows HTTP/2 allows."""
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        self._server.connections.add(self)
        self._metrics.transport_connections.inc()
        conn = self._conn
        conn.initiate_connection()
        # Applied when the peer acknowledges them (h2 keeps them pending until then).
        conn.update_settings(
            {
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: _MAX_STREAMS,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: _MAX_WINDOW,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: 64 * 1024,
                # Fewer, larger DATA frames: each frame costs a trip through h2 in Python.
                h2.settings.SettingCodes.MAX_FRAME_SIZE: _MAX_FRAME,
            }
        )
        conn.increment_flow_control_window(_MAX_WINDOW - conn.inbound_flow_control_window)
        self._write()
        if self._server.draining:
            self.goaway()

    def data_received(self, data: bytes) -> None:
        """Feed ``h2`` and act on its events; write whatever they produced in one go."""
        try:
            events = self._conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            # h2 has queued a GOAWAY; send it and close this connection only.
            self._error("protocol_error", detail=str(exc))
            self._write()
            self._close_transport()
            return
        for event in events:
            try:
                self._event(event)
            except Exception as exc:
                if not self._contain(getattr(event, "stream_id", 0), exc):
                    return
        self._write()

    def pause_writing(self) -> None:
        """The socket's send buffer is full: stop reading new work until it drains."""
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        """The send buffer drained: read again."""
        if self._transport is not None and not self._closed:
            self._transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        """Cancel whatever is still running for this connection's streams."""
        self._closed = True
        for call in list(self._calls.values()):
            self._teardown(call)
        self._calls.clear()
        self._blocked.clear()
        self._server.connections.discard(self)
        self._metrics.transport_connections.dec()
        self._server.connection_closed()

    def _contain(self, stream_id: int, exc: Exception) -> bool:
        """A bug costs its call (Envoy fails that request open), else its connection.

        Returns whether the connection is still usable.
        """
        call = self._calls.get(stream_id) if stream_id else None
        if call is not None and not call.finished:
            try:
                self._fail(call, _internal(exc))
                return True
            except Exception as again:
                exc = again
        self._error("internal_error", detail=repr(exc))
        self._close_transport()
        return False

    # --- lifecycle ---------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """Whether any call is still open on this connection."""
        return bool(self._calls)

    def goaway(self) -> None:
        """Tell the peer to open no new streams here; the open ones finish normally.

        h2's ``close_connection`` would also close its state machine, which refuses every
        later frame, so the GOAWAY frame is written directly: h2's stream state is untouched.
        """
        if self._goaway_sent or self._transport is None or self._closed:
            return
        self._goaway_sent = True
        self._write()
        frame = GoAwayFrame(
            stream_id=0, last_stream_id=self._conn.highest_inbound_stream_id, error_code=0
        )
        self._transport.write(frame.serialize())
        if not self._calls:
            self._close_transport()

    def abort(self) -> None:
        """Close now (the drain grace is over)."""
        self._close_transport()

    # --- events ------------------------------------------------------------------------

    def _event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.DataReceived):
            # Acknowledged at once: every byte is consumed (buffered, answered or dropped
            # for a call saar already ended) right here.
            if event.flow_controlled_length:
                self._conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            call = self._calls.get(event.stream_id)
            if call is not None:
                self._data(call, event.data)
        elif isinstance(event, h2.events.RequestReceived):
            self._request(event.stream_id, event.headers)
        elif isinstance(event, h2.events.StreamEnded):
            call = self._calls.get(event.stream_id)
            if call is not None:
                call.remote_closed = True
                self._remote_closed(call)
        elif isinstance(event, h2.events.StreamReset):
            call = self._calls.pop(event.stream_id, None)
            if call is not None:
                self._teardown(call)
        elif isinstance(event, h2.events.WindowUpdated):
            self._unblock()
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            # A larger initial window opens every blocked stream at once.
            self._unblock()
        elif isinstance(event, h2.events.ConnectionTerminated):
            if event.error_code != h2.errors.ErrorCodes.NO_ERROR:
                self._close_transport()
                return
            # A graceful GOAWAY from the peer: it opens nothing new; the open streams are
            # still answered (_GracefulGoAway keeps h2 open for them).
            self._peer_goaway = True
            if not self._calls:
                self._close_transport()
        # Everything else (PING, SETTINGS acks, priorities, trailers) is h2's business.

    def _request(self, stream_id: int, raw_headers: Any) -> None:
        headers: list[tuple[bytes, bytes]] = raw_headers
        path = b""
        content_type = b""
        timeout_value = b""
        encoding = b""
        for name, value in headers:
            if name == b":path":
                path = value
            elif name == b"content-type":
                content_type = value
            elif name == b"grpc-timeout":
                timeout_value = value
            elif name == b"grpc-encoding":
                encoding = value
        if self._goaway_sent and stream_id > self._conn.highest_inbound_stream_id:
            self._conn.reset_stream(stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
            return
        if not content_type.startswith(b"application/grpc"):
            self._count("bad_content_type")
            self._trailers_only(
                stream_id,
                grpc.StatusCode.INTERNAL,
                "content-type is not application/grpc",
                http_status=b"415",
            )
            return
        if encoding not in (b"", b"identity"):
            self._count("compressed")
            self._trailers_only(
                stream_id,
                grpc.StatusCode.UNIMPLEMENTED,
                f"grpc-encoding {encoding.decode('ascii', 'replace')} is not supported",
            )
            return
        kind = self._kind(path)
        if kind is None:
            self._count("unimplemented")
            self._trailers_only(
                stream_id,
                grpc.StatusCode.UNIMPLEMENTED,
                f"unknown method {path.decode('ascii', 'replace')}",
            )
            return
        call = _Call(stream_id, path, kind)
        self._calls[stream_id] = call
        if kind is _Kind.PROCESS:
            call.ext = self._services.new_stream()
            self._metrics.inflight.inc()
        elif kind in (_Kind.UNARY, _Kind.SERVER_STREAM):
            call.metadata = _metadata(headers)
        if timeout_value:
            seconds = _parse_timeout(timeout_value)
            if seconds is None:
                self._fail(
                    call,
                    _RpcError(
                        grpc.StatusCode.INVALID_ARGUMENT, "malformed grpc-timeout", "bad_timeout"
                    ),
                )
                return
            call.timeout = seconds
            loop = asyncio.get_running_loop()
            call.timer = loop.call_later(seconds, self._deadline, call)

    def _kind(self, path: bytes) -> _Kind | None:
        if path == PROCESS_PATH:
            return _Kind.PROCESS
        if path == ACCESS_LOG_PATH:
            return _Kind.ACCESS_LOG
        forwarder = self._services.forwarder
        return forwarder.kind(path) if forwarder is not None else None

    def _data(self, call: _Call, data: bytes) -> None:
        """Split gRPC messages off the stream's bytes, copying each body once at most."""
        if call.finished:
            return  # saar already ended this call (released, or an error): drop the rest
        call.chunks.append(data)
        call.have += len(data)
        limit = self._services.max_message_bytes
        while True:
            if call.need < 0:
                if call.have < 5:
                    return
                if len(call.chunks[0]) < 5:
                    call.chunks = [b"".join(call.chunks)]
                head = call.chunks[0]
                size = int.from_bytes(head[1:5], "big")
                if size > limit:
                    self._fail(
                        call,
                        _RpcError(
                            grpc.StatusCode.RESOURCE_EXHAUSTED,
                            f"message of {size} bytes is above the limit of {limit}",
                            "message_too_large",
                        ),
                    )
                    return
                if head[0] != 0:
                    self._fail(
                        call,
                        _RpcError(
                            grpc.StatusCode.UNIMPLEMENTED,
                            "compressed messages are not supported",
                            "compressed",
                        ),
                    )
                    return
                call.need = 5 + size
            need = call.need
            if call.have < need:
                return
            joined = call.chunks[0] if len(call.chunks) == 1 else b"".join(call.chunks)
            rest = joined[need:]
            call.chunks = [rest] if rest else []
            call.have = len(rest)
            call.need = -1
            self._message(call, joined[5:need])
            if call.finished or not call.have:
                return

    def _message(self, call: _Call, message: bytes) -> None:
        kind = call.kind
        if kind is _Kind.PROCESS:
            if call.task is not None or call.queue:
                call.queue.append(message)  # order: wait behind the message being answered
            else:
                self._process(call, message)
        elif kind is _Kind.ACCESS_LOG:
            batch = self._parse(call, als_pb2.StreamAccessLogsMessage, message)
            if batch is None:
                return
            self._services.consume_log(batch)
        elif call.queue:  # a second request message on a unary or server-streaming call
            self._fail(
                call,
                _RpcError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "more than one request message",
                    "bad_message",
                ),
            )
        else:
            call.queue.append(message)

    def _remote_closed(self, call: _Call) -> None:
        if call.finished:
            self._forget(call)
            return
        if call.have:
            self._fail(
                call,
                _RpcError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "stream ended inside a message",
                    "bad_message",
                ),
            )
            return
        kind = call.kind
        if kind is _Kind.PROCESS:
            if call.task is None and not call.queue:
                self._finish(call)
        elif kind is _Kind.ACCESS_LOG:
            self._send(call, _EMPTY_LOG_REPLY)
            self._finish(call)
        elif not call.queue:
            self._fail(
                call,
                _RpcError(grpc.StatusCode.INVALID_ARGUMENT, "no request message", "bad_message"),
            )
        else:
            call.task = asyncio.ensure_future(self._forward(call, call.queue.popleft()))
            call.task.add_done_callback(partial(self._forwarded, call))

    def _parse(self, call: _Call, kind: type[_M], raw: bytes) -> _M | None:
        """Parse one request message; a message that does not parse fails its call."""
        try:
            parsed: _M = kind.FromString(raw)
        except DecodeError as exc:
            self._fail(
                call,
                _RpcError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"{kind.__name__} does not parse: {exc}",
                    "bad_message",
                ),
            )
            return None
        return parsed

    # --- ext_proc ----------------------------------------------------------------------

    def _process(self, call: _Call, raw: bytes) -> None:
        ext = call.ext
        assert ext is not None
        message = self._parse(call, ep.ProcessingRequest, raw)
        if message is None:
            return
        coro = ext.on_message(message)
        if message.WhichOneof("request") == "request_body":
            # The decision runs under asyncio.timeout, which needs a Task; on Python 3.12
            # an eager task factory would run it inline until its first real suspension.
            call.task = asyncio.ensure_future(coro)
        else:
            try:
                pending = coro.send(None)
            except StopIteration as done:
                self._reply(call, done.value)
                return
            except Exception as exc:
                self._fail(call, _internal(exc))
                return
            call.task = asyncio.ensure_future(adopt(coro, pending))
        call.task.add_done_callback(partial(self._answered, call))

    def _answered(self, call: _Call, task: asyncio.Future[Any]) -> None:
        call.task = None
        if task.cancelled() or call.finished or self._closed:
            return
        try:
            error = task.exception()
            if error is not None:
                self._fail(call, _internal(error))
            else:
                self._reply(call, task.result())
                while call.queue and call.task is None and not call.finished:
                    self._process(call, call.queue.popleft())
                if call.remote_closed and call.task is None and not call.finished:
                    self._finish(call)
        except Exception as exc:
            self._contain(call.id, exc)
        self._write()

    def _reply(self, call: _Call, reply: ep.ProcessingResponse) -> None:
        self._send(call, reply.SerializeToString())
        ext = call.ext
        if ext is not None and ext.released:
            # Ending the stream cleanly tells Envoy to go on without saar (the ext_proc
            # protocol), e.g. the rest of a Responses API stream.
            self._finish(call)

    # --- forwarding --------------------------------------------------------------------

    async def _forward(self, call: _Call, request: bytes) -> None:
        forwarder = self._services.forwarder
        assert forwarder is not None
        try:
            if call.kind is _Kind.UNARY:
                reply = await forwarder.call(
                    call.path, request, call.metadata, call.timeout, streaming=False
                )
                self._send(call, reply)
                self._write()
            else:
                stream = forwarder.call(
                    call.path, request, call.metadata, call.timeout, streaming=True
                )
                async for reply in stream:
                    if call.finished or self._closed:
                        stream.cancel()
                        return
                    self._send(call, reply)
                    self._write()
        except grpc.aio.AioRpcError as exc:
            raise _RpcError(exc.code(), exc.details() or "", "forwarded") from exc

    def _forwarded(self, call: _Call, task: asyncio.Future[Any]) -> None:
        call.task = None
        if task.cancelled() or call.finished or self._closed:
            return
        try:
            error = task.exception()
            if isinstance(error, _RpcError):
                # The service's own answer (NOT_FOUND, INVALID_ARGUMENT...), not a failure.
                self._finish(call, error.code, error.message)
            elif error is not None:
                self._fail(call, _internal(error))
            else:
                self._finish(call)
        except Exception as exc:
            self._contain(call.id, exc)
        self._write()

    # --- sending -----------------------------------------------------------------------

    def _send(self, call: _Call, payload: bytes) -> None:
        """Frame one gRPC message and send what the peer's windows allow; queue the rest."""
        conn = self._conn
        if not call.headers_sent:
            conn.send_headers(call.id, _REPLY_HEADERS)
            call.headers_sent = True
        framed = len(payload).to_bytes(5, "big") + payload  # flag 0: not compressed
        if call.outbound:
            call.outbound += framed
        else:
            self._push(call, framed)

    def _push(self, call: _Call, data: bytes) -> None:
        conn = self._conn
        window = conn.local_flow_control_window(call.id)
        step = conn.max_outbound_frame_size
        view = memoryview(data)
        offset = 0
        end = len(data)
        while offset < end and window > 0:
            n = min(window, step, end - offset)
            conn.send_data(call.id, view[offset : offset + n])
            offset += n
            window -= n
        if offset < end:
            call.outbound = bytearray(view[offset:])
            self._blocked[call.id] = call

    def _unblock(self) -> None:
        for call in list(self._blocked.values()):
            if call.id not in self._calls:
                self._blocked.pop(call.id, None)
                continue
            pending = bytes(call.outbound)
            call.outbound = bytearray()
            del self._blocked[call.id]
            self._push(call, pending)
            if not call.outbound and call.trailers is not None:
                self._end(call, call.trailers)

    def _finish(
        self, call: _Call, code: grpc.StatusCode = grpc.StatusCode.OK, message: str = ""
    ) -> None:
        """End the call with a status; after any queued data, if flow control holds some."""
        if call.finished:
            return
        call.finished = True
        if call.timer is not None:
            call.timer.cancel()
            call.timer = None
        if code is grpc.StatusCode.OK:
            trailers: tuple[tuple[bytes, bytes], ...] = _OK_TRAILERS
        else:
            trailers = (
                (b"grpc-status", str(_status(code)).encode()),
                (b"grpc-message", _percent_encode(message)),
            )
        if not call.headers_sent:
            trailers = (*_REPLY_HEADERS, *trailers)
            call.headers_sent = True
        if call.outbound:
            call.trailers = trailers
        else:
            self._end(call, trailers)

    def _end(self, call: _Call, trailers: tuple[tuple[bytes, bytes], ...]) -> None:
        call.trailers = None
        # The peer may have reset the stream while the answer was on its way.
        with contextlib.suppress(h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            self._conn.send_headers(call.id, trailers, end_stream=True)
        if call.remote_closed:
            self._forget(call)

    def _forget(self, call: _Call) -> None:
        if self._calls.pop(call.id, None) is not None:
            self._teardown(call)
        if (self._goaway_sent or self._peer_goaway) and not self._calls:
            self._write()
            self._close_transport()
        self._server.connection_closed()

    def _teardown(self, call: _Call) -> None:
        """Release one call's resources exactly once (ends normally, reset, or lost)."""
        call.finished = True
        self._blocked.pop(call.id, None)
        if call.timer is not None:
            call.timer.cancel()
            call.timer = None
        if call.task is not None:
            call.task.cancel()
            call.task = None
        call.queue.clear()
        ext = call.ext
        if ext is not None:
            call.ext = None
            ext.close()
            self._metrics.inflight.dec()

    def _trailers_only(
        self, stream_id: int, code: grpc.StatusCode, message: str, http_status: bytes = b"200"
    ) -> None:
        headers = (
            (b":status", http_status),
            (b"content-type", b"application/grpc"),
            (b"grpc-status", str(_status(code)).encode()),
            (b"grpc-message", _percent_encode(message)),
        )
        with contextlib.suppress(h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            self._conn.send_headers(stream_id, headers, end_stream=True)

    def _fail(self, call: _Call, error: _RpcError) -> None:
        """End one call with an error status: Envoy then applies failure_mode_allow."""
        self._error(error.reason, detail=error.message, path=call.path.decode("ascii", "replace"))
        call.queue.clear()
        if call.task is not None:
            call.task.cancel()
            call.task = None
        self._finish(call, error.code, error.message)
        if not call.remote_closed:
            # Nothing more from the peer is needed; stop it sending (no error).
            with contextlib.suppress(h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                self._conn.reset_stream(call.id, h2.errors.ErrorCodes.NO_ERROR)
            call.remote_closed = True
            if call.trailers is None:
                self._forget(call)

    def _deadline(self, call: _Call) -> None:
        call.timer = None
        if not call.finished and call.id in self._calls:
            self._fail(
                call,
                _RpcError(
                    grpc.StatusCode.DEADLINE_EXCEEDED, "grpc-timeout expired", "deadline_exceeded"
                ),
            )
            self._write()

    # --- helpers -----------------------------------------------------------------------

    def _count(self, reason: str) -> None:
        self._metrics.transport_errors.labels(reason=reason).inc()

    def _error(self, reason: str, **fields: object) -> None:
        self._count(reason)
        _log.warning("transport_error", reason=reason, **fields)

    def _write(self) -> None:
        out = self._conn.data_to_send()
        if out and self._transport is not None and not self._closed:
            self._transport.write(out)

    def _close_transport(self) -> None:
        if self._transport is not None and not self._closed:
            self._closed = True
            self._transport.close()


class H2Server:
    """Listeners, connections and the drain of the h2 transport."""

    def __init__(self, services: Services, metrics: Metrics) -> None:
        self.services = services
        self.metrics = metrics
        self.connections: set[_Connection] = set()
        self.draining = False
        self._sockets: list[socketlib.socket] = []
        self._servers: list[asyncio.AbstractServer] = []
        self._idle = asyncio.Event()

    def bind_unix(self, path: str) -> None:
        """Listen on a Unix socket (the caller replaces a stale socket file)."""
        sock = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM)
        sock.bind(path)
        self._listen(sock)

    def bind_tcp(self, host: str, port: int) -> int:
        """Listen on ``host:port`` (0 picks a free port); returns the bound port."""
        family = socketlib.AF_INET6 if ":" in host.strip("[]") else socketlib.AF_INET
        sock = socketlib.socket(family, socketlib.SOCK_STREAM)
        sock.setsockopt(socketlib.SOL_SOCKET, socketlib.SO_REUSEADDR, 1)
        sock.setsockopt(socketlib.IPPROTO_TCP, socketlib.TCP_NODELAY, 1)
        sock.bind((host.strip("[]"), port))
        self._listen(sock)
        bound: int = sock.getsockname()[1]
        return bound

    def _listen(self, sock: socketlib.socket) -> None:
        sock.listen(1024)
        sock.setblocking(False)
        self._sockets.append(sock)

    async def start(self) -> None:
        """Accept connections on every bound socket."""
        loop = asyncio.get_running_loop()
        factory = partial(_Connection, self)
        for sock in self._sockets:
            if sock.family == socketlib.AF_UNIX:
                server = await loop.create_unix_server(factory, sock=sock)
            else:
                server = await loop.create_server(factory, sock=sock)
            self._servers.append(server)

    async def drain(self, grace: float) -> None:
        """Stop accepting, GOAWAY every connection, wait for open calls up to ``grace``."""
        self.draining = True
        for server in self._servers:
            server.close()
        for connection in list(self.connections):
            connection.goaway()
        deadline = time.monotonic() + grace
        while any(c.busy for c in self.connections):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._idle.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), min(left, 0.5))
        for connection in list(self.connections):
            connection.abort()
        # Let connection_lost run, so every stream's state is released before we return.
        await asyncio.sleep(0)
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()

    def connection_closed(self) -> None:
        """A call or connection ended: wake a drain that waits for idleness."""
        if self.draining:
            self._idle.set()


def _internal(error: BaseException) -> _RpcError:
    _log.error("transport_internal_error", error=repr(error), exc_info=error)
    return _RpcError(grpc.StatusCode.INTERNAL, "saar internal error", "internal_error")


def _parse_timeout(value: bytes) -> float | None:
    """``grpc-timeout``: up to 8 digits and a unit (H, M, S, m, u, n)."""
    digits, unit = value[:-1], value[-1:]
    if not digits.isdigit() or len(digits) > 8 or unit not in _TIMEOUT_UNITS:
        return None
    return int(digits) * _TIMEOUT_UNITS[unit]


def _percent_encode(message: str) -> bytes:
    """``grpc-message``: printable ASCII except ``%`` as is, everything else %XX (UTF-8)."""
    out = bytearray()
    for byte in message.encode("utf-8"):
        if 0x20 <= byte <= 0x7E and byte != 0x25:
            out.append(byte)
        else:
            out += b"%%%02X" % byte
    return bytes(out)


def _metadata(headers: list[tuple[bytes, bytes]]) -> tuple[tuple[str, str | bytes], ...]:
    """A forwarded call's metadata: every header but HTTP/2 pseudo and gRPC transport ones."""
    out: list[tuple[str, str | bytes]] = []
    for name, value in headers:
        if name.startswith(b":") or name in _TRANSPORT_HEADERS or name.startswith(b"grpc-"):
            continue
        key = name.decode("ascii", "replace").lower()
        if key.endswith("-bin"):
            with contextlib.suppress(ValueError):
                out.append((key, base64.b64decode(value + b"=" * (-len(value) % 4))))
        else:
            out.append((key, value.decode("latin-1")))
    return tuple(out)
