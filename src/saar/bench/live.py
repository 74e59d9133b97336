"""Live sessions: concurrent agent sessions through the real Envoy + saar + the pool emulator.

Theory of operation: ``LocalStack`` runs the emulator, saar and Envoy as processes on private
ports, with ``config/local.yaml`` edited for the benchmark (a short ``idle_timeout_seconds`` so
real pauses cross it, emulator latencies near zero). Each session is an agent driven through
the official ``openai`` SDK (``AsyncOpenAI``):

* chat sessions declare ``tools`` and ask for tool calls with the emulator's ``[[call:NAME]]``
  marker, then send the results back (``role: tool``), so the next request answers call ids;
* Responses sessions chain ``previous_response_id`` (the emulator stores responses per replica,
  so a continuation served anywhere else is a 404), sometimes restart a chain, and run tool
  loops with ``function_call_output`` continuations;
* topics change (keywords of the config's decisions), and some pauses exceed the idle timeout.

Continuity is judged from the emulator's **backend-truth log**, never from saar's headers: a
tool result received by a pool/replica other than the one whose answer emitted the call, a
``previous_response_id`` received by a replica other than the one that minted it, or a 404 for
a ``previous_response_id``, is a violation.

Fault mode injects HTTP 503s by phase (``user_turn``, ``tool_result``, ``continuation``) through
the emulator's control API; clients retry with a short backoff. A session is *affected* when one
of its requests got an injected 503 and *recovered* when it still completed every turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import statistics
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TypeVar

import openai
import yaml

from saar.bench.matrix import _machine
from saar.stack import LocalStack, StackPorts, free_port, pick_port_offset

__all__ = ["LiveOptions", "main_live", "repo_root", "run_live"]

_T = TypeVar("_T")

IDLE_TIMEOUT_S: Final = 1.5
"""The live config's idle boundary: short, so that real pauses cross it."""

_TOOLS: Final[list[Any]] = [
    {
        "type": "function",
        "function": {
            "name": name,
            "description": f"{name} tool",
            "parameters": {"type": "object", "properties": {}},
        },
    }
    for name in ("read_file", "run_tests", "search")
]
_RESPONSES_TOOLS: Final[list[Any]] = [
    {"type": "function", "name": t["function"]["name"], "parameters": {"type": "object"}}
    for t in _TOOLS
]
_TOPICS: Final = {
    "coding": ("refactor the parser", "fix the bug in the loader", "write a test for it"),
    "reasoning": ("find the root cause of the outage", "think step by step about the design"),
    "general": ("what is the capital of peru", "write a short note to the team"),
}
_FOLLOWUPS: Final = ("continue", "fix it", "run that again", "use the previous result")
_RETRY_STATUSES: Final = frozenset({429, 500, 502, 503, 504})


