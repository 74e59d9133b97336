"""The Router Replay record: one row per decision, filled later from the response path.

Theory of operation: the hot path hands the recorder a ``(Decision, RequestFacts)`` pair and
nothing else (ARCHITECTURE rule 7: replay rows are derived from the decision's trace, never
recomputed). The writer thread turns that pair into a ``ReplayRecord`` with
``build_record``: identity exactly as hashed at ingress (raw session and conversation ids never
reach this module, upstream weakness #25), the request's *shape* (never prompt text unless
``capture_prompts`` is on), the decision with its full ``DecisionTrace.to_dict()``, and enough
facts to rebuild a ``RequestFacts`` for offline re-evaluation (``to_facts``).

Provider handles (tool-call ids, response ids, ``previous_response_id``) are stored as short
keyed hashes (``handle_hash``): the same id hashes the same way on the request and on the
response, so a re-run still matches tool results to the calls that issued them, but a stored
row cannot be used to fetch a provider's stored response.

The response path later merges a ``ResponseRecord`` (status, usage, tool calls, finish reason)
and explicit feedback arrives as ``Outcome`` rows keyed by ``(replay_id, key)``.
All types are msgspec ``Struct``s behind ``saar.wire.json`` (the project's single codec).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

import msgspec

from saar.policy.decision import Decision
from saar.policy.facts import (
    Api,
    BackendPin,
    IdentitySource,
    Pin,
    ProviderState,
    RequestFacts,
    ResponseFacts,
)
from saar.wire.json import Struct, TypedDecoder, dumps

__all__ = [
    "RECORD_VERSION",
    "DecisionRecord",
    "Outcome",
    "OutcomeKind",
    "ReplayRecord",
    "RequestShape",
    "ResponseRecord",
    "build_record",
    "decode_record",
    "encode_record",
    "handle_hash",
    "response_record",
]

RECORD_VERSION: Final = 1
"""Bumped when a stored field changes meaning; readers refuse newer versions."""

_HANDLE_DOMAIN: Final = b"saar/replay/handle\x00"


def handle_hash(value: str) -> str:
    """Return the stored form of a provider handle (tool-call id, response id): 16 hex chars."""
    return hashlib.blake2b(
        _HANDLE_DOMAIN + value.encode("utf-8", "surrogatepass"), digest_size=8
    ).hexdigest()


class OutcomeKind:
    """Kinds of outcome rows (plain strings in storage, so new kinds need no migration)."""

    FEEDBACK: Final = "feedback"
    """Explicit feedback posted by a client or an evaluator: ``score`` in [0, 1]."""


class RequestShape(Struct, frozen=True, kw_only=True):
    """The request's facts without its content: enough to rebuild a ``RequestFacts``."""

    api: str
    logical_model: str
    stream: bool = False
    message_count: int = 0
    context_tokens: int = 0
    turn_index: int = 0
    has_tools: bool = False
    tool_result_ids: tuple[str, ...] = ()
    """Hashed (``handle_hash``) call ids answered by this request."""
    pending_tool_call_ids: tuple[str, ...] = ()
    """Hashed call ids still unanswered."""
    tool_call_count: int = 0
    provider_state: tuple[tuple[str, str], ...] = ()
    """``(reason, pin)`` of each non-portable provider-state marker."""
    previous_response_id: str | None = None
    """Hashed ``previous_response_id``."""
    response_pin: tuple[str, str] | None = None
    """``(physical, affinity_key)`` the router resolved from the response index."""
    headers: dict[str, str] | None = None
    """Signal headers; only kept with ``capture_prompts`` (they are request content)."""
    last_user_text: str | None = None
    """Only kept with ``capture_prompts``."""

    @property
    def tool_loop_ids(self) -> int:
        """Call ids that tie this request to a tool loop (answered plus pending)."""
        return len(self.tool_result_ids) + len(self.pending_tool_call_ids)


