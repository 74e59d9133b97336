"""The backend truth log: what each replica actually received and answered.

The router's own view of a session (its headers, its replay rows) is a claim; this log is
what the backend saw. Tests and benchmarks compare the two to prove continuity: the same
replica for a ``previous_response_id``, tool results arriving where their calls were made,
cache hits growing along a session.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["DEFAULT_LOG_SIZE", "LogRecord", "ReplicaLog", "filter_records"]

DEFAULT_LOG_SIZE = 10_000


@dataclass(slots=True)
class LogRecord:
    """One request as a replica saw it; JSON field names are the attribute names."""

    time: float
    pool: str
    replica: int
    request_id: str
    method: str
    path: str
    api: str | None = None
    model: str | None = None
    served_model: str | None = None
    status: int = 0
    stream: bool = False
    affinity_key: str | None = None
    session_id: str | None = None
    conversation_id: str | None = None
    previous_response_id: str | None = None
    response_id: str | None = None
    stored: bool = False
    phase: str | None = None
    turn: int | None = None
    tool_call_ids: list[str] = field(default_factory=list)
    tool_result_ids: list[str] = field(default_factory=list)
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    fault: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Return the record as a JSON-ready dict."""
        return asdict(self)


class ReplicaLog:
    """A bounded, append-only log of one replica's requests (oldest dropped first)."""

    def __init__(self, maxlen: int = DEFAULT_LOG_SIZE) -> None:
        self._records: deque[LogRecord] = deque(maxlen=maxlen)

    def append(self, record: LogRecord) -> None:
        """Add a record, dropping the oldest when full."""
        self._records.append(record)

    def clear(self) -> None:
        """Forget every record."""
        self._records.clear()

    def __iter__(self) -> Iterator[LogRecord]:
        return iter(tuple(self._records))

    def __len__(self) -> int:
        return len(self._records)


def filter_records(records: Iterable[LogRecord], **want: object) -> list[LogRecord]:
    """Return the records whose attributes equal every given value (None values ignored)."""
    wanted = {k: v for k, v in want.items() if v is not None}
    return [r for r in records if all(getattr(r, k) == v for k, v in wanted.items())]
