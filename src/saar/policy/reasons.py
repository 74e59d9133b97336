"""THE table of session-aware actions, reasons and phases: one place, docs generated from it.

Theory of operation
-------------------
Every ``policy.decide`` call ends in exactly one **action** (what the session-aware layer did)
and one **reason** (why). The pair is a checked state machine, not free text: each reason
belongs to exactly one action (``REASONS[reason].action``), and ``Decision`` construction goes
through :func:`check_pair` so an impossible pair such as ``stay`` + ``switch_worth_it`` cannot be
emitted (upstream weakness #21). The **phase** says where the session is; it is stored in router
memory and sent as ``x-vsr-session-phase``.

The procedure, first match wins (docs/design/0002-session-aware-policy.md has the long form):

1. adaptation not running for this decision → ``bypass``;
2. no protected key (no session context) → ``fallback``;
3. hard locks (tool loop, provider state) → ``hard_lock``, or ``establish_baseline`` with an
   ``*_owner_unknown`` reason when router memory cannot name the owner;
4. no router memory for the key → ``establish_baseline``;
5. a backend that keeps failing, or a current model that is no longer a candidate → ``switch``;
6. reset boundary → ``reselect``: idle reopens to the base choice; decision drift runs the
   economics without the stickiness terms (a hot prefix is still real money);
7. ``min_turns_before_switch`` not reached → ``stay``;
8. switch economics → ``stay`` or ``switch``.

``scripts/gen_policy_docs.py`` renders :data:`ACTIONS`, :data:`REASONS` and :data:`PHASES`
into ``docs/reference/actions-and-reasons.md``; CI runs it with ``--check``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Final

__all__ = [
    "ACTIONS",
    "PHASES",
    "REASONS",
    "Action",
    "ActionInfo",
    "Phase",
    "PhaseInfo",
    "Reason",
    "ReasonInfo",
    "check_pair",
]


class Action(StrEnum):
    """What the session-aware layer did with the base selector's proposal."""

    ESTABLISH_BASELINE = "establish_baseline"
    HARD_LOCK = "hard_lock"
    STAY = "stay"
    SWITCH = "switch"
    RESELECT = "reselect"
    FALLBACK = "fallback"
    BYPASS = "bypass"


class Reason(StrEnum):
    """Why the action was taken; each reason belongs to exactly one action."""

    NEW_KEY = "new_key"
    TOOL_LOOP_OWNER_UNKNOWN = "tool_loop_owner_unknown"
    PROVIDER_STATE_OWNER_UNKNOWN = "provider_state_owner_unknown"
    TOOL_LOOP = "tool_loop"
    TOOL_LOOP_LAST_MODEL = "tool_loop_last_model"
    PROVIDER_STATE_PINNED = "provider_state_pinned"
    PROVIDER_STATE_LAST_MODEL = "provider_state_last_model"
    PROVIDER_STATE_MODEL = "provider_state_model"
    BASE_AGREES = "base_agrees"
    MIN_TURNS = "min_turns"
    SWITCH_NOT_WORTH_IT = "switch_not_worth_it"
    SWITCH_WORTH_IT = "switch_worth_it"
    BACKEND_UNHEALTHY = "backend_unhealthy"
    CURRENT_NOT_CANDIDATE = "current_not_candidate"
    IDLE_RESET = "idle_reset"
    DECISION_DRIFT = "decision_drift"
    NO_SESSION_CONTEXT = "no_session_context"
    DECISION_BYPASS = "decision_bypass"
    LEARNING_DISABLED = "learning_disabled"


class Phase(StrEnum):
    """Where the session stands on this turn (``x-vsr-session-phase``)."""

    NEW = "new"
    USER_TURN = "user_turn"
    TOOL_LOOP = "tool_loop"
    PROVIDER_STATE = "provider_state"
    IDLE_RESET = "idle_reset"
    DRIFT_RESET = "drift_reset"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class ActionInfo:
    """One row of the action table."""

    action: Action
    meaning: str
    routes_to: str
    """What ``Decision.proposed`` is for this action."""


@dataclass(frozen=True, slots=True)
class ReasonInfo:
    """One row of the reason table."""

    reason: Reason
    action: Action
    """The only action this reason may accompany."""
    when: str


@dataclass(frozen=True, slots=True)
class PhaseInfo:
    """One row of the phase table."""

    phase: Phase
    meaning: str


_ACTION_ROWS: Final = (
    ActionInfo(
        Action.ESTABLISH_BASELINE,
        "The router has no usable memory for this protected key; this turn starts it.",
        "the base selector's choice",
    ),
    ActionInfo(
        Action.HARD_LOCK,
        "Continuity is required for correctness; no economics can override it.",
        "the owner of the tool calls or provider state",
    ),
    ActionInfo(
        Action.STAY,
        "The session keeps its current physical model.",
        "the current physical model",
    ),
    ActionInfo(
        Action.SWITCH,
        "The session moves to another physical model in the middle of a run.",
        "the base choice; when the failing model is the base choice, the other candidate with "
        "the best net value",
    ),
    ActionInfo(
        Action.RESELECT,
        "A reset boundary reopened the choice (idle: to the base; drift: without stickiness).",
        "idle: the base choice; drift: the base choice when its net value without the "
        "stickiness terms (stay, handoff, history) is positive (always when the current model "
        "is not in the decision), else the current model",
    ),
    ActionInfo(
        Action.FALLBACK,
        "No session context (no protected key); routed by ``fallback_method``.",
        "the fallback selector's choice",
    ),
    ActionInfo(
        Action.BYPASS,
        "The adaptation does not run for this request.",
        "the base selector's choice",
    ),
)

