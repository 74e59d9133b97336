"""Every header name saar reads or writes, in one place.

Request headers saar *sets* (``x-saar-*``) are internal: Envoy strips client-supplied copies
before ext_proc runs (a ``header_mutation`` filter in ``envoy/``), and its ``mutation_rules``
allow saar to set only these and the ``x-vsr-*`` response contract. Response headers
(``x-vsr-*``) are the published contract that clients and dashboards read.
"""

from __future__ import annotations

__all__ = [
    "AFFINITY_KEY",
    "CLUSTER",
    "CONTENT_LENGTH",
    "CONTENT_TYPE",
    "INTERNAL_PREFIX",
    "METHOD",
    "PATH",
    "REPLAY_ID",
    "SELECTED_MODEL",
    "STATUS",
]

INTERNAL_PREFIX = "x-saar-"
"""Prefix of every request header saar sets for Envoy; clients can never supply them."""

CLUSTER = "x-saar-cluster"
"""The upstream cluster (pool) Envoy's route reads with ``cluster_header``."""
AFFINITY_KEY = "x-saar-affinity-key"
"""The cache-affinity key Envoy's ring-hash load balancer hashes inside the pool."""

SELECTED_MODEL = "x-vsr-selected-model"
REPLAY_ID = "x-vsr-replay-id"

CONTENT_LENGTH = "content-length"
CONTENT_TYPE = "content-type"
PATH = ":path"
METHOD = ":method"
STATUS = ":status"
