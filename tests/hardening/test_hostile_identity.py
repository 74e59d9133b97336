"""Hostile session and conversation ids: bounded, hashed, never raw in Redis keys or logs.

Identity headers are client input. They select router memory, so they end up in store keys
and (hashed) in log lines; a raw value there would let a client write Redis keys of its
choosing (globs, Lua-looking text, 1 MB keys) or forge log lines (CR/LF).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import urllib.error
import urllib.request
from dataclasses import replace
from typing import Any

import pytest
import redis.asyncio as aioredis
import structlog
from dataplane.conftest import StackFactory, use_redis

from saar.settings import Settings
from saar.state import build_store
from saar.testing.extproc import ExtProcHarness

# Values that can only arrive through the harness: HTTP/1.1 and Envoy refuse NUL, CR and LF in
# header values and bound header size (60 KiB), but saar must not rely on its proxy for that.
HOSTILE: dict[str, str] = {
    "huge": "A" * (1 << 20),
    "nul": "sess\x00ion",
    "crlf": 'x\r\nlevel=critical event="forged"\r\n',
    "unicode": "séssion-🦊-\u202e-\ufeff-\u200b",
    "traversal": "../../../../etc/passwd",
    "star": "*",
    "glob": "saar:v1:*[a-z]?",
    "lua": "'); redis.call('FLUSHALL'); --",
    "redis-proto": "*1\r\n$8\r\nFLUSHALL\r\n",
    "percent": "%2e%2e%2f%00",
    "backslash": "\\x00\\n",
}
MARKERS = (
    "AAAAAAAA",
    "sess\x00ion",
    "forged",
    "🦊",
    "etc/passwd",
    "[a-z]?",
    "FLUSHALL",
    "%2e%2e",
    "\\x00",
)
KEY_SHAPE = re.compile(r"^saar:v1:[A-Za-z0-9._~:%-]{1,200}$")


def chat(text: str) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "user", "content": text}]}


async def redis_keys(url: str) -> list[str]:
    client = aioredis.from_url(url)
    try:
        return [key.decode("utf-8", "replace") async for key in client.scan_iter(match="*")]
    finally:
        await client.aclose()


def assert_no_raw_value(text: str) -> None:
    for marker in MARKERS:
        assert marker not in text, f"raw client value {marker!r} leaked"


async def test_hostile_ids_become_bounded_hashed_redis_keys(
    settings: Settings, redis_server: Any
) -> None:
    """Every hostile session/conversation id is stored under a short, hashed, safe Redis key."""
    state = replace(settings.state, backend="redis", redis_url=redis_server.url)
    shared = replace(settings, state=state)
    store = build_store(shared.state)
    with structlog.testing.capture_logs() as logs:
        async with ExtProcHarness(shared, store=store) as saar:
            for name, value in HOSTILE.items():
                for headers in (
                    {"x-session-id": value, "x-conversation-id": value},
                    {"x-session-id": "plain", "x-conversation-id": value},
                    {"x-claude-code-session-id": value},
                ):
                    turn = await saar.exchange(body=chat(f"hello {name}"), headers=headers)
                    assert turn.immediate is None, name
                    assert turn.cluster is not None, name
                    assert len(turn.affinity_key or "") <= 64
                    assert_no_raw_value(json.dumps(turn.response_headers))
            await saar.router.drain()
    keys = await redis_keys(redis_server.url)
    assert len(keys) >= len(HOSTILE)
    for key in keys:
        assert KEY_SHAPE.match(key), key[:120]
        assert_no_raw_value(key)
    assert_no_raw_value(repr(logs))


async def test_hostile_ids_in_one_body_field_are_hashed_too(
    settings: Settings, redis_server: Any
) -> None:
    """Body-borne identity (prompt_cache_key, user, metadata.user_id) is hashed like headers."""
    state = replace(settings.state, backend="redis", redis_url=redis_server.url)
    shared = replace(settings, state=state)
    async with ExtProcHarness(shared, store=build_store(shared.state)) as saar:
        for value in HOSTILE.values():
            await saar.exchange(body={**chat("hi"), "prompt_cache_key": value, "user": value})
            await saar.exchange(
                path="/v1/messages",
                body={**chat("hi"), "max_tokens": 1, "metadata": {"user_id": value}},
            )
        await saar.router.drain()
    for key in await redis_keys(redis_server.url):
        assert KEY_SHAPE.match(key), key[:120]
        assert_no_raw_value(key)


@pytest.mark.dataplane
async def test_hostile_ids_through_envoy_stay_out_of_redis_and_saar_logs(
    make_stack: StackFactory, redis_server: Any
) -> None:
    """Through Envoy with debug logging, what Envoy lets through reaches neither keys nor logs."""
    stack = await make_stack(use_redis(redis_server.url))
    await stack.local.stop_saar()
    stack.local.saar_args = ["--log-level", "debug"]
    await stack.local.start_saar()

    def send(headers: dict[str, str]) -> int:
        request = urllib.request.Request(
            f"{stack.base_url}/v1/chat/completions",
            data=json.dumps(chat("hello")).encode(),
            method="POST",
            headers={"content-type": "application/json", **headers},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as reply:
                return int(reply.status)
        except urllib.error.HTTPError as err:
            return int(err.code)

    through = {
        k: v
        for k, v in HOSTILE.items()
        if k in {"traversal", "star", "glob", "lua", "percent", "backslash"}
    }
    through["long"] = "A" * 7_000  # aiohttp (the emulated backend) caps a header at 8 KiB
    for value in through.values():
        status = await asyncio.to_thread(send, {"x-session-id": value, "x-conversation-id": value})
        assert 200 == status, value[:40]
    # Envoy itself refuses a 1 MiB header (431, or a reset while it is still being sent).
    try:
        refused = await asyncio.to_thread(send, {"x-session-id": HOSTILE["huge"]})
    except (ConnectionError, http.client.HTTPException):
        refused = 431
    assert 431 == refused
    await asyncio.sleep(0.3)
    for key in await redis_keys(redis_server.url):
        assert KEY_SHAPE.match(key), key[:120]
        assert_no_raw_value(key)
    assert_no_raw_value(stack.local.children["saar"].output())


@pytest.mark.parametrize("header", ["x-session-id", "x-conversation-id"])
async def test_distinct_hostile_ids_never_share_a_session(settings: Settings, header: str) -> None:
    """Ids that differ only past the hashed prefix (by length) or by one byte stay apart."""
    base = "B" * 5000
    values = [base, base + "C", base[:-1], "\x00", "\x00\x00"]
    async with ExtProcHarness(settings) as saar:
        keys = set()
        for value in values:
            turn = await saar.exchange(
                body=chat("hi"),
                headers={"x-session-id": "same", "x-conversation-id": "same", header: value},
            )
            keys.add(turn.affinity_key)
    assert len(values) == len(keys)
