"""Prometheus metrics: every series saar exports is declared here, once.

Theory of operation: adapters never compute metrics of their own; they report what the
policy decided (the ``Decision``) and what happened around it (fail-open, store fallbacks,
message latency). ``Metrics`` owns a private ``CollectorRegistry`` so several routers (tests,
the benchmark) can live in one process without clashing. ``docs/reference/metrics.md`` is
generated from ``Metrics.describe()``; never document a metric by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

__all__ = ["MetricInfo", "Metrics"]

# ext_proc messages take tens of microseconds to a few milliseconds; the upper buckets catch
# store timeouts and event-loop stalls.
_MESSAGE_BUCKETS = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
)


@dataclass(frozen=True, slots=True)
class MetricInfo:
    """One exported series family, for the generated reference."""

    name: str
    kind: str
    labels: tuple[str, ...]
    help: str


_M = TypeVar("_M", bound=MetricWrapperBase)


class Metrics:
    """All of saar's Prometheus series, in one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._message_children: dict[str, Histogram] = {}
        self._children: dict[tuple[int, tuple[str, ...]], MetricWrapperBase] = {}
        r = self.registry
        self.decisions = Counter(
            "saar_decisions_total",
            "Routing decisions, by matched decision, session-aware action, reason and mode.",
            ["decision", "action", "reason", "mode"],
            registry=r,
        )
        self.switches = Counter(
            "saar_switches_total",
            "Sessions moved to another physical model, by from/to pool.",
            ["from_pool", "to_pool"],
            registry=r,
        )
        self.locks = Counter(
            "saar_hard_locks_total",
            "Requests held on their backend by a hard lock, by reason.",
            ["reason"],
            registry=r,
        )
        self.resets = Counter(
            "saar_reset_boundaries_total",
            "Reset boundaries that reopened the model choice, by reason.",
            ["reason"],
            registry=r,
        )
        self.routed = Counter(
            "saar_routed_requests_total",
            "Requests routed, by physical model and pool.",
            ["model", "pool"],
            registry=r,
        )
        self.fail_open = Counter(
            "saar_fail_open_total",
            "Requests that continued unmodified because of an internal error, by phase and reason.",
            ["phase", "reason"],
            registry=r,
        )
        self.client_errors = Counter(
            "saar_client_errors_total",
            "Requests rejected with a client error (bad JSON, unknown model, too large), by code.",
            ["code"],
            registry=r,
        )
        self.passthrough = Counter(
            "saar_passthrough_total",
            "Requests saar let through without routing, by reason.",
            ["reason"],
            registry=r,
        )
        self.responses = Counter(
            "saar_upstream_responses_total",
            "Upstream responses seen on the response path, by pool and status class.",
            ["pool", "status_class"],
            registry=r,
        )
        self.message_seconds = Histogram(
            "saar_extproc_message_seconds",
            "Time saar spent answering one ext_proc message, by phase.",
            ["phase"],
            buckets=_MESSAGE_BUCKETS,
            registry=r,
        )
        self.decision_seconds = Histogram(
            "saar_decision_seconds",
            "Time of one load-decide-save cycle, store round trips included.",
            buckets=_MESSAGE_BUCKETS,
            registry=r,
        )
        self.store_seconds = Histogram(
            "saar_store_operation_seconds",
            "Session store operation latency, by store, operation and outcome.",
            ["store", "op", "outcome"],
            buckets=_MESSAGE_BUCKETS,
            registry=r,
        )
        self.store_fallbacks = Counter(
            "saar_store_fallbacks_total",
            "Session store operations served by the fallback, by reason.",
            ["reason"],
            registry=r,
        )
        self.store_breaker = Gauge(
            "saar_store_breaker_open",
            "1 while the shared-store circuit breaker is open (no calls to Redis), else 0.",
            registry=r,
        )
        self.store_conflicts = Counter(
            "saar_store_conflicts_total",
            "Compare-and-set conflicts retried by the load-decide-save cycle.",
            registry=r,
        )
        self.state_decode_errors = Counter(
            "saar_state_decode_errors_total",
            "Stored sessions that could not be decoded and were started afresh.",
            registry=r,
        )
        self.config_reloads = Counter(
            "saar_config_reloads_total",
            "Configuration reloads, by result (applied, rejected).",
            ["result"],
            registry=r,
        )
        self.inflight = Gauge(
            "saar_inflight_streams",
            "ext_proc streams currently open.",
            registry=r,
        )
        self.replay_queue_depth = Gauge(
            "saar_replay_queue_depth",
            "Replay records waiting in the serving process for the replay writer.",
            registry=r,
        )
        self.replay_dropped = Counter(
            "saar_replay_dropped_total",
            "Replay records dropped instead of slowing a request, by reason.",
            ["reason"],
            registry=r,
        )
        self.replay_written = Counter(
            "saar_replay_written_total",
            "Replay records and updates written to the replay store.",
            registry=r,
        )
        self.replay_batch_seconds = Histogram(
            "saar_replay_batch_seconds",
            "Time the replay writer spent on one batch (off the hot path).",
            buckets=_MESSAGE_BUCKETS,
            registry=r,
        )
        self.replay_writer_starts = Counter(
            "saar_replay_writer_starts_total",
            "Replay writer processes started (replay.writer: process), by kind: initial, "
            "restart (the previous one exited; its unwritten items count as dropped).",
            ["kind"],
            registry=r,
        )
        self.access_log_entries = Counter(
            "saar_access_log_entries_total",
            "Envoy access-log entries received, by outcome: matched (a routed request's "
            "response learned), unknown (no such pending request: already learned, expired, "
            "or routed by another saar process).",
            ["outcome"],
            registry=r,
        )
        self.access_log_expired = Counter(
            "saar_access_log_expired_total",
            "Routed requests whose access-log entry never came (Envoy without saar's "
            "access logger, a dropped log batch, or more pending requests than the bound).",
            ["reason"],
            registry=r,
        )
        self.access_log_pending = Gauge(
            "saar_access_log_pending",
            "Routed requests awaiting their Envoy access-log entry.",
            registry=r,
        )
        self.transport_connections = Gauge(
            "saar_transport_connections",
            "HTTP/2 connections open on the h2 transport (server.transport: h2).",
            registry=r,
        )
        self.transport_errors = Counter(
            "saar_transport_errors_total",
            "Calls or connections the h2 transport ended with an error, by reason (Envoy "
            "then applies failure_mode_allow): protocol_error, bad_message, "
            "message_too_large, compressed, bad_content_type, bad_timeout, unimplemented, "
            "deadline_exceeded, internal_error.",
            ["reason"],
            registry=r,
        )
        self.background_errors = Counter(
            "saar_background_errors_total",
            "Errors in off-the-hot-path work (response learning, replay), by task.",
            ["task"],
            registry=r,
        )

    def child(self, metric: _M, *values: str) -> _M:
        """``metric.labels(*values)``, cached per label tuple for the per-request series.

        ``labels()`` validates and takes a lock on every call; the label values of the hot
        series come from the config (models, pools, decisions, reasons), so the cache is
        bounded by the config, not by traffic.
        """
        key = (id(metric), values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*values)
        return found  # type: ignore[return-value]

    def message_seconds_for(self, phase: str) -> Histogram:
        """The message-latency child for ``phase``, cached: ``labels()`` is a locked lookup."""
        child = self._message_children.get(phase)
        if child is None:
            child = self._message_children[phase] = self.message_seconds.labels(phase=phase)
        return child

    def describe(self) -> list[MetricInfo]:
        """Every series family this registry exports, sorted by name (for the docs)."""
        infos: list[MetricInfo] = []
        for collector in vars(self).values():
            if not isinstance(collector, MetricWrapperBase):
                continue
            for family in collector.describe():
                # prometheus_client exposes no public accessor for a family's label names.
                labels: tuple[str, ...] = tuple(getattr(collector, "_labelnames", ()))
                name = family.name
                suffix = "_total" if family.type == "counter" else ""
                infos.append(MetricInfo(name + suffix, family.type, labels, family.documentation))
        return sorted(infos, key=lambda info: info.name)