_REASON_ROWS: Final = (
    ReasonInfo(
        Reason.NEW_KEY,
        Action.ESTABLISH_BASELINE,
        "first turn under this protected key, or its memory expired",
    ),
    ReasonInfo(
        Reason.TOOL_LOOP_OWNER_UNKNOWN,
        Action.ESTABLISH_BASELINE,
        "the request continues a tool loop but router memory is gone (restart, eviction) or "
        "names a model no longer configured: the owner cannot be served, so the base choice is "
        "used and this reason says so",
    ),
    ReasonInfo(
        Reason.PROVIDER_STATE_OWNER_UNKNOWN,
        Action.ESTABLISH_BASELINE,
        "the request carries non-portable provider state whose minting backend is unknown",
    ),
    ReasonInfo(
        Reason.TOOL_LOOP,
        Action.HARD_LOCK,
        "the request answers (or still awaits) tool calls that router memory knows were issued "
        "by a physical model: the results go back to that model, even after an idle gap",
    ),
    ReasonInfo(
        Reason.TOOL_LOOP_LAST_MODEL,
        Action.HARD_LOCK,
        "a tool loop whose call ids memory did not record (response body not observed): the "
        "owner is inferred as the session's last model",
    ),
    ReasonInfo(
        Reason.PROVIDER_STATE_PINNED,
        Action.HARD_LOCK,
        "``previous_response_id`` resolved through the response index: routed to exactly the "
        "minting physical model and affinity key, even from another conversation",
    ),
    ReasonInfo(
        Reason.PROVIDER_STATE_LAST_MODEL,
        Action.HARD_LOCK,
        "backend-pinned provider state not found in the response index: the session's last "
        "physical model and affinity key are kept",
    ),
    ReasonInfo(
        Reason.PROVIDER_STATE_MODEL,
        Action.HARD_LOCK,
        "model-pinned provider state (e.g. encrypted reasoning): the same model is kept",
    ),
    ReasonInfo(
        Reason.BASE_AGREES, Action.STAY, "the base selector already proposes the current model"
    ),
    ReasonInfo(
        Reason.MIN_TURNS,
        Action.STAY,
        "fewer than ``min_turns_before_switch`` turns were routed under this key",
    ),
    ReasonInfo(
        Reason.SWITCH_NOT_WORTH_IT,
        Action.STAY,
        "no candidate's net switch value is positive after stay bias and continuity costs",
    ),
    ReasonInfo(
        Reason.SWITCH_WORTH_IT,
        Action.SWITCH,
        "a candidate's quality and cost gains over the horizon beat every switch cost",
    ),
    ReasonInfo(
        Reason.BACKEND_UNHEALTHY,
        Action.SWITCH,
        "the current backend failed ``unhealthy_after_failures`` times in a row (5xx/429) and "
        "no hard lock holds the session there",
    ),
    ReasonInfo(
        Reason.CURRENT_NOT_CANDIDATE,
        Action.SWITCH,
        "the current model is not a candidate of the matched decision (or not the model the "
        "client asked for, or no longer configured)",
    ),
    ReasonInfo(
        Reason.IDLE_RESET,
        Action.RESELECT,
        "idle for at least ``idle_timeout_seconds`` since the last turn",
    ),
    ReasonInfo(
        Reason.DECISION_DRIFT,
        Action.RESELECT,
        "the matched decision changed and ``decision_drift_reset`` is on",
    ),
    ReasonInfo(
        Reason.NO_SESSION_CONTEXT,
        Action.FALLBACK,
        "no session or conversation id for the configured scope",
    ),
    ReasonInfo(Reason.DECISION_BYPASS, Action.BYPASS, "the decision's mode is ``bypass``"),
    ReasonInfo(
        Reason.LEARNING_DISABLED,
        Action.BYPASS,
        "Router Learning or its session_aware adaptation is disabled and the decision's "
        "method is not ``session_aware``",
    ),
)

_PHASE_ROWS: Final = (
    PhaseInfo(Phase.NEW, "first turn under the protected key"),
    PhaseInfo(Phase.USER_TURN, "an ordinary turn between boundaries"),
    PhaseInfo(Phase.TOOL_LOOP, "the request continues a tool exchange"),
    PhaseInfo(Phase.PROVIDER_STATE, "the request carries non-portable provider state"),
    PhaseInfo(Phase.IDLE_RESET, "the session crossed the idle boundary on this turn"),
    PhaseInfo(Phase.DRIFT_RESET, "the matched decision changed on this turn"),
    PhaseInfo(Phase.NONE, "no session context, or the adaptation did not run"),
)

ACTIONS: Final = MappingProxyType({row.action: row for row in _ACTION_ROWS})
"""Every action, in table order."""
REASONS: Final = MappingProxyType({row.reason: row for row in _REASON_ROWS})
"""Every reason, in table order, with the one action it belongs to."""
PHASES: Final = MappingProxyType({row.phase: row for row in _PHASE_ROWS})
"""Every phase, in table order."""


def check_pair(action: Action, reason: Reason) -> None:
    """Raise ``ValueError`` when ``reason`` does not belong to ``action`` (a policy bug)."""
    expected = REASONS[reason].action
    if expected is not action:
        msg = f"reason {reason.value!r} belongs to action {expected.value!r}, not {action.value!r}"
        raise ValueError(msg)
