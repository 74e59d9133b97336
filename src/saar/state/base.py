"""The ``SessionStore`` port: a bytes-level, versioned key-value store with compare-and-set.

Theory of operation: the router runs *load → decide → save* once per turn. Two turns of one
session can run at the same time (parallel sub-agents, retries), so the save is a
compare-and-set on the version the turn loaded: a writer that lost the race gets ``None``
back, re-loads and re-decides (``saar.state.transact``) instead of silently overwriting the
winner, which is what upstream did (last writer wins, see upstream-saar-behaviour §13.1).

Versions are opaque integers: compare them for equality only. Every adapter guarantees that
a key's version strictly increases with each write, also across a delete or an expiry, so a
version loaded before a delete can never match a re-created key (no ABA).

Keys arrive already hashed and bounded by the caller, but a store never trusts their charset:
``storage_key`` percent-encodes everything outside a small safe set (injectively, so two
different keys never share a storage key) and rejects empty or oversized keys.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Protocol, runtime_checkable
from urllib.parse import quote

__all__ = [
    "MAX_KEY_CHARS",
    "MAX_STORAGE_KEY_CHARS",
    "NO_VERSION",
    "NULL_OBSERVER",
    "BreakerState",
    "CorruptValueError",
    "FallbackReason",
    "InvalidKeyError",
    "NullObserver",
    "OpOutcome",
    "SessionStore",
    "StoreError",
    "StoreObserver",
    "StoreTimeoutError",
    "StoreUnavailableError",
    "TransactionConflictError",
    "Versioned",
    "check_prefix",
    "check_ttl",
    "storage_key",
]

#: Longest key accepted from the caller (characters, before encoding).
MAX_KEY_CHARS: Final = 512
#: Longest storage key (prefix + encoded key). Keeps Redis keys and log lines small.
MAX_STORAGE_KEY_CHARS: Final = 1024
#: Version returned by a store that accepted a write without keeping it ("no memory" mode).
NO_VERSION: Final = 0

# The safe set: RFC 3986 unreserved characters plus ':'. Deliberately excludes glob
# metacharacters (*?[]) so SCAN/KEYS patterns stay exact, '{}' so a Redis Cluster hash tag
# can never be injected, whitespace/control characters so keys are log-safe, and '%' so the
# percent-encoding below is injective.
_SAFE_EXTRA: Final = ":"
_PREFIX_RE: Final = re.compile(r"[A-Za-z0-9._:~-]{0,64}")


@dataclass(frozen=True, slots=True)
class Versioned:
    """A stored value and the version it was written under."""

    data: bytes
    version: int


class StoreError(Exception):
    """Base class of every error a ``SessionStore`` raises."""


class StoreUnavailableError(StoreError):
    """The backend could not be reached or failed; the caller should fail open."""


class StoreTimeoutError(StoreUnavailableError):
    """The operation exceeded its per-operation time budget."""


class InvalidKeyError(StoreError, ValueError):
    """The key is empty, not a string, or too long. A caller bug, never retried."""


class CorruptValueError(StoreError):
    """A stored value does not carry a valid version header (foreign writer in our prefix)."""


class TransactionConflictError(StoreError):
    """``transact`` lost the compare-and-set race ``attempts`` times in a row."""

    def __init__(self, attempts: int) -> None:
        super().__init__(f"compare-and-set conflicted {attempts} times in a row; giving up")
        self.attempts = attempts


class OpOutcome(StrEnum):
    """Outcome label of one store operation, as reported to ``StoreObserver.on_operation``."""

    OK = "ok"
    CONFLICT = "conflict"
    ERROR = "error"
    TIMEOUT = "timeout"


class FallbackReason(StrEnum):
    """Why ``ResilientStore`` served an operation without the primary store."""

    ERROR = "error"
    TIMEOUT = "timeout"
    BREAKER_OPEN = "breaker_open"


class BreakerState(StrEnum):
    """Circuit breaker state of ``ResilientStore``."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@runtime_checkable
