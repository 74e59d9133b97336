"""Hot-path benchmark: what saar adds to Envoy, measured against Envoy alone in the same run.

Theory of operation (method of /work/shared/reference/perf-spike.md):

* Two Envoys run side by side from ``envoy/local.yaml``: one as shipped (ext_proc → saar), one
  with the ext_proc filter removed (its default route goes to a fixed pool). Every pool cluster
  points at one trivial upstream (``saar.bench.upstream``), so neither the emulator nor the
  upstream limits anything.
* A Python open-loop load generator (one asyncio loop, HTTP/1.1 keep-alive connections) sends
  agent chat bodies of ~20 KB and ~500 KB from 256 sessions at a fixed rate; latency is measured
  from each request's *scheduled* start (no coordinated omission). Saturation is closed-loop
  with a fixed number of connections.
* Configurations are interleaved round by round (plain, saar / saar, plain ...) and every
  figure is the median over rounds; "added" is saar minus plain of the same round.
* CPU per request: ``utime + stime`` from ``/proc/<pid>/stat`` of the saar process (all of its
  threads) and of each Envoy, divided by the requests of that step.
* In-process: pure ``policy.decide`` decisions/s on matrix sessions, and ``cProfile`` of
  ``ExtProcStream.on_message`` (no gRPC) to show where saar's own time goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import io
import json
import os
import pstats
import socket
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import yaml

from saar.bench.cpuidle import CpuLatencyHold, halt_entries
from saar.bench.live import repo_root
from saar.bench.matrix import _facts, _machine
from saar.replay.recorder import WRITER_THREAD_NAME
from saar.settings import Transport, load_settings
from saar.stack import ChildProcess, LocalStack, StackPorts

__all__ = ["HotpathOptions", "agent_body", "main_hotpath", "run_hotpath"]

_TICK: Final = os.sysconf("SC_CLK_TCK")
_STEPS: Final = (("20k", "rate"), ("500k", "rate"), ("20k", "sat"), ("20k", "poll"))
VARIANTS: Final[dict[str, dict[str, dict[str, Any]]]] = {
    "noreplay": {"replay": {"enabled": False}},
    "replaythread": {"replay": {"writer": "thread"}},
    "nolearn": {"server": {"learn_from_response_bodies": False}},
    "stream": {"server": {"response_path": "stream"}},
    "grpcio": {"server": {"transport": "grpcio"}},
    "h2": {"server": {"transport": "h2"}},
}
"""Config edits of the diagnostic saar variants (section -> keys to set)."""
_SESSIONS: Final = 256
_FLOORS: Final[dict[str, tuple[str, list[str]]]] = {
    "floor": ("3 msgs, grpc.aio", []),
    "floor2": ("2 msgs, grpc.aio", ["--two-messages"]),
    "floor2-h2": ("2 msgs, h2", ["--two-messages", "--transport", "h2"]),
}
"""The bare ext_proc floors (``saar.bench.nullproc``): name -> (shape, arguments)."""


@dataclass(frozen=True)
class HotpathOptions:
    """Rates, sizes and repetitions."""

    rounds: int = 3
    seconds: float = 6.0
    rate_20k: float = 200.0
    rate_500k: float = 50.0
    saturation_connections: int = 32
    warmup_seconds: float = 1.5
    policy_seconds: float = 2.0
    profile_requests: int = 2000
    variants: tuple[str, ...] = ("noreplay", "replaythread", "grpcio")
    """Diagnostic saar variants run in the same rounds (``VARIANTS``): where does its CPU go?"""
    floor: bool = True
    """Also run Envoy + a bare Python ext_proc (``saar.bench.nullproc``): the floor, in the
    2-message shape saar uses by default and in the 3-message shape of ``response_path:
    stream`` on grpc.aio, and in the 2-message shape on saar's h2 transport."""
    idle_poll: bool = True
    """Also run the 20 KB rate step for Envoy alone, saar and saar's own floor with idle CPUs
    polling instead of halting (``cpuidle.CpuLatencyHold``, root only): what the node's idle
    state adds. Where the hold is unavailable the document says why."""

    @classmethod
    def small(cls) -> HotpathOptions:
        """CI size: one short round at a low rate."""
        return cls(
            rounds=1,
            seconds=1.0,
            rate_20k=50.0,
            rate_500k=10.0,
            saturation_connections=8,
            warmup_seconds=0.3,
            policy_seconds=0.3,
            profile_requests=100,
            variants=(),
        )


# --- bodies and load -------------------------------------------------------------------------


