"""A bare ext_proc server with no logic: the floor the hot-path benchmark compares saar with.

It speaks the same protocol shape as saar on the same Envoy config (request headers answered
at once; the buffered body answered with a cluster header, an affinity key, ``content-length``,
the body itself and ``clear_route_cache``; response headers answered with one header), on
grpc.aio with uvloop, and does nothing else: no parsing, no policy, no store, no replay, no
metrics. Whatever Envoy + saar costs above Envoy + this server is saar's own work; what this
server costs above Envoy alone is the price of a Python ext_proc hop on the machine.

With ``--two-messages`` it serves the 2-message shape (Envoy's ``response_header_mode: SKIP``):
the contract header is set on the *request* in the body response and the route copies it to
the response (``response_headers_to_add: %REQ(...)%``), so no response-headers round trip.

Run: ``python -m saar.bench.nullproc SOCKET_PATH [--two-messages]`` (prints ``nullproc ready``).
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ep_grpc

__all__ = ["NullProcessor", "main"]

_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
_CLUSTER = "pool_mi300_small"


def _header(name: str, value: str) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=name, raw_value=value.encode()), append_action=_OVERWRITE
    )


_REQUEST_HEADERS = ep.ProcessingResponse(request_headers=ep.HeadersResponse())
_RESPONSE_HEADERS = ep.ProcessingResponse(
    response_headers=ep.HeadersResponse(
        response=ep.CommonResponse(
            header_mutation=ep.HeaderMutation(set_headers=[_header("x-vsr-selected-model", "m")])
        )
    )
)
_OTHER = ep.ProcessingResponse(response_body=ep.BodyResponse())


class NullProcessor(ep_grpc.ExternalProcessorServicer):  # type: ignore[misc]
    """Answers every message with the cheapest response of the same shape as saar's."""

    def __init__(self, *, two_messages: bool = False) -> None:
        self._contract = (_header("x-vsr-selected-model", "m"),) if two_messages else ()

    async def Process(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> None:
        """One stream: read, answer, until Envoy closes it."""
        while True:
            message = await context.read()
            if message is grpc.aio.EOF:
                return
            kind = message.WhichOneof("request")
            if kind == "request_headers":
                await context.write(_REQUEST_HEADERS)
            elif kind == "request_body":
                body = message.request_body.body
                mutation = ep.HeaderMutation(
                    set_headers=[
                        _header("x-saar-cluster", _CLUSTER),
                        _header("x-saar-affinity-key", "floor"),
                        _header("content-length", str(len(body))),
                        *self._contract,
                    ]
                )
                common = ep.CommonResponse(
                    header_mutation=mutation,
                    body_mutation=ep.BodyMutation(body=body),
                    clear_route_cache=True,
                )
                await context.write(
                    ep.ProcessingResponse(request_body=ep.BodyResponse(response=common))
                )
            elif kind == "response_headers":
                await context.write(_RESPONSE_HEADERS)
            else:
                await context.write(_OTHER)


async def _serve(socket_path: str, *, two_messages: bool) -> None:
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
        ]
    )
    ep_grpc.add_ExternalProcessorServicer_to_server(
        NullProcessor(two_messages=two_messages), server
    )
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
    args = parser.parse_args()
    try:
        import uvloop  # noqa: PLC0415 - as saar serve: the floor must use the same loop
    except ImportError:  # pragma: no cover
        asyncio.run(_serve(args.socket, two_messages=args.two_messages))
    else:
        uvloop.run(_serve(args.socket, two_messages=args.two_messages))


if __name__ == "__main__":
    main()
