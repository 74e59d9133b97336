"""Envoy's gRPC access log as saar's response path (docs/design/0004).

Theory of operation. Envoy's ``envoy.access_loggers.http_grpc`` logger keeps one long-lived
client stream (``StreamAccessLogs``) to saar's socket and sends batches of
``HTTPAccessLogEntry``, flushed every 100 ms or when its buffer fills. Envoy logs only the
requests saar routed (the bootstrap's filter: the ``x-vsr-replay-id`` request header saar set
is present) and forwards that header in ``request.request_headers``. For each entry saar
hands the response code and the upstream host to ``Router.observe_logged``, which finds the
decision waiting under that replay id and runs the same response path as the ext_proc
response-headers message would have, off the request's critical path and batched.

Nothing here trusts the entry beyond what Envoy itself filled in: the client cannot send the
replay-id header (the bootstrap strips every contract header at ingress), and an id that no
routed request awaits is counted and ignored. A malformed entry is skipped, never fatal for
the stream: one bad entry must not lose the batch behind it.
"""

from __future__ import annotations

from typing import Any

import grpc
import structlog
from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc

from saar.observability.metrics import Metrics
from saar.policy.headers import HEADER_REPLAY_ID
from saar.router import Router

__all__ = ["AccessLogReceiver"]

_log = structlog.get_logger("saar.accesslog")


class AccessLogReceiver(als_pb2_grpc.AccessLogServiceServicer):  # type: ignore[misc]
    """``envoy.service.accesslog.v3.AccessLogService``: routed responses, learned in batches."""

    def __init__(self, router: Router, metrics: Metrics) -> None:
        self._router = router
        self._metrics = metrics

    async def StreamAccessLogs(
        self, request_iterator: Any, context: grpc.aio.ServicerContext
    ) -> als_pb2.StreamAccessLogsResponse:
        """Consume one logger's stream until Envoy closes it."""
        while True:
            message = await context.read()
            if message is grpc.aio.EOF:
                return als_pb2.StreamAccessLogsResponse()
            self.consume(message)

    def consume(self, message: als_pb2.StreamAccessLogsMessage) -> None:
        """Hand each routed response of one batch to the router's response path."""
        observe = self._router.observe_logged
        for entry in message.http_logs.log_entry:
            try:
                replay_id = entry.request.request_headers.get(HEADER_REPLAY_ID)
                if not replay_id:
                    continue
                address = entry.common_properties.upstream_remote_address.socket_address
                served_by = f"{address.address}:{address.port_value}" if address.address else None
                observe(replay_id, status=entry.response.response_code.value, served_by=served_by)
            except Exception:  # one bad entry must not lose the rest of the batch
                self._metrics.background_errors.labels(task="access_log").inc()
                _log.exception("access_log_entry_error")