class SessionStore(Protocol):
    """Versioned bytes store with compare-and-set; the router's memory port.

    All methods are coroutines so one protocol covers the in-process store and Redis.
    Implementations raise ``StoreUnavailableError`` (or its ``StoreTimeoutError`` subclass)
    for backend failures and ``InvalidKeyError`` for keys they refuse.
    """

    @property
    def name(self) -> str:
        """Short backend name used as a metric/log label (``memory``, ``redis``, ...)."""
        ...

    async def load(self, key: str) -> Versioned | None:
        """Return the value and version stored under ``key``, or ``None`` when absent."""
        ...

    async def compare_and_set(
        self, key: str, data: bytes, *, expected_version: int | None, ttl_s: float
    ) -> int | None:
        """Store ``data`` if the current version is ``expected_version``.

        ``expected_version=None`` means the key must not exist. On success the key's idle
        TTL restarts at ``ttl_s`` and the new version is returned; on conflict nothing is
        written and ``None`` is returned.
        """
        ...

    async def delete(self, key: str) -> None:
        """Remove ``key`` if present (idempotent)."""
        ...

    async def approx_len(self) -> int | None:
        """Entries held, or ``None`` when the backend cannot count its own keys cheaply."""
        ...

    async def close(self) -> None:
        """Release connections and resources (idempotent)."""
        ...


class StoreObserver(Protocol):
    """Hooks the composition root connects to metrics and logs (no-op by default).

    Called on the hot path: implementations must be cheap and must not raise.
    """

    def on_operation(self, store: str, op: str, seconds: float, outcome: str) -> None:
        """Report a finished backend operation (``op``: load/cas/delete; ``outcome``: OpOutcome)."""
        ...

    def on_fallback(self, reason: str) -> None:
        """Report an operation served without the primary store (``reason``: FallbackReason)."""
        ...

    def on_breaker(self, state: str) -> None:
        """Report a circuit breaker transition (``state``: BreakerState)."""
        ...


class NullObserver:
    """A ``StoreObserver`` that ignores everything."""

    def on_operation(self, store: str, op: str, seconds: float, outcome: str) -> None:
        """Ignore an operation report."""

    def on_fallback(self, reason: str) -> None:
        """Ignore a fallback report."""

    def on_breaker(self, state: str) -> None:
        """Ignore a breaker transition."""


#: Shared no-op observer instance.
NULL_OBSERVER: Final[StoreObserver] = NullObserver()


def storage_key(prefix: str, key: str) -> str:
    """Return ``prefix`` + the safe, injective encoding of ``key``.

    Characters outside ``[A-Za-z0-9._~:-]`` are percent-encoded (UTF-8), and '%' itself is
    encoded, so distinct keys always map to distinct storage keys. Raises
    ``InvalidKeyError`` for a non-string, empty or oversized key.
    """
    if not isinstance(key, str):
        raise InvalidKeyError(f"store keys must be str, not {type(key).__name__}")
    if not key:
        raise InvalidKeyError("store keys must not be empty")
    if len(key) > MAX_KEY_CHARS:
        raise InvalidKeyError(f"store key is {len(key)} characters; the limit is {MAX_KEY_CHARS}")
    try:
        encoded = quote(key, safe=_SAFE_EXTRA, encoding="utf-8", errors="strict")
    except UnicodeEncodeError as exc:  # lone surrogates cannot be stored losslessly
        raise InvalidKeyError("store key is not valid Unicode text") from exc
    full = prefix + encoded
    if len(full) > MAX_STORAGE_KEY_CHARS:
        raise InvalidKeyError(
            f"encoded store key is {len(full)} characters; the limit is {MAX_STORAGE_KEY_CHARS}"
        )
    return full


def check_prefix(prefix: str) -> str:
    """Return ``prefix`` if it uses only safe characters and is at most 64 long, else raise."""
    if not isinstance(prefix, str) or _PREFIX_RE.fullmatch(prefix) is None:
        raise ValueError(
            f"key prefix {prefix!r} must be at most 64 characters from [A-Za-z0-9._:~-]"
        )
    return prefix


def check_ttl(ttl_s: float) -> float:
    """Return ``ttl_s`` if it is a finite positive number of seconds, else raise ValueError."""
    if not (ttl_s > 0 and ttl_s != float("inf")):
        raise ValueError(f"ttl_s must be a positive finite number of seconds, not {ttl_s!r}")
    return ttl_s
