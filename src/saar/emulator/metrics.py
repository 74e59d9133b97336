"""Per-replica Prometheus metrics under vLLM's names (``vllm/v1/metrics/loggers.py``).

Each replica owns a :class:`prometheus_client.CollectorRegistry` so that several replicas
in one process expose independent ``/metrics``, as separate vLLM servers would. Counters
are declared without the ``_total`` suffix, which the client library appends, matching
vLLM's exposition (``vllm:prompt_tokens_total``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["CONTENT_TYPE", "ReplicaMetrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# vLLM's TTFT buckets (v1 loggers), so dashboards built for vLLM read the same.
_TTFT_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
    160.0,
    640.0,
    2560.0,
)


class ReplicaMetrics:
    """The vLLM metrics one replica exposes, labelled by ``model_name``."""

    def __init__(self, models: Sequence[str], kv_usage: Callable[[], float]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        label = ["model_name"]
        self.prefix_queries = Counter(
            "vllm:prefix_cache_queries",
            "Prefix cache queries, in terms of number of queried tokens.",
            label,
            registry=reg,
        )
        self.prefix_hits = Counter(
            "vllm:prefix_cache_hits",
            "Prefix cache hits, in terms of number of cached tokens.",
            label,
            registry=reg,
        )
        self.running = Gauge(
            "vllm:num_requests_running",
            "Number of requests in model execution batches.",
            label,
            registry=reg,
        )
        self.waiting = Gauge(
            "vllm:num_requests_waiting",
            "Number of requests waiting to be processed.",
            label,
            registry=reg,
        )
        self.prompt_tokens = Counter(
            "vllm:prompt_tokens", "Number of prefill tokens processed.", label, registry=reg
        )
        self.generation_tokens = Counter(
            "vllm:generation_tokens", "Number of generation tokens processed.", label, registry=reg
        )
        self.success = Counter(
            "vllm:request_success",
            "Count of successfully processed requests.",
            [*label, "finished_reason"],
            registry=reg,
        )
        self.kv_usage = Gauge(
            "vllm:kv_cache_usage_perc",
            "KV-cache usage. 1 means 100 percent usage.",
            label,
            registry=reg,
        )
        self.ttft = Histogram(
            "vllm:time_to_first_token_seconds",
            "Histogram of time to first token in seconds.",
            label,
            buckets=_TTFT_BUCKETS,
            registry=reg,
        )
        for model in models:
            # Touch every labelled child so the series exist from the first scrape.
            self.prefix_queries.labels(model)
            self.prefix_hits.labels(model)
            self.running.labels(model)
            self.waiting.labels(model)
            self.prompt_tokens.labels(model)
            self.generation_tokens.labels(model)
            self.ttft.labels(model)
            # The prefix cache is per replica, so every model reports the same usage.
            self.kv_usage.labels(model).set_function(kv_usage)

    def render(self) -> bytes:
        """Return the Prometheus text exposition of this replica."""
        return generate_latest(self.registry)
