"""Soak: thousands of agent sessions through real Envoy + saar + the emulated pools.

Usage::

    .venv/bin/python bench/soak.py --small                      # CI: 200 sessions, < 60 s
    .venv/bin/python bench/soak.py --sessions 4000 --concurrency 48 \
        --out bench/results/soak.json                           # the committed long run

Every session is one agent: a turn whose answer is a tool call, the tool result (which must
be served by the replica that issued the call: the lock, checked against backend truth, the
``x-emulator-pool``/``x-emulator-replica`` headers that the serving replica itself sets),
then ``--parallel`` user turns sent at once (concurrent turns of one session race on its
router memory). Sessions run ``--concurrency`` at a time on loopback.

Checked, and the exit status says whether all held:

* errors: any non-200 answer or transport error (must be 0);
* fail-opens: a 200 without saar's ``x-vsr-selected-model`` (saar skipped: must be 0);
* lock violations: a tool result not held by ``hard_lock=tool_loop`` on the issuing replica;
* memory: saar's RSS (``/proc/<pid>/status`` VmRSS) sampled every 0.5 s; its growth over the
  run must stay under ``--max-rss-growth-mib`` (router memory is bounded by
  ``state.local_max_entries``; ``--max-entries`` lowers it to show the plateau).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from saar.stack import LocalStack, StackPorts, free_port, pick_port_offset  # noqa: E402
from saar.testing.redis_server import RedisServer  # noqa: E402

__all__ = ["SoakConfig", "SoakResult", "main", "run_soak"]

TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {"name": "read_file", "parameters": {"type": "object", "properties": {}}},
    }
]


@dataclass(frozen=True)
class SoakConfig:
    """What one soak run does."""

    sessions: int = 200
    concurrency: int = 16
    parallel: int = 2
    """User turns sent at once per session after its tool loop."""
    redis: bool = False
    """Keep router memory in a real redis-server instead of the embedded store."""
    max_entries: int | None = None
    """``state.local_max_entries`` override (None: the config's default)."""
    max_rss_growth_mib: float = 64.0
    seed: int = 1
    envoy_template: str = "envoy/local.yaml"
    """Envoy bootstrap (relative to the repository), to compare load-balancer settings."""


@dataclass
class SoakResult:
    """What one soak run measured."""

    config: dict[str, Any]
    sessions: int = 0
    requests: int = 0
    errors: int = 0
    fail_opens: int = 0
    lock_checks: int = 0
    lock_violations: int = 0
    """saar lost the lock: no ``hard_lock=tool_loop``, or another pool."""
    replica_spills: int = 0
    """saar held the lock on the right pool but Envoy's load balancer picked another replica."""
    duration_s: float = 0.0
    requests_per_s: float = 0.0
    latency_ms_p50: float = 0.0
    latency_ms_p99: float = 0.0
    rss_start_kib: int = 0
    rss_end_kib: int = 0
    rss_max_kib: int = 0
    rss_growth_mib: float = 0.0
    error_samples: list[str] = field(default_factory=list)
    """A few examples of each kind of problem (errors, lost locks, spills)."""
    saar_counters: dict[str, float] = field(default_factory=dict)
    """saar's fail-open, store-fallback, conflict and background-error counters (non-zero)."""
    envoy_ext_proc: dict[str, int] = field(default_factory=dict)
    """Envoy's ext_proc counters (message timeouts, failure_mode_allowed, ...)."""
    host: dict[str, Any] = field(default_factory=dict)

    def sample(self, kind: str, text: str) -> None:
        """Keep at most five examples of each kind of problem."""
        if sum(1 for s in self.error_samples if f": {kind}" in s) < 5:
            self.error_samples.append(text)

    @property
    def ok(self) -> bool:
        """True when every check held."""
        return (
            self.errors == 0
            and self.fail_opens == 0
            and self.lock_violations == 0
            and self.replica_spills == 0
            and self.lock_checks == self.sessions
            and self.rss_growth_mib <= float(self.config["max_rss_growth_mib"])
        )


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return 0
    return 0


def _emulator_offset(raw: dict[str, Any]) -> int:
    ports = [int(p) for pool in raw["pools"].values() for p in pool["emulator"]["ports"]]
    return pick_port_offset(ports)


def _edit_config(
    raw: dict[str, Any], config: SoakConfig, workdir: Path, redis_url: str | None
) -> None:
    # The soak measures saar, not replay's disk: replay stays on, in the private workdir.
    raw["replay"] = {"enabled": True, "path": str(workdir / "replay.sqlite3")}
    state: dict[str, Any] = {"backend": "local"}
    if redis_url is not None:
        state = {"backend": "redis", "redis": {"url": redis_url}}
    if config.max_entries is not None:
        state["local_max_entries"] = config.max_entries
    raw["state"] = state
    for pool in raw["pools"].values():
        # Short answers: the soak is about the router, not token generation.
        pool["emulator"]["max_tokens_default"] = 4


class Client:
    """The soak's HTTP side: one aiohttp session, every outcome counted."""

    def __init__(self, http: aiohttp.ClientSession, base_url: str, result: SoakResult) -> None:
        self._http = http
        self._url = f"{base_url}/v1/chat/completions"
        self._result = result
        self.latencies: list[float] = []

    async def turn(
        self, session: str, messages: list[dict[str, Any]]
    ) -> tuple[dict[str, str], dict[str, Any]] | None:
        """One chat turn; None on any error (counted)."""
        headers = {"x-session-id": session, "x-conversation-id": f"{session}-c"}
        body = {"model": "auto", "messages": messages, "tools": TOOLS, "max_tokens": 4}
        started = time.perf_counter()
        self._result.requests += 1
        try:
            async with self._http.post(self._url, json=body, headers=headers) as reply:
                payload = await reply.read()
                status = reply.status
                reply_headers = {k.lower(): v for k, v in reply.headers.items()}
        except (aiohttp.ClientError, TimeoutError) as exc:
            self._error(f"{session}: error: {type(exc).__name__}: {exc}")
            return None
        self.latencies.append(time.perf_counter() - started)
        if status != 200:
            self._error(f"{session}: error: HTTP {status}: {payload[:200]!r}")
            return None
        if "x-vsr-selected-model" not in reply_headers:
            self._result.fail_opens += 1
        return reply_headers, json.loads(payload)

    def _error(self, text: str) -> None:
        self._result.errors += 1
        self._result.sample("error", text)


def _reason(headers: dict[str, str]) -> str:
    for pair in headers.get("x-vsr-learning-reasons", "").split(";"):
        name, _, value = pair.partition("=")
        if name.strip() == "session_aware":
            return value.strip()
    return ""


async def agent(client: Client, index: int, config: SoakConfig, result: SoakResult) -> None:
    """One agent session: tool call, tool result (lock checked), parallel user turns."""
    session = f"soak-{config.seed}-{index}"
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": f"task {index}: inspect it [[call:read_file]]"}
    ]
    first = await client.turn(session, messages)
    if first is None:
        return
    issued_headers, completion = first
    message = completion["choices"][0]["message"]
    calls = message.get("tool_calls") or []
    if not calls:
        client._error(f"{session}: error: the backend issued no tool call")
        return
    messages.append(message)
    messages.extend(
        {"role": "tool", "tool_call_id": call["id"], "content": "file contents"} for call in calls
    )
    second = await client.turn(session, messages)
    if second is None:
        return
    held_headers, completion = second
    result.lock_checks += 1
    same_pool = issued_headers.get("x-emulator-pool") == held_headers.get("x-emulator-pool")
    same_replica = issued_headers.get("x-emulator-replica") == held_headers.get(
        "x-emulator-replica"
    )
    # The reason carries parameters after the lock name (hard_lock=tool_loop...).
    reason = _reason(held_headers)
    locked = "tool_loop" in reason and "owner_unknown" not in reason
    problem = ""
    if not (same_pool and locked):
        result.lock_violations += 1
        problem = "lock lost"
    elif not same_replica:
        result.replica_spills += 1
        problem = "replica spill"
    if problem:
        result.sample(
            problem,
            f"{session}: {problem}: {issued_headers.get('x-emulator-replica')} -> "
            f"{held_headers.get('x-emulator-replica')} ({reason or 'no saar headers'})",
        )
    messages.append(completion["choices"][0]["message"])
    await asyncio.gather(
        *(
            client.turn(session, [*messages, {"role": "user", "content": f"next step {k}"}])
            for k in range(config.parallel)
        )
    )
    result.sessions += 1


