"""The h2 transport (``server.transport: h2``) over real sockets: grpcio clients and raw HTTP/2.

The ext_proc behaviour itself runs on both transports in the other adapter tests; these pin
what only the transport does: ordering while a message awaits, other streams not blocked,
gRPC statuses for bad calls, deadlines, cancellation by RST_STREAM, outbound flow control,
GOAWAY in both directions, forwarding to grpc.aio, and failure of one connection only.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from grpc_health.v1 import health_pb2, health_pb2_grpc
from h2.connection import ConnectionState

from saar.api.admin.v1 import admin_pb2, admin_pb2_grpc
from saar.eager import adopt
from saar.extproc import responses
from saar.extproc.server import ExtProcServer
from saar.extproc.transport import (
    ACCESS_LOG_PATH,
    PROCESS_PATH,
    H2Server,
    Services,
    _parse_timeout,
    _percent_encode,
)
from saar.observability.metrics import Metrics
from saar.router import Router
from saar.settings import Transport, load_settings
from saar.state import build_store
from saar.testing.extproc import request_body_message, request_headers_message

PROCESS = PROCESS_PATH.decode()
ROOT = Path(__file__).resolve().parents[2]


class FakeStream:
    """A ProcessStream whose body answer can be held: ``hold`` bodies wait on ``gate``."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.released = False
        self.closed = 0

    async def on_message(self, message: ep.ProcessingRequest) -> ep.ProcessingResponse:
        kind = message.WhichOneof("request")
        if kind == "request_headers":
            return responses.route_request_headers(response_headers=True)
        if kind == "request_body":
            body = message.request_body.body
            if body.startswith(b"hold"):
                try:
                    await self.world.gate.wait()
                except asyncio.CancelledError:
                    self.world.cancelled += 1
                    raise
            if body.startswith(b"release"):
                self.released = True
            return responses.route_request_body(cluster="c", affinity_key="k", body=body)
        return responses.continue_response_headers()

    def close(self) -> None:
        self.closed += 1
        self.world.closed += 1


