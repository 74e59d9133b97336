"""Operating saar: metrics match decisions, SIGTERM drains without failures, config reloads."""

from __future__ import annotations

import asyncio
import re
import signal
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from saar.policy import parse_pairs

from .conftest import StackFactory

pytestmark = pytest.mark.dataplane

HEADERS = {"x-session-id": "ops", "x-conversation-id": "ops-c"}


def samples(text: str, name: str) -> dict[str, float]:
    """All samples of one metric family: label string → value."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        match = re.match(rf"^{re.escape(name)}(\{{[^}}]*\}})? (\S+)$", line)
        if match:
            found[match.group(1) or ""] = float(match.group(2))
    return found


def api(stack: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=f"{stack.base_url}/v1", api_key="x", max_retries=0, default_headers=HEADERS
    )


async def test_metrics_move_as_the_decisions_say(make_stack: StackFactory) -> None:
    """After a session, saar_decisions_total counts exactly the actions the headers showed."""
    stack = await make_stack()
    seen: dict[str, int] = {}
    async with api(stack) as client:
        for text in ("hello", "hello again", "refactor this function", "continue"):
            raw = await client.chat.completions.with_raw_response.create(
                model="auto", messages=[{"role": "user", "content": text}]
            )
            reason = dict(parse_pairs(raw.headers["x-vsr-learning-reasons"]))["session_aware"]
            seen[reason] = seen.get(reason, 0) + 1
    decisions = samples(stack.metrics_text(), "saar_decisions_total")
    counted: dict[str, int] = {}
    for labels, value in decisions.items():
        action = re.search(r'action="([^"]+)"', labels)
        reason = re.search(r'reason="([^"]+)"', labels)
        assert action and reason
        key = f"{action.group(1)}={reason.group(1)}"
        counted[key] = counted.get(key, 0) + int(value)
    assert seen == counted
    routed = samples(stack.metrics_text(), "saar_routed_requests_total")
    assert 4 == sum(routed.values())
    message_counts = samples(stack.metrics_text(), "saar_extproc_message_seconds_count")
    assert 4 == message_counts['{phase="request_headers"}']
    assert 4 == message_counts['{phase="request_body"}']
    # Chat calls cost two messages (docs/design/0004): the responses arrive on the access log.
    assert '{phase="response_headers"}' not in message_counts
    matched: dict[str, float] = {}
    for _ in range(40):  # Envoy flushes its access-log batch every 100 ms
        matched = samples(stack.metrics_text(), "saar_access_log_entries_total")
        if matched.get('{outcome="matched"}') == 4:
            break
        await asyncio.sleep(0.05)
    assert {'{outcome="matched"}': 4.0} == matched
    responses = samples(stack.metrics_text(), "saar_upstream_responses_total")
    assert 4 == sum(v for labels, v in responses.items() if 'status_class="2xx"' in labels)


def slow_pools(raw: dict[str, Any]) -> None:
    """Each answer takes about a second, so requests are in flight when SIGTERM lands."""
    for pool in raw["pools"].values():
        pool["emulator"]["decode_us_per_token"] = 150_000
        pool["emulator"]["max_tokens_default"] = 8
    raw["server"]["drain_seconds"] = 10


async def test_sigterm_drains_in_flight_requests(make_stack: StackFactory) -> None:
    """SIGTERM during in-flight requests: every request still succeeds, saar exits 0."""
    stack = await make_stack(slow_pools)
    async with api(stack) as client:

        async def ask(index: int) -> Any:
            return await client.chat.completions.with_raw_response.create(
                model="auto", messages=[{"role": "user", "content": f"question {index}"}]
            )

        in_flight = [asyncio.create_task(ask(i)) for i in range(6)]
        await asyncio.sleep(0.4)
        stack.local.children["saar"].signal(signal.SIGTERM)
        replies = await asyncio.gather(*in_flight)
        late = await ask(99)  # after SIGTERM: Envoy fails open to the default pool
    assert [200] * 6 == [r.status_code for r in replies]
    assert all("x-vsr-selected-model" in r.headers for r in replies)
    assert 200 == late.status_code
    assert 0 == await stack.local.stop_saar()
    assert "saar_stopped" in stack.local.children["saar"].output()


async def test_config_reload_applies_good_and_keeps_old_on_bad(make_stack: StackFactory) -> None:
    """SIGHUP applies a valid change; a broken file is rejected and the old config stays."""
    stack = await make_stack()
    config_path = Path(stack.local.config_path)
    saar = stack.local.children["saar"]
    async with api(stack) as client:

        async def action() -> str:
            raw = await client.chat.completions.with_raw_response.create(
                model="auto", messages=[{"role": "user", "content": "hello"}]
            )
            return dict(parse_pairs(raw.headers["x-vsr-learning-actions"]))["session_aware"]

        assert "bypass" != await action()
        raw = yaml.safe_load(config_path.read_text())
        for decision in raw["routing"]["decisions"]:
            decision["adaptations"] = {"session_aware": {"mode": "bypass"}}
        config_path.write_text(yaml.safe_dump(raw))
        saar.signal(signal.SIGHUP)
        await asyncio.sleep(0.5)
        assert "bypass" == await action()
        assert "config_reload_partial" not in saar.output()

        raw["replay"] = {**(raw.get("replay") or {}), "queue_size": 1234}
        config_path.write_text(yaml.safe_dump(raw))
        saar.signal(signal.SIGHUP)
        await asyncio.sleep(0.5)
        partial = [line for line in saar.output().splitlines() if "config_reload_partial" in line]
        assert 1 == len(partial)
        assert '"needs_restart": ["replay"]' in partial[0]

        config_path.write_text("routing: [this is not valid")
        saar.signal(signal.SIGHUP)
        await asyncio.sleep(0.5)
        assert "bypass" == await action()
    reloads = samples(stack.metrics_text(), "saar_config_reloads_total")
    assert reloads.get('{result="applied"}', 0) >= 1
    assert reloads.get('{result="rejected"}', 0) >= 1
    assert "config_reload_rejected" in saar.output()