async def _sample_rss(pid: int, samples: list[int], stop: asyncio.Event) -> None:
    while not stop.is_set():
        samples.append(rss_kib(pid))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)


async def run_soak(config: SoakConfig, log: Callable[[str], None] = print) -> SoakResult:
    """Start a private stack, run the sessions, measure, stop everything."""
    result = SoakResult(config=asdict(config))
    result.host = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }
    raw: dict[str, Any] = yaml.safe_load((ROOT / "config" / "local.yaml").read_text())
    with tempfile.TemporaryDirectory(prefix="saar-soak-") as tmp:
        workdir = Path(tmp)
        redis = RedisServer() if config.redis else None
        if redis is not None:
            redis.start()
        try:
            _edit_config(raw, config, workdir, redis.url if redis is not None else None)
            config_path = workdir / "saar.yaml"
            config_path.write_text(yaml.safe_dump(raw, sort_keys=False))
            stack = LocalStack(
                config_path=config_path,
                envoy_template=ROOT / config.envoy_template,
                workdir=workdir / "stack",
                ports=StackPorts(
                    listen=free_port(),
                    envoy_admin=free_port(),
                    metrics=free_port(),
                    emulator_offset=_emulator_offset(raw),
                    emulator_control=free_port(),
                ),
            )
            async with stack:
                await _drive(stack, config, result, log)
        finally:
            if redis is not None:
                redis.stop()
    return result


