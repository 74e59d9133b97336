"""The policy matrix: the pure policy over seeded agent sessions, against baselines and ablations.

Theory of operation: ``workloads`` generates every session once; each policy is then played over
exactly the same turns. Saar and its ablations call the real ``policy.decide`` and
``policy.apply_response`` with a simulated response (tool calls, response ids, usage); the two
baselines route without memory (single-turn: the base selector on every request) or never
move (sticky: the first choice forever).

Costs come from one **shared prefix-cache model** that every policy pays by: per session and
physical model, the last served prompt plus its answer is resident for ``CACHE_TTL_S`` seconds;
a request hits the resident part of its prompt on that physical model only (a switch loses it,
a long pause evicts it). Cached tokens are priced at the cached-prompt price. The published
SAAR evaluation priced its single-turn baseline without any cache; ``cost_reduction_upstream``
reproduces that convention (baseline at full prompt price, the policy with the cache model), and
``cost_reduction`` compares like with like. Both are reported.

Quality of a served turn is the physical model's quality on the turn's *true* topic (the
decision-local quality of the topic's refs, else the model's). ``quality_delta`` = mean served
quality minus the quality of what the base selector alone chose for that turn (the single-turn
policy). ``demand_quality`` penalises serving a hard turn on a weak tier:
``quality - 2 * max(0, demand - quality)``; ``underserved`` is the share of turns whose
served quality is below the turn's latent demand.

A switch is a served physical model different from the previous turn's. It is *unsafe* when
the turn answers tool calls issued by, or continues a response minted by, another physical model
(ground truth from the generator, not from the policy's own view).

Every policy, ablation and reference row is run once per *world* (``configs.WORLDS``): the same
sessions under two valuations of the hybrid base selector, each with its own single-turn
baseline and its own target verdicts.
"""

from __future__ import annotations

import copy
import json
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from saar.bench.configs import PRIMARY_WORLD, WORLDS, matrix_policy, world_config
from saar.bench.plots import write_matrix_plots
from saar.bench.workloads import WORKLOADS, Session, Turn, Workload, generate_sessions
from saar.policy import (
    Api,
    BackendPin,
    IdentitySource,
    Pin,
    PolicyConfig,
    ProviderState,
    RequestFacts,
    ResponseFacts,
    SessionState,
    apply_response,
    decide,
    index_entries,
)

__all__ = [
    "CACHE_TTL_S",
    "PUBLISHED",
    "MatrixOptions",
    "PolicyTotals",
    "main_matrix",
    "run_matrix",
    "run_world",
]

CACHE_TTL_S: Final = 600.0
"""How long a session's prefix stays resident on a physical model after its last use."""

PUBLISHED: Final = {
    "single-turn": {"switches": 9709, "unsafe": 3836, "cost_reduction": 0.0, "quality_delta": 0.0},
    "sticky": {"switches": 340, "unsafe": 0, "cost_reduction": 0.9865, "quality_delta": -0.1433},
    "saar": {"switches": 2011, "unsafe": 0, "cost_reduction": 0.7871, "quality_delta": -0.0453},
    "no-tool-lock": {"unsafe": 760, "cost_reduction": 0.6005, "switch_reduction": 0.7496},
    "no-provider-lock": {"unsafe": 200, "cost_reduction": 0.6982, "switch_reduction": 0.7798},
    "no-drift-reset": {"unsafe": 0, "cost_reduction": 0.8131, "switch_reduction": 0.8314},
    "no-idle-boundary": {"unsafe": 0, "cost_reduction": 0.8014, "switch_reduction": 0.8398},
    "no-prefix-cache-pricing": {"unsafe": 0, "cost_reduction": 0.5475, "switch_reduction": 0.7396},
}
"""The published SAAR rows (blog, "Result 1" and "Result 3"); "no frontier cost" is our
``no-prefix-cache-pricing``."""

_PER_TOKEN: Final = 1e-6


@dataclass(frozen=True)
class MatrixOptions:
    """Size of the matrix."""

    seeds: int = 5
    sessions: int = 40
    turns: int = 18
    workloads: tuple[Workload, ...] = WORKLOADS

    @classmethod
    def small(cls) -> MatrixOptions:
        """A CI-sized matrix: every workload, 1 seed, 6 sessions of 12 turns."""
        return cls(seeds=1, sessions=6, turns=12)