class DecisionRecord(Struct, frozen=True, kw_only=True):
    """The policy's verdict, as routed."""

    name: str
    base: str
    """``model@pool`` the base selector alone chose."""
    proposed: str | None
    """What the session-aware layer chose (differs from ``target`` only in observe mode)."""
    target: str
    """``model@pool`` routed."""
    base_pool: str
    target_pool: str
    mode: str
    action: str
    reason: str
    phase: str
    scope: str
    affinity_key: str
    switched: bool
    trace: dict[str, Any]
    """``DecisionTrace.to_dict()``: every candidate's score terms in utility points."""


class ResponseRecord(Struct, frozen=True, kw_only=True):
    """What the response path learned; merged field by field (later non-null values win)."""

    status: int | None = None
    served_by: str | None = None
    physical: str | None = None
    response_id: str | None = None
    """Hashed provider response id."""
    tool_call_ids: tuple[str, ...] = ()
    """Hashed tool-call ids the model emitted."""
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    cached_tokens: int | None = None
    completion_tokens: int | None = None
    complete: bool | None = None
    at: float | None = None
    """Unix time the response was observed."""

    @property
    def failed(self) -> bool:
        """True for a 5xx/429 answer or a stream that ended without its final event."""
        status = self.status
        return (status is not None and (status >= 500 or status == 429)) or self.complete is False


class Outcome(Struct, frozen=True, kw_only=True):
    """One outcome of a decision: explicit feedback today, other kinds later."""

    key: str
    """Idempotency key: one row per ``(replay_id, key)``."""
    kind: str
    score: float | None = None
    note: str | None = None
    at: float = 0.0


class ReplayRecord(Struct, frozen=True, kw_only=True):
    """Everything Router Replay keeps about one decision."""

    v: int = RECORD_VERSION
    replay_id: str
    time: float
    """Unix time of the decision."""
    session_id: str | None
    """As hashed at ingress (``saar.wire.identity``); never the raw client string."""
    session_source: str
    conversation_id: str | None
    conversation_source: str
    protected_key: str | None
    """The router-memory key (a hash) the decision was made under."""
    request: RequestShape
    decision: DecisionRecord
    latency_ms: float | None = None
    """Time ``policy.decide`` (with its store round trip) took, when the router reports it."""
    response: ResponseRecord | None = None
    outcomes: tuple[Outcome, ...] = ()

    def to_facts(self) -> RequestFacts:
        """Rebuild the ``RequestFacts`` this decision saw (text only with ``capture_prompts``)."""
        req = self.request
        pin = req.response_pin
        headers: Mapping[str, str] = (
            MappingProxyType(dict(req.headers)) if req.headers else MappingProxyType({})
        )
        return RequestFacts(
            request_id=self.replay_id,
            api=Api(req.api),
            logical_model=req.logical_model,
            stream=req.stream,
            session_id=self.session_id,
            session_source=IdentitySource(self.session_source),
            conversation_id=self.conversation_id,
            conversation_source=IdentitySource(self.conversation_source),
            headers=headers,
            last_user_text=req.last_user_text or "",
            context_tokens=req.context_tokens,
            turn_index=req.turn_index,
            message_count=req.message_count,
            has_tools=req.has_tools,
            tool_result_ids=req.tool_result_ids,
            pending_tool_call_ids=req.pending_tool_call_ids,
            tool_call_count=req.tool_call_count,
            provider_state=tuple(ProviderState(r, Pin(p)) for r, p in req.provider_state),
            previous_response_id=req.previous_response_id,
            response_pin=BackendPin(pin[0], pin[1]) if pin is not None else None,
        )

    def to_response_facts(self) -> ResponseFacts | None:
        """The recorded response as ``ResponseFacts`` (hashed handles), if one was recorded."""
        resp = self.response
        if resp is None or resp.status is None:
            return None
        return ResponseFacts(
            request_id=self.replay_id,
            status=resp.status,
            served_by=resp.served_by,
            response_id=resp.response_id,
            tool_call_ids=resp.tool_call_ids,
            finish_reason=resp.finish_reason,
            prompt_tokens=resp.prompt_tokens,
            cached_tokens=resp.cached_tokens,
            completion_tokens=resp.completion_tokens,
            complete=resp.complete if resp.complete is not None else True,
            physical=resp.physical,
        )

    def with_results(
        self, response: ResponseRecord | None, outcomes: tuple[Outcome, ...]
    ) -> ReplayRecord:
        """A copy with the response and outcomes attached (the store joins them on read)."""
        return msgspec.structs.replace(self, response=response, outcomes=outcomes)

    @property
    def feedback_score(self) -> float | None:
        """Mean explicit feedback score, or ``None`` without feedback."""
        scores = [
            o.score for o in self.outcomes if o.kind == OutcomeKind.FEEDBACK and o.score is not None
        ]
        return sum(scores) / len(scores) if scores else None


