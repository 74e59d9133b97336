"""Router memory: the ``SessionStore`` port and its adapters.

``MemoryStore`` is the embedded default and the test double, ``RedisStore`` the shared
source of truth across replicas, ``ResilientStore`` the failure policy around it, and
``transact`` the race-free load → decide → save cycle. ``build_store`` turns a
``StoreConfig`` into the right combination. See docs/state.md.
"""

from saar.state.base import (
    NO_VERSION,
    NULL_OBSERVER,
    BreakerState,
    CorruptValueError,
    FallbackReason,
    InvalidKeyError,
    NullObserver,
    OpOutcome,
    SessionStore,
    StoreError,
    StoreObserver,
    StoreTimeoutError,
    StoreUnavailableError,
    TransactionConflictError,
    Versioned,
    storage_key,
)
from saar.state.config import Backend, FailOpenTo, StoreConfig, StoreConfigError, build_store
from saar.state.memory import MemoryStore, MemoryStoreStats
from saar.state.redis import RedisStore, redis_client
from saar.state.resilient import ResilientStats, ResilientStore
from saar.state.transact import TransactResult, transact

__all__ = [
    "NO_VERSION",
    "NULL_OBSERVER",
    "Backend",
    "BreakerState",
    "CorruptValueError",
    "FailOpenTo",
    "FallbackReason",
    "InvalidKeyError",
    "MemoryStore",
    "MemoryStoreStats",
    "NullObserver",
    "OpOutcome",
    "RedisStore",
    "ResilientStats",
    "ResilientStore",
    "SessionStore",
    "StoreConfig",
    "StoreConfigError",
    "StoreError",
    "StoreObserver",
    "StoreTimeoutError",
    "StoreUnavailableError",
    "TransactResult",
    "TransactionConflictError",
    "Versioned",
    "build_store",
    "redis_client",
    "storage_key",
    "transact",
]