class World:
    """What the fake streams share with the test."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.cancelled = 0
        self.closed = 0
        self.logs: list[Any] = []


@contextlib.asynccontextmanager
async def h2_server(
    max_message: int = 8 * 1024 * 1024,
) -> AsyncIterator[tuple[H2Server, World, str]]:
    world = World()
    metrics = Metrics()
    server = H2Server(
        Services(
            new_stream=lambda: FakeStream(world),
            consume_log=world.logs.append,
            forwarder=None,
            max_message_bytes=max_message,
        ),
        metrics,
    )
    with tempfile.TemporaryDirectory(prefix="saar-h2-") as tmp:
        path = str(Path(tmp) / "s.sock")
        server.bind_unix(path)
        await server.start()
        try:
            yield server, world, path
        finally:
            world.gate.set()
            await server.drain(0.5)


def process_call(channel: grpc.aio.Channel) -> Any:
    return channel.stream_stream(
        PROCESS,
        request_serializer=ep.ProcessingRequest.SerializeToString,
        response_deserializer=ep.ProcessingResponse.FromString,
    )


def errors(server: H2Server, reason: str) -> float:
    value = server.metrics.registry.get_sample_value(
        "saar_transport_errors_total", {"reason": reason}
    )
    return value or 0.0


CHAT_HEADERS = {":path": "/v1/chat/completions", ":method": "POST"}


async def test_answers_in_order_and_a_waiting_stream_blocks_no_other() -> None:
    async with h2_server() as (server, world, path):
        async with grpc.aio.insecure_channel(f"unix:{path}") as channel:
            held = process_call(channel)()
            await held.write(request_headers_message(CHAT_HEADERS))
            assert (await held.read()).HasField("request_headers")
            await held.write(request_body_message(b"hold me"))
            # Written before the held body is answered: must wait behind it, not overtake it.
            await held.write(request_headers_message(CHAT_HEADERS))
            other = process_call(channel)()
            await other.write(request_headers_message(CHAT_HEADERS))
            await other.write(request_body_message(b"free"))
            assert (await other.read()).HasField("request_headers")
            assert (await other.read()).request_body.response.body_mutation.body == b"free"
            await other.done_writing()
            assert await other.code() == grpc.StatusCode.OK
            world.gate.set()
            first = await held.read()
            assert first.request_body.response.body_mutation.body == b"hold me"
            assert (await held.read()).HasField("request_headers")
            await held.done_writing()
            assert await held.code() == grpc.StatusCode.OK
        assert server.metrics.inflight._value.get() == 0
        assert world.closed == 2


async def test_released_stream_ends_ok_and_ignores_the_rest() -> None:
    async with (
        h2_server() as (_, world, path),
        grpc.aio.insecure_channel(f"unix:{path}") as channel,
    ):
        call = process_call(channel)()
        await call.write(request_headers_message(CHAT_HEADERS))
        await call.write(request_body_message(b"release"))
        assert (await call.read()).HasField("request_headers")
        assert (await call.read()).HasField("request_body")
        assert await call.read() is grpc.aio.EOF
        assert await call.code() == grpc.StatusCode.OK
    assert world.closed == 1


async def test_cancel_by_the_peer_cancels_the_pending_work() -> None:
    async with h2_server() as (server, world, path):
        async with grpc.aio.insecure_channel(f"unix:{path}") as channel:
            call = process_call(channel)()
            await call.write(request_headers_message(CHAT_HEADERS))
            await call.read()
            await call.write(request_body_message(b"hold"))
            await asyncio.sleep(0.05)
            call.cancel()  # RST_STREAM(CANCEL)
            for _ in range(100):
                if world.cancelled:
                    break
                await asyncio.sleep(0.01)
        assert world.cancelled == 1
        assert world.closed == 1
        assert server.metrics.inflight._value.get() == 0


async def test_deadline_ends_the_call_and_cancels_its_work() -> None:
    async with h2_server() as (_, world, path):
        async with grpc.aio.insecure_channel(f"unix:{path}") as channel:
            call = process_call(channel)(timeout=0.3)
            await call.write(request_headers_message(CHAT_HEADERS))
            await call.read()
            await call.write(request_body_message(b"hold"))
            assert await call.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert world.cancelled == 1
        assert world.closed == 1


async def test_bad_calls_get_clear_statuses_and_cost_only_themselves() -> None:
    async with h2_server(max_message=1024) as (server, _, path):
        async with grpc.aio.insecure_channel(f"unix:{path}") as channel:
            raw = channel.unary_unary(PROCESS)
            with pytest.raises(grpc.aio.AioRpcError) as bad:
                await raw(b"\xff\xff\xff\xff")
            assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "does not parse" in (bad.value.details() or "")
            with pytest.raises(grpc.aio.AioRpcError) as big:
                await raw(b"\x00" * 4096)
            assert big.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            with pytest.raises(grpc.aio.AioRpcError) as unknown:
                await channel.unary_unary("/saar.Nope/Missing")(b"")
            assert unknown.value.code() == grpc.StatusCode.UNIMPLEMENTED
            assert "/saar.Nope/Missing" in (unknown.value.details() or "")
            # The same connection still serves good calls.
            call = process_call(channel)()
            await call.write(request_headers_message(CHAT_HEADERS))
            assert (await call.read()).HasField("request_headers")
            await call.done_writing()
            assert await call.code() == grpc.StatusCode.OK
        assert errors(server, "bad_message") == 1
        assert errors(server, "message_too_large") == 1
        assert errors(server, "unimplemented") == 1


async def test_access_log_batches_reach_the_consumer() -> None:
    from envoy.service.accesslog.v3 import als_pb2  # noqa: PLC0415

    async with (
        h2_server() as (_, world, path),
        grpc.aio.insecure_channel(f"unix:{path}") as channel,
    ):
        call = channel.stream_unary(
            ACCESS_LOG_PATH.decode(),
            request_serializer=als_pb2.StreamAccessLogsMessage.SerializeToString,
            response_deserializer=als_pb2.StreamAccessLogsResponse.FromString,
        )()
        for _ in range(3):
            await call.write(als_pb2.StreamAccessLogsMessage())
        await call.done_writing()
        await call
        assert await call.code() == grpc.StatusCode.OK
    assert len(world.logs) == 3


# --- raw HTTP/2: what grpcio clients do not let a test control ----------------------------


class RawClient:
    """An HTTP/2 client on the h2 state machine, for windows, GOAWAY and garbage."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.conn = h2.connection.H2Connection(
            config=h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.data: dict[int, bytearray] = {}
        self.trailers: dict[int, dict[bytes, bytes]] = {}
        self.goaway: h2.events.ConnectionTerminated | None = None

    @classmethod
    async def open(cls, path: str, window: int | None = None) -> RawClient:
        reader, writer = await asyncio.open_unix_connection(path)
        client = cls(reader, writer)
        client.conn.initiate_connection()
        if window is not None:
            client.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
        client.flush()
        # Wait for saar's settings and windows, so a large request can go in one go.
        conn = client.conn
        await client.pump(
            lambda: (
                conn.remote_settings.initial_window_size > 65_535
                and conn.outbound_flow_control_window > 65_535
            )
        )
        return client

    def flush(self) -> None:
        self.writer.write(self.conn.data_to_send())

    def start(self, path: bytes = PROCESS_PATH) -> int:
        stream_id = self.conn.get_next_available_stream_id()
        self.conn.send_headers(
            stream_id,
            [
                (b":method", b"POST"),
                (b":scheme", b"http"),
                (b":path", path),
                (b":authority", b"saar"),
                (b"content-type", b"application/grpc"),
                (b"te", b"trailers"),
            ],
        )
        self.flush()
        return stream_id

    def send(self, stream_id: int, message: ep.ProcessingRequest, end: bool = False) -> None:
        payload = message.SerializeToString()
        self.conn.send_data(stream_id, len(payload).to_bytes(5, "big") + payload, end_stream=end)
        self.flush()

    async def pump(self, until: Any, *, ack: bool = True, timeout: float = 5.0) -> None:
        """Read frames until ``until()`` is true; ``ack`` opens the windows as data arrives."""
        async with asyncio.timeout(timeout):
            while not until():
                chunk = await self.reader.read(65536)
                if not chunk:
                    return
                for event in self.conn.receive_data(chunk):
                    if isinstance(event, h2.events.DataReceived):
                        self.data.setdefault(event.stream_id, bytearray()).extend(event.data)
                        if ack:
                            self.conn.acknowledge_received_data(
                                event.flow_controlled_length, event.stream_id
                            )
                    elif isinstance(event, h2.events.TrailersReceived):
                        self.trailers[event.stream_id] = dict(event.headers)
                    elif isinstance(event, h2.events.ConnectionTerminated):
                        self.goaway = event
                        # As Envoy does, keep reading the open streams after a GOAWAY (h2
                        # would close its state machine).
                        self.conn.state_machine.state = ConnectionState.CLIENT_OPEN
                self.flush()

    def close(self) -> None:
        self.writer.close()