def build_record(
    decision: Decision,
    facts: RequestFacts,
    *,
    at: float,
    latency_ms: float | None = None,
    capture_prompts: bool = False,
) -> ReplayRecord:
    """Build the record of one decision (runs on the writer thread, not the hot path)."""
    pin = facts.response_pin
    shape = RequestShape(
        api=facts.api.value,
        logical_model=facts.logical_model,
        stream=facts.stream,
        message_count=facts.message_count,
        context_tokens=facts.context_tokens,
        turn_index=facts.turn_index,
        has_tools=facts.has_tools,
        tool_result_ids=tuple(handle_hash(i) for i in facts.tool_result_ids),
        pending_tool_call_ids=tuple(handle_hash(i) for i in facts.pending_tool_call_ids),
        tool_call_count=facts.tool_call_count,
        provider_state=tuple((p.reason, p.pin.value) for p in facts.provider_state),
        previous_response_id=(
            handle_hash(facts.previous_response_id) if facts.previous_response_id else None
        ),
        response_pin=(pin.physical, pin.affinity_key) if pin is not None else None,
        headers=dict(facts.headers) if capture_prompts and facts.headers else None,
        last_user_text=facts.last_user_text if capture_prompts else None,
    )
    target = decision.target
    verdict = DecisionRecord(
        name=decision.decision_name,
        base=decision.base.key,
        proposed=decision.proposed.key if decision.proposed is not None else None,
        target=target.key,
        base_pool=decision.base.pool,
        target_pool=target.pool,
        mode=decision.mode.value,
        action=decision.action.value,
        reason=decision.reason.value,
        phase=decision.phase.value,
        scope=decision.scope.value,
        affinity_key=decision.affinity_key,
        switched=decision.switched,
        trace=dict(decision.trace.to_dict()),
    )
    return ReplayRecord(
        replay_id=decision.replay_id,
        time=at,
        session_id=facts.session_id,
        session_source=facts.session_source.value,
        conversation_id=facts.conversation_id,
        conversation_source=facts.conversation_source.value,
        protected_key=decision.protected_key,
        request=shape,
        decision=verdict,
        latency_ms=latency_ms,
    )


def response_record(response: ResponseFacts, *, at: float) -> ResponseRecord:
    """Turn ``ResponseFacts`` into the stored form (handles hashed)."""
    return ResponseRecord(
        status=response.status,
        served_by=response.served_by,
        physical=response.physical,
        response_id=handle_hash(response.response_id) if response.response_id else None,
        tool_call_ids=tuple(handle_hash(i) for i in response.tool_call_ids),
        finish_reason=response.finish_reason,
        prompt_tokens=response.prompt_tokens,
        cached_tokens=response.cached_tokens,
        completion_tokens=response.completion_tokens,
        complete=response.complete,
        at=at,
    )


_decoder: TypedDecoder[ReplayRecord] = TypedDecoder(ReplayRecord)


def encode_record(record: ReplayRecord) -> bytes:
    """Compact JSON of a record."""
    return dumps(record)


def decode_record(data: bytes) -> ReplayRecord:
    """Inverse of ``encode_record``; raises ``saar.wire.json.JsonError`` on bad input."""
    record = _decoder.decode(data)
    if record.v > RECORD_VERSION:
        msg = f"replay record version {record.v} is newer than this build reads ({RECORD_VERSION})"
        raise ValueError(msg)
    return record
