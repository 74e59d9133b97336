"""``decide`` and ``apply_response``: the pure session-aware routing policy.

Theory of operation: ``decide`` runs the base selector (``selector``), then the Router Learning
wrapper: mode (apply / observe / bypass), session context (``protected_key``), hard locks
(``locks``), reset boundaries, guards and switch economics (``switching``), in the order of the
table in ``reasons``. It returns the ``Decision`` and the new router memory with the routed model
*pending*. ``apply_response`` commits it on success and learns tool calls, response ids, cache
evidence and backend failures. Both are pure: the clock comes in as ``now`` (seconds), nothing
is mutated, nothing is imported beyond the stdlib.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

from saar.policy.config import (
    AdaptationMode,
    DecisionSpec,
    PhysicalModel,
    PolicyConfig,
    Scope,
    SelectionMethod,
)
from saar.policy.decision import Decision
from saar.policy.facts import BackendPin, RequestFacts, ResponseFacts
from saar.policy.locks import find_lock
from saar.policy.reasons import Action, Phase, Reason, check_pair
from saar.policy.selector import (
    BaseChoice,
    Candidate,
    base_select,
    candidates_for,
    signal_match,
)
from saar.policy.session import (
    MAX_FAILURE_ENTRIES,
    MAX_OPEN_CALLS,
    MAX_RESPONSE_IDS,
    MAX_SWITCH_TIMES,
    SessionState,
)
from saar.policy.switching import Economics, Warmth, evaluate, recent_switches, warmth_of
from saar.policy.trace import DecisionTrace, SwitchTerms

__all__ = [
    "affinity_for",
    "apply_response",
    "decide",
    "index_entries",
    "protected_key",
    "response_index_key",
]


def _digest(*parts: str) -> str:
    # Length-prefix every part: ("a/b", "c") and ("a", "b/c") must not collide (weakness #5).
    h = hashlib.sha256()
    for part in parts:
        raw = part.encode()
        h.update(len(raw).to_bytes(4, "big"))
        h.update(raw)
    return h.hexdigest()[:32]


def protected_key(facts: RequestFacts, config: PolicyConfig) -> str | None:
    """Return the hashed router-memory key of this request under the configured scope.

    ``conversation`` scope needs a conversation id (the session id, when present, is part of
    the key); ``session`` scope needs a session id. ``None`` means no session context: the
    request is routed by ``fallback_method`` and no memory is kept.
    """
    if config.learning.scope is Scope.SESSION:
        if not facts.session_id:
            return None
        return "pk:" + _digest("session", facts.session_id)
    if not facts.conversation_id:
        return None
    return "pk:" + _digest("conversation", facts.session_id or "", facts.conversation_id)


def response_index_key(response_id: str) -> str:
    """Store key of the response index entry ``response_id → BackendPin``."""
    return "ri:" + _digest("response", response_id)


def affinity_for(key: str) -> str:
    """Return the stable affinity key of a protected key (or of a request id)."""
    return "ak-" + _digest("affinity", key)[:24]


def index_entries(decision: Decision, response: ResponseFacts) -> list[tuple[str, BackendPin]]:
    """Response-index entries to write after a successful response that minted an id.

    ``previous_response_id`` continuations resolve through these to the exact backend:
    the physical model *and* the affinity key the minting request carried.
    """
    if response.response_id is None or not 200 <= response.status < 300:
        return []
    physical = response.physical or decision.target.key
    return [(response_index_key(response.response_id), BackendPin(physical, decision.affinity_key))]


def _runs(spec: DecisionSpec, config: PolicyConfig) -> bool:
    learning = config.learning
    return (
        learning.enabled and learning.session_aware_enabled
    ) or spec.method is SelectionMethod.SESSION_AWARE


def decide(
    state: SessionState | None, facts: RequestFacts, config: PolicyConfig, now: float
) -> tuple[Decision, SessionState | None]:
    """Route one request; return the decision and the new router memory (pending model).

    Pure and deterministic: the same ``state``, ``facts``, ``config`` and ``now`` give the
    same result.
    """
    spec, source = _decision_for(state, facts, config, now)
    cands = candidates_for(spec, facts, config)
    base = base_select(spec, cands, facts, spec.method)
    scope = config.learning.scope
    key = protected_key(facts, config)
    mode = spec.mode if _runs(spec, config) else AdaptationMode.BYPASS
    if mode is AdaptationMode.BYPASS:
        reason = Reason.DECISION_BYPASS if _runs(spec, config) else Reason.LEARNING_DISABLED
        affinity = (
            state.affinity_key if state is not None else affinity_for(key or facts.request_id)
        )
        decision = _plain(
            facts=facts,
            spec=spec,
            base=base,
            action=Action.BYPASS,
            reason=reason,
            mode=mode,
            scope=scope,
            affinity=affinity,
            key=key,
            source=source,
        )
        return decision, state
    if key is None:
        # For a session_aware decision the base already is its fallback_method.
        affinity = affinity_for(facts.request_id)
        decision = _plain(
            facts=facts,
            spec=spec,
            base=base,
            action=Action.FALLBACK,
            reason=Reason.NO_SESSION_CONTEXT,
            mode=mode,
            scope=scope,
            affinity=affinity,
            key=key,
            source=source,
        )
        return decision, None
    return _session(
        state=state,
        facts=facts,
        config=config,
        now=now,
        spec=spec,
        cands=cands,
        base=base,
        mode=mode,
        key=key,
        source=source,
    )


def _decision_for(
    state: SessionState | None, facts: RequestFacts, config: PolicyConfig, now: float
) -> tuple[DecisionSpec, str]:
    """The decision this request is in, and where that came from.

    Signals decide when they match. A request that matches none keeps its session's decision
    only when it *continues* the task: a tool result, or a short follow-up ("continue", "fix
    it": at most that decision's ``follow_up_max_words`` words), and only while the session is
    not idle. Anything else without signals is the default decision again, so one "root cause"
    turn does not pin a session to the reasoning tier for good; and a topic change still needs
    a positive match (decision drift).
    """
    matched = signal_match(facts, config)
    if matched is not None:
        return matched, "signals"
    if state is not None and state.decision:
        for spec in config.decisions:
            if spec.name == state.decision:
                knobs = spec.session_aware
                idle = now - state.last_seen >= knobs.idle_timeout_seconds
                if _continues(facts, knobs.follow_up_max_words) and (
                    not idle or knobs.idle_timeout_seconds <= 0
                ):
                    return spec, "session"
                break
    return config.decision(config.default_decision), "default"


def _continues(facts: RequestFacts, max_words: int) -> bool:
    """Whether a request without signals continues its session's task."""
    if facts.in_tool_loop:
        return True
    if max_words <= 0:
        return False
    return len(facts.last_user_text.split(None, max_words)) <= max_words


def _plain(
    *,
    facts: RequestFacts,
    spec: DecisionSpec,
    base: BaseChoice,
    action: Action,
    reason: Reason,
    mode: AdaptationMode,
    scope: Scope,
    affinity: str,
    key: str | None,
    source: str,
) -> Decision:
    check_pair(action, reason)
    target = base.choice.physical
    trace = DecisionTrace(
        decision=spec.name,
        decision_source=source,
        base_method=base.method.value,
        base_choice=target.key,
        base_scores=base.scores,
        action=action.value,
        reason=reason.value,
        mode=mode.value,
        scope=scope.value,
        phase=Phase.NONE.value,
        proposed=target.key,
        target=target.key,
        protected_key=key,
    )
    return Decision(
        replay_id=facts.request_id,
        decision_name=spec.name,
        target=target,
        base=target,
        affinity_key=affinity,
        action=action,
        reason=reason,
        mode=mode,
        scope=scope,
        phase=Phase.NONE,
        trace=trace,
        proposed=target,
        protected_key=key,
    )


def _eligible(current: PhysicalModel, facts: RequestFacts, config: PolicyConfig) -> bool:
    # A client that named a configured model may only be served by that model.
    asked = facts.logical_model
    if asked in config.logical_models or current.model == asked:
        return True
    return not any(p.model == asked for p in config.physical_models.values())


def _session(
    *,
    state: SessionState | None,
    facts: RequestFacts,
    config: PolicyConfig,
    now: float,
    spec: DecisionSpec,
    cands: tuple[Candidate, ...],
    base: BaseChoice,
    mode: AdaptationMode,
    key: str,
    source: str,
) -> tuple[Decision, SessionState]:
    knobs = spec.session_aware
    mem = state if state is not None else SessionState(affinity_key=affinity_for(key))
    known = state is not None
    lock = find_lock(state, facts, knobs, config)
    current_key = mem.current if known else None
    current = config.physical_models.get(current_key) if current_key is not None else None
    affinity = mem.affinity_key
    base_phys = base.choice.physical
    base_key = base.choice.key
    idle_for = now - mem.last_seen if known else None
    timeout = knobs.idle_timeout_seconds
    idle = idle_for is not None and timeout > 0.0 and idle_for >= timeout
    drift = known and knobs.decision_drift_reset and mem.decision not in ("", spec.name)
    failures = mem.failures_of(current_key) if current_key is not None else 0
    unhealthy = 0 < knobs.unhealthy_after_failures <= failures
    weights = spec.hybrid
    kappa = weights.cost_weight / base.max_cost if base.max_cost > 0.0 else 0.0
    remaining = config.priors.lookup_remaining_turns(spec.name)
    recent = recent_switches(mem, knobs, now) if known else 0.0
    warmth: Warmth | None = None
    econ: Economics | None = None
    proposed = base_phys
    lock_owner: str | None = None

    if lock is not None and lock.owner is not None:
        action, reason, phase = Action.HARD_LOCK, lock.reason, lock.phase
        proposed = lock.owner
        lock_owner = lock.owner.key
        if lock.affinity_key is not None:
            affinity = lock.affinity_key
        if reason is Reason.PROVIDER_STATE_MODEL and unhealthy:
            # Model-pinned state is portable across pools of the same model (locks.py).
            for other in config.physical_models.values():
                if (
                    other.model == lock.owner.model
                    and other.key != lock.owner.key
                    and mem.failures_of(other.key) < knobs.unhealthy_after_failures
                ):
                    action, reason, proposed = Action.SWITCH, Reason.BACKEND_UNHEALTHY, other
                    break
    elif lock is not None:
        action, reason, phase = Action.ESTABLISH_BASELINE, lock.reason, lock.phase
    elif current is None or current_key is None:
        action, reason, phase = Action.ESTABLISH_BASELINE, Reason.NEW_KEY, Phase.NEW
    else:
        in_refs = next((c for c in cands if c.key == current_key), None)
        cur = in_refs if in_refs is not None else Candidate(current, current.quality)
        reset = idle or drift
        phase = Phase.IDLE_RESET if idle else Phase.DRIFT_RESET if drift else Phase.USER_TURN
        if facts.provider_state:
            phase = Phase.PROVIDER_STATE
        if facts.in_tool_loop:
            phase = Phase.TOOL_LOOP
        warmth = warmth_of(
            state=mem,
            current=current_key,
            context_tokens=facts.context_tokens,
            knobs=knobs,
            default_ratio=config.priors.default_cache_hit_ratio,
            now=now,
        )
        econ = evaluate(
            current=cur,
            candidates=cands,
            decision=spec.name,
            config=config,
            knobs=knobs,
            quality_weight=weights.quality_weight,
            kappa=kappa,
            context_tokens=facts.context_tokens,
            completion_tokens=float(weights.expected_completion_tokens),
            warmth=warmth,
            recent=recent,
            remaining=remaining,
            reset=reset,
        )
        nets = {t.physical: t.net for t in econ.terms}
        if unhealthy and (base_key != current_key or econ.best is not None):
            action, reason = Action.SWITCH, Reason.BACKEND_UNHEALTHY
            if base_key == current_key:
                assert econ.best is not None
                proposed = econ.best.physical
        elif not _eligible(current, facts, config) or (reset and in_refs is None):
            if reset:
                action, reason = (
                    Action.RESELECT,
                    Reason.IDLE_RESET if idle else Reason.DECISION_DRIFT,
                )
            else:
                action, reason = Action.SWITCH, Reason.CURRENT_NOT_CANDIDATE
        elif idle:
            # Continuity and the cache have decayed: the choice reopens to the base selector,
            # so session-aware routing never degrades into sticky sessions.
            action, reason = Action.RESELECT, Reason.IDLE_RESET
        elif drift:
            # The task shape changed but the prefix may still be hot: stickiness is off, real
            # money (checkout, per-turn cost) and the quality gap still decide.
            action, reason = Action.RESELECT, Reason.DECISION_DRIFT
            if nets.get(base_key, 0.0) <= 0.0:
                proposed = current
        elif mem.turn_count < knobs.min_turns_before_switch:
            action, reason, proposed = Action.STAY, Reason.MIN_TURNS, current
        elif base_key == current_key:
            action, reason, proposed = Action.STAY, Reason.BASE_AGREES, current
        elif nets.get(base_key, 0.0) > 0.0:
            action, reason = Action.SWITCH, Reason.SWITCH_WORTH_IT
        else:
            action, reason, proposed = Action.STAY, Reason.SWITCH_NOT_WORTH_IT, current
    check_pair(action, reason)

    target = proposed if mode is AdaptationMode.APPLY else base_phys
    if mode is not AdaptationMode.APPLY:
        affinity = mem.affinity_key
    trace = DecisionTrace(
        decision=spec.name,
        decision_source=source,
        base_method=base.method.value,
        base_choice=base_key,
        base_scores=base.scores,
        action=action.value,
        reason=reason.value,
        mode=mode.value,
        scope=config.learning.scope.value,
        phase=phase.value,
        current=current_key,
        proposed=proposed.key,
        target=target.key,
        lock_owner=lock_owner,
        protected_key=key,
        turn_count=mem.turn_count,
        switch_count=mem.switch_count,
        recent_switches=recent,
        idle_for=idle_for,
        idle_reset=idle,
        decision_drift=drift,
        failures=failures,
        warmth=warmth.now if warmth is not None else 0.0,
        cache_hit_ratio=warmth.ratio if warmth is not None else 0.0,
        cache_evidence=warmth is not None and warmth.evidence,
        expected_remaining_turns=remaining.value,
        remaining_turns_source=remaining.source.value + ("/rejected" if remaining.rejected else ""),
        utility_per_currency=kappa,
        candidates=econ.terms if econ is not None else _no_terms(),
    )
    decision = Decision(
        replay_id=facts.request_id,
        decision_name=spec.name,
        target=target,
        base=base_phys,
        affinity_key=affinity,
        action=action,
        reason=reason,
        mode=mode,
        scope=config.learning.scope,
        phase=phase,
        trace=trace,
        proposed=proposed,
        protected_key=key,
    )
    # An owner inferred from the session's last model is remembered against the call ids, so a
    # retry after a failure learned before the issuing turn's success still finds it (locks.py).
    inferred = lock_owner if reason is Reason.TOOL_LOOP_LAST_MODEL else None
    new_state = _remember(
        mem=mem,
        facts=facts,
        spec=spec,
        phase=phase,
        target=target,
        affinity=affinity,
        now=now,
        inferred=inferred,
    )
    return decision, new_state


def _no_terms() -> tuple[SwitchTerms, ...]:
    return ()


def _remember(
    *,
    mem: SessionState,
    facts: RequestFacts,
    spec: DecisionSpec,
    phase: Phase,
    target: PhysicalModel,
    affinity: str,
    now: float,
    inferred: str | None = None,
) -> SessionState:
    open_calls = mem.open_calls
    answering: tuple[str, ...] = ()
    if inferred is not None:
        # The lock inferred the owner (no id was in memory): record it like an observed call,
        # answered ids closing on this request's 2xx, dangling ones staying open.
        ids = dict.fromkeys(facts.tool_result_ids + facts.pending_tool_call_ids)
        open_calls = (*open_calls, *((cid, inferred) for cid in ids))[-MAX_OPEN_CALLS:]
    if open_calls:
        if facts.in_tool_loop:
            # Closed when this request's response succeeds (apply_response), not now: a 5xx
            # retry of the same tool results must still find who issued the calls. Capped as
            # the codec caps it on decode: a hostile client cannot grow the record.
            answering = facts.tool_result_ids[-MAX_OPEN_CALLS:]
        else:
            # A plain user turn closes the exchange: nothing can still be waiting for a result.
            open_calls = ()
    # Built field by field: dataclasses.replace costs about as much as the whole economics.
    return SessionState(
        affinity_key=mem.affinity_key,
        committed=mem.committed,
        pending=target.key,
        pending_request=facts.request_id,
        pending_affinity=None if affinity == mem.affinity_key else affinity,
        decision=spec.name,
        phase=phase.value,
        turn_count=mem.turn_count + 1,
        switch_count=mem.switch_count,
        switch_times=mem.switch_times,
        last_seen=now,
        context_tokens=facts.context_tokens,
        evidence_model=mem.evidence_model,
        evidence_prompt=mem.evidence_prompt,
        evidence_cached=mem.evidence_cached,
        evidence_at=mem.evidence_at,
        hit_ratio=mem.hit_ratio,
        open_calls=open_calls,
        answering=answering,
        response_ids=mem.response_ids,
        replay_id=facts.request_id,
        failures=mem.failures,
    )


def _learn_cache(
    *,
    old: SessionState,
    new: SessionState,
    response: ResponseFacts,
    served: str,
    config: PolicyConfig,
    now: float,
) -> SessionState:
    prompt = max(0, response.prompt_tokens or 0)
    cached = 0
    hit = old.hit_ratio
    if response.cached_tokens is not None:
        cached = min(max(0, response.cached_tokens), prompt)
        reusable = min(prompt, old.evidence_prompt)
        # Learn reuse only on warm turns (the prefix was resident here and recent): a cold first
        # turn or a long gap measures eviction, which the half-life already models.
        if old.evidence_model == served and reusable > 0:
            spec = next((d for d in config.decisions if d.name == old.decision), None)
            half_life = spec.session_aware.cache_half_life_seconds if spec else 300.0
            if now - old.evidence_at <= half_life:
                seen = min(1.0, cached / reusable)
                hit = seen if hit is None else 0.5 * hit + 0.5 * seen
    return replace(
        new,
        evidence_model=served,
        evidence_prompt=prompt,
        evidence_cached=cached,
        evidence_at=now,
        hit_ratio=hit,
    )


def apply_response(
    state: SessionState | None, response: ResponseFacts, config: PolicyConfig, now: float
) -> SessionState | None:
    """Learn from one response: commit on 2xx, record tool calls, ids, cache evidence, failures.

    A 5xx/429 drops the pending model without committing it and counts a failure of the
    backend; open tool calls stay open, so a hard-locked turn is retried on the same owner.
    """
    if state is None:
        return None
    mine = state.pending_request == response.request_id
    served = response.physical or (state.pending if mine else state.current)
    if served is None:
        return replace(state, last_seen=now)
    status = response.status
    failures = state.failures
    if 200 <= status < 300:
        committed = state.committed
        switch_count = state.switch_count
        switch_times = state.switch_times
        if committed is not None and committed != served:
            switch_count += 1
            switch_times = (*switch_times, now)[-MAX_SWITCH_TIMES:]
        failures = tuple(pair for pair in failures if pair[0] != served)
        open_calls = state.open_calls
        answering = state.answering
        if mine and answering:
            closed = set(answering)
            open_calls = tuple(pair for pair in open_calls if pair[0] not in closed)
            answering = ()
        if response.tool_call_ids:
            # An observed owner replaces one ``decide`` inferred for the same id.
            issued = set(response.tool_call_ids)
            kept = (pair for pair in open_calls if pair[0] not in issued)
            open_calls = (*kept, *((cid, served) for cid in response.tool_call_ids))[
                -MAX_OPEN_CALLS:
            ]
        response_ids = state.response_ids
        if response.response_id is not None:
            response_ids = (*response_ids, response.response_id)[-MAX_RESPONSE_IDS:]
        new = replace(
            state,
            committed=served,
            pending=None if mine else state.pending,
            pending_request=None if mine else state.pending_request,
            pending_affinity=None if mine else state.pending_affinity,
            switch_count=switch_count,
            switch_times=switch_times,
            last_seen=now,
            open_calls=open_calls,
            answering=answering,
            response_ids=response_ids,
            failures=failures,
        )
        if response.prompt_tokens is not None:
            new = _learn_cache(
                old=state, new=new, response=response, served=served, config=config, now=now
            )
        return new
    if status >= 500 or status == 429:
        count = state.failures_of(served) + 1
        others = tuple(pair for pair in failures if pair[0] != served)
        failures = (*others, (served, count))[-MAX_FAILURE_ENTRIES:]
    return replace(
        state,
        pending=None if mine else state.pending,
        pending_request=None if mine else state.pending_request,
        pending_affinity=None if mine else state.pending_affinity,
        last_seen=now,
        failures=failures,
    )
