"""Priors round trip through the real stack (issue #7): traffic → feedback → build → reload.

The config poses one switch-or-stay question. A session starts with small talk (``chat``, served
only by the cheap ``qwen3-8b@mi300-small``) and then changes topic to ``coding``, where the
base selector prefers ``qwen3-32b@mi300-medium``. At that decision-drift boundary the switch
economics move the session only if the quality gain pays for the 6x price over the expected
rest of the session. With the configured qualities and ``quality_gap_multiplier`` it does not,
so under the default priors the session stays on the 8B model. Sessions that *start* on coding
go to the 32B model.

Operators then score the coding turns through ``POST /v1/feedback``: poor on the 8B model and
good on the 32B one. ``saar priors build`` (the real CLI) turns the scores into a quality-gap
prior. The config's ``priors.path`` is then pointed at the file and saar is reloaded with
SIGHUP. After that the same topic change moves the session to the 32B model. The replay trace
shows that the priors came from the file and not from the defaults: ``remaining_turns_source``
is ``replay``, and the quality gain equals the file's gap after the policy's shrinkage.
Finally a stricter rebuild of the same file, which has no gap entry, is picked up by the file
watcher without a signal, and the topic change stays on 8B again.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
import yaml

from saar.policy import parse_pairs
from saar.stack import free_port

from .conftest import Stack, StackFactory

pytestmark = pytest.mark.dataplane

Headers = dict[str, str]

SMALL = "qwen3-8b@mi300-small"
LARGE = "qwen3-32b@mi300-medium"
Q_SMALL, Q_LARGE = 0.60, 0.90
"""Configured coding qualities. The base selector takes the 32B model when the gap exceeds its
normalised price difference, 0.3 cost weight x 5/6 = 0.25. The economics weigh the gap with
``GAP_MULTIPLIER``: 0.6 x 0.30 = 0.18 per turn, which is less than that price."""
GAP_MULTIPLIER = 0.6
SESSIONS = 20
"""Sessions per arm. This is exactly the policy's minimum-sample rule, so the entries count."""
MIN_SAMPLES = 20
"""``saar priors build --min-samples`` and the policy's ``Priors.min_samples``."""
SHRINKAGE = 5.0
"""``saar priors build --shrinkage`` (its default)."""
DEFAULT_REMAINING_TURNS = 8.0
BAD, GOOD = 0.05, 0.95
"""Feedback scores for coding turns on the 8B model and on the 32B model."""
CONCURRENCY = 4

CHAT = "hello there, what a lovely morning it is"
CODING = "please refactor this function so it reads better"


def topic_change_config(http_port: int) -> Any:
    """A config whose sessions face a switch-or-stay question when the topic changes."""

    def edit(raw: dict[str, Any]) -> None:
        for pool in raw["pools"].values():
            pool["emulator"]["decode_us_per_token"] = 50
            pool["emulator"]["prefill_us_per_token"] = 1
            pool["emulator"]["max_tokens_default"] = 8
        raw["routing"] = {
            "default_decision": "chat",
            "decisions": [
                {
                    "name": "coding",
                    "priority": 20,
                    "match": "any",
                    "signals": [{"keywords": ["refactor", "function", "code", "bug"]}],
                    "modelRefs": [
                        {"model": "qwen3-8b", "pool": "mi300-small", "quality": Q_SMALL},
                        {"model": "qwen3-32b", "pool": "mi300-medium", "quality": Q_LARGE},
                    ],
                    "algorithm": {
                        "type": "session_aware",
                        "session_aware": {
                            "fallback_method": "hybrid",
                            "quality_gap_multiplier": GAP_MULTIPLIER,
                        },
                    },
                },
                {
                    "name": "chat",
                    "priority": 0,
                    "modelRefs": [{"model": "qwen3-8b", "pool": "mi300-small"}],
                    "algorithm": {
                        "type": "session_aware",
                        "session_aware": {"fallback_method": "hybrid"},
                    },
                },
            ],
        }
        raw.setdefault("replay", {})["http_address"] = f"127.0.0.1:{http_port}"

    return edit


def routed(headers: Headers) -> str:
    """``model@pool`` from the decision headers."""
    return f"{headers['x-vsr-selected-model']}@{headers['x-vsr-selected-pool']}"