@dataclass
class PolicyTotals:
    """Counters of one policy on one workload (or all of them)."""

    turns: int = 0
    switches: int = 0
    unsafe_tool: int = 0
    unsafe_provider: int = 0
    cost: float = 0.0
    """With the shared prefix-cache model."""
    cost_uncached: float = 0.0
    """Every prompt token at full price (the published baseline convention)."""
    cached_tokens: int = 0
    prompt_tokens: int = 0
    quality: float = 0.0
    base_quality: float = 0.0
    demand_quality: float = 0.0
    underserved: int = 0
    tier_turns: dict[str, int] = field(default_factory=dict)

    @property
    def unsafe(self) -> int:
        """Unsafe switches of both kinds."""
        return self.unsafe_tool + self.unsafe_provider

    def add(self, other: PolicyTotals) -> None:
        """Accumulate ``other`` into this one."""
        for name in (
            "turns",
            "switches",
            "unsafe_tool",
            "unsafe_provider",
            "cost",
            "cost_uncached",
            "cached_tokens",
            "prompt_tokens",
            "quality",
            "base_quality",
            "demand_quality",
            "underserved",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for tier, count in other.tier_turns.items():
            self.tier_turns[tier] = self.tier_turns.get(tier, 0) + count


# --- policies -------------------------------------------------------------------------------

Router = Callable[[RequestFacts, float], str]
"""Routes one request at a time for one session; returns ``model@pool``."""


@dataclass(frozen=True)
class PolicySpec:
    """A policy of the matrix: a name and how it routes."""

    name: str
    kind: str
    """``single``, ``sticky`` or ``saar``."""
    config: PolicyConfig


def _knob_variant(config_raw: dict[str, Any], **knobs: Any) -> PolicyConfig:
    raw = copy.deepcopy(config_raw)
    for decision in raw["routing"]["decisions"]:
        decision["algorithm"]["session_aware"].update(knobs)
    return matrix_policy(raw)


def policies(raw: dict[str, Any] | None = None) -> list[PolicySpec]:
    """Single-turn, sticky, saar and its ablations, on ``raw`` (default: the primary world)."""
    raw = world_config(PRIMARY_WORLD) if raw is None else raw
    base = matrix_policy(copy.deepcopy(raw))
    return [
        PolicySpec("single-turn", "single", base),
        PolicySpec("sticky", "sticky", base),
        PolicySpec("saar", "saar", base),
        PolicySpec("no-tool-lock", "saar", _knob_variant(raw, tool_loop_hard_lock=False)),
        PolicySpec(
            "no-provider-lock", "saar", _knob_variant(raw, context_portability_hard_lock=False)
        ),
        PolicySpec("no-drift-reset", "saar", _knob_variant(raw, decision_drift_reset=False)),
        # idle_timeout_seconds 0 disables the idle boundary (engine: timeout > 0 is required).
        PolicySpec("no-idle-boundary", "saar", _knob_variant(raw, idle_timeout_seconds=0.0)),
        PolicySpec("no-prefix-cache-pricing", "saar", _knob_variant(raw, prefix_cache_weight=0.0)),
        # Operator lever: short unsignalled follow-ups fall to the default decision.
        PolicySpec("no-follow-up-carry-over", "saar", _knob_variant(raw, follow_up_max_words=0)),
    ]


# --- the shared world model -----------------------------------------------------------------


def _facts(session: Session, turn: Turn, pin: BackendPin | None) -> RequestFacts:
    provider = (
        (ProviderState("previous_response_id", Pin.BACKEND),)
        if turn.previous_response_id is not None
        else ()
    )
    return RequestFacts(
        request_id=f"{session.session_id}-{turn.index}",
        api=Api.RESPONSES if turn.api == "responses" else Api.CHAT,
        logical_model="auto",
        session_id=session.session_id,
        session_source=IdentitySource.HEADER,
        conversation_id=session.session_id,
        conversation_source=IdentitySource.HEADER,
        last_user_text=turn.text,
        context_tokens=turn.request_tokens,
        turn_index=turn.index,
        message_count=2 * turn.index + 2,
        has_tools=True,
        tool_result_ids=turn.tool_result_ids,
        provider_state=provider,
        previous_response_id=turn.previous_response_id,
        response_pin=pin,
    )


class _Cache:
    """The shared prefix-cache model of one session: resident prefix per physical model."""

    def __init__(self) -> None:
        self.resident: dict[str, tuple[int, float]] = {}

    def hit(self, physical: str, prompt: int, now: float) -> int:
        found = self.resident.get(physical)
        if found is None or now - found[1] > CACHE_TTL_S:
            return 0
        return min(prompt, found[0])

    def store(self, physical: str, tokens: int, now: float) -> None:
        self.resident[physical] = (tokens, now)


def _quality_table(config: PolicyConfig) -> dict[str, dict[str, float]]:
    table: dict[str, dict[str, float]] = {}
    for spec in config.decisions:
        row = {key: pm.quality for key, pm in config.physical_models.items()}
        for ref in spec.model_refs:
            if ref.quality is not None:
                row[ref.physical] = ref.quality
        table[spec.name] = row
    return table


def _turn_cost(config: PolicyConfig, physical: str, turn: Turn, cached: int) -> float:
    pricing = config.physical_models[physical].pricing
    return (
        (turn.prompt_tokens - cached) * pricing.prompt_per_1m
        + cached * pricing.cached_prompt_per_1m
        + turn.completion_tokens * pricing.completion_per_1m
    ) * _PER_TOKEN


def _base_choices(session: Session, config: PolicyConfig) -> list[str]:
    """The base selector's choice for every turn: a memoryless router (single-turn)."""
    out = []
    for turn in session.turns:
        decision, _ = decide(None, _facts(session, turn, None), config, turn.at)
        out.append(decision.target.key)
    return out


def _play(
    spec: PolicySpec,
    session: Session,
    base: Sequence[str],
    quality: dict[str, dict[str, float]],
    path: Sequence[str] | None = None,
) -> PolicyTotals:
    """Play one session under one policy (or along a fixed ``path``); return its counters."""
    config = spec.config
    totals = PolicyTotals()
    cache = _Cache()
    state: SessionState | None = None
    index: dict[str, BackendPin] = {}
    call_owner: dict[str, str] = {}
    response_owner: dict[str, str] = {}
    previous: str | None = None
    sticky: str | None = None
    for i, (turn, base_key) in enumerate(zip(session.turns, base, strict=True)):
        now = turn.at
        if path is not None:
            target = path[i]
            decision = None
        elif spec.kind == "single":
            target = base_key
            decision = None
        elif spec.kind == "sticky":
            sticky = sticky or base_key
            target = sticky
            decision = None
        else:
            pin = index.get(turn.previous_response_id) if turn.previous_response_id else None
            decision, state = decide(state, _facts(session, turn, pin), config, now)
            target = decision.target.key
        cached = cache.hit(target, turn.prompt_tokens, now)
        done = now + 0.5 + turn.completion_tokens * 0.02
        if decision is not None:
            response = ResponseFacts(
                request_id=decision.replay_id,
                status=200,
                response_id=turn.response_id,
                tool_call_ids=turn.emits_tool_calls,
                prompt_tokens=turn.prompt_tokens,
                cached_tokens=cached,
                completion_tokens=turn.completion_tokens,
                physical=target,
            )
            state = apply_response(state, response, config, done)
            for key, entry in index_entries(decision, response):
                # The router's response index is keyed by a hash; the matrix keys by raw id.
                del key
                if turn.response_id is not None:
                    index[turn.response_id] = entry
        cache.store(target, turn.prompt_tokens + turn.completion_tokens, done)
        # Ground truth.
        owners = {call_owner[c] for c in turn.tool_result_ids if c in call_owner}
        if any(owner != target for owner in owners):
            totals.unsafe_tool += 1
        elif turn.previous_response_id is not None:
            minted = response_owner.get(turn.previous_response_id)
            if minted is not None and minted != target:
                totals.unsafe_provider += 1
        for call in turn.emits_tool_calls:
            call_owner[call] = target
        if turn.response_id is not None:
            response_owner[turn.response_id] = target
        if previous is not None and previous != target:
            totals.switches += 1
        previous = target
        q = quality[turn.topic][target]
        totals.turns += 1
        totals.cost += _turn_cost(config, target, turn, cached)
        totals.cost_uncached += _turn_cost(config, target, turn, 0)
        totals.cached_tokens += cached
        totals.prompt_tokens += turn.prompt_tokens
        totals.quality += q
        totals.base_quality += quality[turn.topic][base_key]
        shortfall = max(0.0, turn.demand - q)
        totals.demand_quality += q - 2.0 * shortfall
        totals.underserved += int(q < turn.demand)
        tier = config.physical_models[target].model
        totals.tier_turns[tier] = totals.tier_turns.get(tier, 0) + 1
    return totals


# --- reference points: what is reachable on this generator at all ---------------------------
#
# Not policies saar could ship: they read the generator's ground truth (each turn's true topic,
# latent demand and the quality table). They bound the cost/quality plane: how cheap can a
# lock-respecting router be at a given quality here? Every path is scored by ``_play`` exactly
# like the policies (the same cache model, switches and unsafe checks).


def _locked(turn: Turn) -> bool:
    """Whether the turn must be served by the previous turn's model (tool results, chains).

    In the generator a tool result answers the previous answer's calls and a
    ``previous_response_id`` names the previous response, so both owners are the previous turn.
    """
    return bool(turn.tool_result_ids) or turn.previous_response_id is not None


def _oracle_path(
    session: Session,
    config: PolicyConfig,
    quality: dict[str, dict[str, float]],
    *,
    per_quality: float,
    per_shortfall: float,
) -> list[str]:
    """The lock-respecting path minimising ``cost - per_quality * q + per_shortfall * shortfall``.

    Dynamic programme over the served model of the previous turn; an unlocked turn may use any
    model ref of its *true* topic's decision, a locked turn only the previous turn's model.
    The cost used here keeps a cache hit only on the model that served the previous turn (an
    upper bound of the real cost model, which may also find an older prefix on a model
    visited before); the path is then scored exactly by ``_play``.
    """
    refs = {spec.name: [r.physical for r in spec.model_refs] for spec in config.decisions}
    best: dict[str, tuple[float, tuple[str, ...]]] = {}
    prev: Turn | None = None
    for turn in session.turns:
        row = quality[turn.topic]
        options = refs[turn.topic]
        nxt: dict[str, tuple[float, tuple[str, ...]]] = {}

        def gain(key: str, turn: Turn = turn, row: dict[str, float] = row) -> float:
            q = row[key]
            return per_quality * q - per_shortfall * max(0.0, turn.demand - q)

        if prev is None:
            for key in options:
                nxt[key] = (_turn_cost(config, key, turn, 0) - gain(key), (key,))
        else:
            done = prev.at + 0.5 + prev.completion_tokens * 0.02
            resident = prev.prompt_tokens + prev.completion_tokens
            warm = turn.at - done <= CACHE_TTL_S
            for key in {*options, *best} if _locked(turn) else options:
                for before, (score, path) in best.items():
                    if _locked(turn) and before != key:
                        continue
                    cached = min(turn.prompt_tokens, resident) if warm and before == key else 0
                    total = score + _turn_cost(config, key, turn, cached) - gain(key)
                    if key not in nxt or total < nxt[key][0]:
                        nxt[key] = (total, (*path, key))
        best = nxt
        prev = turn
    return list(min(best.values())[1])


def _quality_of(
    paths: Sequence[Sequence[str]],
    sessions: Sequence[Session],
    quality: dict[str, dict[str, float]],
) -> float:
    total = turns = 0.0
    for path, session in zip(paths, sessions, strict=True):
        for key, turn in zip(path, session.turns, strict=True):
            total += quality[turn.topic][key]
            turns += 1
    return total / max(1.0, turns)


def _frontier_paths(
    sessions: Sequence[Session],
    config: PolicyConfig,
    quality: dict[str, dict[str, float]],
    floor: float,
) -> list[list[str]]:
    """The cheapest lock-respecting paths whose mean served quality is at least ``floor``.

    Lagrangian search: bisect the price of a quality point (currency per point, log scale);
    mean quality does not fall as that price rises.
    """
    lo, hi = 1e-5, 10.0
    best = [_oracle_path(s, config, quality, per_quality=hi, per_shortfall=0.0) for s in sessions]
    for _ in range(18):
        mid = (lo * hi) ** 0.5
        paths = [
            _oracle_path(s, config, quality, per_quality=mid, per_shortfall=0.0) for s in sessions
        ]
        if _quality_of(paths, sessions, quality) >= floor:
            hi, best = mid, paths
        else:
            lo = mid
    return best


def _references(
    *,
    sessions: Sequence[Session],
    bases: Sequence[Sequence[str]],
    config: PolicyConfig,
    quality: dict[str, dict[str, float]],
    single: PolicyTotals,
    saar_quality: float,
) -> dict[str, dict[str, Any]]:
    """Reference rows (ground-truth oracles and the cheapest safe router); see above."""
    spec = PolicySpec("reference", "path", config)
    base_quality = _quality_of(bases, sessions, quality)
    target = base_quality + float(PUBLISHED["saar"]["quality_delta"]) + 1e-4
    cheapest = min(config.physical_models.values(), key=lambda p: p.pricing.prompt_per_1m).key
    paths: dict[str, list[list[str]]] = {
        "oracle: meets demand": [
            _oracle_path(s, config, quality, per_quality=0.0, per_shortfall=1e3) for s in sessions
        ],
        "oracle: cheapest at saar's quality": _frontier_paths(
            sessions, config, quality, saar_quality
        ),
        "oracle: cheapest at published quality": _frontier_paths(sessions, config, quality, target),
        "cheapest safe: all small": [[cheapest] * len(s.turns) for s in sessions],
    }
    out = {}
    for name, chosen in paths.items():
        total = PolicyTotals()
        for session, base, path in zip(sessions, bases, chosen, strict=True):
            total.add(_play(spec, session, base, quality, path))
        out[name] = _row(total, single)
    return out


# --- running and reporting ------------------------------------------------------------------


def run_matrix(options: MatrixOptions, worlds: Sequence[str] = tuple(WORLDS)) -> dict[str, Any]:
    """Run every world of the matrix; return the result document (JSON-ready)."""
    started = time.perf_counter()
    results = {world: run_world(options, world) for world in worlds}
    return {
        "benchmark": "policy-matrix",
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": _machine(),
        "options": {
            "seeds": options.seeds,
            "sessions": options.sessions,
            "turns": options.turns,
            "workloads": [asdict(w) for w in options.workloads],
            "total_turns": options.seeds
            * options.sessions
            * options.turns
            * len(options.workloads),
            "cache_ttl_s": CACHE_TTL_S,
        },
        "published": PUBLISHED,
        "worlds": results,
        "cross_world": _cross_world(results),
        "seconds": {"total": round(time.perf_counter() - started, 2)},
    }


def _cross_world(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each other world's single-turn and saar against the *primary* world's single-turn.

    Not a verdict (policy and baseline then value cost differently); the other world's
    single-turn row shows how much of such a gap the weights alone make.
    """
    if PRIMARY_WORLD not in results:
        return {}
    base = results[PRIMARY_WORLD]["policies"]["single-turn"]
    out: dict[str, dict[str, Any]] = {}
    for name, world in results.items():
        if name == PRIMARY_WORLD:
            continue
        for policy in ("single-turn", "saar"):
            row = world["policies"][policy]
            out[f"{name} {policy}"] = {
                "switches": row["switches"],
                "unsafe_switches": row["unsafe_switches"],
                "cost_reduction": _reduction(row["cost"], base["cost"]),
                "cost_reduction_upstream": _reduction(row["cost"], base["cost_uncached"]),
                "quality_delta": round(row["mean_quality"] - base["mean_quality"], 4),
            }
    return out


def run_world(options: MatrixOptions, world: str) -> dict[str, Any]:
    """Run every policy over every workload in one world; return its part of the document."""
    raw = world_config(world)
    specs = policies(raw)
    quality = _quality_table(specs[0].config)
    per: dict[str, dict[str, PolicyTotals]] = {s.name: {} for s in specs}
    timing: dict[str, float] = {s.name: 0.0 for s in specs}
    started = time.perf_counter()
    everything: list[Session] = []
    bases: list[list[str]] = []
    for workload in options.workloads:
        sessions = generate_sessions(workload, options.seeds, options.sessions, options.turns)
        for session in sessions:
            base = _base_choices(session, specs[0].config)
            everything.append(session)
            bases.append(base)
            for spec in specs:
                t0 = time.perf_counter()
                totals = _play(spec, session, base, quality)
                timing[spec.name] += time.perf_counter() - t0
                per[spec.name].setdefault(workload.name, PolicyTotals()).add(totals)
    overall = {}
    for name, by_workload in per.items():
        total = PolicyTotals()
        for totals in by_workload.values():
            total.add(totals)
        overall[name] = total
    single = overall["single-turn"]
    rows = {name: _row(total, single) for name, total in overall.items()}
    t0 = time.perf_counter()
    saar_quality = overall["saar"].quality / max(1, overall["saar"].turns)
    references = _references(
        sessions=everything,
        bases=bases,
        config=specs[0].config,
        quality=quality,
        single=single,
        saar_quality=saar_quality,
    )
    timing["references"] = time.perf_counter() - t0
    elapsed = time.perf_counter() - started
    workloads = {
        w.name: {name: _row(per[name][w.name], per["single-turn"][w.name]) for name in per}
        for w in options.workloads
    }
    return {
        "world": world,
        "description": WORLDS[world],
        "config": raw,
        "policies": rows,
        "references": references,
        "workloads": workloads,
        "target": _target(rows["saar"], options),
        "seconds": {"total": round(elapsed, 2), **{k: round(v, 2) for k, v in timing.items()}},
    }


def _row(total: PolicyTotals, single: PolicyTotals) -> dict[str, Any]:
    turns = max(1, total.turns)
    return {
        "turns": total.turns,
        "switches": total.switches,
        "switch_reduction": _reduction(total.switches, single.switches),
        "unsafe_switches": total.unsafe,
        "unsafe_tool_loop": total.unsafe_tool,
        "unsafe_provider_state": total.unsafe_provider,
        "cost": round(total.cost, 4),
        "cost_uncached": round(total.cost_uncached, 4),
        "cost_reduction": _reduction(total.cost, single.cost),
        "cost_reduction_upstream": _reduction(total.cost, single.cost_uncached),
        "cache_hit_rate": round(total.cached_tokens / max(1, total.prompt_tokens), 4),
        "mean_quality": round(total.quality / turns, 4),
        "quality_delta": round((total.quality - total.base_quality) / turns, 4),
        "demand_quality": round(total.demand_quality / turns, 4),
        "underserved_rate": round(total.underserved / turns, 4),
        "tier_share": {k: round(v / turns, 4) for k, v in sorted(total.tier_turns.items())},
    }


def _reduction(value: float, baseline: float) -> float:
    return round(1.0 - value / baseline, 4) if baseline > 0 else 0.0


def _target(saar: dict[str, Any], options: MatrixOptions) -> dict[str, Any]:
    published = PUBLISHED["saar"]
    full = options.seeds * options.sessions * options.turns * len(options.workloads) == 21_600
    checks = {
        "zero_unsafe": saar["unsafe_switches"] == 0,
        "switches_at_most_published": saar["switches"] <= published["switches"],
        "quality_above_published": saar["quality_delta"] > published["quality_delta"],
        "cost_reduction_above_published_upstream_convention": saar["cost_reduction_upstream"]
        > published["cost_reduction"],
        "cost_reduction_above_published_shared_cache": saar["cost_reduction"]
        > published["cost_reduction"],
    }
    return {
        "comparable_size": full,
        "checks": checks,
        "pareto_better_upstream_convention": all(
            v for k, v in checks.items() if k != "cost_reduction_above_published_shared_cache"
        ),
        "pareto_better_shared_cache": all(
            v
            for k, v in checks.items()
            if k != "cost_reduction_above_published_upstream_convention"
        ),
    }


def _machine() -> str:
    cpus = len(_cpus())
    return (
        f"{platform.system()} {platform.machine()}, {cpus} CPUs, Python {platform.python_version()}"
    )


def _cpus() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ["?"]
    return [line for line in text.splitlines() if line.startswith("processor")]


def _pct(value: float) -> str:
    return f"{100.0 * value:.2f}%"


def markdown(doc: dict[str, Any]) -> str:
    """The matrix result as Markdown: a summary, then one section per world (equal format)."""
    opts = doc["options"]
    worlds: dict[str, dict[str, Any]] = doc["worlds"]
    published = doc["published"]["saar"]
    lines = [
        "# Policy matrix",
        "",
        f"{doc['date']} · {doc['machine']} · {len(opts['workloads'])} workloads x "
        f"{opts['seeds']} seeds x {opts['sessions']} sessions x {opts['turns']} turns = "
        f"{opts['total_turns']:,} turns per world · prefix cache TTL {opts['cache_ttl_s']:.0f} s",
        "",
        f"{len(worlds)} worlds: the same sessions, portfolio, decisions and knobs; only the hybrid "
        "base selector's weights differ, and with them the single-turn baseline. The published "
        "evaluation does not state its base selector's weights, and whether a router meets the "
        "published cost target depends on how the operator weights cost against quality, so "
        "every world is reported in full:",
        "",
    ]
    lines += [f"- **{name}**: {world['description']}." for name, world in worlds.items()]
    lines += [
        "",
        "Cost reduction is against single-turn in the same world. *shared cache*: every policy, "
        "single-turn included, pays by the same prefix-cache model. *upstream conv.*: "
        "single-turn priced without any cache, as the published evaluation did. Quality delta = "
        "mean served quality - the base selector's; demand quality = quality - 2 x shortfall "
        "below the turn's latent demand.",
        "",
        "## Summary: saar vs the published Full SAAR row, per world",
        "",
        "| World | Switches | Unsafe | Cost red. (shared cache) | Cost red. (upstream conv.) | "
        "Quality delta | Pareto-better (upstream conv.) | Pareto-better (shared cache) |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for name, world in worlds.items():
        saar, target = world["policies"]["saar"], world["target"]
        lines.append(
            f"| {name} | {saar['switches']:,} | {saar['unsafe_switches']:,} | "
            f"{_pct(saar['cost_reduction'])} | {_pct(saar['cost_reduction_upstream'])} | "
            f"{saar['quality_delta']:+.4f} | "
            f"{_yes_no(target['pareto_better_upstream_convention'])} | "
            f"{_yes_no(target['pareto_better_shared_cache'])} |"
        )
    lines += [
        f"| *published Full SAAR* | *{published['switches']:,}* | *{published['unsafe']}* | | "
        f"*{_pct(published['cost_reduction'])}* | *{published['quality_delta']:+.4f}* | | |",
        "",
        "Published rows (blog, 21,600 turns):",
        "",
        "| Policy | Switches | Switch red. | Unsafe | Cost red. | Quality delta |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, row in doc["published"].items():
        switches = f"{row['switches']:,}" if "switches" in row else "-"
        red = _pct(row["switch_reduction"]) if "switch_reduction" in row else "-"
        qd = f"{row['quality_delta']:+.4f}" if "quality_delta" in row else "-"
        lines.append(
            f"| {name} | {switches} | {red} | {row['unsafe']:,} | "
            f"{_pct(row['cost_reduction'])} | {qd} |"
        )
    cross = doc.get("cross_world", {})
    if cross:
        lines += [
            "",
            f"Cross-world, **not a verdict**: rows of another world against the {PRIMARY_WORLD} "
            "world's single-turn (its cost and its base selector's quality). Policy and baseline "
            "then value cost differently; each world's single-turn row shows how much of the gap "
            "the weights alone make, without saar.",
            "",
            f"| Row | Switches | Unsafe | Cost red. vs {PRIMARY_WORLD} single-turn (shared / "
            f"upstream conv.) | Quality delta vs {PRIMARY_WORLD} base selector |",
            "|---|---:|---:|---:|---:|",
        ]
        for name, row in cross.items():
            lines.append(
                f"| {name} | {row['switches']:,} | {row['unsafe_switches']:,} | "
                f"{_pct(row['cost_reduction'])} / {_pct(row['cost_reduction_upstream'])} | "
                f"{row['quality_delta']:+.4f} |"
            )
    lines += [
        "",
        "Reference rows are not routers: they read the generator's ground truth (true topic, "
        "latent demand, the quality table) and bound what any lock-respecting router can reach "
        "here. *meets demand*: the cheapest model of the true topic's refs that meets each "
        "turn's latent demand; *cheapest at X quality*: the cheapest lock-respecting routes "
        "whose mean served quality equals X (Lagrangian over the quality table); *all small*: "
        "every turn on the cheapest model (no switch, so no lock can break).",
        "",
    ]
    for name, world in worlds.items():
        lines += _world_markdown(name, world)
    return "\n".join(lines)


def _world_markdown(name: str, world: dict[str, Any]) -> list[str]:
    lines = [
        f"## World: {name}",
        "",
        f"{world['description'][:1].upper()}{world['description'][1:]}.",
        "",
        "| Policy | Switches | Switch red. | Unsafe (tool / provider) | Cost red. (shared cache)"
        " | Cost red. (upstream conv.) | Quality delta | Demand quality | Under-served | "
        "Cache hit |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for policy, row in world["policies"].items():
        lines.append(_table_row(policy, row))
    for ref, row in world.get("references", {}).items():
        lines.append(_table_row(f"*reference — {ref}*", row))
    target = world["target"]
    lines += ["", f"Target ({name}: saar vs the published Full SAAR row):", ""]
    for check, ok in target["checks"].items():
        lines.append(f"- {'✅' if ok else '❌'} {check.replace('_', ' ')}")
    lines += [
        f"- Pareto-better, upstream convention: **{target['pareto_better_upstream_convention']}**;"
        f" shared cache: **{target['pareto_better_shared_cache']}**"
        + ("" if target["comparable_size"] else " (small run: not comparable in size)"),
        "",
        f"### Per workload ({name}: saar vs single-turn)",
        "",
        "| Workload | single-turn switches / unsafe | saar switches / unsafe | "
        "saar cost red. (shared / upstream) | saar quality delta |",
        "|---|---:|---:|---:|---:|",
    ]
    for workload, rows in world["workloads"].items():
        single, saar = rows["single-turn"], rows["saar"]
        lines.append(
            f"| {workload} | {single['switches']:,} / {single['unsafe_switches']:,} | "
            f"{saar['switches']:,} / {saar['unsafe_switches']:,} | "
            f"{_pct(saar['cost_reduction'])} / {_pct(saar['cost_reduction_upstream'])} | "
            f"{saar['quality_delta']:+.4f} |"
        )
    lines.append("")
    return lines


def _yes_no(ok: bool) -> str:
    return "✅ yes" if ok else "❌ no"


def _table_row(name: str, row: dict[str, Any]) -> str:
    return (
        f"| {name} | {row['switches']:,} | {_pct(row['switch_reduction'])} | "
        f"{row['unsafe_switches']:,} ({row['unsafe_tool_loop']:,} / "
        f"{row['unsafe_provider_state']:,}) | {_pct(row['cost_reduction'])} | "
        f"{_pct(row['cost_reduction_upstream'])} | {row['quality_delta']:+.4f} | "
        f"{row['demand_quality']:.4f} | {_pct(row['underserved_rate'])} | "
        f"{_pct(row['cache_hit_rate'])} |"
    )


def write_results(doc: dict[str, Any], out_dir: Path, stem: str = "matrix") -> list[Path]:
    """Write ``<stem>.json``, ``<stem>.md`` and the plots into ``out_dir``.

    The primary world's plots are ``<stem>-*``; every other world's are ``<stem>-<world>-*``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / f"{stem}.json"
    json_path.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")
    md_path = out_dir / f"{stem}.md"
    md_path.write_text(markdown(doc))
    written = [json_path, md_path]
    for name, world in doc["worlds"].items():
        plot_stem = stem if name == PRIMARY_WORLD else f"{stem}-{name}"
        plot_doc = {**world, "published": doc["published"]}
        written += write_matrix_plots(plot_doc, out_dir, plot_stem, world=name)
    return written


def main_matrix(small: bool, out_dir: Path, stem: str | None = None) -> dict[str, Any]:
    """Run the matrix (``small`` for CI), write its files, return the document."""
    options = MatrixOptions.small() if small else MatrixOptions()
    doc = run_matrix(options)
    written = write_results(doc, out_dir, stem or ("matrix-small" if small else "matrix"))
    doc["files"] = [str(p) for p in written]
    return doc
