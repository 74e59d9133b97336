"""The vLLM pool emulator behind ``saar emulate``: GPU-free replicas a router cannot tell apart.

One process hosts every replica of every pool whose config has an ``emulator`` block. Each
replica speaks vLLM's HTTP surface (Chat Completions, Responses, Anthropic Messages,
``/v1/models``, ``/health``, ``/metrics``), keeps a real prefix cache and Responses store,
answers from a deterministic script that can drive agent tool loops, and logs what it
received so tests can check the router against backend truth. See ``docs/emulator.md``.
"""

from saar.emulator.backend_log import LogRecord
from saar.emulator.command import register, serve
from saar.emulator.faults import FaultPlan, FaultRule
from saar.emulator.pools import EmulatorPools, ReplicaAddress
from saar.emulator.prefix_cache import PrefixCache
from saar.emulator.server import Replica
from saar.emulator.spec import EmulatorSpec, LatencyModel, PoolSpec

__all__ = [
    "EmulatorPools",
    "EmulatorSpec",
    "FaultPlan",
    "FaultRule",
    "LatencyModel",
    "LogRecord",
    "PoolSpec",
    "PrefixCache",
    "Replica",
    "ReplicaAddress",
    "register",
    "serve",
]
