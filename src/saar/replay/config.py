"""``ReplayConfig``: the ``replay.*`` and ``priors.*`` YAML keys, validated and frozen.

``saar.settings`` owns the YAML; it builds this with ``ReplayConfig.from_mapping(raw)`` (or
field by field). Every check names the dotted path of the bad value, like the rest of settings.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Final

__all__ = ["WRITERS", "ReplayConfig", "ReplayConfigError", "split_address"]

WRITERS: Final = ("process", "thread")
"""``replay.writer`` values."""

_REPLAY_KEYS: Final = frozenset(
    {
        "enabled",
        "path",
        "queue_size",
        "batch_size",
        "flush_interval_ms",
        "writer",
        "retention_days",
        "max_rows",
        "capture_prompts",
        "http_address",
    }
)


class ReplayConfigError(ValueError):
    """A ``replay.*`` or ``priors.*`` value is invalid; ``path`` names it."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path} {message}")
        self.path = path
        self.message = message


def split_address(address: str) -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` too); an empty host means 127.0.0.1."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        msg = f"must be host:port, got {address!r}"
        raise ValueError(msg)
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP literals."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class ReplayConfig:
    """Router Replay settings (defaults are the embedded, local-only setup)."""

    enabled: bool = True
    path: str = "run/replay.sqlite3"
    """SQLite file; relative paths are from the working directory."""
    queue_size: int = 10_000
    """Records waiting for the writer; when full, new records are dropped and counted."""
    batch_size: int = 256
    """Records written per transaction at most."""
    flush_interval_ms: float = 200.0
    """Longest a queued record waits before the writer commits what it has."""
    retention_days: float | None = 14.0
    """Records older than this are deleted; ``None`` keeps them by age."""
    max_rows: int | None = 1_000_000
    """At most this many records are kept (oldest deleted first); ``None`` = no cap."""
    capture_prompts: bool = False
    """Keep the last user message and signal headers (needed to re-match decisions offline)."""
    http_address: str | None = None
    """``host:port`` of the HTTP JSON endpoint; ``None`` = off. An empty host binds 127.0.0.1;
    a non-loopback host is only used because the operator wrote it explicitly."""
    retention_interval_s: float = 60.0
    """How often the writer enforces retention."""
    priors_path: str | None = None
    """``priors.path``: a priors JSON built by ``saar priors build``; ``None`` = defaults."""
    writer: str = "process"
    """Where records are built and written: ``process`` (a ``saar-replay`` child process, so
    the writer's Python work never holds the serving event loop's GIL; docs/design/0006) or
    ``thread`` (a thread of the serving process: one process, ~33 MB less memory)."""

    def __post_init__(self) -> None:
        """Validate every field, naming its YAML path."""
        if not isinstance(self.path, str) or not self.path.strip():
            raise ReplayConfigError("replay.path", "must be a non-empty path")
        for name, low, high in (
            ("queue_size", 1, 10_000_000),
            ("batch_size", 1, 100_000),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ReplayConfigError(f"replay.{name}", f"must be an integer in [{low}, {high}]")
        if self.batch_size > self.queue_size:
            raise ReplayConfigError("replay.batch_size", "must not exceed replay.queue_size")
        if not 1.0 <= float(self.flush_interval_ms) <= 60_000.0:
            raise ReplayConfigError("replay.flush_interval_ms", "must be in [1, 60000]")
        if self.retention_days is not None and not float(self.retention_days) > 0.0:
            raise ReplayConfigError("replay.retention_days", "must be > 0 (or null to keep)")
        if self.max_rows is not None and (
            isinstance(self.max_rows, bool)
            or not isinstance(self.max_rows, int)
            or self.max_rows < 1
        ):
            raise ReplayConfigError("replay.max_rows", "must be a positive integer (or null)")
        if not float(self.retention_interval_s) > 0.0:
            raise ReplayConfigError("replay.retention_interval_s", "must be > 0")
        if self.http_address is not None:
            try:
                split_address(self.http_address)
            except ValueError as exc:
                raise ReplayConfigError("replay.http_address", str(exc)) from None
        if self.writer not in WRITERS:
            raise ReplayConfigError("replay.writer", f"must be one of {', '.join(WRITERS)}")
        if self.priors_path is not None and not str(self.priors_path).strip():
            raise ReplayConfigError("priors.path", "must be a non-empty path (or null)")

    @property
    def retention_seconds(self) -> float | None:
        """``retention_days`` in seconds."""
        return None if self.retention_days is None else float(self.retention_days) * 86400.0

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> ReplayConfig:
        """Build from the whole parsed YAML document (reads its ``replay`` and ``priors``)."""
        section = raw.get("replay") or {}
        if not isinstance(section, Mapping):
            raise ReplayConfigError("replay", "must be a mapping")
        unknown = sorted(set(section) - _REPLAY_KEYS)
        if unknown:
            raise ReplayConfigError(f"replay.{unknown[0]}", "is not a known key")
        priors = raw.get("priors") or {}
        if not isinstance(priors, Mapping):
            raise ReplayConfigError("priors", "must be a mapping")
        unknown = sorted(set(priors) - {"path"})
        if unknown:
            raise ReplayConfigError(f"priors.{unknown[0]}", "is not a known key")
        kwargs: dict[str, Any] = {}
        names = {f.name for f in fields(cls)}
        for key, value in section.items():
            if key in names:
                kwargs[key] = value
        for key in ("enabled", "capture_prompts"):
            if key in kwargs and not isinstance(kwargs[key], bool):
                raise ReplayConfigError(f"replay.{key}", "must be true or false")
        for key in ("flush_interval_ms", "retention_days"):
            value = kwargs.get(key)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, float))
            ):
                raise ReplayConfigError(f"replay.{key}", "must be a number")
        if "path" in priors:
            kwargs["priors_path"] = priors["path"]
        return cls(**kwargs)
