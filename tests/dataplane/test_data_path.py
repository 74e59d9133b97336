"""The data path with the real Envoy binary: client SDK → Envoy → saar → emulated vLLM pool."""

from __future__ import annotations

from typing import Any

import anthropic
import openai
import pytest

from saar.policy import parse_pairs

from .conftest import StackFactory

pytestmark = pytest.mark.dataplane

SESSION = {"x-session-id": "dp-session", "x-conversation-id": "dp-conv"}


def client(base_url: str, **headers: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=f"{base_url}/v1", api_key="not-needed", default_headers=headers, max_retries=0
    )


def last_record(records: list[dict[str, Any]], **match: Any) -> dict[str, Any]:
    found = [r for r in records if all(r.get(k) == v for k, v in match.items())]
    assert found, f"no backend record matches {match}: {records}"
    return found[-1]


async def test_openai_sdk_request_is_served_by_the_pool_saar_chose(
    make_stack: StackFactory,
) -> None:
    """The openai SDK's request reaches the chosen pool with the rewritten model and key."""
    stack = await make_stack()
    async with client(stack.base_url, **SESSION) as api:
        raw = await api.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": "hello, who are you?"}]
        )
    completion = raw.parse()
    selected_model = raw.headers["x-vsr-selected-model"]
    selected_pool = raw.headers["x-vsr-selected-pool"]
    served_pool = raw.headers["x-emulator-pool"]
    assert selected_pool == served_pool
    assert selected_model == completion.model
    record = last_record(stack.backend_log(), session_id="dp-session")
    assert selected_pool == record["pool"]
    assert selected_model == record["model"]
    assert record["affinity_key"] is not None and record["affinity_key"].startswith("ak-")
    assert len(raw.headers["x-vsr-replay-id"]) == 32
    assert {"session_aware": "establish_baseline"} == dict(
        parse_pairs(raw.headers["x-vsr-learning-actions"])
    )


async def test_streaming_passes_through_untouched(make_stack: StackFactory) -> None:
    """An SSE stream with include_usage arrives whole, with usage, through Envoy and saar."""
    stack = await make_stack()
    async with client(stack.base_url, **SESSION) as api:
        stream = await api.chat.completions.create(
            model="auto",
            messages=[{"role": "user", "content": "stream me a short answer"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    usage = [c.usage for c in chunks if c.usage is not None]
    assert text
    assert 1 == len(usage)
    assert usage[0].completion_tokens > 0


async def test_anthropic_sdk_is_routed_too(make_stack: StackFactory) -> None:
    """The anthropic SDK's Messages request is routed and answered by the chosen pool."""
    stack = await make_stack()
    async with anthropic.AsyncAnthropic(
        base_url=stack.base_url, api_key="not-needed", default_headers=SESSION, max_retries=0
    ) as api:
        raw = await api.messages.with_raw_response.create(
            model="auto", max_tokens=16, messages=[{"role": "user", "content": "hi there"}]
        )
    message = await raw.parse()
    assert raw.headers["x-vsr-selected-model"] == message.model
    assert raw.headers["x-vsr-selected-pool"] == raw.headers["x-emulator-pool"]


async def test_client_cannot_pick_the_pool(make_stack: StackFactory) -> None:
    """Client copies of saar's routing headers are stripped before ext_proc runs."""
    stack = await make_stack()
    forged = {
        **SESSION,
        "x-saar-cluster": "pool_h100_frontier",
        "x-saar-affinity-key": "forged",
    }
    async with client(stack.base_url, **forged) as api:
        raw = await api.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": "hello"}]
        )
    record = last_record(stack.backend_log(), session_id="dp-session")
    assert "h100-frontier" != record["pool"]
    assert raw.headers["x-vsr-selected-pool"] == record["pool"]
    assert "forged" != record["affinity_key"]


async def test_unknown_model_gets_a_clear_404(make_stack: StackFactory) -> None:
    """A model the config does not serve is refused by saar with an OpenAI-style 404."""
    stack = await make_stack()
    async with client(stack.base_url, **SESSION) as api:
        with pytest.raises(openai.NotFoundError) as info:
            await api.chat.completions.create(
                model="gpt-9", messages=[{"role": "user", "content": "hello"}]
            )
    assert "model_not_found" == info.value.code
    assert [] == [r for r in stack.backend_log() if r.get("model") == "gpt-9"]


async def test_fail_open_when_saar_is_down(make_stack: StackFactory) -> None:
    """With saar stopped, Envoy still forwards the request to the default route."""
    stack = await make_stack()
    assert 0 == await stack.local.stop_saar()
    async with client(stack.base_url, **SESSION, **{"x-saar-cluster": "pool_h100_frontier"}) as api:
        raw = await api.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": "hello while saar is away"}]
        )
    assert 200 == raw.status_code
    assert "x-vsr-selected-model" not in raw.headers
    assert "mi300-small" == raw.headers["x-emulator-pool"]
    record = last_record(stack.backend_log(), session_id="dp-session")
    assert "auto" == record["model"]
    assert record["affinity_key"] is None
