"""Fault plans: scripted errors, rate limits and timeouts for chosen requests.

A plan is JSON (or YAML) ``{"rules": [rule, ...]}``. Each rule has:

- ``match``: all given keys must equal the request's facts. Keys: ``pool``, ``replica``
  (index), ``api`` (``chat|responses|messages``), ``model`` (as requested), ``session``
  (``x-session-id``), ``conversation`` (``x-conversation-id``), ``affinity_key``
  (``x-saar-affinity-key``), ``turn`` (assistant messages already in the conversation),
  ``phase`` (``user_turn|tool_result|continuation``). An empty match matches everything.
- ``status``: 429, 500, 502, 503 or 504, or ``"timeout"`` (hold the request ``delay_s``
  seconds, default 30, then answer 504).
- ``delay_s``: for numeric statuses, wait this long before answering (default 0).
- ``retry_after``: optional seconds for a ``Retry-After`` header.
- ``times``: how many requests the rule fires for (default 1); ``null`` means always.

Rules are tried in order; the first active match fires and uses up one of its ``times``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["MATCH_KEYS", "FaultPlan", "FaultRule", "RequestFacts"]

MATCH_KEYS = frozenset(
    {"pool", "replica", "api", "model", "session", "conversation", "affinity_key", "turn", "phase"}
)
_STATUSES = frozenset({429, 500, 502, 503, 504})
_DEFAULT_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What a fault rule can match on, derived from one request."""

    pool: str
    replica: int
    api: str
    model: str | None
    session: str | None
    conversation: str | None
    affinity_key: str | None
    turn: int | None
    phase: str | None

    def get(self, key: str) -> object:
        """Return the fact called ``key`` (one of :data:`MATCH_KEYS`)."""
        return getattr(self, key)


@dataclass(slots=True)
class FaultRule:
    """One rule of a plan; ``remaining`` is None for rules that always fire."""

    match: dict[str, object]
    status: int | str
    delay_s: float
    retry_after: float | None
    remaining: int | None

    def matches(self, facts: RequestFacts) -> bool:
        """Whether the rule is still active and every match key equals the request's fact."""
        if self.remaining is not None and self.remaining <= 0:
            return False
        return all(facts.get(k) == v for k, v in self.match.items())

    @property
    def is_timeout(self) -> bool:
        """Whether the rule holds the request and then answers 504."""
        return self.status == "timeout"

    def to_json(self) -> dict[str, Any]:
        """Return the rule as JSON, ``times`` being what is left."""
        return {
            "match": dict(self.match),
            "status": self.status,
            "delay_s": self.delay_s,
            "retry_after": self.retry_after,
            "times": self.remaining,
        }


class FaultPlan:
    """An ordered list of fault rules shared by every replica of the process."""

    def __init__(self, rules: Sequence[FaultRule] = ()) -> None:
        self.rules: list[FaultRule] = list(rules)

    @classmethod
    def from_mapping(cls, raw: object) -> FaultPlan:
        """Parse a plan; errors name the path, e.g. ``rules[0].status must be ...``.

        Raises:
            ValueError: when the plan is malformed.

        """
        if not isinstance(raw, Mapping):
            raise ValueError("fault plan must be an object with a 'rules' list")
        rules_raw = raw.get("rules", [])
        if not isinstance(rules_raw, Sequence) or isinstance(rules_raw, str):
            raise ValueError("rules must be a list")
        return cls([_parse_rule(r, f"rules[{i}]") for i, r in enumerate(rules_raw)])

    def pick(self, facts: RequestFacts) -> FaultRule | None:
        """Return the first active rule matching the request and use up one of its times."""
        for rule in self.rules:
            if rule.matches(facts):
                if rule.remaining is not None:
                    rule.remaining -= 1
                return rule
        return None

    def to_json(self) -> dict[str, Any]:
        """Return the plan as JSON, with each rule's remaining count."""
        return {"rules": [r.to_json() for r in self.rules]}


def _parse_rule(raw: object, path: str) -> FaultRule:
    if not isinstance(raw, Mapping):
        raise ValueError(f"{path} must be an object")
    unknown = set(raw) - {"match", "status", "delay_s", "retry_after", "times"}
    if unknown:
        raise ValueError(f"{path} has unknown keys: {', '.join(sorted(unknown))}")
    match = raw.get("match", {}) or {}
    if not isinstance(match, Mapping):
        raise ValueError(f"{path}.match must be an object")
    bad = set(match) - MATCH_KEYS
    if bad:
        raise ValueError(
            f"{path}.match has unknown keys: {', '.join(sorted(bad))} "
            f"(known: {', '.join(sorted(MATCH_KEYS))})"
        )
    for key in ("replica", "turn"):
        value = match.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"{path}.match.{key} must be an integer")
    status = raw.get("status")
    if status != "timeout" and (
        isinstance(status, bool) or not isinstance(status, int) or status not in _STATUSES
    ):
        raise ValueError(f"{path}.status must be one of 429, 500, 502, 503, 504 or 'timeout'")
    delay = raw.get("delay_s", _DEFAULT_TIMEOUT_S if status == "timeout" else 0.0)
    if isinstance(delay, bool) or not isinstance(delay, int | float) or delay < 0:
        raise ValueError(f"{path}.delay_s must be a non-negative number")
    retry_after = raw.get("retry_after")
    if retry_after is not None and (
        isinstance(retry_after, bool) or not isinstance(retry_after, int | float) or retry_after < 0
    ):
        raise ValueError(f"{path}.retry_after must be a non-negative number")
    times = raw.get("times", 1)
    if times is not None and (isinstance(times, bool) or not isinstance(times, int) or times < 0):
        raise ValueError(f"{path}.times must be a non-negative integer or null (always)")
    return FaultRule(
        match=dict(match),
        status=status,
        delay_s=float(delay),
        retry_after=None if retry_after is None else float(retry_after),
        remaining=times,
    )
