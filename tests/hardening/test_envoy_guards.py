"""Through the real Envoy binary: bad input gets JSON errors, and Envoy's guards hold.

The guards are Envoy config, not saar code (envoy/local.yaml): client copies of saar's routing
headers are removed before the route is picked, ext_proc may set only saar's headers, and
credentials are never sent to ext_proc. These tests prove the shipped config does what its
comments say, with a fake ext_proc server where saar itself would be in the way.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import urllib.request
from typing import Any

import pytest
from dataplane.conftest import Stack, StackFactory

from .envoy_fakes import RecordingProcessor, serve

pytestmark = pytest.mark.dataplane

SESSION = {"x-session-id": "guard-s", "x-conversation-id": "guard-c"}
LIMIT = 256 * 1024


def post(
    url: str, body: bytes, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """POST raw bytes; return status, lower-cased headers and body (errors included)."""
    request = urllib.request.Request(url, data=body, method="POST", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, {k.lower(): v for k, v in reply.headers.items()}, reply.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


def raw_request(port: int, path: str, headers: list[tuple[str, str]], body: bytes) -> int:
    """Send one request with exactly ``headers`` (duplicates and any case kept)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.putrequest("POST", path, skip_accept_encoding=True)
        for name, value in headers:
            connection.putheader(name, value)
        connection.putheader("content-length", str(len(body)))
        connection.endheaders(body)
        reply = connection.getresponse()
        reply.read()
        return reply.status
    finally:
        connection.close()


def small_limit(raw: dict[str, Any]) -> None:
    raw["server"]["max_body_bytes"] = LIMIT


def chat_body(text: str = "hello") -> bytes:
    return json.dumps({"model": "auto", "messages": [{"role": "user", "content": text}]}).encode()


def padded(size: int) -> bytes:
    head = b'{"model":"auto","messages":[{"role":"user","content":"'
    tail = b'"}]}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


def stat(stack: Stack, name: str) -> int:
    """One counter from Envoy's admin /stats (0 when absent)."""
    url = f"http://127.0.0.1:{stack.local.ports.envoy_admin}/stats?filter={name}"
    with urllib.request.urlopen(url, timeout=5) as reply:
        text = reply.read().decode()
    values = [int(v) for v in re.findall(rf"{re.escape(name)}: (\d+)", text)]
    return sum(values)


async def test_bad_input_through_envoy_gets_json_errors_and_reaches_no_backend(
    make_stack: StackFactory,
) -> None:
    """Non-JSON, bad UTF-8, empty, oversize and unknown-model bodies get JSON errors from saar."""
    stack = await make_stack(small_limit)
    chat = f"{stack.base_url}/v1/chat/completions"
    messages = f"{stack.base_url}/v1/messages"
    cases = [
        (chat, b"not json at all", 400, "invalid_json"),
        (
            chat,
            b'{"model":"auto","messages":[{"role":"user","content":"\xff"}]}',
            400,
            "invalid_json",
        ),
        (chat, b"", 400, "invalid_json"),
        (chat, b'{"model":"auto","messages":[7]}', 400, "invalid_request"),
        (chat, padded(LIMIT + 1), 413, "body_too_large"),
        (chat, chat_body().replace(b'"auto"', b'"gpt-9"'), 404, "model_not_found"),
    ]
    headers = {**SESSION, "content-type": "application/json"}
    # Warm saar up first: on a loaded runner its first message can pass Envoy's 1 s
    # message_timeout, and Envoy would then (rightly) fail open with the bad body.
    warm, _, _ = await asyncio.to_thread(post, chat, chat_body(), {"x-session-id": "warm-up"})
    assert 200 == warm
    for url, body, status, code in cases:
        got, reply_headers, payload = await asyncio.to_thread(post, url, body, headers)
        assert (status, code) == (got, json.loads(payload)["error"]["code"]), body[:60]
    got, _, payload = await asyncio.to_thread(post, messages, b"{", headers)
    assert (400, "error") == (got, json.loads(payload)["type"])
    rejected = [r for r in stack.backend_log() if r.get("session_id") == SESSION["x-session-id"]]
    assert [] == rejected, "a rejected request reached a backend"
    ok, reply_headers, _ = await asyncio.to_thread(post, chat, padded(LIMIT), headers)
    assert 200 == ok
    assert "x-vsr-selected-model" in reply_headers


