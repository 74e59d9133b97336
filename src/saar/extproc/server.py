"""The grpc.aio server: ext_proc, access log, admin, gRPC health, two-stage shutdown.

Theory of operation. One grpc.aio server serves Envoy's ``ExternalProcessor`` (one
bidirectional stream per HTTP request), Envoy's ``AccessLogService`` (the batched response
path, ``saar.extproc.accesslog``), saar's ``Admin`` service and the standard gRPC health
service, on a Unix socket shared with Envoy and optionally on a loopback TCP port.

Each stream uses an explicit ``context.read()`` / ``context.write()`` loop: measured on this
hardware it is as fast as an async generator and keeps the per-message control flow plain.

Under ``server.transport: h2`` (docs/design/0005) the listeners belong to
``saar.extproc.transport``: Envoy's two data-path services run on the event loop, and every
other call on the same sockets is forwarded to this grpc.aio server, which then listens only
on a private Unix socket in a directory of its own.

Shutdown has two stages. The first SIGTERM flips health to NOT_SERVING (so Kubernetes and
Envoy's health checks stop sending new work) and stops accepting new streams while in-flight
streams finish within the drain grace period; then the response-path work is drained and the
process exits.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import grpc
from envoy.service.accesslog.v3 import als_pb2_grpc
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ep_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from saar import __version__
from saar.api.admin.v1 import admin_pb2, admin_pb2_grpc
from saar.api.replay.v1 import replay_pb2_grpc
from saar.extproc.accesslog import AccessLogReceiver
from saar.extproc.stream import ExtProcStream
from saar.extproc.transport import Forwarder, H2Server, Services
from saar.observability.metrics import Metrics
from saar.replay.admin import ReplayService
from saar.replay.store import ReplayStore
from saar.router import Router
from saar.settings import Transport

__all__ = ["AdminService", "ExtProcServer", "ExternalProcessor"]

# Agent bodies reach several MB; gRPC's default 4 MB limit would fail them before saar sees them.
_MAX_MESSAGE = 64 * 1024 * 1024
_SERVICE_NAMES = (
    "",
    "envoy.service.ext_proc.v3.ExternalProcessor",
    "saar.api.admin.v1.Admin",
    "saar.api.replay.v1.Replay",
)
# What the h2 transport forwards to grpc.aio (everything grpc.aio serves but the data path).
_FORWARDED = frozenset(
    {"grpc.health.v1.Health", "saar.api.admin.v1.Admin", "saar.api.replay.v1.Replay"}
)


class ExternalProcessor(ep_grpc.ExternalProcessorServicer):  # type: ignore[misc]
    """Envoy's ext_proc service: one ``ExtProcStream`` per HTTP request."""

    def __init__(self, router: Router, metrics: Metrics) -> None:
        self._router = router
        self._metrics = metrics

    async def Process(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> None:
        """Answer each message of one ext_proc stream, in order."""
        stream = ExtProcStream(self._router, self._metrics)
        inflight = self._metrics.inflight
        inflight.inc()
        try:
            while True:
                message = await context.read()
                if message is grpc.aio.EOF:
                    return
                await context.write(await stream.on_message(message))
                if stream.released:
                    # Ending the stream cleanly tells Envoy to go on without saar
                    # (the ext_proc protocol), e.g. the rest of a Responses API stream.
                    return
        finally:
            stream.close()
            inflight.dec()


class AdminService(admin_pb2_grpc.AdminServicer):  # type: ignore[misc]
    """Inspection of the running router."""

    def __init__(self, router: Router) -> None:
        self._router = router

    async def Describe(
        self, request: admin_pb2.DescribeRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.DescribeResponse:
        """Return the configuration in force."""
        settings = self._router.settings
        config = settings.policy
        return admin_pb2.DescribeResponse(
            version=__version__,
            config_source=settings.source,
            logical_models=sorted(config.logical_models),
            physical_models=[
                admin_pb2.PhysicalModel(
                    key=pm.key,
                    model=pm.model,
                    pool=pm.pool,
                    cluster=pm.cluster,
                    accelerator=config.pools[pm.pool].accelerator,
                    quality=pm.quality,
                    prompt_per_1m=pm.pricing.prompt_per_1m,
                    cached_prompt_per_1m=pm.pricing.cached_prompt_per_1m,
                    completion_per_1m=pm.pricing.completion_per_1m,
                )
                for pm in config.physical_models.values()
            ],
            decisions=[
                admin_pb2.Decision(
                    name=spec.name,
                    priority=spec.priority,
                    method=spec.method.value,
                    mode=spec.mode.value,
                    candidates=[ref.physical for ref in spec.model_refs],
                )
                for spec in config.decisions
            ],
            default_decision=config.default_decision,
            scope=config.learning.scope.value,
            state_backend=settings.state.backend,
        )


class ExtProcServer:
    """Owns the server(s) and their lifecycle: grpc.aio alone, or the h2 transport in front."""

    def __init__(
        self,
        router: Router,
        metrics: Metrics,
        *,
        replay_store: ReplayStore | None = None,
        transport: Transport | None = None,
    ) -> None:
        self._router = router
        self._metrics = metrics
        self.transport = transport or router.settings.server.transport
        self._server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", _MAX_MESSAGE),
                ("grpc.max_send_message_length", _MAX_MESSAGE),
                ("grpc.so_reuseport", 0),
            ]
        )
        self._health = health.aio.HealthServicer()
        receiver = AccessLogReceiver(router, metrics)
        ep_grpc.add_ExternalProcessorServicer_to_server(
            ExternalProcessor(router, metrics), self._server
        )
        als_pb2_grpc.add_AccessLogServiceServicer_to_server(receiver, self._server)
        admin_pb2_grpc.add_AdminServicer_to_server(AdminService(router), self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        if replay_store is not None:
            replay_pb2_grpc.add_ReplayServicer_to_server(
                ReplayService(replay_store, config=lambda: router.settings.policy), self._server
            )
        self.addresses: list[str] = []
        self._h2: H2Server | None = None
        self._forwarder: Forwarder | None = None
        self._private: str | None = None
        if self.transport is Transport.H2:
            # grpc.aio listens only here: a directory of our own (0700), removed on stop.
            self._private = tempfile.mkdtemp(prefix="saar-grpc-")
            target = f"unix:{os.path.join(self._private, 'grpc.sock')}"
            self._server.add_insecure_port(target)
            services = (
                _FORWARDED
                if replay_store is not None
                else _FORWARDED - {"saar.api.replay.v1.Replay"}
            )
            self._forwarder = Forwarder(target, services, _MAX_MESSAGE)
            self._h2 = H2Server(
                Services(
                    new_stream=lambda: ExtProcStream(router, metrics),
                    consume_log=receiver.consume,
                    forwarder=self._forwarder,
                    max_message_bytes=_MAX_MESSAGE,
                ),
                metrics,
            )

    def bind_unix(self, path: str) -> str:
        """Listen on a Unix socket (a stale socket file from a crash is replaced)."""
        socket = Path(path)
        socket.parent.mkdir(parents=True, exist_ok=True)
        address = f"unix:{os.fspath(socket)}"
        with contextlib.suppress(FileNotFoundError):
            if socket.is_socket():
                socket.unlink()
        if self._h2 is not None:
            self._h2.bind_unix(os.fspath(socket))
        else:
            self._server.add_insecure_port(address)
        self.addresses.append(address)
        return address

    def bind_tcp(self, address: str) -> str:
        """Listen on ``host:port``; port 0 picks a free port. Returns the bound address."""
        host, _, port_text = address.rpartition(":")
        if self._h2 is not None:
            port = self._h2.bind_tcp(host, int(port_text))
        else:
            port = self._server.add_insecure_port(address)
        bound = f"{host}:{port}"
        self.addresses.append(bound)
        return bound

    async def start(self) -> None:
        """Start serving and report SERVING on every health service name."""
        await self._server.start()
        for name in _SERVICE_NAMES:
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        if self._h2 is not None:
            await self._h2.start()

    async def stop(self, grace: float) -> None:
        """Two-stage shutdown: NOT_SERVING, drain in-flight streams, then response-path work."""
        for name in _SERVICE_NAMES:
            await self._health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        if self._h2 is not None:
            await self._h2.drain(grace)
            if self._forwarder is not None:
                await self._forwarder.close()
            await self._server.stop(0)
        else:
            await self._server.stop(grace)
        if self._private is not None:
            shutil.rmtree(self._private, ignore_errors=True)
            self._private = None
        await self._router.drain()

    async def wait(self) -> None:
        """Block until the server terminates."""
        await self._server.wait_for_termination()
