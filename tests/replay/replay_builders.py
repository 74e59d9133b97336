"""Builders for the replay tests: a small catalogue, facts, and real decide/respond runs."""

from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType
from typing import Any

from saar.policy import (
    AdaptationMode,
    Api,
    DecisionSpec,
    HybridWeights,
    LearningConfig,
    MatchMode,
    ModelRef,
    PhysicalModel,
    PolicyConfig,
    Pool,
    Pricing,
    RequestFacts,
    ResponseFacts,
    SelectionMethod,
    SessionAwareKnobs,
    SessionState,
    Signal,
    SignalKind,
    apply_response,
    decide,
)
from saar.replay.record import (
    DecisionRecord,
    Outcome,
    ReplayRecord,
    RequestShape,
    ResponseRecord,
    build_record,
    response_record,
)

SMALL = "small-8b@mi300"
MEDIUM = "medium-32b@mi300"
FRONTIER = "frontier-400b@h100"

POOLS = {
    "mi300": Pool("mi300", "pool-mi300", "amd-mi300x"),
    "h100": Pool("h100", "pool-h100", "nvidia-h100"),
}


def models(frontier_prompt: float = 3.00) -> dict[str, PhysicalModel]:
    """The catalogue; ``frontier_prompt`` is the frontier model's prompt price per 1M."""
    return {
        SMALL: PhysicalModel("small-8b", "mi300", "pool-mi300", Pricing(0.10, 0.01, 0.40), 0.55),
        MEDIUM: PhysicalModel("medium-32b", "mi300", "pool-mi300", Pricing(0.50, 0.05, 2.0), 0.72),
        FRONTIER: PhysicalModel(
            "frontier-400b", "h100", "pool-h100", Pricing(frontier_prompt, 0.30, 15.0), 0.90
        ),
    }


def make_config(
    *,
    knobs: SessionAwareKnobs | None = None,
    general_refs: tuple[ModelRef, ...] = (ModelRef(SMALL), ModelRef(MEDIUM), ModelRef(FRONTIER)),
    mode: AdaptationMode = AdaptationMode.APPLY,
    fallback: SelectionMethod = SelectionMethod.STATIC,
    hybrid: HybridWeights | None = None,
    frontier_prompt: float = 3.00,
    **fields: Any,
) -> PolicyConfig:
    """``coding`` (keyword ``refactor``, frontier first) over ``general`` (the default)."""
    sa = replace(knobs or SessionAwareKnobs(), fallback_method=fallback)
    coding = DecisionSpec(
        name="coding",
        priority=100,
        signals=(Signal(SignalKind.KEYWORDS, keywords=("refactor",)),),
        match=MatchMode.ANY,
        model_refs=(ModelRef(FRONTIER), ModelRef(MEDIUM)),
        method=SelectionMethod.SESSION_AWARE,
        session_aware=sa,
        mode=mode,
        hybrid=hybrid or HybridWeights(),
    )
    general = DecisionSpec(
        name="general",
        priority=0,
        signals=(),
        match=MatchMode.ANY,
        model_refs=general_refs,
        method=SelectionMethod.SESSION_AWARE,
        session_aware=sa,
        mode=mode,
        hybrid=hybrid or HybridWeights(),
    )
    return PolicyConfig(
        logical_models=frozenset({"auto"}),
        pools=MappingProxyType(POOLS),
        physical_models=MappingProxyType(models(frontier_prompt)),
        decisions=(coding, general),
        default_decision="general",
        learning=fields.pop("learning", LearningConfig()),
        **fields,
    )


def facts(request_id: str = "req-1", text: str = "hello", **fields: Any) -> RequestFacts:
    """Facts of a chat turn in (hashed-looking) session s1 / conversation c1."""
    base: dict[str, Any] = {
        "request_id": request_id,
        "api": Api.CHAT,
        "logical_model": "auto",
        "session_id": "s" * 32,
        "conversation_id": "c" * 32,
        "last_user_text": text,
        "context_tokens": 20_000,
        "message_count": 2,
    }
    base.update(fields)
    return RequestFacts(**base)


class Run:
    """Drives a real session through ``decide`` / ``apply_response``, collecting records."""

    def __init__(self, config: PolicyConfig, *, capture_prompts: bool = False) -> None:
        self.config = config
        self.state: SessionState | None = None
        self.records: list[ReplayRecord] = []
        self.capture = capture_prompts
        self.now = 1_000_000.0

    def turn(
        self,
        *,
        status: int = 200,
        tool_calls: tuple[str, ...] = (),
        gap: float = 10.0,
        prompt: int = 20_000,
        cached: int | None = 15_000,
        completion: int = 200,
        **fact_fields: Any,
    ) -> ReplayRecord:
        """One request and its response; returns the (response-merged) record."""
        self.now += gap
        n = len(self.records)
        fact_fields.setdefault("turn_index", n)
        fact_fields.setdefault("message_count", 2 * n + 1)
        f = facts(f"req-{n:04d}-{id(self) % 1000}", **fact_fields)
        decision, self.state = decide(self.state, f, self.config, self.now)
        record = build_record(
            decision, f, at=self.now, latency_ms=0.05, capture_prompts=self.capture
        )
        response = ResponseFacts(
            request_id=f.request_id,
            status=status,
            tool_call_ids=tool_calls,
            finish_reason="tool_calls" if tool_calls else "stop",
            prompt_tokens=prompt,
            cached_tokens=cached,
            completion_tokens=completion,
        )
        self.state = apply_response(self.state, response, self.config, self.now + 1.0)
        record = record.with_results(response_record(response, at=self.now + 1.0), ())
        self.records.append(record)
        return record


def synthetic(
    replay_id: str,
    key: str,
    at: float,
    target: str,
    *,
    turn: int = 0,
    decision: str = "general",
    status: int | None = 200,
    score: float | None = None,
) -> ReplayRecord:
    """A hand-made record (for priors): one turn of ``key`` routed to ``target``."""
    record = ReplayRecord(
        replay_id=replay_id,
        time=at,
        session_id=key,
        session_source="header",
        conversation_id=None,
        conversation_source="none",
        protected_key="pk:" + key,
        request=RequestShape(
            api="chat", logical_model="auto", turn_index=turn, message_count=2 * turn + 1
        ),
        decision=DecisionRecord(
            name=decision,
            base=target,
            proposed=target,
            target=target,
            base_pool=target.split("@")[1],
            target_pool=target.split("@")[1],
            mode="apply",
            action="stay",
            reason="base_agrees",
            phase="user_turn",
            scope="conversation",
            affinity_key="ak",
            switched=False,
            trace={},
        ),
    )
    outcomes = () if score is None else (Outcome(key="k", kind="feedback", score=score, at=at),)
    response = None if status is None else ResponseRecord(status=status, at=at + 1.0)
    return record.with_results(response, outcomes)