def agent_body(target_bytes: int, session: int) -> bytes:
    """A chat-completions agent body of about ``target_bytes``: history, tool call and result."""
    chunk = "def handler(event):\n    return process(event['records'])  # line of code\n"
    tool_output = (chunk * (target_bytes // len(chunk) + 1))[: max(0, target_bytes - 1500)]
    body = {
        "model": "auto",
        "messages": [
            {"role": "system", "content": "You are a coding agent. Use the tools."},
            {"role": "user", "content": f"refactor the parser of service {session}"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": f"call_{session}",
                        "type": "function",
                        "function": {"name": "read_file", "arguments": '{"path": "a.py"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": f"call_{session}", "content": tool_output},
            {"role": "user", "content": "continue"},
        ],
        "max_tokens": 16,
    }
    return json.dumps(body).encode()


def _requests(size: int, host: str) -> list[bytes]:
    out = []
    for s in range(_SESSIONS):
        body = agent_body(size, s)
        head = (
            f"POST /v1/chat/completions HTTP/1.1\r\nhost: {host}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
            f"x-session-id: bench-{s}\r\nx-conversation-id: bench-{s}-c\r\n\r\n"
        ).encode()
        out.append(head + body)
    return out


class _Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def request(self, raw: bytes) -> int:
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        lower = head.lower()
        marker = lower.find(b"content-length:")
        length = int(lower[marker + 15 : lower.find(b"\r\n", marker)].strip()) if marker >= 0 else 0
        if length:
            await self.reader.readexactly(length)
        return status


class _Pool:
    def __init__(self, port: int) -> None:
        self.port = port
        self.idle: list[_Conn] = []
        self.all: list[_Conn] = []

    async def get(self) -> _Conn:
        if self.idle:
            return self.idle.pop()
        for attempt in range(5):
            try:
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", self.port, limit=1 << 22
                )
                break
            except ConnectionRefusedError:
                # A listener that is still binding on a busy box: try again shortly.
                if attempt == 4:
                    raise
                await asyncio.sleep(0.2)
        conn = _Conn(reader, writer)
        self.all.append(conn)
        return conn

    def put(self, conn: _Conn) -> None:
        self.idle.append(conn)

    async def close(self) -> None:
        for conn in self.all:
            conn.writer.close()
            with contextlib.suppress(OSError):
                await conn.writer.wait_closed()
        self.all.clear()
        self.idle.clear()


@dataclass
class _Step:
    latencies: list[float]
    errors: int
    seconds: float

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds > 0 else 0.0


async def _open_loop(port: int, reqs: list[bytes], rate: float, seconds: float) -> _Step:
    """Fixed-rate open loop; latency from each request's scheduled start."""
    pool = _Pool(port)
    latencies: list[float] = []
    errors = 0
    count = int(rate * seconds)
    start = time.perf_counter() + 0.05
    tasks: list[asyncio.Task[None]] = []

    async def one(i: int, scheduled: float) -> None:
        nonlocal errors
        conn = await pool.get()
        try:
            status = await conn.request(reqs[i % len(reqs)])
        except (OSError, asyncio.IncompleteReadError):
            errors += 1
            return
        pool.put(conn)
        if status == 200:
            latencies.append(time.perf_counter() - scheduled)
        else:
            errors += 1

    for i in range(count):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, scheduled)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    await pool.close()
    return _Step(latencies, errors, elapsed)


async def _closed_loop(port: int, reqs: list[bytes], conns: int, seconds: float) -> _Step:
    """Saturation: ``conns`` connections, each sending its next request on every answer."""
    pool = _Pool(port)
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds

    async def worker(w: int) -> None:
        nonlocal errors
        conn = await pool.get()
        i = w
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            try:
                status = await conn.request(reqs[i % len(reqs)])
            except (OSError, asyncio.IncompleteReadError):
                errors += 1
                return
            i += conns
            if status == 200:
                latencies.append(time.perf_counter() - t0)
            else:
                errors += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(conns)))
    elapsed = time.perf_counter() - start
    await pool.close()
    return _Step(latencies, errors, elapsed)