def session_aware(headers: Headers, name: str) -> str:
    """The session-aware entry of one ``x-vsr-learning-*`` header."""
    return dict(parse_pairs(headers[f"x-vsr-learning-{name}"]))["session_aware"]


async def ask(client: openai.AsyncOpenAI, session: str, messages: list[Any]) -> tuple[Headers, str]:
    """One turn through Envoy. Returns the response headers and the answer's text."""
    raw = await client.chat.completions.with_raw_response.create(
        model="auto",
        messages=messages,
        extra_headers={"x-session-id": session, "x-conversation-id": f"{session}-c"},
    )
    return dict(raw.headers.items()), raw.parse().choices[0].message.content or ""


async def topic_change(client: openai.AsyncOpenAI, session: str) -> Headers:
    """Small talk, then coding in the same conversation. Returns the second turn's headers."""
    messages: list[Any] = [{"role": "user", "content": CHAT}]
    first, answer = await ask(client, session, messages)
    assert (routed(first), first["x-vsr-selected-decision"]) == (SMALL, "chat")
    messages += [{"role": "assistant", "content": answer}, {"role": "user", "content": CODING}]
    second, _ = await ask(client, session, messages)
    assert second["x-vsr-selected-decision"] == "coding"
    return second


async def coding_from_start(client: openai.AsyncOpenAI, session: str) -> Headers:
    """A session whose first turn is coding."""
    headers, _ = await ask(client, session, [{"role": "user", "content": CODING}])
    assert headers["x-vsr-selected-decision"] == "coding"
    return headers


async def run_all(sessions: list[Coroutine[Any, Any, Headers]]) -> list[Headers]:
    """Run sessions a few at a time, because the machine has only two cores."""
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(session: Coroutine[Any, Any, Headers]) -> Headers:
        async with gate:
            return await session

    return list(await asyncio.gather(*(one(s) for s in sessions)))


async def feedback(http: aiohttp.ClientSession, replay_id: str, score: float) -> bool:
    """POST an outcome score and return ``created``. Retries while the record is still queued."""
    deadline = time.monotonic() + 10.0
    while True:
        async with http.post(
            "/v1/feedback",
            json={"replay_id": replay_id, "score": score, "note": "priors round trip"},
            headers={"Idempotency-Key": f"rt-{replay_id}"},
        ) as reply:
            status, body = reply.status, await reply.json()
        if status != 404 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert status in (200, 201), body
    assert (body["replay_id"], body["score"]) == (replay_id, score)
    assert body["created"] is (status == 201)
    return bool(body["created"])


async def get_json(http: aiohttp.ClientSession, path: str) -> dict[str, Any]:
    """GET a replay resource. Waits until the writer has committed the record."""
    deadline = time.monotonic() + 10.0
    while True:
        async with http.get(path) as reply:
            status, body = reply.status, await reply.json()
        if status == 200 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert status == 200, body
    data: dict[str, Any] = body
    return data