async def _drive(
    stack: LocalStack, config: SoakConfig, result: SoakResult, log: Callable[[str], None]
) -> None:
    saar = stack.children["saar"].process
    assert saar is not None
    connector = aiohttp.TCPConnector(limit=config.concurrency * (config.parallel + 1))
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        client = Client(http, stack.base_url, result)
        # Warm-up: imports, JIT-free caches and the first connections, outside the baseline.
        warm = SoakResult(config=result.config)
        warm_client = Client(http, stack.base_url, warm)
        await asyncio.gather(*(agent(warm_client, -1 - i, config, warm) for i in range(8)))
        result.rss_start_kib = rss_kib(saar.pid)
        samples: list[int] = [result.rss_start_kib]
        stop = asyncio.Event()
        sampler = asyncio.create_task(_sample_rss(saar.pid, samples, stop))
        gate = asyncio.Semaphore(config.concurrency)
        done = 0

        async def one(index: int) -> None:
            nonlocal done
            async with gate:
                await agent(client, index, config, result)
            done += 1
            if done % max(1, config.sessions // 10) == 0:
                log(f"  {done}/{config.sessions} sessions, rss {rss_kib(saar.pid) // 1024} MiB")

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(config.sessions)))
        result.duration_s = round(time.perf_counter() - started, 2)
        stop.set()
        await sampler
        result.rss_end_kib = rss_kib(saar.pid)
        result.rss_max_kib = max(samples)
        result.rss_growth_mib = round((result.rss_end_kib - result.rss_start_kib) / 1024, 1)
        latencies = sorted(client.latencies)
        if latencies:
            result.latency_ms_p50 = round(statistics.median(latencies) * 1000, 1)
            result.latency_ms_p99 = round(latencies[int(0.99 * (len(latencies) - 1))] * 1000, 1)
        result.requests_per_s = round(result.requests / max(result.duration_s, 1e-9), 1)
        result.saar_counters, result.envoy_ext_proc = await asyncio.to_thread(_counters, stack)


# saar counters that explain a fail-open or a lost lock when they move.
_EXPLAINING = (
    "saar_fail_open_total|saar_store_fallbacks_total|saar_store_conflicts_total|"
    "saar_background_errors_total|saar_state_decode_errors_total|saar_replay_dropped_total"
)


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as reply:  # loopback only
        text: str = reply.read().decode()
        return text


def _counters(stack: LocalStack) -> tuple[dict[str, float], dict[str, int]]:
    """saar's explaining counters and Envoy's ext_proc counters, to explain any loss."""
    saar: dict[str, float] = {}
    metrics = _get(f"http://127.0.0.1:{stack.ports.metrics}/metrics")
    pattern = rf"^({_EXPLAINING})(?:\{{([^}}]*)\}})? (\S+)$"
    for match in re.finditer(pattern, metrics, re.MULTILINE):
        value = float(match.group(3))
        if value > 0:
            labels = re.findall(r'="([^"]*)"', match.group(2) or "")
            key = "/".join([match.group(1).removeprefix("saar_"), *labels])
            saar[key] = saar.get(key, 0.0) + value
    envoy: dict[str, int] = {}
    stats = _get(f"http://127.0.0.1:{stack.ports.envoy_admin}/stats?filter=ext_proc")
    for line in stats.splitlines():
        name, _, count = line.partition(": ")
        if count.isdigit() and int(count) > 0:
            envoy[name.rsplit(".", 1)[-1]] = int(count)
    return saar, envoy


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; exit 0 when every check held."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="the CI run: 200 sessions")
    parser.add_argument("--sessions", type=int, default=None)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--redis", action="store_true", help="router memory in redis-server")
    parser.add_argument("--max-entries", type=int, default=None)
    parser.add_argument("--max-rss-growth-mib", type=float, default=64.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--envoy", default="envoy/local.yaml", help="Envoy bootstrap template")
    parser.add_argument("--out", type=Path, default=None, help="write the result JSON here")
    args = parser.parse_args(argv)
    sessions = args.sessions if args.sessions is not None else (200 if args.small else 4000)
    config = SoakConfig(
        sessions=sessions,
        concurrency=args.concurrency,
        parallel=args.parallel,
        redis=args.redis,
        max_entries=args.max_entries,
        max_rss_growth_mib=args.max_rss_growth_mib,
        seed=args.seed,
        envoy_template=args.envoy,
    )
    print(f"soak: {config}")
    result = asyncio.run(run_soak(config))
    payload = {**asdict(result), "ok": result.ok}
    text = json.dumps(payload, indent=2)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0 if result.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