async def test_outbound_flow_control_waits_for_the_peers_window() -> None:
    """A reply larger than the peer's window is sent as the window opens, then trailered."""
    body = bytes(range(256)) * 1024  # 256 KiB, 16 x the 16 KiB window below
    async with h2_server() as (_, _, path):
        client = await RawClient.open(path, window=16 * 1024)
        sid = client.start()
        client.send(sid, request_headers_message(CHAT_HEADERS))
        client.send(sid, request_body_message(body), end=True)
        # Without acknowledging, only the first window's worth can arrive.
        with contextlib.suppress(TimeoutError):
            await client.pump(lambda: False, ack=False, timeout=0.3)
        assert len(client.data.get(sid, b"")) <= 16 * 1024
        assert sid not in client.trailers
        client.conn.acknowledge_received_data(len(client.data[sid]), sid)
        client.flush()
        await client.pump(lambda: sid in client.trailers)
        assert client.trailers[sid][b"grpc-status"] == b"0"
        raw = bytes(client.data[sid])
        replies = []
        while raw:
            size = int.from_bytes(raw[1:5], "big")
            replies.append(ep.ProcessingResponse.FromString(raw[5 : 5 + size]))
            raw = raw[5 + size :]
        assert replies[1].request_body.response.body_mutation.body == body
        client.close()


async def held_request(path: str) -> tuple[RawClient, int]:
    """A raw connection with one request whose body answer is held (``World.gate``)."""
    client = await RawClient.open(path)
    sid = client.start()
    client.send(sid, request_headers_message(CHAT_HEADERS))
    client.send(sid, request_body_message(b"hold"), end=True)
    await asyncio.sleep(0.05)
    return client, sid


async def test_peer_goaway_still_gets_its_open_streams_answered() -> None:
    async with h2_server() as (_, world, path):
        client, _ = await held_request(path)
        client.conn.close_connection()  # the peer's graceful GOAWAY
        client.flush()
        await asyncio.sleep(0.05)
        world.gate.set()
        # The client's own h2 refuses frames after its GOAWAY; read the bytes directly.
        received = bytearray()
        async with asyncio.timeout(5):
            while b"grpc-status" not in received and len(received) < 10_000:
                chunk = await client.reader.read(65536)
                if not chunk:
                    break
                received += chunk
        assert b"hold" in received
        client.close()


async def test_drain_sends_goaway_finishes_open_streams_and_refuses_new_connections() -> None:
    async with h2_server() as (server, world, path):
        client, sid = await held_request(path)
        drain = asyncio.create_task(server.drain(5.0))
        await client.pump(lambda: client.goaway is not None)
        assert client.goaway is not None and client.goaway.error_code == 0
        with pytest.raises(OSError):
            await asyncio.open_unix_connection(path)
        assert not drain.done()
        world.gate.set()
        await client.pump(lambda: sid in client.trailers)
        assert client.trailers[sid][b"grpc-status"] == b"0"
        await asyncio.wait_for(drain, 2.0)  # idle before the grace: returns early
        client.close()


