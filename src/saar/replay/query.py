"""Reading replay records back: JSON views, session timelines, feedback, raw-id lookup.

Theory of operation: the store only ever sees ids as hashed at ingress. Operators know the raw
``x-session-id`` / ``x-conversation-id``; ``session_key`` hashes a raw id exactly as
``saar.wire.identity`` does (header source by default), so ``saar replay session my-raw-id``
finds the rows without the raw id ever being stored. The CLI, the HTTP endpoint and the gRPC
servicer all format through this module, so the three surfaces agree.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from saar.policy.facts import IdentitySource
from saar.replay.record import Outcome, OutcomeKind, ReplayRecord
from saar.replay.store import ReplayStore
from saar.wire.identity import hash_identity
from saar.wire.json import dumps, loads

__all__ = [
    "FeedbackError",
    "TimelineRow",
    "add_feedback",
    "format_record",
    "format_timeline",
    "record_json",
    "session_key",
    "timeline",
]


def session_key(
    raw: str,
    kind: Literal["session", "conversation"] = "session",
    source: IdentitySource = IdentitySource.HEADER,
    *,
    hashed: bool = False,
) -> str:
    """Return the stored id of a raw session or conversation id (``hashed``: already hashed)."""
    if hashed:
        return raw
    value = hash_identity(kind, source, raw)
    if value is None:
        msg = f"{kind} id is blank"
        raise ValueError(msg)
    return value


def record_json(record: ReplayRecord) -> dict[str, Any]:
    """The record as JSON-ready builtins (the stored form, plus derived conveniences)."""
    data: dict[str, Any] = loads(dumps(record))
    data["feedback_score"] = record.feedback_score
    return data


@dataclass(frozen=True, slots=True)
class TimelineRow:
    """One turn of a session, as the timeline shows it."""

    replay_id: str
    time: float
    turn: int
    conversation_id: str | None
    decision: str
    action: str
    reason: str
    phase: str
    target: str
    base: str
    switched: bool
    status: int | None
    prompt_tokens: int | None
    cached_tokens: int | None
    completion_tokens: int | None
    feedback: float | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "replay_id": self.replay_id,
            "time": self.time,
            "turn": self.turn,
            "conversation_id": self.conversation_id,
            "decision": self.decision,
            "action": self.action,
            "reason": self.reason,
            "phase": self.phase,
            "target": self.target,
            "base": self.base,
            "switched": self.switched,
            "status": self.status,
            "prompt_tokens": self.prompt_tokens,
            "cached_tokens": self.cached_tokens,
            "completion_tokens": self.completion_tokens,
            "feedback": self.feedback,
        }


def timeline(records: Sequence[ReplayRecord]) -> list[TimelineRow]:
    """One row per record, oldest first."""
    rows = []
    for r in sorted(records, key=lambda r: (r.time, r.replay_id)):
        resp = r.response
        d = r.decision
        rows.append(
            TimelineRow(
                replay_id=r.replay_id,
                time=r.time,
                turn=r.request.turn_index,
                conversation_id=r.conversation_id,
                decision=d.name,
                action=d.action,
                reason=d.reason,
                phase=d.phase,
                target=d.target,
                base=d.base,
                switched=d.switched,
                status=resp.status if resp else None,
                prompt_tokens=resp.prompt_tokens if resp else None,
                cached_tokens=resp.cached_tokens if resp else None,
                completion_tokens=resp.completion_tokens if resp else None,
                feedback=r.feedback_score,
            )
        )
    return rows


def _clock(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _opt(value: object) -> str:
    return "-" if value is None else str(value)


def format_timeline(rows: Sequence[TimelineRow]) -> str:
    """A fixed-width table: time, turn, decision, action/reason, model@pool, status, tokens."""
    header = (
        f"{'time (UTC)':<23} {'turn':>4} {'decision':<12} {'action/reason':<34} "
        f"{'model@pool':<26} {'status':>6} {'cached/prompt':>15} {'fb':>4}"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        mark = "*" if row.switched else " "
        tokens = f"{_opt(row.cached_tokens)}/{_opt(row.prompt_tokens)}"
        fb = "-" if row.feedback is None else f"{row.feedback:.2f}"
        lines.append(
            f"{_clock(row.time):<23} {row.turn:>4} {row.decision[:12]:<12} "
            f"{(row.action + '/' + row.reason)[:34]:<34} {mark}{row.target[:25]:<25} "
            f"{_opt(row.status):>6} {tokens:>15} {fb:>4}"
        )
    if not rows:
        lines.append("(no records)")
    else:
        lines.append("* = switched to this model on this turn")
    return "\n".join(lines)


def format_record(record: ReplayRecord) -> str:
    """A readable multi-line rendering of one record."""
    d = record.decision
    req = record.request
    trace = d.trace
    resp = record.response
    latency = None if record.latency_ms is None else round(record.latency_ms, 3)
    lines = [
        f"replay id     {record.replay_id}",
        f"time          {_clock(record.time)} UTC",
        f"session       {_opt(record.session_id)} ({record.session_source})",
        f"conversation  {_opt(record.conversation_id)} ({record.conversation_source})",
        f"protected key {_opt(record.protected_key)}",
        f"request       api={req.api} model={req.logical_model} stream={req.stream} "
        f"messages={req.message_count} context_tokens={req.context_tokens} "
        f"turn={req.turn_index} tools={req.has_tools} tool_loop_ids={req.tool_loop_ids} "
        f"provider_state={','.join(r for r, _ in req.provider_state) or '-'}",
        f"decision      {d.name} (mode {d.mode}, scope {d.scope}, phase {d.phase})",
        f"action        {d.action} / {d.reason}",
        f"base          {d.base}",
        f"routed        {d.target}"
        + (f" (proposed {d.proposed})" if d.proposed != d.target else ""),
        f"cache         warmth={trace.get('warmth', 0.0):.3f} "
        f"hit_ratio={trace.get('cache_hit_ratio', 0.0):.3f} "
        f"evidence={trace.get('cache_evidence', False)}",
        f"latency       {_opt(latency)} ms",
    ]
    if req.last_user_text is not None:
        lines.append(f"last user     {req.last_user_text[:200]!r}")
    if resp is not None:
        lines.append(
            f"response      status={_opt(resp.status)} finish={_opt(resp.finish_reason)} "
            f"prompt={_opt(resp.prompt_tokens)} cached={_opt(resp.cached_tokens)} "
            f"completion={_opt(resp.completion_tokens)} tool_calls={len(resp.tool_call_ids)} "
            f"complete={_opt(resp.complete)}"
        )
    else:
        lines.append("response      (not recorded yet)")
    for o in record.outcomes:
        lines.append(
            f"outcome       {o.kind} score={_opt(o.score)} note={_opt(o.note)} key={o.key}"
        )
    return "\n".join(lines)


class FeedbackError(ValueError):
    """Feedback that cannot be stored: a bad score, or an unknown replay id (``missing``)."""

    def __init__(self, message: str, *, missing: bool = False) -> None:
        super().__init__(message)
        self.missing = missing


MAX_NOTE_CHARS = 2000


def add_feedback(
    store: ReplayStore,
    replay_id: str,
    score: object,
    note: object = None,
    key: str | None = None,
    *,
    now: float,
) -> tuple[Outcome, bool]:
    """Validate and store explicit feedback; idempotent per ``(replay_id, key)``.

    Without a key every call stores a new outcome; clients that retry send an
    ``Idempotency-Key``. Returns the stored outcome and whether this call created it.
    """
    if not isinstance(replay_id, str) or not replay_id or len(replay_id) > 128:
        raise FeedbackError("replay_id must be a non-empty string")
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not 0.0 <= score <= 1.0:
        raise FeedbackError("score must be a number in [0, 1]")
    if note is not None and not isinstance(note, str):
        raise FeedbackError("note must be a string")
    if key is not None and (not key or len(key) > 200):
        raise FeedbackError("idempotency key must be 1..200 characters")
    outcome = Outcome(
        key=key if key is not None else uuid.uuid4().hex,
        kind=OutcomeKind.FEEDBACK,
        score=float(score),
        note=note[:MAX_NOTE_CHARS] if isinstance(note, str) else None,
        at=now,
    )
    try:
        return store.add_outcome(replay_id, outcome)
    except KeyError:
        raise FeedbackError(f"unknown replay id {replay_id!r}", missing=True) from None
