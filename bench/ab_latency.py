"""A/B latency through real Envoy + saar + the emulator: one feature on vs off, in one run.

Usage::

    .venv/bin/python bench/ab_latency.py response-learning [--rounds 5] [--small]
    .venv/bin/python bench/ab_latency.py replay [--rounds 5] [--small]

``response-learning``: "on" is ``server.response_path: stream`` (saar answers the response
headers and streams 2xx bodies through itself to learn tool calls, response ids and usage);
"off" is the default ``access_log`` path (two messages per call, status from Envoy's access
log, chat bodies never seen; docs/design/0004). Measured on SSE chat streams: time to first
byte, the delay between chunks and saar's CPU per streamed answer.

``replay``: Router Replay records every decision (``replay.enabled``). Measured on
non-streaming requests at a fixed open-loop rate: request latency, replay on vs off.

Both sides run at the same time behind their own Envoy and saar, sharing one emulator;
requests alternate between the sides in every round so machine noise hits both alike. The
result is the median over rounds of each side's percentile, and the on/off ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from saar.stack import LocalStack, StackPorts, free_port, pick_port_offset  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def _port_offset(raw: dict[str, Any]) -> int:
    return pick_port_offset(
        [p for pool in raw["pools"].values() for p in pool["emulator"]["ports"]]
    )


def _config(tmp: Path, name: str, feature: str, on: bool) -> Path:
    raw: dict[str, Any] = yaml.safe_load((ROOT / "config" / "local.yaml").read_text())
    for pool in raw["pools"].values():
        # A steady token stream: ~1 ms between tokens, so chunk gaps are measurable.
        pool["emulator"]["decode_us_per_token"] = 1000
        pool["emulator"]["prefill_us_per_token"] = 1
        pool["emulator"]["max_tokens_default"] = 32
    raw["replay"] = {"path": str(tmp / f"{name}.sqlite3")}
    if feature == "response-learning":
        raw["server"]["response_path"] = "stream" if on else "access_log"
        raw["server"]["learn_from_response_bodies"] = True
    else:
        raw["replay"]["enabled"] = on
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _cpu_s(stack: LocalStack) -> float:
    """User + system CPU seconds of the stack's saar process (all threads)."""
    child = stack.children.get("saar")
    if child is None or child.process is None:
        return 0.0
    fields = Path(f"/proc/{child.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _stream(session: aiohttp.ClientSession, url: str, sid: str) -> tuple[float, list[float]]:
    body = {
        "model": "auto",
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": f"tell me a story {random.random()}"}],
    }
    started = time.perf_counter()
    first = 0.0
    gaps: list[float] = []
    last = 0.0
    async with session.post(url, json=body, headers={"x-session-id": sid}) as reply:
        assert reply.status == 200, await reply.text()
        async for _chunk in reply.content.iter_any():
            now = time.perf_counter()
            if not first:
                first = now - started
            else:
                gaps.append(now - last)
            last = now
    return first, gaps


async def _plain(session: aiohttp.ClientSession, url: str, sid: str) -> float:
    body = {"model": "auto", "messages": [{"role": "user", "content": "hello " * 200}]}
    started = time.perf_counter()
    async with session.post(url, json=body, headers={"x-session-id": sid}) as reply:
        await reply.read()
        assert reply.status == 200
    return time.perf_counter() - started


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000.0


async def run(feature: str, rounds: int, small: bool) -> dict[str, Any]:
    """Run the A/B benchmark for ``feature``; returns the result document."""
    with tempfile.TemporaryDirectory(prefix="saar-ab-") as tmp_dir:
        tmp = Path(tmp_dir)
        on_cfg = _config(tmp, "on", feature, True)
        off_cfg = _config(tmp, "off", feature, False)
        offset = _port_offset(yaml.safe_load(on_cfg.read_text()))
        control = free_port()
        envoy = ROOT / "envoy" / "local.yaml"
        on = LocalStack(
            on_cfg,
            envoy,
            tmp / "on",
            StackPorts(free_port(), free_port(), free_port(), offset, control),
        )
        off = LocalStack(
            off_cfg,
            envoy,
            tmp / "off",
            StackPorts(free_port(), free_port(), free_port(), offset, control),
            with_emulator=False,
        )
        await on.start()
        await off.start()
        try:
            sides = {"on": on, "off": off}
            per_round: dict[str, list[dict[str, float]]] = {"on": [], "off": []}
            async with aiohttp.ClientSession() as session:
                for round_index in range(rounds):
                    if feature == "response-learning":
                        samples = 10 if small else 40
                        ttfb: dict[str, list[float]] = {"on": [], "off": []}
                        gaps: dict[str, list[float]] = {"on": [], "off": []}
                        cpu = {"on": 0.0, "off": 0.0}
                        for i in range(samples):
                            order = ["on", "off"] if i % 2 == 0 else ["off", "on"]
                            for side in order:
                                url = f"{sides[side].base_url}/v1/chat/completions"
                                before = _cpu_s(sides[side])
                                first, between = await _stream(
                                    session, url, f"{side}-{round_index}-{i}"
                                )
                                cpu[side] += _cpu_s(sides[side]) - before
                                ttfb[side].append(first)
                                gaps[side].extend(between)
                        for side in ("on", "off"):
                            per_round[side].append(
                                {
                                    "ttfb_p50_ms": _pct(ttfb[side], 0.5),
                                    "ttfb_p95_ms": _pct(ttfb[side], 0.95),
                                    "gap_p50_ms": _pct(gaps[side], 0.5),
                                    "gap_p95_ms": _pct(gaps[side], 0.95),
                                    "gap_p99_ms": _pct(gaps[side], 0.99),
                                    # saar's CPU per streamed answer, and per chunk received
                                    # (the client's reads: about one per SSE event here).
                                    "saar_cpu_us_per_stream": 1e6 * cpu[side] / samples,
                                    "chunks_per_stream": (len(gaps[side]) + samples) / samples,
                                }
                            )
                    else:
                        rate = 50.0 if small else 100.0
                        seconds = 2.0 if small else 8.0
                        latencies: dict[str, list[float]] = {"on": [], "off": []}
                        tasks: list[asyncio.Task[None]] = []

                        async def one(
                            side: str, index: int, into: dict[str, list[float]] = latencies
                        ) -> None:
                            url = f"{sides[side].base_url}/v1/chat/completions"
                            into[side].append(await _plain(session, url, f"{side}-{index}"))

                        start = time.perf_counter()
                        for i in range(int(rate * seconds)):
                            # Open loop: requests leave on schedule whatever the latency.
                            delay = start + i / rate - time.perf_counter()
                            if delay > 0:
                                await asyncio.sleep(delay)
                            tasks.append(asyncio.create_task(one("on" if i % 2 else "off", i)))
                        await asyncio.gather(*tasks)
                        for side in ("on", "off"):
                            per_round[side].append(
                                {
                                    "p50_ms": _pct(latencies[side], 0.5),
                                    "p95_ms": _pct(latencies[side], 0.95),
                                    "p99_ms": _pct(latencies[side], 0.99),
                                }
                            )
        finally:
            await off.stop()
            await on.stop()
    summary: dict[str, dict[str, float]] = {}
    for side in ("on", "off"):
        keys = per_round[side][0].keys()
        summary[side] = {k: statistics.median(r[k] for r in per_round[side]) for k in keys}
    ratios = {
        k: summary["on"][k] / summary["off"][k] if summary["off"][k] else float("nan")
        for k in summary["on"]
    }
    return {
        "feature": feature,
        "rounds": rounds,
        "small": small,
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {platform.python_implementation()} "
        f"{platform.python_version()}, 2 shared cores; load generator on the same cores",
        "median_of_rounds": summary,
        "ratio_on_over_off": ratios,
        "per_round": per_round,
    }


def markdown(doc: dict[str, Any]) -> str:
    """A result table."""
    summary = doc["median_of_rounds"]
    lines = [
        f"# A/B latency: {doc['feature']} on vs off",
        "",
        f"{doc['date']}, {doc['machine']}; median over {doc['rounds']} interleaved rounds.",
        "",
        "| metric | on | off | on / off |",
        "|---|---|---|---|",
    ]
    on_cpu = summary["on"].get("saar_cpu_us_per_stream")
    off_cpu = summary["off"].get("saar_cpu_us_per_stream")
    chunks = summary["on"].get("chunks_per_stream")
    for key in summary["on"]:
        lines.append(
            f"| {key} | {summary['on'][key]:.2f} | {summary['off'][key]:.2f} "
            f"| {doc['ratio_on_over_off'][key]:.3f} |"
        )
    if on_cpu is not None and off_cpu is not None and chunks:
        lines += [
            "",
            f"saar CPU per streamed answer: {on_cpu:,.0f} µs observing the body "
            f"(`response_path: stream`), {off_cpu:,.0f} µs on the default `access_log` path; "
            f"{chunks:.1f} chunks per answer, so about "
            f"**{(on_cpu - off_cpu) / chunks:,.0f} µs of saar CPU per observed chunk**.",
        ]
    return "\n".join(lines) + "\n"


def main() -> int:
    """Run one scenario and write ``bench/results/ab-<feature>.{json,md}``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("feature", choices=["response-learning", "replay"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--small", action="store_true", help="a quick run (CI)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    doc = asyncio.run(run(args.feature, args.rounds, args.small))
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"ab-{args.feature}" + ("-small" if args.small else "")
    (args.out / f"{stem}.json").write_text(json.dumps(doc, indent=2) + "\n")
    (args.out / f"{stem}.md").write_text(markdown(doc))
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
