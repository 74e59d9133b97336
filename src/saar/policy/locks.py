"""Hard locks: continuity that correctness requires and no economics may override.

Theory of operation, checked in this order (first match wins):

1. **Response pin** (``context_portability_hard_lock``): the router resolved the request's
   ``previous_response_id`` through the response index to the exact backend that minted it
   (``facts.response_pin``). Route to that physical model **with its affinity key**, even when it
   was minted in another conversation: only that replica holds the stored response.
2. **Tool loop** (``tool_loop_hard_lock``): the request answers tool calls
   (``tool_result_ids``) or still carries unanswered ones (``pending_tool_call_ids``). The owner is
   the model that issued those call ids (router memory records them from responses); if memory
   has no such id, the session's last model (reason ``tool_loop_last_model``). The lock ignores
   the idle boundary: a tool result that arrives late still belongs to the model that asked.
   Answered ids are closed on the same turn, so parallel calls answered in one message release
   the lock together (no permanent lock, upstream weakness #9).
3. **Backend-pinned provider state** without a resolved pin: the session's last physical model
   and affinity key.
4. **Model-pinned provider state** (e.g. encrypted reasoning): the same model name. The policy
   keeps the exact physical model (another pool would lose the prefix cache for no gain); only
   ``backend_unhealthy`` may move it to another pool of the same model, which is safe because
   the state is portable across replicas and pools of one model.

When memory cannot name an owner (restart, eviction, a model removed by a reload) the lock
reports ``*_owner_unknown`` instead of pretending; the caller routes the base choice.

**The session's last model** (the fallback of 2-4) is the *pending* model of the key's latest
routed request when there is one, else the committed model. ``apply_response`` runs off the hot
path, so a request can be decided before the previous turn's response is learned: after a
switch A → B, memory still reads committed A, pending B. A tool result, a continuation or
encrypted reasoning can only exist if a turn answered, and the request builds on the
conversation's latest assistant message, which is the latest routed turn's: sending it to A
would be an unsafe switch. When it is not the pending model:

* a failed turn: ``apply_response`` drops ``pending`` on any non-2xx, so the fallback is the
  committed model again, which is right: the failed turn issued nothing. A retry of a failed
  tool-result turn does not need the fallback: when this lock inferred the owner
  (``tool_loop_last_model``), ``decide`` recorded it against the request's call ids in
  ``open_calls``, so the retry finds it by id (reason ``tool_loop``) even when the failure is
  learned *before* the success of the turn that issued the calls (out of order) and memory no
  longer names the pending model; a response body observed later replaces the inferred entry;
* a ``previous_response_id`` already in ``response_ids`` was minted by a learned turn, not by
  the unlearned pending one: the committed model is kept;
* scope ``session``: several conversations share one key and memory does not record which
  conversation the pending request belongs to, so the latest pending turn may be another
  conversation's; the fallback stays committed-first (``SessionState.current``), as before.

The reasons stay ``tool_loop_last_model`` / ``provider_state_*``: the owner is still inferred
(a retry that finds a recorded inferred owner by id reports ``tool_loop``; the inference shows
in the trace of the turn that made it).
A backend-pinned continuation of a pending turn that was itself routed by a response pin keeps
that turn's affinity key (``pending_affinity``): only that replica holds the response.
"""

from __future__ import annotations

from dataclasses import dataclass

from saar.policy.config import PhysicalModel, PolicyConfig, Scope, SessionAwareKnobs
from saar.policy.facts import Pin, RequestFacts
from saar.policy.reasons import Phase, Reason
from saar.policy.session import SessionState

__all__ = ["Lock", "find_lock"]


@dataclass(frozen=True, slots=True)
class Lock:
    """A hard lock found for this request."""

    reason: Reason
    owner: PhysicalModel | None
    """``None`` when the owner is unknown (the reason then ends in ``_owner_unknown``)."""
    affinity_key: str | None
    """Affinity key the request must carry; ``None`` = the session's own."""
    phase: Phase


def _known(config: PolicyConfig, key: str | None) -> PhysicalModel | None:
    if key is None:
        return None
    return config.physical_models.get(key)


def _last_model(
    state: SessionState, facts: RequestFacts, config: PolicyConfig
) -> tuple[str | None, str | None]:
    """The session's last model and the affinity key it was routed with (``None`` = own).

    The pending model of the latest routed request, unless the facts cannot tie the request to
    it (module docstring): then the committed model, else the pending one (``current``).
    """
    learned = facts.previous_response_id is not None and (
        facts.previous_response_id in state.response_ids
    )
    if state.pending is not None and config.learning.scope is Scope.CONVERSATION and not learned:
        return state.pending, state.pending_affinity
    return state.current, None


def find_lock(
    state: SessionState | None,
    facts: RequestFacts,
    knobs: SessionAwareKnobs,
    config: PolicyConfig,
) -> Lock | None:
    """Return the hard lock that binds this request, or ``None``."""
    portability = knobs.context_portability_hard_lock
    if portability and facts.response_pin is not None:
        owner = _known(config, facts.response_pin.physical)
        if owner is not None:
            return Lock(
                Reason.PROVIDER_STATE_PINNED,
                owner,
                facts.response_pin.affinity_key,
                Phase.PROVIDER_STATE,
            )
    last, affinity = _last_model(state, facts, config) if state is not None else (None, None)
    if knobs.tool_loop_hard_lock and facts.in_tool_loop:
        if state is not None:
            issued = state.owner_of(facts.tool_result_ids + facts.pending_tool_call_ids)
            if issued is not None:
                # Memory names the owner: it or nobody (a model removed by a reload must not be
                # silently replaced by whatever the session used last).
                owner = _known(config, issued)
                reason = Reason.TOOL_LOOP if owner is not None else Reason.TOOL_LOOP_OWNER_UNKNOWN
                return Lock(reason, owner, None, Phase.TOOL_LOOP)
            owner = _known(config, last)
            if owner is not None:
                return Lock(Reason.TOOL_LOOP_LAST_MODEL, owner, None, Phase.TOOL_LOOP)
        return Lock(Reason.TOOL_LOOP_OWNER_UNKNOWN, None, None, Phase.TOOL_LOOP)
    if portability and facts.provider_state:
        backend = any(p.pin is Pin.BACKEND for p in facts.provider_state)
        owner = _known(config, last)
        if owner is None:
            return Lock(Reason.PROVIDER_STATE_OWNER_UNKNOWN, None, None, Phase.PROVIDER_STATE)
        if backend:
            return Lock(Reason.PROVIDER_STATE_LAST_MODEL, owner, affinity, Phase.PROVIDER_STATE)
        return Lock(Reason.PROVIDER_STATE_MODEL, owner, None, Phase.PROVIDER_STATE)
    return None
