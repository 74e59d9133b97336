"""Seedable synthetic agent sessions for the policy matrix.

Theory of operation: a session is an agent trajectory, generated turn by turn by a small
Markov process rather than a fixed slot schedule (the published description, made concrete):

* **Segments.** A user turn opens a segment on a *topic* (a routing decision). Its text carries
  the topic's keywords most of the time (``signal_rate``), so decision signals are noisy the way
  real prompts are; the topic may *drift* to another one at any new segment (``drift_rate``).
* **Latent difficulty.** Each segment has a demand in [0, 1] (the quality a turn needs), drawn
  per topic; hard spikes in a non-reasoning topic sometimes say "root cause" or "step by step",
  which the router sees as a reasoning signal.
* **Tool loops.** A turn's answer emits 1-3 parallel tool calls with ``tool_rate``; the client
  then sends their results (``tool_result_ids``) after a short tool run; the loop goes on for a
  geometric number of rounds (``tool_rounds``). Tool outputs grow the context a lot.
* **Provider state.** A share of sessions speak the Responses API (``responses_rate``): a request
  continues the previous response with ``previous_response_id`` (BACKEND-pinned state) with
  ``chain_rate``, else resends its input and starts a new chain.
* **Pauses.** Think time between user turns is seconds to a minute; with ``idle_rate`` the user
  pauses for 0.4-4x the idle timeout (so some pauses cross the boundary and some do not).
* **Short turns.** After an answer, with ``followup_rate`` the user sends "continue", "fix it",
  "run that again"...: no signal, tiny text, the same demand as the segment.
* **Context** starts with a system prompt and tool schemas and grows with every user message,
  answer and tool output (what the backend re-reads).

Ground truth per turn: the ids it answers (``tool_result_ids``) and the response it continues
(``previous_response_id``); a switch is unsafe when the turn is served by a physical model other
than the one that issued those calls or minted that response. The trajectory itself does not
depend on the routing, so every policy is scored on exactly the same turns.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from saar.bench.configs import IDLE_TIMEOUT_S, topic_keywords

__all__ = [
    "WORKLOADS",
    "Session",
    "Turn",
    "Workload",
    "generate_session",
    "generate_sessions",
]


@dataclass(frozen=True, slots=True)
class Workload:
    """The knobs of one workload mix (probabilities per opportunity)."""

    name: str
    topic_weights: Mapping[str, float]
    """Chance of each topic when a session starts or drifts."""
    drift_rate: float
    """Chance that a new segment changes topic."""
    tool_rate: float
    """Chance that an answer to a user turn emits tool calls."""
    tool_rounds: float
    """Mean tool rounds per loop (geometric)."""
    responses_rate: float
    """Share of sessions on the Responses API."""
    chain_rate: float
    """Chance that a Responses request continues the previous response."""
    idle_rate: float
    """Chance of a long pause before a user turn."""
    followup_rate: float
    """Chance that the next user turn is a short follow-up ("continue", "fix it")."""
    hard_rate: float
    """Chance that a segment is a hard one (demand spike, often with a reasoning cue)."""
    signal_rate: float = 0.85
    """Chance that a topic turn's text carries one of the topic's keywords."""


_BASE_TOPICS: Final = {"coding": 0.45, "general": 0.25, "research": 0.2, "reasoning": 0.1}

WORKLOADS: Final[tuple[Workload, ...]] = (
    Workload("balanced", _BASE_TOPICS, 0.15, 0.35, 2.0, 0.25, 0.8, 0.08, 0.3, 0.15),
    Workload("tool-heavy", _BASE_TOPICS, 0.1, 0.7, 3.0, 0.15, 0.8, 0.05, 0.25, 0.15),
    Workload(
        "frontier-heavy",
        {"coding": 0.3, "general": 0.1, "research": 0.1, "reasoning": 0.5},
        0.15,
        0.35,
        2.0,
        0.25,
        0.8,
        0.08,
        0.3,
        0.4,
    ),
    Workload("idle-heavy", _BASE_TOPICS, 0.15, 0.3, 2.0, 0.25, 0.8, 0.35, 0.3, 0.15),
    Workload("provider-state-heavy", _BASE_TOPICS, 0.15, 0.35, 2.0, 0.8, 0.85, 0.08, 0.3, 0.15),
    Workload("drift-heavy", _BASE_TOPICS, 0.5, 0.3, 2.0, 0.25, 0.8, 0.08, 0.2, 0.2),
)

# Demand ranges (uniform) per topic, and for hard segments.
_DEMAND: Final = {
    "general": (0.40, 0.62),
    "research": (0.45, 0.68),
    "coding": (0.55, 0.80),
    "reasoning": (0.75, 0.95),
}
_HARD_DEMAND: Final = (0.85, 0.97)

_FILLER: Final = (
    "please look at the module we discussed",
    "here is what the user asked for",
    "the service returns an error on startup",
    "we need this before the release",
    "take the notes below into account",
    "the data set has a few odd rows",
)
_FOLLOWUPS: Final = (
    "continue",
    "fix it",
    "run that again",
    "use the previous result",
    "ok, go on",
    "try again",
    "and the other one?",
)
_REASONING_CUES: Final = ("find the root cause", "think step by step", "derive it carefully")


@dataclass(frozen=True, slots=True)
class Turn:
    """One request of a session, with its ground truth."""

    index: int
    at: float
    """Request time in seconds from the session start."""
    kind: str
    """``user`` (a new segment), ``followup`` (short turn) or ``tool_result``."""
    topic: str
    """The true topic (the decision an oracle would match)."""
    text: str
    """The request's last user message text: a Chat tool-result turn repeats the message
    that started the loop; a Responses continuation carrying only tool outputs has none."""
    demand: float
    """Quality this turn needs."""
    prompt_tokens: int
    """Tokens the backend prefills: the whole conversation so far."""
    request_tokens: int
    """Tokens the router sees in the request body (less than ``prompt_tokens`` when the
    request continues a stored response)."""
    completion_tokens: int
    api: str
    """``chat`` or ``responses``."""
    tool_result_ids: tuple[str, ...] = ()
    emits_tool_calls: tuple[str, ...] = ()
    """Call ids the answer to this turn emits (the next turn answers them)."""
    previous_response_id: str | None = None
    response_id: str | None = None
    """The id the answer mints (Responses API only)."""
    idle_before: float = 0.0
    """Seconds since the previous answer."""


@dataclass(frozen=True, slots=True)
class Session:
    """A generated session."""

    workload: str
    seed: int
    number: int
    session_id: str
    turns: tuple[Turn, ...]


def _pick(rng: random.Random, weights: Mapping[str, float]) -> str:
    names = list(weights)
    return rng.choices(names, weights=[weights[n] for n in names], k=1)[0]


def _topic_text(
    rng: random.Random, topic: str, signal_rate: float, keywords: Mapping[str, tuple[str, ...]]
) -> str:
    filler = rng.choice(_FILLER)
    words = keywords.get(topic)
    if words and rng.random() < signal_rate:
        return f"{rng.choice(words)}: {filler}"
    return filler


def generate_session(workload: Workload, seed: int, number: int, turns: int) -> Session:
    """Generate one session of exactly ``turns`` requests, reproducibly from its coordinates."""
    rng = random.Random(f"{workload.name}/{seed}/{number}")
    keywords = topic_keywords()
    sid = f"{workload.name}-s{seed}-n{number}"
    api = "responses" if rng.random() < workload.responses_rate else "chat"
    context = rng.randint(1_500, 6_000)  # system prompt + tool schemas
    clock = 0.0
    topic = _pick(rng, workload.topic_weights)
    demand = rng.uniform(*_DEMAND[topic])
    out: list[Turn] = []
    pending_calls: tuple[str, ...] = ()
    rounds_left = 0
    last_response: str | None = None
    calls = 0
    segment_text = ""
    for index in range(turns):
        idle_before = 0.0
        previous: str | None = None
        if pending_calls:
            kind = "tool_result"
            # A Chat request still carries the last user message (its keywords are visible to
            # the router); a Responses continuation sends only the tool outputs.
            text = segment_text if api == "chat" else ""
            results = pending_calls
            idle_before = rng.uniform(0.5, 8.0)  # the tool runs
            context += sum(rng.randint(200, 6_000) for _ in results)
            added = 0
        else:
            results = ()
            if index > 0 and rng.random() < workload.idle_rate:
                idle_before = rng.uniform(0.4, 4.0) * IDLE_TIMEOUT_S
            else:
                idle_before = rng.lognormvariate(2.3, 0.8)  # median ~10 s of thinking
            if index > 0 and rng.random() < workload.followup_rate:
                kind = "followup"
                text = rng.choice(_FOLLOWUPS)
                added = rng.randint(3, 12)
            else:
                kind = "user"
                if index > 0 and rng.random() < workload.drift_rate:
                    topic = _pick(
                        rng,
                        {t: w for t, w in workload.topic_weights.items() if t != topic}
                        or workload.topic_weights,
                    )
                if rng.random() < workload.hard_rate:
                    demand = rng.uniform(*_HARD_DEMAND)
                    text = _topic_text(rng, topic, workload.signal_rate, keywords)
                    if topic != "reasoning" and rng.random() < 0.5:
                        text = f"{text}; {rng.choice(_REASONING_CUES)}"
                else:
                    demand = rng.uniform(*_DEMAND[topic])
                    text = _topic_text(rng, topic, workload.signal_rate, keywords)
                added = rng.randint(20, 400)
            segment_text = text
            context += added
        clock += idle_before
        # Provider state: a Responses request continues its chain, or restarts it.
        if api == "responses" and last_response is not None:
            chain = workload.chain_rate if idle_before < IDLE_TIMEOUT_S else workload.chain_rate / 2
            # Tool results are always sent as a continuation: the call lives in the stored response.
            if kind == "tool_result" or rng.random() < chain:
                previous = last_response
        request_tokens = context
        if previous is not None:
            request_tokens = max(1, added + (sum(200 for _ in results) if results else 0))
        # The answer: tool calls (a loop starts or goes on) or text.
        emits: tuple[str, ...] = ()
        if kind == "tool_result":
            rounds_left -= 1
            if rounds_left > 0:
                emits = _calls(rng, sid, calls)
        elif rng.random() < workload.tool_rate:
            rounds_left = 1 + _geometric(rng, workload.tool_rounds)
            emits = _calls(rng, sid, calls)
        calls += len(emits)
        completion = rng.randint(30, 150) if emits else rng.randint(120, 900)
        response_id = f"resp-{sid}-{index}" if api == "responses" else None
        out.append(
            Turn(
                index=index,
                at=clock,
                kind=kind,
                topic=topic,
                text=text,
                demand=demand,
                prompt_tokens=context,
                request_tokens=request_tokens,
                completion_tokens=completion,
                api=api,
                tool_result_ids=results,
                emits_tool_calls=emits,
                previous_response_id=previous,
                response_id=response_id,
                idle_before=idle_before,
            )
        )
        # Decode time of the answer, then its tokens join the context.
        clock += 0.5 + completion * 0.02
        context += completion
        pending_calls = emits
        last_response = response_id if response_id is not None else last_response
    return Session(workload.name, seed, number, sid, tuple(out))


def _geometric(rng: random.Random, mean: float) -> int:
    """Extra rounds beyond the first: geometric with the given mean total rounds."""
    p = 1.0 / max(1.0, mean)
    extra = 0
    while rng.random() > p and extra < 12:
        extra += 1
    return extra


def _calls(rng: random.Random, sid: str, start: int) -> tuple[str, ...]:
    count = rng.choices((1, 2, 3), weights=(0.6, 0.3, 0.1), k=1)[0]
    return tuple(f"call-{sid}-{start + k}" for k in range(count))


def generate_sessions(workload: Workload, seeds: int, sessions: int, turns: int) -> list[Session]:
    """Every session of one workload: ``seeds`` x ``sessions``, each of ``turns`` requests."""
    return [
        generate_session(workload, seed, number, turns)
        for seed in range(seeds)
        for number in range(sessions)
    ]