async def test_client_errors_through_envoy_are_labelled_json(make_stack: StackFactory) -> None:
    """saar's error bodies reach the client as application/json, with no rejected mutation."""
    stack = await make_stack()
    status, headers, payload = await asyncio.to_thread(
        post, f"{stack.base_url}/v1/chat/completions", b"not json", dict(SESSION)
    )
    assert 400 == status
    assert "invalid_json" == json.loads(payload)["error"]["code"]
    assert 0 == stat(stack, "rejected_header_mutations")
    assert "application/json" == headers["content-type"]


@pytest.mark.parametrize("saar_up", [True, False], ids=["saar-up", "saar-down"])
async def test_forged_routing_headers_are_stripped_in_any_case_and_duplicates(
    make_stack: StackFactory, saar_up: bool
) -> None:
    """Client x-saar-* in any case, repeated, never reach the pool or steer the route."""
    stack = await make_stack()
    if not saar_up:
        assert 0 == await stack.local.stop_saar()
    forged = [
        ("X-Saar-Cluster", "pool_h100_frontier"),
        ("x-saar-cluster", "pool_h100_frontier"),
        ("X-SAAR-AFFINITY-KEY", "forged-1"),
        ("x-saar-affinity-key", "forged-2"),
        ("X-Saar-Affinity-Key", "forged-3"),
        ("content-type", "application/json"),
        ("x-session-id", "forge"),
    ]
    for _ in range(3):
        status = await asyncio.to_thread(
            raw_request, stack.local.ports.listen, "/v1/chat/completions", forged, chat_body()
        )
        assert 200 == status
    records = [r for r in stack.backend_log() if r.get("session_id") == "forge"]
    assert 3 == len(records)
    for record in records:
        assert "h100-frontier" != record["pool"]
        assert not str(record["affinity_key"]).startswith("forged")
        if saar_up:
            assert str(record["affinity_key"]).startswith("ak-")
        else:
            assert record["affinity_key"] is None
            assert "mi300-small" == record["pool"]
            assert {} == {k: v for k, v in record["headers"].items() if k.startswith("x-saar-")}


async def test_envoy_refuses_ext_proc_mutations_outside_the_allow_list(
    make_stack: StackFactory,
) -> None:
    """An ext_proc answer that sets host or x-envoy-* is rejected by Envoy and counted."""
    stack = await make_stack(with_saar=False)
    processor = RecordingProcessor(
        mutations=[
            ("x-envoy-original-dst-host", "10.0.0.1:80"),
            ("host", "evil.example"),
            ("x-saar-cluster", "pool_h100_frontier"),
        ]
    )
    server = await serve(processor, str(stack.local.socket_path))
    try:
        status, _, _ = await asyncio.to_thread(
            post,
            f"{stack.base_url}/v1/chat/completions",
            chat_body(),
            {"x-test-mutate": "1", "x-session-id": "mut", "content-type": "application/json"},
        )
        rejected = stat(stack, "rejected_header_mutations")
    finally:
        await server.stop(grace=None)
    assert processor.seen, "Envoy never called the fake ext_proc server"
    assert rejected >= 1
    # disallow_is_error: a forbidden mutation is an ext_proc *error* that failure_mode_allow
    # does not excuse: the request ends with a 500 and reaches no backend, so a compromised
    # or buggy processor is loud instead of silently redirecting traffic.
    assert 500 == status
    assert [] == [r for r in stack.backend_log() if r.get("session_id") == "mut"]


async def test_credentials_are_never_sent_to_ext_proc(make_stack: StackFactory) -> None:
    """authorization, cookie, x-api-key and friends are kept from ext_proc; identity is not."""
    stack = await make_stack(with_saar=False)
    processor = RecordingProcessor()
    server = await serve(processor, str(stack.local.socket_path))
    secrets = {
        "authorization": "Bearer sk-live-secret",
        "proxy-authorization": "Basic c2VjcmV0",
        "cookie": "session=secret",
        "x-api-key": "sk-ant-secret",
        "api-key": "azure-secret",
    }
    try:
        status, _, _ = await asyncio.to_thread(
            post,
            f"{stack.base_url}/v1/chat/completions",
            chat_body(),
            {**secrets, **SESSION, "content-type": "application/json"},
        )
    finally:
        await server.stop(grace=None)
    assert 200 == status
    assert 1 == len(processor.seen)
    seen = processor.seen[0]
    assert set() == set(secrets) & set(seen)
    assert not any("secret" in value for value in seen.values())
    assert "guard-s" == seen["x-session-id"]
