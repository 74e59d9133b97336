"""Router memory: what the policy remembers per protected key, and its compact versioned codec.

Theory of operation: one ``SessionState`` per protected key (``protected_key``). It is router
memory, not user memory: the current physical model, the affinity key, the last matched
decision and phase, counters, the session's own prefix-cache evidence, open tool-call ids with
the model that issued them, and the response ids minted in the session.

The model is two-phase (upstream weakness #2): ``decide`` writes the routed model as
``pending`` together with the request id; ``apply_response`` **commits** it on a 2xx answer
(only then is a switch counted) and drops it on a failure. ``current`` is the committed model,
or the pending one while nothing has been committed yet, so parallel requests of a fresh
session still follow the first routed model.

Every list is capped so a hostile client cannot grow a record. The codec is stdlib JSON with
short keys and a version field ``v``; defaults are omitted. ``decode`` raises
``SessionCodecError`` (a ``ValueError``) on anything it cannot read, naming the version for a
record written by a newer build, so a store can treat it as a miss and say why.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "CODEC_VERSION",
    "MAX_FAILURE_ENTRIES",
    "MAX_OPEN_CALLS",
    "MAX_RESPONSE_IDS",
    "MAX_SWITCH_TIMES",
    "SessionCodecError",
    "SessionState",
]

CODEC_VERSION: Final = 1
MAX_SWITCH_TIMES: Final = 8
MAX_OPEN_CALLS: Final = 64
MAX_RESPONSE_IDS: Final = 16
MAX_FAILURE_ENTRIES: Final = 8
# One encoder for every record: ``json.dumps`` with options builds a new one per call.
_ENCODER: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


class SessionCodecError(ValueError):
    """A stored session record cannot be decoded (corrupt, or from an unknown version)."""


@dataclass(frozen=True, slots=True)
class SessionState:
    """Router memory for one protected key (immutable; ``decide`` returns a new one)."""

    affinity_key: str
    """Stable per protected key: the consistent-hash key that keeps the replica warm."""
    committed: str | None = None
    """``model@pool`` that last answered successfully."""
    pending: str | None = None
    """``model@pool`` routed by the last decision, not yet confirmed by a response."""
    pending_request: str | None = None
    pending_affinity: str | None = None
    """Affinity key of the pending request when it differs (a response pin elsewhere)."""
    decision: str = ""
    """The last matched decision."""
    phase: str = "new"
    turn_count: int = 0
    """Decisions made under this key."""
    switch_count: int = 0
    """Committed model changes."""
    switch_times: tuple[float, ...] = ()
    """Times of the most recent committed switches (at most ``MAX_SWITCH_TIMES``)."""
    last_seen: float = 0.0
    context_tokens: int = 0
    """Context size of the last request."""
    evidence_model: str | None = None
    """The model that served the last response: its prompt is now resident in that model's
    prefix cache (cache hits do not transfer to another physical model)."""
    evidence_prompt: int = 0
    """Prompt tokens of that response (the resident prefix)."""
    evidence_cached: int = 0
    evidence_at: float = 0.0
    hit_ratio: float | None = None
    """How much of a resident prefix this session actually reuses on the next turn (cached
    over reusable tokens, learned on warm turns only; ``None`` until observed)."""
    open_calls: tuple[tuple[str, str], ...] = ()
    """``(call id, model@pool that issued it)`` for tool calls not answered yet."""
    answering: tuple[str, ...] = ()
    """Call ids the pending request answers: closed only when its response succeeds, so a
    retried tool-result turn (after a 5xx) still knows who issued the calls."""
    response_ids: tuple[str, ...] = ()
    """Response ids minted in this session, newest last (at most ``MAX_RESPONSE_IDS``)."""
    replay_id: str = ""
    """Replay id of the last decision."""
    failures: tuple[tuple[str, int], ...] = ()
    """Consecutive 5xx/429 answers per ``model@pool``."""

    @property
    def current(self) -> str | None:
        """The session's model: committed, else pending (a fresh session's first routing)."""
        return self.committed if self.committed is not None else self.pending

    def failures_of(self, physical: str) -> int:
        """Consecutive failures recorded for ``physical``."""
        for key, count in self.failures:
            if key == physical:
                return count
        return 0

    def owner_of(self, call_ids: tuple[str, ...]) -> str | None:
        """Return the model that issued the first open call of ``call_ids``, else ``None``."""
        if not self.open_calls or not call_ids:
            return None
        wanted = set(call_ids)
        for call_id, owner in self.open_calls:
            if call_id in wanted:
                return owner
        return None

    def encode(self) -> bytes:
        """Compact versioned JSON (short keys, defaults omitted)."""
        out: dict[str, Any] = {"v": CODEC_VERSION, "ak": self.affinity_key}
        _put(out, "cm", self.committed, None)
        _put(out, "pm", self.pending, None)
        _put(out, "pr", self.pending_request, None)
        _put(out, "pa", self.pending_affinity, None)
        _put(out, "dn", self.decision, "")
        _put(out, "ph", self.phase, "new")
        _put(out, "tc", self.turn_count, 0)
        _put(out, "sc", self.switch_count, 0)
        _put(out, "st", list(self.switch_times), [])
        _put(out, "ls", self.last_seen, 0.0)
        _put(out, "xt", self.context_tokens, 0)
        _put(out, "em", self.evidence_model, None)
        _put(out, "ep", self.evidence_prompt, 0)
        _put(out, "ec", self.evidence_cached, 0)
        _put(out, "ea", self.evidence_at, 0.0)
        _put(out, "hr", self.hit_ratio, None)
        _put(out, "oc", [list(pair) for pair in self.open_calls], [])
        _put(out, "aw", list(self.answering), [])
        _put(out, "ri", list(self.response_ids), [])
        _put(out, "rp", self.replay_id, "")
        _put(out, "fl", [list(pair) for pair in self.failures], [])
        return _ENCODER.encode(out).encode()

    @classmethod
    def decode(cls, data: bytes) -> SessionState:
        """Inverse of ``encode``; raises ``SessionCodecError`` on corrupt or unknown records."""
        try:
            raw = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            msg = f"session state is not valid JSON: {exc}"
            raise SessionCodecError(msg) from exc
        if not isinstance(raw, dict):
            msg = "session state is not a JSON object"
            raise SessionCodecError(msg)
        version = raw.get("v")
        if version != CODEC_VERSION:
            msg = (
                f"session state version {version!r} is not readable by this build "
                f"(it reads version {CODEC_VERSION})"
            )
            raise SessionCodecError(msg)
        try:
            return cls(
                affinity_key=_str(raw["ak"]),
                committed=_opt_str(raw.get("cm")),
                pending=_opt_str(raw.get("pm")),
                pending_request=_opt_str(raw.get("pr")),
                pending_affinity=_opt_str(raw.get("pa")),
                decision=_str(raw.get("dn", "")),
                phase=_str(raw.get("ph", "new")),
                turn_count=_int(raw.get("tc", 0)),
                switch_count=_int(raw.get("sc", 0)),
                switch_times=tuple(_float(t) for t in raw.get("st", ()))[-MAX_SWITCH_TIMES:],
                last_seen=_float(raw.get("ls", 0.0)),
                context_tokens=_int(raw.get("xt", 0)),
                evidence_model=_opt_str(raw.get("em")),
                evidence_prompt=_int(raw.get("ep", 0)),
                evidence_cached=_int(raw.get("ec", 0)),
                evidence_at=_float(raw.get("ea", 0.0)),
                hit_ratio=None if raw.get("hr") is None else _float(raw["hr"]),
                open_calls=tuple((_str(a), _str(b)) for a, b in raw.get("oc", ()))[
                    -MAX_OPEN_CALLS:
                ],
                answering=tuple(_str(c) for c in raw.get("aw", ()))[-MAX_OPEN_CALLS:],
                response_ids=tuple(_str(r) for r in raw.get("ri", ()))[-MAX_RESPONSE_IDS:],
                replay_id=_str(raw.get("rp", "")),
                failures=tuple((_str(a), _int(b)) for a, b in raw.get("fl", ()))[
                    -MAX_FAILURE_ENTRIES:
                ],
            )
        except (KeyError, TypeError, ValueError) as exc:
            msg = f"session state v{CODEC_VERSION} is malformed: {exc!r}"
            raise SessionCodecError(msg) from exc


def _put(out: dict[str, Any], key: str, value: object, default: object) -> None:
    if value != default:
        out[key] = value


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _opt_str(value: object) -> str | None:
    return None if value is None else _str(value)


def _int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {type(value).__name__}")
    return value


def _float(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"expected a number, got {type(value).__name__}")
    return float(value)