async def test_protocol_garbage_closes_that_connection_only() -> None:
    async with h2_server() as (server, _, path):
        reader, writer = await asyncio.open_unix_connection(path)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        async with asyncio.timeout(5):
            while await reader.read(65536):
                pass  # the server closes it
        writer.close()
        assert errors(server, "protocol_error") == 1
        async with grpc.aio.insecure_channel(f"unix:{path}") as channel:
            call = process_call(channel)()
            await call.write(request_headers_message(CHAT_HEADERS))
            assert (await call.read()).HasField("request_headers")
            await call.done_writing()
            assert await call.code() == grpc.StatusCode.OK


# --- forwarding to grpc.aio, in the real server ----------------------------------------------


async def test_other_services_are_forwarded_on_the_same_socket() -> None:
    settings = load_settings(ROOT / "config" / "local.yaml")
    metrics = Metrics()
    router = Router(settings, build_store(settings.state), metrics)
    server = ExtProcServer(router, metrics, transport=Transport.H2)
    with tempfile.TemporaryDirectory(prefix="saar-fwd-") as tmp:
        address = server.bind_unix(str(Path(tmp) / "saar.sock"))
        await server.start()
        try:
            async with grpc.aio.insecure_channel(address) as channel:
                health = health_pb2_grpc.HealthStub(channel)
                ok = await health.Check(health_pb2.HealthCheckRequest(service=""))
                assert ok.status == health_pb2.HealthCheckResponse.SERVING
                with pytest.raises(grpc.aio.AioRpcError) as missing:
                    await health.Check(health_pb2.HealthCheckRequest(service="nope"))
                assert missing.value.code() == grpc.StatusCode.NOT_FOUND
                watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
                first = await watch.read()
                assert first.status == health_pb2.HealthCheckResponse.SERVING
                watch.cancel()
                described = await admin_pb2_grpc.AdminStub(channel).Describe(
                    admin_pb2.DescribeRequest()
                )
                assert described.logical_models == sorted(settings.policy.logical_models)
                # Replay is not served without a replay store: not forwarded, UNIMPLEMENTED.
                with pytest.raises(grpc.aio.AioRpcError) as replay:
                    await channel.unary_unary("/saar.api.replay.v1.Replay/GetRecord")(b"")
                assert replay.value.code() == grpc.StatusCode.UNIMPLEMENTED
        finally:
            await server.stop(0.5)


# --- pieces ----------------------------------------------------------------------------------


async def test_adopt_finishes_a_suspended_coroutine_with_its_result_or_error() -> None:
    loop = asyncio.get_running_loop()

    async def waits(fut: asyncio.Future[int]) -> int:
        return await fut + 1

    fut: asyncio.Future[int] = loop.create_future()
    coro = waits(fut)
    pending = coro.send(None)
    assert pending is fut
    task = asyncio.ensure_future(adopt(coro, pending))
    fut.set_result(41)
    assert await task == 42

    failing: asyncio.Future[int] = loop.create_future()
    coro = waits(failing)
    task = asyncio.ensure_future(adopt(coro, coro.send(None)))
    failing.set_exception(KeyError("x"))
    with pytest.raises(KeyError):
        await task


async def test_adopt_throws_cancellation_into_the_coroutine() -> None:
    loop = asyncio.get_running_loop()
    seen: list[str] = []

    async def waits(fut: asyncio.Future[None]) -> None:
        try:
            await fut
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    fut: asyncio.Future[None] = loop.create_future()
    coro = waits(fut)
    task = asyncio.ensure_future(adopt(coro, coro.send(None)))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == ["cancelled"]
    assert fut.cancelled()


def test_grpc_timeout_and_message_encodings() -> None:
    assert _parse_timeout(b"1500m") == pytest.approx(1.5)
    assert _parse_timeout(b"2S") == 2.0
    assert _parse_timeout(b"3H") == 10800.0
    assert _parse_timeout(b"100u") == pytest.approx(1e-4)
    assert _parse_timeout(b"123456789S") is None  # more than 8 digits
    assert _parse_timeout(b"5x") is None
    assert _parse_timeout(b"S") is None
    assert _percent_encode("plain text") == b"plain text"
    assert _percent_encode("100% ok") == b"100%25 ok"
    assert _percent_encode("café\n") == b"caf%C3%A9%0A"
