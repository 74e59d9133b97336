"""A tiny fake ext_proc server for tests that probe Envoy's own guards, not saar's logic.

It records every request-header map Envoy sends and, when asked, answers request headers
with a header mutation the test chooses (to prove Envoy's ``mutation_rules`` refuse it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ep_grpc


class RecordingProcessor(ep_grpc.ExternalProcessorServicer):  # type: ignore[misc]
    """Records request headers; sets ``mutations`` on requests that carry ``x-test-mutate``."""

    def __init__(self, mutations: Sequence[tuple[str, str]] = ()) -> None:
        self.seen: list[dict[str, str]] = []
        self.mutations = list(mutations)

    async def Process(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> None:
        """Answer each message with a matching 'continue', mutating request headers on demand."""
        while True:
            message = await context.read()
            if message is grpc.aio.EOF:
                return
            kind = message.WhichOneof("request")
            if kind == "request_headers":
                headers = {
                    e.key: (e.raw_value.decode("latin-1") if e.raw_value else e.value)
                    for e in message.request_headers.headers.headers
                }
                self.seen.append(headers)
                common = ep.CommonResponse()
                if "x-test-mutate" in headers:
                    common.header_mutation.set_headers.extend(
                        base_pb2.HeaderValueOption(
                            header=base_pb2.HeaderValue(key=k, raw_value=v.encode()),
                            append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
                        )
                        for k, v in self.mutations
                    )
                await context.write(
                    ep.ProcessingResponse(request_headers=ep.HeadersResponse(response=common))
                )
            elif kind == "request_body":
                await context.write(ep.ProcessingResponse(request_body=ep.BodyResponse()))
            elif kind == "response_headers":
                await context.write(ep.ProcessingResponse(response_headers=ep.HeadersResponse()))
            elif kind == "response_body":
                await context.write(ep.ProcessingResponse(response_body=ep.BodyResponse()))
            else:
                await context.write(ep.ProcessingResponse(request_trailers=ep.TrailersResponse()))


async def serve(processor: RecordingProcessor, socket_path: str) -> grpc.aio.Server:
    """Start ``processor`` on a Unix socket; the caller stops it."""
    server = grpc.aio.server()
    ep_grpc.add_ExternalProcessorServicer_to_server(processor, server)
    server.add_insecure_port(f"unix:{socket_path}")
    await server.start()
    return server