def _pct(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": 0.0, "p95": 0.0, "p99": 0.0}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(1000.0 * ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)

    return {"p50": at(0.50), "p95": at(0.95), "p99": at(0.99)}


def _children(pid: int) -> list[int]:
    """The live child processes of ``pid`` (saar's replay writer process)."""
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                out.extend(int(c) for c in (task / "children").read_text().split())
    return out


def _cpu_seconds(pid: int | None) -> float:
    """User + system CPU of a process (all its threads) and its children, in seconds.

    Children count: saar's replay writer runs as a child process by default, and its CPU is
    saar's cost as much as a thread's would be.
    """
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # After the ")" of comm, utime and stime are fields 12 and 13 (stat fields 14 and 15).
    own = (int(fields[11]) + int(fields[12])) / _TICK
    return own + sum(_cpu_seconds(child) for child in _children(pid))


# --- stacks ----------------------------------------------------------------------------------


def _templates(root: Path, upstream_port: int, tmp: Path) -> tuple[Path, Path]:
    """Envoy bootstraps: as shipped, and without ext_proc; every pool → the upstream."""
    raw: dict[str, Any] = yaml.safe_load((root / "envoy" / "local.yaml").read_text())
    for cluster in raw["static_resources"]["clusters"]:
        if cluster["name"] == "saar":
            continue
        cluster["load_assignment"]["endpoints"] = [
            {
                "lb_endpoints": [
                    {
                        "endpoint": {
                            "address": {
                                "socket_address": {
                                    "address": "127.0.0.1",
                                    "port_value": upstream_port,
                                }
                            }
                        }
                    }
                ]
            }
        ]
    with_saar = tmp / "envoy-saar.yaml"
    with_saar.write_text(yaml.safe_dump(raw, sort_keys=False))
    plain = yaml.safe_load(yaml.safe_dump(raw))
    for listener in plain["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for flt in chain["filters"]:
                hcm = flt["typed_config"]
                hcm["http_filters"] = [
                    f for f in hcm["http_filters"] if f["name"] != "envoy.filters.http.ext_proc"
                ]
                # Envoy alone: no saar to log to (nothing carries the replay id anyway).
                hcm.pop("access_log", None)
    without = tmp / "envoy-plain.yaml"
    without.write_text(yaml.safe_dump(plain, sort_keys=False))
    return with_saar, without


def _contract_header(port: int) -> str | None:
    """POST one agent body to ``port``; the ``x-vsr-selected-model`` response header."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        data=agent_body(2_000, 0),
        headers={"content-type": "application/json", "x-session-id": "probe"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        value: str | None = response.headers.get("x-vsr-selected-model")
        return value


def _thread_cpu(pid: int | None) -> dict[str, float]:
    """CPU seconds per thread name of a process and its children, summed by name."""
    out: dict[str, float] = {}
    if pid is None:
        return out
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                name = (task / "comm").read_text().strip()
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / _TICK
    for child in _children(pid):  # the writer process's threads count under their names
        for name, seconds in _thread_cpu(child).items():
            out[name] = out.get(name, 0.0) + seconds
    return out


def _distinct_ports(n: int) -> list[int]:
    """``n`` distinct free ports: all bound at once, so no two calls can return the same one."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]


def _pid(stack: LocalStack, name: str) -> int | None:
    child = stack.children.get(name)
    return child.process.pid if child is not None and child.process is not None else None


async def _step(
    stack: LocalStack, reqs: list[bytes], mode: str, level: float, seconds: float
) -> dict[str, Any]:
    """One timed step on one stack: latency, throughput, CPU per request, CPU halts."""
    pids = {"saar": _pid(stack, "saar"), "envoy": _pid(stack, "envoy")}
    before = {k: _cpu_seconds(p) for k, p in pids.items()}
    threads_before = _thread_cpu(pids["saar"])
    halts_before, t0 = halt_entries(), time.perf_counter()
    if mode == "rate":
        step = await _open_loop(stack.ports.listen, reqs, level, seconds)
    else:
        step = await _closed_loop(stack.ports.listen, reqs, int(level), seconds)
    halts_after, elapsed = halt_entries(), time.perf_counter() - t0
    after = {k: _cpu_seconds(p) for k, p in pids.items()}
    threads_after = _thread_cpu(pids["saar"])
    done = max(1, len(step.latencies))
    out: dict[str, Any] = {
        **_pct(step.latencies),
        "throughput": round(step.throughput, 1),
        "requests": len(step.latencies),
        "errors": step.errors,
        "cpu_us_per_request": {
            k: round(1e6 * (after[k] - before[k]) / done, 1) for k in pids if pids[k] is not None
        },
        "saar_threads_us_per_request": {
            t: round(1e6 * (threads_after[t] - threads_before.get(t, 0.0)) / done, 1)
            for t in threads_after
            if threads_after[t] - threads_before.get(t, 0.0) > 0
        },
    }
    if halts_before is not None and halts_after is not None:
        # Idle entries that stopped a CPU (all CPUs, any process's idle time) per second.
        out["halts_per_s"] = round((halts_after - halts_before) / elapsed, 1)
    return out


async def _measure(
    stacks: dict[str, LocalStack], opts: HotpathOptions, poll_stacks: tuple[str, ...] = ()
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    reqs = {
        "20k": _requests(20_000, "bench"),
        "500k": _requests(500_000, "bench"),
    }
    sizes: dict[str, Any] = {k: len(v[0]) for k, v in reqs.items()}
    rounds: list[dict[str, Any]] = []
    for stack in stacks.values():  # warm both: connections, saar sessions, caches
        await _open_loop(stack.ports.listen, reqs["20k"], 100.0, opts.warmup_seconds)
    # saar's CPU with no traffic at all: background work that a per-request figure would hide.
    pid = _pid(stacks["saar"], "saar")
    idle_before, idle_t0 = _cpu_seconds(pid), time.perf_counter()
    await asyncio.sleep(opts.warmup_seconds)
    idle_cpu = (_cpu_seconds(pid) - idle_before) / (time.perf_counter() - idle_t0)
    hold = CpuLatencyHold()
    poll = [n for n in poll_stacks if n in stacks] if hold.unavailable is None else []
    for r in range(opts.rounds):
        order = list(stacks) if r % 2 == 0 else list(reversed(stacks))
        row: dict[str, Any] = {"round": r}
        steps = [
            ("20k", "rate", opts.rate_20k),
            ("500k", "rate", opts.rate_500k),
            ("20k", "sat", float(opts.saturation_connections)),
        ]
        for size, mode, level in steps:
            for name in order:
                row[f"{name}/{size}/{mode}"] = await _step(
                    stacks[name], reqs[size], mode, level, opts.seconds
                )
        if poll:
            # The 20 KB rate step again with idle CPUs polling instead of halting (cpuidle.py):
            # how much of the added latency is the node's idle state, not saar's work.
            with hold:
                for name in (n for n in order if n in poll):
                    row[f"{name}/20k/poll"] = await _step(
                        stacks[name], reqs["20k"], "rate", opts.rate_20k, opts.seconds
                    )
        rounds.append(row)
    if poll_stacks:
        # Why the idle-state diagnostic did not run, where it could not ("held" when it did).
        sizes["cpu_latency_hold"] = hold.unavailable or "held"
    sizes["saar_idle_cpu_percent"] = round(100.0 * idle_cpu, 2)
    # Did replay keep up? A writer that falls behind shows as drops, not as a faster saar.
    sizes["replay"] = {
        name: await asyncio.to_thread(_replay_counts, stack)
        for name, stack in stacks.items()
        if name.startswith("saar") and stack.ports.metrics is not None
    }
    return rounds, sizes


def _replay_counts(stack: LocalStack) -> dict[str, float]:
    """Replay records written and dropped (all reasons) so far, from saar's metrics."""
    url = f"http://127.0.0.1:{stack.ports.metrics}/metrics"
    out = {"written": 0.0, "dropped": 0.0}
    with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=5) as reply:
        for line in reply.read().decode().splitlines():
            if line.startswith("saar_replay_written_total "):
                out["written"] += float(line.split()[-1])
            elif line.startswith("saar_replay_dropped_total{"):
                out["dropped"] += float(line.split()[-1])
    return out


def _summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    keys = [k for k in rounds[0] if k != "round"]
    for key in keys:
        metrics = {
            m: statistics.median(r[key][m] for r in rounds)
            for m in ("p50", "p95", "p99", "throughput", "halts_per_s")
            if m in rounds[0][key]
        }
        cpu: dict[str, float] = {}
        for proc in rounds[0][key]["cpu_us_per_request"]:
            cpu[proc] = statistics.median(r[key]["cpu_us_per_request"][proc] for r in rounds)
        names = {t for r in rounds for t in r[key].get("saar_threads_us_per_request", {})}
        threads = {
            t: statistics.median(r[key]["saar_threads_us_per_request"].get(t, 0.0) for r in rounds)
            for t in sorted(names)
        }
        out[key] = {
            **metrics,
            "cpu_us_per_request": cpu,
            "saar_threads_us_per_request": threads,
            "errors": sum(r[key]["errors"] for r in rounds),
        }
    variants = ["saar", *_FLOORS, *(f"saar-{v}" for v in VARIANTS)]
    for variant, size, mode in ((v, s, m) for v in variants for s, m in _STEPS):
        saar, plain = f"{variant}/{size}/{mode}", f"plain/{size}/{mode}"
        if saar not in out or plain not in out:
            continue
        added = {
            m: round(statistics.median(r[saar][m] - r[plain][m] for r in rounds), 3)
            for m in ("p50", "p95", "p99")
        }
        ratio = {
            m: round(out[saar][m] / out[plain][m], 2) if out[plain][m] else 0.0
            for m in ("p50", "p95", "p99", "throughput")
        }
        prefix = "added" if variant == "saar" else f"added-{variant.removeprefix('saar-')}"
        if variant.startswith("floor"):
            prefix = f"added-{variant}"
        out[f"{prefix}/{size}/{mode}"] = {**added, "ratio_saar_over_plain": ratio}
    return out


# --- in-process ------------------------------------------------------------------------------


def policy_rate(seconds: float, repeats: int = 5) -> dict[str, Any]:
    """Pure ``decide`` (and ``decide`` + ``apply_response``) calls per second, one core.

    ``repeats`` passes of ``seconds / repeats`` each: the best pass is the machine's figure (on a
    shared box other tenants only ever slow a pass down), the median says how noisy it was.
    """
    from saar.bench.configs import matrix_policy  # noqa: PLC0415 - only this function
    from saar.bench.workloads import WORKLOADS, generate_sessions  # noqa: PLC0415

    config = matrix_policy()
    sessions = generate_sessions(WORKLOADS[0], 1, 40, 18)
    work = [(s, t, _facts(s, t, None)) for s in sessions for t in s.turns]
    results: dict[str, Any] = {}
    for label, with_response in (("decide", False), ("decide_and_apply_response", True)):
        rates = []
        for _ in range(repeats):
            rates.append(_policy_pass(work, config, with_response, seconds / repeats))
        results[label] = round(max(rates))
        results[f"{label}_median"] = round(statistics.median(rates))
    return results


def _policy_pass(work: list[Any], config: Any, with_response: bool, seconds: float) -> float:
    from saar.policy import ResponseFacts, apply_response, decide  # noqa: PLC0415

    calls = 0
    states: dict[str, Any] = {}
    deadline = time.perf_counter() + seconds
    started = time.perf_counter()
    while time.perf_counter() < deadline:
        for session, turn, facts in work:
            decision, state = decide(states.get(session.session_id), facts, config, turn.at)
            if with_response:
                state = apply_response(
                    state,
                    ResponseFacts(
                        decision.replay_id,
                        200,
                        tool_call_ids=turn.emits_tool_calls,
                        prompt_tokens=turn.prompt_tokens,
                        cached_tokens=turn.prompt_tokens // 2,
                        completion_tokens=turn.completion_tokens,
                    ),
                    config,
                    turn.at + 1.0,
                )
            states[session.session_id] = state
            calls += 1
        states.clear()
    return calls / (time.perf_counter() - started)


async def profile_on_message(requests: int, out: Path) -> dict[str, Any]:
    """CProfile ``ExtProcStream.on_message`` over whole requests (no gRPC); write the top."""
    from envoy.extensions.filters.http.ext_proc.v3 import (  # noqa: PLC0415 - heavy imports
        processing_mode_pb2,
    )

    from saar.extproc.accesslog import AccessLogReceiver  # noqa: PLC0415
    from saar.extproc.stream import ExtProcStream  # noqa: PLC0415
    from saar.policy.headers import HEADER_REPLAY_ID  # noqa: PLC0415
    from saar.settings import load_settings  # noqa: PLC0415
    from saar.testing.extproc import (  # noqa: PLC0415
        ExtProcHarness,
        access_log_message,
        request_body_message,
        request_headers_message,
        response_headers_message,
    )

    settings = load_settings(repo_root() / "config" / "local.yaml")
    harness = ExtProcHarness(settings)
    bodies = [agent_body(20_000, s) for s in range(_SESSIONS)]
    messages = []
    for s, body in enumerate(bodies):
        headers = {
            ":path": "/v1/chat/completions",
            ":method": "POST",
            "content-type": "application/json",
            "content-length": str(len(body)),
            "x-session-id": f"bench-{s}",
            "x-conversation-id": f"bench-{s}-c",
        }
        messages.append(
            (
                request_headers_message(headers),
                request_body_message(body),
                response_headers_message(200, {"x-emulator-pool": "bench"}),
            )
        )

    receiver = AccessLogReceiver(harness.router, harness.metrics)
    skip = processing_mode_pb2.ProcessingMode.SKIP

    async def play(n: int) -> None:
        # Each request as Envoy plays it: the response headers only when saar asked for them,
        # else the access-log entry (one per batch here: the worst case for saar).
        for i in range(n):
            stream = ExtProcStream(harness.router, harness.metrics)
            head, body, response = messages[i % len(messages)]
            first = await stream.on_message(head)
            routed = await stream.on_message(body)
            if first.mode_override.response_header_mode != skip:
                await stream.on_message(response)
                continue
            for option in routed.request_body.response.header_mutation.set_headers:
                if option.header.key == HEADER_REPLAY_ID:
                    replay_id = option.header.raw_value.decode()
                    receiver.consume(access_log_message(replay_id, 200, "127.0.0.1:18101"))
        await harness.router.drain()

    await play(min(200, requests))  # warm: sessions exist, imports done
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    await play(requests)
    profiler.disable()
    per_request_us = 1e6 * (time.perf_counter() - started) / requests
    # Without the profiler, for the honest per-request figure: best and median of 5 batches
    # (other tenants of a shared box only ever slow a batch down).
    batch = max(1, requests // 5)
    batches = []
    for _ in range(5):
        started = time.perf_counter()
        await play(batch)
        batches.append(1e6 * (time.perf_counter() - started) / batch)
    plain_us = min(batches)
    median_us = statistics.median(batches)
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.strip_dirs().sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(25)
    header = (
        f"# cProfile of ExtProcStream.on_message: {requests} requests (request headers, "
        f"~20 KB body, then the access-log entry: the default 2-message path), in-process, "
        f"no gRPC\n"
        f"# {per_request_us:.1f} us/request under the profiler; without it {plain_us:.1f} "
        f"us/request (best of 5 batches), median {median_us:.1f}\n"
    )
    await asyncio.to_thread(out.write_text, header + text.getvalue())
    return {
        "requests": requests,
        "us_per_request": round(plain_us, 1),
        "us_per_request_median": round(median_us, 1),
        "file": str(out),
    }


# --- running ---------------------------------------------------------------------------------


def _upstream(root: Path, port: int, tmp: Path) -> ChildProcess:
    """The trivial keep-alive upstream every pool points at (started, not yet ready)."""
    upstream = ChildProcess(
        "upstream",
        [sys.executable, "-m", "saar.bench.upstream", "--port", str(port)],
        tmp / "upstream.log",
        repo_root(),
    )
    upstream.start()
    return upstream


def _bare_stack(template: Path, workdir: Path, ports: Iterator[int]) -> LocalStack:
    """An Envoy with no saar of its own: Envoy alone, or the Envoy in front of a floor."""
    return LocalStack(
        config_path=repo_root() / "config" / "local.yaml",
        envoy_template=template,
        workdir=workdir,
        ports=StackPorts(listen=next(ports), envoy_admin=next(ports), metrics=None),
        with_emulator=False,
        with_saar=False,
    )


async def _attach_floor(stack: LocalStack, command: list[str], log: Path) -> None:
    """Run a bare ext_proc (``command`` + the stack's socket path) as the stack's saar."""
    # The stack stops the child registered as "saar" like its own saar.
    child = ChildProcess("saar", [*command, str(stack.socket_path)], log, repo_root())
    child.start()
    stack.children["saar"] = child
    await child.wait_for_output("nullproc ready", 15.0)


async def run_hotpath(opts: HotpathOptions, out_dir: Path, stem: str) -> dict[str, Any]:
    """Start the stacks, measure, and return the document (the profile is written too)."""
    root = repo_root()
    load_before = os.getloadavg()
    transport = load_settings(root / "config" / "local.yaml").server.transport
    with tempfile.TemporaryDirectory(prefix="saar-bench-hot-") as tmp_name:
        tmp = Path(tmp_name)
        ports = iter(_distinct_ports(4 + 3 * (2 + len(_FLOORS) + len(opts.variants))))
        upstream_port = next(ports)
        upstream = _upstream(root, upstream_port, tmp)
        stacks: dict[str, LocalStack] = {}
        try:
            await upstream.wait_for_output("upstream ready", 15.0)
            with_saar, plain = _templates(root, upstream_port, tmp)
            stacks["plain"] = _bare_stack(plain, tmp / "plain", ports)
            stacks["saar"] = LocalStack(
                config_path=root / "config" / "local.yaml",
                envoy_template=with_saar,
                workdir=tmp / "saar",
                ports=StackPorts(listen=next(ports), envoy_admin=next(ports), metrics=next(ports)),
                with_emulator=False,
                saar_args=("--log-level", "warning"),
            )
            for variant in opts.variants:
                raw = yaml.safe_load((root / "config" / "local.yaml").read_text())
                for section, edit in VARIANTS[variant].items():
                    raw.setdefault(section, {}).update(edit)
                variant_config = tmp / f"saar-{variant}.yaml"
                variant_config.write_text(yaml.safe_dump(raw, sort_keys=False))
                stacks[f"saar-{variant}"] = LocalStack(
                    config_path=variant_config,
                    envoy_template=with_saar,
                    workdir=tmp / f"saar-{variant}",
                    ports=StackPorts(
                        listen=next(ports), envoy_admin=next(ports), metrics=next(ports)
                    ),
                    with_emulator=False,
                    saar_args=("--log-level", "warning"),
                )
            if opts.floor:
                # One bootstrap for both: the floor states its shape per request, as saar does.
                for name, (_, extra) in _FLOORS.items():
                    stacks[name] = _bare_stack(with_saar, tmp / name, ports)
                    await _attach_floor(
                        stacks[name],
                        [sys.executable, "-m", "saar.bench.nullproc", *extra],
                        tmp / f"{name}.log",
                    )
            for stack in stacks.values():
                await stack.start()
            for name in _FLOORS:
                # Every floor must deliver the contract header, or they measure less work.
                if name in stacks:
                    seen = await asyncio.to_thread(_contract_header, stacks[name].ports.listen)
                    if seen != "m":
                        raise RuntimeError(f"{name}: x-vsr-selected-model was {seen!r}, not 'm'")
            own = _own_floor(transport.value)
            poll = ("plain", "saar", own) if opts.idle_poll else ()
            rounds, sizes = await _measure(stacks, opts, poll)
        finally:
            for stack in stacks.values():
                await stack.stop()
            await upstream.stop()
    await asyncio.to_thread(out_dir.mkdir, parents=True, exist_ok=True)
    profile = await profile_on_message(opts.profile_requests, out_dir / f"{stem}-profile.txt")
    summary = _summary(rounds)
    decisions = policy_rate(opts.policy_seconds)
    sat = summary.get("saar/20k/sat", {})
    added = summary.get("added/20k/rate", {})
    targets = {
        "added_p50_le_1.5ms": added.get("p50", 99.0) <= 1.5,
        "added_p95_le_3ms": added.get("p95", 99.0) <= 3.0,
        "added_p99_le_5ms": added.get("p99", 99.0) <= 5.0,
        "saturation_ge_1600_rps": sat.get("throughput", 0.0) >= 1600.0,
        "policy_ge_20000_decisions_per_s": decisions["decide"] >= 20_000,
    }
    return {
        "benchmark": "hot-path",
        "capacity": capacity(summary),
        "load_average_1m": {"start": round(load_before[0], 2), "end": round(os.getloadavg()[0], 2)},
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": _machine(),
        "options": opts.__dict__,
        "transport": transport.value,
        "body_bytes": sizes,
        "summary": summary,
        "rounds": rounds,
        "policy_decisions_per_s": decisions,
        "on_message_profile": profile,
        "targets": targets,
    }


def capacity(summary: dict[str, Any]) -> dict[str, float]:
    """What one saar process decides per second on a core of its own, from measured CPU.

    The saturation step saturates the whole box: the load generator, Envoy and the upstream
    share saar's two cores, so its throughput is the box's, not saar's. A saar process is one
    event loop (one core at most) plus its replay writer process (another core): the loop's
    CPU per request at saturation bounds what one saar process can decide per second. This is
    arithmetic on the measured CPU, reported beside the measured saturation, not instead of it.
    """
    sat = summary.get("saar/20k/sat")
    if not sat:
        return {}
    total = sat["cpu_us_per_request"].get("saar", 0.0)
    writer = sat.get("saar_threads_us_per_request", {}).get(WRITER_THREAD_NAME, 0.0)
    loop = total - writer
    if loop <= 0:
        return {}
    return {
        "loop_us_per_request": round(loop, 1),
        "writer_us_per_request": round(writer, 1),
        "decisions_per_s_per_loop_core": round(1e6 / loop),
    }


def _replay_line(counts: dict[str, dict[str, float]]) -> str:
    parts = [
        f"`{name}` {c['written']:,.0f} written / {c['dropped']:,.0f} dropped"
        for name, c in counts.items()
        if c["written"] or c["dropped"]
    ]
    return "Replay records over the whole run: " + ("; ".join(parts) or "-") + "."


def _own_floor(transport: str | None) -> str:
    """The floor on saar's own transport: what *saar over floor* is measured against."""
    return "floor2-h2" if transport == Transport.H2.value else "floor2"


def _over(saar: dict[str, Any], floor: dict[str, Any]) -> str:
    """The difference of saar and a floor, p50 / p95 / p99 in ms."""
    return " / ".join(f"{saar[m] - floor[m]:+.2f}" for m in ("p50", "p95", "p99"))


def markdown(doc: dict[str, Any]) -> str:
    """The hot-path result as Markdown."""
    s = doc["summary"]
    o = doc["options"]
    lines = [
        "# Hot path: Envoy + saar vs Envoy alone (same run, interleaved)",
        "",
        f"{doc['date']} · {doc['machine']} · medians of {o['rounds']} rounds x {o['seconds']} s · "
        f"bodies {doc['body_bytes']['20k']:,} B and {doc['body_bytes']['500k']:,} B · "
        "open-loop Python load generator on the same cores · saar idle CPU "
        f"{doc['body_bytes']['saar_idle_cpu_percent']}% · 1-min load average "
        f"{doc['load_average_1m']['start']} at start, {doc['load_average_1m']['end']} at end "
        "(other work shares this box)",
        "",
        _replay_line(doc["body_bytes"].get("replay", {})),
        "",
        "| Step | Envoy alone p50 / p95 / p99 ms | Envoy + saar p50 / p95 / p99 ms | "
        "Added p50 / p95 / p99 ms | Throughput alone / saar req/s | "
        "saar CPU µs/req (replay writer) | Envoy CPU µs/req alone / saar |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    labels = {
        "20k/rate": f"20 KB @ {o['rate_20k']:.0f} req/s",
        "500k/rate": f"500 KB @ {o['rate_500k']:.0f} req/s",
        "20k/sat": f"20 KB saturation ({o['saturation_connections']} conns)",
    }
    for key, label in labels.items():
        plain, saar, added = s.get(f"plain/{key}"), s.get(f"saar/{key}"), s.get(f"added/{key}")
        if plain is None or saar is None or added is None:
            continue
        lines.append(
            f"| {label} | {plain['p50']:.2f} / {plain['p95']:.2f} / {plain['p99']:.2f} | "
            f"{saar['p50']:.2f} / {saar['p95']:.2f} / {saar['p99']:.2f} | "
            f"+{added['p50']:.2f} / +{added['p95']:.2f} / +{added['p99']:.2f} | "
            f"{plain['throughput']:,.0f} / {saar['throughput']:,.0f} | "
            f"{saar['cpu_us_per_request'].get('saar', 0):,.0f} "
            f"({saar.get('saar_threads_us_per_request', {}).get(WRITER_THREAD_NAME, 0):,.0f}) | "
            f"{plain['cpu_us_per_request'].get('envoy', 0):,.0f} / "
            f"{saar['cpu_us_per_request'].get('envoy', 0):,.0f} |"
        )
    cap = doc.get("capacity") or {}
    if cap:
        lines += [
            "",
            "One saar process on a core of its own (derived from the saturation row's "
            "measured CPU, not measured alone): its serving process (the event loop) spends "
            f"{cap['loop_us_per_request']:,.0f} µs per request, so it decides about "
            f"**{cap['decisions_per_s_per_loop_core']:,}/s**; its replay writer process adds "
            f"{cap['writer_us_per_request']:,.0f} µs per request on another core. The saturation "
            "row itself is the whole box's: the load generator, "
            "Envoy and the upstream run on the same two cores.",
        ]
    for variant in VARIANTS:
        if not any(k.startswith(f"saar-{variant}/") for k in s):
            continue
        edit = "; ".join(
            f"{section}.{k}: {str(v).lower()}"
            for section, keys in VARIANTS[variant].items()
            for k, v in keys.items()
        )
        lines += [
            "",
            f"Diagnostic, same rounds: saar with `{edit}`.",
            "",
            "| Step | p50 / p95 / p99 ms | Added p50 / p95 / p99 ms | Throughput req/s | "
            "saar CPU µs/req (shipped -> variant) |",
            "|---|---:|---:|---:|---:|",
        ]
        for key, label in labels.items():
            off, added = s.get(f"saar-{variant}/{key}"), s.get(f"added-{variant}/{key}")
            on = s.get(f"saar/{key}")
            if off is None or added is None or on is None:
                continue
            lines.append(
                f"| {label} | {off['p50']:.2f} / {off['p95']:.2f} / {off['p99']:.2f} | "
                f"+{added['p50']:.2f} / +{added['p95']:.2f} / +{added['p99']:.2f} | "
                f"{off['throughput']:,.0f} | "
                f"{on['cpu_us_per_request'].get('saar', 0):,.0f} -> "
                f"{off['cpu_us_per_request'].get('saar', 0):,.0f} |"
            )
    if any(k.startswith("floor") for k in s):
        own = _own_floor(doc.get("transport"))
        lines += [
            "",
            "Floor, same rounds: Envoy + a bare Python ext_proc with no logic "
            "(`saar.bench.nullproc`, uvloop, same mutations as saar). *2 msgs* is saar's "
            "default shape (request headers, body; the route copies the contract headers, the "
            "access log is read and dropped); *3 msgs* adds the response-headers round trip of "
            "`response_path: stream`. *grpc.aio* serves it with grpcio, *h2* with saar's own "
            "transport (`server.transport: h2`, docs/design/0005). *saar over floor* is what "
            f"saar's own work adds on top of the 2-message hop on its transport "
            f"(`{doc.get('transport', 'grpcio')}`).",
            "",
            "| Step | Floor | p50 / p95 / p99 ms | Added p50 / p95 / p99 ms | "
            "saar over floor p50 / p95 / p99 ms | Throughput req/s | CPU µs/req |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for key, label in labels.items():
            on = s.get(f"saar/{key}")
            for name, (shape, _) in _FLOORS.items():
                fl, added = s.get(f"{name}/{key}"), s.get(f"added-{name}/{key}")
                if fl is None or added is None or on is None:
                    continue
                over = _over(on, fl) if name == own else "-"
                lines.append(
                    f"| {label} | {shape} | {fl['p50']:.2f} / {fl['p95']:.2f} / "
                    f"{fl['p99']:.2f} | +{added['p50']:.2f} / +{added['p95']:.2f} / "
                    f"+{added['p99']:.2f} | {over} | {fl['throughput']:,.0f} | "
                    f"{fl['cpu_us_per_request'].get('saar', 0):,.0f} |"
                )
    lines += _idle_lines(doc)
    d = doc["policy_decisions_per_s"]
    p = doc["on_message_profile"]
    lines += [
        "",
        f"Pure policy: **{d['decide']:,} decide/s** (best of 5 passes; median "
        f"{d['decide_median']:,}), {d['decide_and_apply_response']:,} decide + "
        "apply_response/s (one core, in-process).",
        f"saar's own code per request (ExtProcStream.on_message, no gRPC, 20 KB body): "
        f"**{p['us_per_request']} µs** (best of 5 batches; median "
        f"{p['us_per_request_median']} µs); profile in `{Path(p['file']).name}`.",
        "",
        "Targets (20 KB @ rate; saturation; policy):",
        "",
    ]
    for name, ok in doc["targets"].items():
        lines.append(f"- {'✅' if ok else '❌'} {name}")
    polled = s.get("added/20k/poll")
    if polled is not None:
        lines += [
            "",
            "The targets are judged on the steps above, with the box's idle CPUs halting as "
            "they do by default. With idle CPUs polling (the diagnostic above), saar added "
            f"+{polled['p50']:.2f} / +{polled['p95']:.2f} / +{polled['p99']:.2f} ms "
            "(p50 / p95 / p99).",
        ]
    lines.append("")
    return "\n".join(lines)


def _idle_lines(doc: dict[str, Any]) -> list[str]:
    """The idle-state diagnostic: the 20 KB rate step with CPUs halting (as run) and polling."""
    s = doc["summary"]
    hold = doc["body_bytes"].get("cpu_latency_hold")
    if "saar/20k/poll" not in s:
        return ["", f"Idle-state diagnostic not run: {hold}."] if hold not in (None, "held") else []
    own = _own_floor(doc.get("transport"))
    lines = [
        "",
        f"Diagnostic, same rounds: the 20 KB @ {doc['options']['rate_20k']:.0f} req/s step "
        "again with idle CPUs polling instead of halting (`/dev/cpu_dma_latency` held at 0 µs "
        "for the step, as the `latency-performance` tuned profile does; "
        "`saar.bench.cpuidle`), for Envoy alone, saar and its floor "
        f"({_FLOORS[own][0]}). *CPU halts/s* counts idle entries that stopped a CPU, all CPUs, "
        "during saar's step: near 0 means the hold took effect.",
        "",
        "| Idle CPUs | Envoy alone p50 / p95 / p99 ms | Envoy + saar p50 / p95 / p99 ms | "
        "Added p50 / p95 / p99 ms | saar over floor p50 / p95 / p99 ms | saar CPU µs/req | "
        "CPU halts/s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for mode, label in (("rate", "halt (the steps above)"), ("poll", "poll")):
        plain, saar = s.get(f"plain/20k/{mode}"), s.get(f"saar/20k/{mode}")
        added, floor = s.get(f"added/20k/{mode}"), s.get(f"{own}/20k/{mode}")
        if plain is None or saar is None or added is None:
            continue
        over = _over(saar, floor) if floor is not None else "-"
        halts = saar.get("halts_per_s")
        lines.append(
            f"| {label} | {plain['p50']:.2f} / {plain['p95']:.2f} / {plain['p99']:.2f} | "
            f"{saar['p50']:.2f} / {saar['p95']:.2f} / {saar['p99']:.2f} | "
            f"+{added['p50']:.2f} / +{added['p95']:.2f} / +{added['p99']:.2f} | {over} | "
            f"{saar['cpu_us_per_request'].get('saar', 0):,.0f} | "
            f"{'-' if halts is None else f'{halts:,.0f}'} |"
        )
    return lines


def main_hotpath(small: bool, out_dir: Path, stem: str | None = None) -> dict[str, Any]:
    """Run the hot-path benchmark (``small`` for CI) and write its JSON, Markdown and profile."""
    opts = HotpathOptions.small() if small else HotpathOptions()
    stem = stem or ("hotpath-small" if small else "hotpath")
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        import uvloop  # noqa: PLC0415 - the load generator is cheaper on uvloop
    except ImportError:  # pragma: no cover
        doc = asyncio.run(run_hotpath(opts, out_dir, stem))
    else:
        doc = uvloop.run(run_hotpath(opts, out_dir, stem))
    (out_dir / f"{stem}.json").write_text(json.dumps(doc, indent=2) + "\n")
    (out_dir / f"{stem}.md").write_text(markdown(doc))
    doc["files"] = [
        str(out_dir / f"{stem}.json"),
        str(out_dir / f"{stem}.md"),
        doc["on_message_profile"]["file"],
    ]
    return doc
