"""A bare ext_proc server with no logic: the floor the hot-path benchmark compares saar with.

It speaks the same protocol shape as saar on the same Envoy config (request headers answered
at once; the buffered body answered with a cluster header, an affinity key, ``content-length``,
the body itself and ``clear_route_cache``; response headers answered with one header), on
grpc.aio with uvloop, and does nothing else: no parsing, no policy, no store, no replay, no
metrics. Whatever Envoy + saar costs above Envoy + this server is saar's own work; what this
server costs above Envoy alone is the price of a Python ext_proc hop on the machine.

Both shapes are stated per request with ``mode_override``, as saar does. With
``--two-messages`` it serves saar's default shape (docs/design/0004): response headers SKIP,
the contract headers set on the *request* in the body response for the route to copy
(``%REQ(...)%``), and Envoy's access log received (and discarded) on the same socket. Without
it, the 3-message shape of ``server.response_path: stream``: the contract headers answer the
response-headers message. Either way the ten contract headers are set, as saar sets them.

``--transport h2`` serves the same answers on saar's own h2 transport
(``saar.extproc.transport``, docs/design/0005) instead of grpc.aio: the floor of
``server.transport: h2``.

Run: ``python -m saar.bench.nullproc SOCKET_PATH [--two-messages] [--transport grpcio|h2]``
(prints ``nullproc ready``).
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import grpc
from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ep_grpc

from saar.extproc import responses
from saar.policy.headers import CONTRACT_HEADERS

__all__ = ["NullAccessLog", "NullProcessor", "NullStream", "main"]

_CLUSTER = "pool_mi300_small"
_CONTRACT = tuple((name, "m") for name in CONTRACT_HEADERS)

# The same builders saar uses (saar.extproc.responses), so the floor's messages are saar's.
_RESPONSE_HEADERS = responses.response_headers(_CONTRACT)
_OTHER = responses.continue_response_body()


class NullProcessor(ep_grpc.ExternalProcessorServicer):  # type: ignore[misc]
    """Answers every message with the cheapest response of the same shape as saar's."""

    def __init__(self, *, two_messages: bool = False) -> None:
        self._request_headers = responses.route_request_headers(response_headers=not two_messages)
        # 2-message shape: the contract headers ride on the request for the route to copy.
        self._contract = (
            _RESPONSE_HEADERS.response_headers.response.header_mutation.set_headers
            if two_messages
            else ()
        )

    def answer(self, message: ep.ProcessingRequest) -> ep.ProcessingResponse:
        """The floor's answer to one message."""
        kind = message.WhichOneof("request")
        if kind == "request_headers":
            return self._request_headers
        if kind == "request_body":
            reply = responses.route_request_body(
                cluster=_CLUSTER, affinity_key="floor", body=message.request_body.body
            )
            if self._contract:
                reply.request_body.response.header_mutation.set_headers.extend(self._contract)
            return reply
        if kind == "response_headers":
            return _RESPONSE_HEADERS
        return _OTHER

    async def Process(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> None:
        """One stream: read, answer, until Envoy closes it."""
        while True:
            message = await context.read()
            if message is grpc.aio.EOF:
                return
            await context.write(self.answer(message))


class NullStream:
    """The same answers as one stream of the h2 transport (``ProcessStream``)."""

    released = False

    def __init__(self, processor: NullProcessor) -> None:
        self._processor = processor

    async def on_message(self, message: ep.ProcessingRequest) -> ep.ProcessingResponse:
        """Answer one message."""
        return self._processor.answer(message)

    def close(self) -> None:
        """Nothing to release."""


class NullAccessLog(als_pb2_grpc.AccessLogServiceServicer):  # type: ignore[misc]
    """Reads Envoy's access-log batches and drops them (the floor of saar's response path)."""

    async def StreamAccessLogs(
        self, request_iterator: Any, context: grpc.aio.ServicerContext
    ) -> als_pb2.StreamAccessLogsResponse:
        """Drain one logger's stream."""
        while await context.read() is not grpc.aio.EOF:
            pass
        return als_pb2.StreamAccessLogsResponse()


async def _serve(socket_path: str, *, two_messages: bool, transport: str) -> None:
    processor = NullProcessor(two_messages=two_messages)
    if transport == "h2":
        from saar.extproc.transport import H2Server, Services  # noqa: PLC0415
        from saar.observability.metrics import Metrics  # noqa: PLC0415

        h2_server = H2Server(
            Services(
                new_stream=lambda: NullStream(processor),
                consume_log=lambda batch: None,
                forwarder=None,
                max_message_bytes=64 * 1024 * 1024,
            ),
            Metrics(),
        )
        h2_server.bind_unix(socket_path)
        await h2_server.start()
        print("nullproc ready", flush=True)
        await asyncio.Event().wait()  # until terminated
        return
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
        ]
    )
    ep_grpc.add_ExternalProcessorServicer_to_server(processor, server)
    als_pb2_grpc.add_AccessLogServiceServicer_to_server(NullAccessLog(), server)
    server.add_insecure_port(f"unix:{socket_path}")
    await server.start()
    print("nullproc ready", flush=True)
    await server.wait_for_termination()


def main() -> None:
    """Serve on the Unix socket given on the command line until terminated."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("socket", help="Unix socket path Envoy's ext_proc cluster points at")
    parser.add_argument(
        "--two-messages", action="store_true", help="contract header on the request (SKIP mode)"
    )
    parser.add_argument(
        "--transport", choices=("grpcio", "h2"), default="grpcio", help="what serves the stream"
    )
    args = parser.parse_args()
    serve = _serve(args.socket, two_messages=args.two_messages, transport=args.transport)
    try:
        import uvloop  # noqa: PLC0415 - as saar serve: the floor must use the same loop
    except ImportError:  # pragma: no cover
        asyncio.run(serve)
    else:
        uvloop.run(serve)


if __name__ == "__main__":
    main()