def saar_cli(*args: str) -> str:
    """Run the real ``saar`` command line and return its stdout."""
    done = subprocess.run(
        [sys.executable, "-m", "saar", *args], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def applied_reloads(stack: Stack) -> float:
    """The value of ``saar_config_reloads_total{result="applied"}``."""
    match = re.search(
        r'^saar_config_reloads_total\{result="applied"\} (\S+)$', stack.metrics_text(), re.M
    )
    return float(match.group(1)) if match else 0.0


def used(entry: dict[str, Any], default: float) -> float:
    """The value the policy uses for a replay entry: shrunk towards ``default`` (policy/priors)."""
    n = entry["samples"]
    return float((n * entry["value"] + MIN_SAMPLES * default) / (n + MIN_SAMPLES))


def large_terms(trace: dict[str, Any]) -> dict[str, Any]:
    """The switch terms of the 32B candidate in a decision trace."""
    (terms,) = [c for c in trace["candidates"] if c["physical"] == LARGE]
    return dict(terms)


async def test_priors_from_live_traffic_change_the_switch_decision(
    make_stack: StackFactory, tmp_path: Path
) -> None:
    """Default priors keep a topic-changing session on 8B; priors from feedback move it."""
    http_port = free_port()
    stack = await make_stack(topic_change_config(http_port))
    config_path = Path(stack.local.config_path)
    db = config_path.parent / "replay-0.sqlite3"
    saar = stack.local.children["saar"]

    async with (
        openai.AsyncOpenAI(base_url=f"{stack.base_url}/v1", api_key="x", max_retries=0) as api,
        aiohttp.ClientSession(base_url=f"http://127.0.0.1:{http_port}") as http,
    ):
        # 1. Traffic under the default priors. The topic change stays on 8B, and fresh coding
        #    sessions go to 32B.
        stayed = await run_all([topic_change(api, f"drift-{i}") for i in range(SESSIONS)])
        fresh = await run_all([coding_from_start(api, f"fresh-{i}") for i in range(SESSIONS)])
        assert [routed(h) for h in stayed] == [SMALL] * SESSIONS
        assert {session_aware(h, "actions") for h in stayed} == {"reselect"}
        assert {session_aware(h, "reasons") for h in stayed} == {"reselect=decision_drift"}
        assert [routed(h) for h in fresh] == [LARGE] * SESSIONS
        assert {session_aware(h, "actions") for h in fresh} == {"establish_baseline"}

        # 2. Outcome feedback on the recorded replay ids: 8B coding went badly, 32B coding well.
        created = await asyncio.gather(
            *(feedback(http, h["x-vsr-replay-id"], BAD) for h in stayed),
            *(feedback(http, h["x-vsr-replay-id"], GOOD) for h in fresh),
        )
        assert all(created)
        # A retried POST with the same Idempotency-Key is stored once.
        assert not await feedback(http, stayed[0]["x-vsr-replay-id"], BAD)

        # 3. Build the priors with the real CLI. Every session is over (--open-after 0).
        out = tmp_path / "priors.json"
        build = ["priors", "build", "--db", str(db), "--open-after", "0"]
        said = saar_cli(*build, "--out", str(out), "--min-samples", str(MIN_SAMPLES))
        records, keys = 3 * SESSIONS, 2 * SESSIONS
        assert (
            f"2 quality gaps, 0 handoff penalties, 2 remaining-turn priors from {records} " in said
        )
        document = json.loads(out.read_text())
        assert (document["records"], document["keys"], document["min_samples"]) == (
            records,
            keys,
            MIN_SAMPLES,
        )
        gaps = {(g["decision"], g["from"], g["to"]): g for g in document["quality_gap"]}
        assert set(gaps) == {("coding", SMALL, LARGE), ("coding", LARGE, SMALL)}
        gap = gaps[("coding", SMALL, LARGE)]
        # Per-model means shrunk towards the decision's mean. With equal arms the mean cancels.
        expected_gap = SESSIONS * (GOOD - BAD) / (SESSIONS + SHRINKAGE)
        assert (gap["samples"], gap["source"]) == (SESSIONS, "replay")
        assert gap["value"] == pytest.approx(expected_gap, abs=1e-6)
        assert gaps[("coding", LARGE, SMALL)]["value"] == pytest.approx(-expected_gap, abs=1e-6)
        assert gap["value"] > Q_LARGE - Q_SMALL  # feedback says the gap is larger than configured
        assert document["handoff_penalty"] == []  # no session switched models
        turns = {t["decision"]: t for t in document["remaining_turns"]}
        assert {d: (t["value"], t["samples"]) for d, t in turns.items()} == {
            "chat": (1.0, SESSIONS),  # one coding turn follows each chat turn
            "coding": (0.0, keys),  # coding turns were the sessions' last turns
        }
        assert all(e["samples"] >= MIN_SAMPLES for e in [*gaps.values(), *turns.values()])
        # The minimum-sample rule: one more sample required, and the 20-sample entries are left out.
        thin = tmp_path / "thin.json"
        saar_cli(*build, "--out", str(thin), "--min-samples", str(MIN_SAMPLES + 1))
        thin_document = json.loads(thin.read_text())
        assert thin_document["quality_gap"] == []
        assert [t["decision"] for t in thin_document["remaining_turns"]] == ["coding"]

        # 4. Point priors.path at the file (atomic rename, as a ConfigMap update does) and reload.
        reloads = applied_reloads(stack)
        raw = yaml.safe_load(config_path.read_text())
        raw["priors"] = {"path": str(out)}
        staged = config_path.with_name(config_path.name + ".new")
        staged.write_text(yaml.safe_dump(raw, sort_keys=False))
        os.replace(staged, config_path)
        saar.signal(signal.SIGHUP)
        deadline = time.monotonic() + 10.0
        while applied_reloads(stack) <= reloads or "config_reloaded" not in saar.output():
            assert time.monotonic() < deadline, stack.local.logs()
            await asyncio.sleep(0.05)

        # 5. The same topic change now moves the session to 32B, as the priors say.
        moved = await run_all([topic_change(api, f"again-{i}") for i in range(4)])
        assert [routed(h) for h in moved] == [LARGE] * 4
        assert {session_aware(h, "reasons") for h in moved} == {"reselect=decision_drift"}
        assert routed(await coding_from_start(api, "fresh-after")) == LARGE

        # 6. The replay traces explain the difference, and the priors' source is the file.
        before = (await get_json(http, f"/v1/replay/{stayed[0]['x-vsr-replay-id']}"))["decision"]
        after = (await get_json(http, f"/v1/replay/{moved[0]['x-vsr-replay-id']}"))["decision"]
        for record, target in ((before, SMALL), (after, LARGE)):
            trace = record["trace"]
            assert (trace["current"], trace["base_choice"], trace["target"]) == (
                SMALL,
                LARGE,
                target,
            )
            assert trace["decision_drift"] is True
        old, new = before["trace"], after["trace"]
        assert (old["remaining_turns_source"], old["expected_remaining_turns"]) == (
            "default",
            DEFAULT_REMAINING_TURNS,
        )
        assert new["remaining_turns_source"] == "replay"
        assert new["expected_remaining_turns"] == pytest.approx(
            used(turns["coding"], DEFAULT_REMAINING_TURNS)
        )
        old_terms, new_terms = large_terms(old), large_terms(new)
        # Quality gain per turn of horizon: the configured gap before, the file's gap after.
        assert old_terms["quality_gain"] / old_terms["horizon"] == pytest.approx(
            GAP_MULTIPLIER * (Q_LARGE - Q_SMALL)
        )
        assert new_terms["quality_gain"] / new_terms["horizon"] == pytest.approx(
            GAP_MULTIPLIER * used(gap, Q_LARGE - Q_SMALL)
        )
        assert old_terms["net"] < 0.0 < new_terms["net"]

        # `saar explain` reads the post-reload decision from the replay file.
        explained = json.loads(
            saar_cli("explain", moved[0]["x-vsr-replay-id"], "--db", str(db), "--json")
        )
        assert (explained["current"], explained["routed"]) == (SMALL, LARGE)
        assert explained["session"]["remaining_turns_source"] == "replay"
        assert explained["boundary"]["decision_drift"] is True
        # The live explain endpoint re-runs the pre-reload turn under the reloaded config. With
        # the file's priors the same turn would have moved.
        rerun = await get_json(http, f"/v1/replay/{stayed[0]['x-vsr-replay-id']}/explain")
        assert rerun["routed"] == SMALL
        assert rerun["counterfactuals"]["source"] == "rerun"
        assert rerun["counterfactuals"]["routes"]["apply"] == LARGE
        assert rerun["counterfactuals"]["actions"]["apply"] == "reselect/decision_drift"

        # 7. A rebuilt priors file is picked up without a signal: the file watcher follows the
        #    priors.path that the reload set. The stricter build has no quality gap, so the
        #    topic change stays on 8B again.
        staged = out.with_name("priors.json.new")
        staged.write_bytes(thin.read_bytes())
        os.replace(staged, out)
        deadline = time.monotonic() + 15.0
        attempt = 0
        while True:
            back = await topic_change(api, f"back-{attempt}")
            if routed(back) == SMALL:
                break
            assert time.monotonic() < deadline, stack.local.logs()
            attempt += 1
            await asyncio.sleep(0.25)
        trace = (await get_json(http, f"/v1/replay/{back['x-vsr-replay-id']}"))["decision"]["trace"]
        assert trace["remaining_turns_source"] == "replay"
        terms = large_terms(trace)
        assert terms["quality_gain"] / terms["horizon"] == pytest.approx(
            GAP_MULTIPLIER * (Q_LARGE - Q_SMALL)
        )
        assert terms["net"] < 0.0
        assert "file_changed" in saar.output()