def repo_root() -> Path:
    """The repository root (where ``config/`` and ``envoy/`` live)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "envoy" / "local.yaml").exists() and (parent / "config").is_dir():
            return parent
    return Path.cwd()


@dataclass(frozen=True)
class LiveOptions:
    """Size and mix of a live run."""

    sessions: int = 40
    turns: int = 18
    """User turns per session (tool results add requests)."""
    tool_rate: float = 0.4
    idle_rate: float = 0.12
    drift_rate: float = 0.3
    chain_rate: float = 0.85
    faults: bool = True
    """Also run the fault pass (503s by phase)."""
    faults_per_phase: int = 12
    seed: int = 7
    retries: int = 6
    control: bool = True
    """Finish with a negative-control pass with saar stopped (the checker must fire)."""
    envoy_template: str | None = None
    """Envoy bootstrap to run instead of ``envoy/local.yaml`` (experiments)."""

    @classmethod
    def small(cls) -> LiveOptions:
        """CI size: a few sessions, a few turns, faults on."""
        return cls(sessions=6, turns=5, idle_rate=0.2, faults_per_phase=3)


@dataclass
class SessionResult:
    """What one client session saw."""

    session_id: str
    api: str
    requests: int = 0
    attempts: int = 0
    retried: int = 0
    faults_seen: int = 0
    completed: bool = False
    error: str | None = None
    latencies_ms: list[float] = field(default_factory=list)


# --- stack -----------------------------------------------------------------------------------


def live_config(root: Path) -> dict[str, Any]:
    """``config/local.yaml`` with a short idle timeout and a fast emulator."""
    raw: dict[str, Any] = yaml.safe_load((root / "config" / "local.yaml").read_text())
    for pool in raw["pools"].values():
        emulator = pool.get("emulator")
        if emulator is not None:
            emulator.update(
                prefill_us_per_token=0, decode_us_per_token=0, ttft_base_ms=0, max_tokens_default=8
            )
    for decision in raw["routing"]["decisions"]:
        knobs = decision.setdefault("algorithm", {}).setdefault("session_aware", {})
        knobs["idle_timeout_seconds"] = IDLE_TIMEOUT_S
    return raw


def _stack(
    raw: dict[str, Any], workdir: Path, rng: random.Random, template: str | None = None
) -> LocalStack:
    root = repo_root()
    config_path = workdir / "saar-live.yaml"
    config_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    ports = [
        int(port)
        for pool in raw["pools"].values()
        for port in pool.get("emulator", {}).get("ports", [])
    ]
    return LocalStack(
        config_path=config_path,
        envoy_template=Path(template) if template else root / "envoy" / "local.yaml",
        workdir=workdir / "stack",
        ports=StackPorts(
            listen=free_port(),
            envoy_admin=free_port(),
            metrics=free_port(),
            emulator_offset=pick_port_offset(ports, rng=rng),
            emulator_control=free_port(),
        ),
    )


def _control(stack: LocalStack, method: str, path: str, payload: Any = None) -> Any:
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{stack.ports.emulator_control}{path}",
        data=data,
        method=method,
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as reply:  # loopback control API
        body = reply.read()
    return json.loads(body) if body else None


# --- one agent session -----------------------------------------------------------------------


async def _retrying(result: SessionResult, retries: int, call: Callable[[], Awaitable[_T]]) -> _T:
    """Send one request, retrying retryable statuses (the agent's own resilience)."""
    result.requests += 1
    for attempt in range(retries + 1):
        result.attempts += 1
        started = time.perf_counter()
        try:
            value = await call()
        except openai.APIStatusError as exc:
            if exc.status_code not in _RETRY_STATUSES or attempt == retries:
                raise
            result.faults_seen += 1
            result.retried += 1
            await asyncio.sleep(0.05 * (attempt + 1))
            continue
        result.latencies_ms.append((time.perf_counter() - started) * 1000.0)
        return value
    raise AssertionError("unreachable")


def _user_text(rng: random.Random, topic: str, tool: int, first: bool) -> str:
    if not first and rng.random() < 0.3:
        text = rng.choice(_FOLLOWUPS)
    else:
        text = rng.choice(_TOPICS[topic])
    names = rng.sample(["read_file", "run_tests", "search"], k=tool)
    return text + "".join(f" [[call:{name}]]" for name in names)


async def _chat_session(
    api: openai.AsyncOpenAI, opts: LiveOptions, rng: random.Random, result: SessionResult
) -> None:
    messages: list[dict[str, Any]] = [{"role": "system", "content": "You are a coding agent."}]
    topic = rng.choice(list(_TOPICS))
    for turn in range(opts.turns):
        await _pause(rng, opts, turn)
        if turn and rng.random() < opts.drift_rate:
            topic = rng.choice([t for t in _TOPICS if t != topic])
        tools = rng.choice((1, 1, 2)) if rng.random() < opts.tool_rate else 0
        messages.append({"role": "user", "content": _user_text(rng, topic, tools, turn == 0)})
        snapshot = list(messages)
        completion = await _retrying(
            result,
            opts.retries,
            lambda m=snapshot: api.chat.completions.create(  # type: ignore[misc]
                model="auto", messages=m, tools=_TOOLS, max_tokens=8
            ),
        )
        message = completion.choices[0].message
        calls = message.tool_calls or []
        messages.append(message.model_dump(exclude_none=True))
        if calls:
            for call in calls:
                messages.append(
                    {"role": "tool", "tool_call_id": call.id, "content": f"output of {call.id}"}
                )
            snapshot = list(messages)
            answer = await _retrying(
                result,
                opts.retries,
                lambda m=snapshot: api.chat.completions.create(  # type: ignore[misc]
                    model="auto", messages=m, tools=_TOOLS, max_tokens=8
                ),
            )
            messages.append(answer.choices[0].message.model_dump(exclude_none=True))


async def _responses_session(
    api: openai.AsyncOpenAI, opts: LiveOptions, rng: random.Random, result: SessionResult
) -> None:
    previous: str | None = None
    topic = rng.choice(list(_TOPICS))
    for turn in range(opts.turns):
        await _pause(rng, opts, turn)
        if turn and rng.random() < opts.drift_rate:
            topic = rng.choice([t for t in _TOPICS if t != topic])
        tools = rng.choice((1, 1, 2)) if rng.random() < opts.tool_rate else 0
        text = _user_text(rng, topic, tools, turn == 0)
        chain = previous if previous is not None and rng.random() < opts.chain_rate else None
        response = await _retrying(
            result,
            opts.retries,
            lambda c=chain, t=text: api.responses.create(  # type: ignore[misc]
                model="auto",
                input=[{"role": "user", "content": t}],
                tools=_RESPONSES_TOOLS,
                previous_response_id=c,
                max_output_tokens=8,
            ),
        )
        previous = response.id
        calls = [item for item in response.output if item.type == "function_call"]
        if calls:
            outputs = [
                {"type": "function_call_output", "call_id": c.call_id, "output": "ok"}
                for c in calls
            ]
            answer = await _retrying(
                result,
                opts.retries,
                lambda p=previous, o=outputs: api.responses.create(  # type: ignore[misc]
                    model="auto",
                    input=o,
                    tools=_RESPONSES_TOOLS,
                    previous_response_id=p,
                    max_output_tokens=8,
                ),
            )
            previous = answer.id


async def _pause(rng: random.Random, opts: LiveOptions, turn: int) -> None:
    if turn and rng.random() < opts.idle_rate:
        await asyncio.sleep(IDLE_TIMEOUT_S + 0.3)
    else:
        await asyncio.sleep(rng.uniform(0.0, 0.05))


async def _session(base_url: str, index: int, run: str, opts: LiveOptions) -> SessionResult:
    rng = random.Random(f"{opts.seed}/{run}/{index}")
    sid = f"live-{run}/{index}"
    kind = "chat" if index % 2 == 0 else "responses"
    result = SessionResult(sid, kind)
    headers = {"x-session-id": sid, "x-conversation-id": f"{sid}-c"}
    async with openai.AsyncOpenAI(
        base_url=f"{base_url}/v1", api_key="not-needed", default_headers=headers, max_retries=0
    ) as api:
        try:
            if kind == "chat":
                await _chat_session(api, opts, rng, result)
            else:
                await _responses_session(api, opts, rng, result)
            result.completed = True
        except (openai.APIError, OSError) as exc:
            result.error = f"{type(exc).__name__}: {exc}"[:300]
    return result


# --- backend truth ---------------------------------------------------------------------------


def continuity(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Count continuity violations in the backend-truth log (see the module docstring)."""
    call_home: dict[str, tuple[str, int, str | None]] = {}
    minted: dict[str, tuple[str, int]] = {}
    for r in records:
        if 200 <= r["status"] < 300:
            for call in r.get("tool_call_ids") or []:
                call_home[call] = (r["pool"], r["replica"], r.get("served_model"))
            if r.get("response_id") and r.get("stored"):
                minted[r["response_id"]] = (r["pool"], r["replica"])
    tool_model = tool_replica = prev_replica = prev_404 = checked_tool = checked_prev = 0
    examples: list[dict[str, Any]] = []
    for r in records:
        if r.get("fault"):
            continue  # the injected answer; its routing is judged on the retry
        for call in r.get("tool_result_ids") or []:
            home = call_home.get(call)
            if home is None:
                continue
            checked_tool += 1
            if home[0] != r["pool"]:
                tool_model += 1
                examples.append(_example("tool_result_other_model", r, home[:2], records))
            elif home[1] != r["replica"]:
                tool_replica += 1
                examples.append(_example("tool_result_other_replica", r, home[:2], records))
        prev = r.get("previous_response_id")
        if prev:
            checked_prev += 1
            home2 = minted.get(prev)
            if r["status"] == 404:
                prev_404 += 1
                examples.append(_example("previous_response_404", r, home2, records))
            elif home2 is not None and home2 != (r["pool"], r["replica"]):
                prev_replica += 1
                examples.append(_example("previous_response_other_replica", r, home2, records))
    # A 404 is a continuation received by the wrong replica too: it counts once, as a 404.
    total = tool_model + tool_replica + prev_replica + prev_404
    return {
        "violations": total,
        "tool_result_other_model": tool_model,
        "tool_result_other_replica": tool_replica,
        "previous_response_other_replica": prev_replica,
        "previous_response_404": prev_404,
        "tool_results_checked": checked_tool,
        "continuations_checked": checked_prev,
        "examples": examples[:10],
    }


def _example(
    kind: str,
    record: dict[str, Any],
    home: tuple[Any, ...] | None,
    records: list[dict[str, Any]],
) -> dict[str, Any]:
    """A violation with its session's backend history, so it can be diagnosed offline."""
    keep = (
        "time",
        "pool",
        "replica",
        "status",
        "fault",
        "phase",
        "affinity_key",
        "previous_response_id",
        "response_id",
        "tool_call_ids",
        "tool_result_ids",
    )
    history = [
        {k: r.get(k) for k in keep}
        for r in records
        if r.get("session_id") == record.get("session_id")
    ]
    return {
        "kind": kind,
        "session_id": record.get("session_id"),
        "request_id": record.get("request_id"),
        "received_by": [record["pool"], record["replica"]],
        "home": list(home) if home is not None else None,
        "session_history": history[-12:],
    }


def _faults_by_phase(records: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for r in records:
        phase = r.get("phase") or "?"
        row = out.setdefault(phase, {"requests": 0, "injected_503": 0})
        row["requests"] += 1
        if r.get("fault"):
            row["injected_503"] += 1
    return out


# --- runs ------------------------------------------------------------------------------------


async def _pass(stack: LocalStack, run: str, opts: LiveOptions) -> dict[str, Any]:
    await asyncio.to_thread(_control, stack, "DELETE", "/_emulator/log")
    if run == "faults":
        rules = [
            {"match": {"phase": phase}, "status": 503, "times": opts.faults_per_phase}
            for phase in ("tool_result", "continuation", "user_turn")
        ]
        await asyncio.to_thread(_control, stack, "POST", "/_emulator/faults", {"rules": rules})
    started = time.perf_counter()
    results = await asyncio.gather(
        *(_session(stack.base_url, i, run, opts) for i in range(opts.sessions))
    )
    elapsed = time.perf_counter() - started
    with contextlib.suppress(OSError):
        await asyncio.to_thread(_control, stack, "DELETE", "/_emulator/faults")
    records: list[dict[str, Any]] = await asyncio.to_thread(
        _control, stack, "GET", "/_emulator/log"
    )
    mine = [r for r in records if str(r.get("session_id") or "").startswith(f"live-{run}/")]
    faulted_sessions = {r["session_id"] for r in mine if r.get("fault")}
    by_id = {r.session_id: r for r in results}
    recovered = sum(1 for s in faulted_sessions if by_id[s].completed)
    latencies = [ms for r in results for ms in r.latencies_ms]
    return {
        "run": run,
        "sessions": len(results),
        "chat_sessions": sum(1 for r in results if r.api == "chat"),
        "responses_sessions": sum(1 for r in results if r.api == "responses"),
        "requests": sum(r.requests for r in results),
        "attempts": sum(r.attempts for r in results),
        "backend_records": len(mine),
        "completed_sessions": sum(1 for r in results if r.completed),
        "success_rate": round(sum(1 for r in results if r.completed) / max(1, len(results)), 4),
        "injected_503": sum(1 for r in mine if r.get("fault")),
        "client_retries": sum(r.retried for r in results),
        "affected_sessions": len(faulted_sessions),
        "recovered_sessions": recovered,
        "recovery_rate": round(recovered / len(faulted_sessions), 4) if faulted_sessions else 1.0,
        "by_phase": _faults_by_phase(mine),
        "continuity": continuity(mine),
        "latency_ms": _percentiles(latencies),
        "seconds": round(elapsed, 2),
        "errors": [r.error for r in results if r.error][:5],
    }


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

    return {
        "p50": at(0.5),
        "p95": at(0.95),
        "p99": at(0.99),
        "mean": round(statistics.fmean(ordered), 2),
    }


async def run_live(opts: LiveOptions) -> dict[str, Any]:
    """Start a private stack, run the clean pass (and the fault pass), return the document."""
    rng = random.Random(opts.seed)
    raw = live_config(repo_root())
    with tempfile.TemporaryDirectory(prefix="saar-bench-live-") as tmp:
        stack = _stack(raw, Path(tmp), rng, opts.envoy_template)
        await stack.start()
        try:
            passes = [await _pass(stack, "clean", opts)]
            if opts.faults:
                passes.append(await _pass(stack, "faults", opts))
            if opts.control:
                # Negative control: saar stopped, Envoy fails open to its default pool and
                # hashes nothing. The same checker must now find violations, or it is vacuous.
                await stack.stop_saar()
                control = await _pass(stack, "control-no-saar", opts)
        finally:
            await stack.stop()
    violations = sum(p["continuity"]["violations"] for p in passes)
    affected = sum(p["affected_sessions"] for p in passes)
    recovered = sum(p["recovered_sessions"] for p in passes)
    if opts.control:
        passes.append(control)
    return {
        "benchmark": "live-sessions",
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": _machine(),
        "options": opts.__dict__,
        "idle_timeout_s": IDLE_TIMEOUT_S,
        "passes": passes,
        "summary": {
            "violations": violations,
            "affected_sessions": affected,
            "recovered_sessions": recovered,
            "recovery_rate": round(recovered / affected, 4) if affected else 1.0,
            "target_met": violations == 0 and recovered == affected,
            "control_violations_without_saar": (
                passes[-1]["continuity"]["violations"] if opts.control else None
            ),
        },
    }


def markdown(doc: dict[str, Any]) -> str:
    """The live result as Markdown."""
    lines = [
        "# Live sessions (Envoy + saar + emulator, openai SDK)",
        "",
        f"{doc['date']} · {doc['machine']} · idle timeout {doc['idle_timeout_s']} s · "
        "continuity from the emulator's backend-truth log",
        "",
        "| Pass | Sessions (chat/resp.) | Requests | Success | Injected 503 | Retries | "
        "Affected | Recovered | Violations | Tool results / continuations checked | "
        "Latency p50 / p95 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in doc["passes"]:
        c = p["continuity"]
        lat = p["latency_ms"]
        lines.append(
            f"| {p['run']} | {p['sessions']} ({p['chat_sessions']}/{p['responses_sessions']}) | "
            f"{p['requests']:,} | {100 * p['success_rate']:.2f}% | {p['injected_503']} | "
            f"{p['client_retries']} | {p['affected_sessions']} | {p['recovered_sessions']} | "
            f"{c['violations']} | {c['tool_results_checked']} / {c['continuations_checked']} | "
            f"{lat.get('p50', 0)} / {lat.get('p95', 0)} |"
        )
    faults = [p for p in doc["passes"] if p["run"] == "faults"]
    if faults:
        lines += [
            "",
            "Fault pass by phase (backend records):",
            "",
            "| Phase | Requests | Injected 503 |",
            "|---|---:|---:|",
        ]
        for phase, row in sorted(faults[0]["by_phase"].items()):
            lines.append(f"| {phase} | {row['requests']} | {row['injected_503']} |")
    s = doc["summary"]
    lines += [
        "",
        f"Violations: **{s['violations']}**; recovery: **{s['recovered_sessions']}/"
        f"{s['affected_sessions']}**; target met: **{s['target_met']}**. "
        "Negative control (saar stopped, Envoy fails open, same checker): "
        f"**{s['control_violations_without_saar']}** violations.",
        "",
    ]
    return "\n".join(lines)


def main_live(small: bool, out_dir: Path, stem: str | None = None) -> dict[str, Any]:
    """Run the live benchmark (``small`` for CI) and write its JSON and Markdown."""
    opts = LiveOptions.small() if small else LiveOptions()
    doc = asyncio.run(run_live(opts))
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = stem or ("live-small" if small else "live")
    (out_dir / f"{stem}.json").write_text(json.dumps(doc, indent=2) + "\n")
    (out_dir / f"{stem}.md").write_text(markdown(doc))
    doc["files"] = [str(out_dir / f"{stem}.json"), str(out_dir / f"{stem}.md")]
    return doc
