"""ResponseObserver: facts from the emulator's real bodies and from provider-shaped samples."""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from saar.emulator import EmulatorPools, EmulatorSpec
from saar.policy.facts import Api, ResponseFacts
from saar.wire.response import MAX_TOOL_CALLS, ResponseObserver, needs_body

APIS = (Api.CHAT, Api.RESPONSES, Api.MESSAGES)
PATHS = {
    Api.CHAT: "/v1/chat/completions",
    Api.RESPONSES: "/v1/responses",
    Api.MESSAGES: "/v1/messages",
}
# Long enough to fill whole 16-token cache blocks, so the repeated request reports cached tokens.
PROMPT = "please look at the repository layout and explain each module in a few words " * 3
CALLS = {
    "text": "",
    "one": ' [[call:read_file {"path": "a.py"}]]',
    "two": ' [[call:read_file]] [[call:list_dir {"d": 1}]]',
}

# -- recording the emulator --------------------------------------------------------------


def _emulator_config() -> dict[str, Any]:
    return {
        "models": {"qwen3-8b": {"quality": 0.6}},
        "pools": {
            "mi300": {
                "serves": [{"model": "qwen3-8b"}],
                "emulator": {
                    "ports": [0],
                    "prefill_us_per_token": 0,
                    "decode_us_per_token": 0,
                    "ttft_base_ms": 0,
                    "max_tokens_default": 12,
                },
            }
        },
    }


def _request(api: Api, *, stream: bool, calls: str) -> dict[str, Any]:
    text = PROMPT + CALLS[calls]
    if api is Api.CHAT:
        body: dict[str, Any] = {
            "model": "qwen3-8b",
            "messages": [{"role": "user", "content": text}],
            "tools": [
                {"type": "function", "function": {"name": n, "parameters": {"type": "object"}}}
                for n in ("read_file", "list_dir")
            ],
        }
        if stream:
            body["stream_options"] = {"include_usage": True}
    elif api is Api.RESPONSES:
        body = {
            "model": "qwen3-8b",
            "input": text,
            "tools": [
                {"type": "function", "name": n, "parameters": {"type": "object"}}
                for n in ("read_file", "list_dir")
            ],
        }
    else:
        body = {
            "model": "qwen3-8b",
            "max_tokens": 12,
            "messages": [{"role": "user", "content": text}],
            "tools": [
                {"name": n, "input_schema": {"type": "object"}} for n in ("read_file", "list_dir")
            ],
        }
    body["stream"] = stream
    return body


@dataclass(frozen=True)
class Recording:
    """One emulator exchange: what was sent back, byte for byte, and the backend's truth."""

    api: Api
    stream: bool
    calls: str
    turn: int
    body: bytes
    truth: dict[str, Any]


async def _record_all() -> list[Recording]:
    spec = EmulatorSpec.from_mapping(_emulator_config())
    out: list[Recording] = []
    async with EmulatorPools(spec) as pools, aiohttp.ClientSession() as http:
        url = pools.replicas[0].url
        for api in APIS:
            for stream in (False, True):
                for calls in CALLS:
                    # The same request twice: cold (cached 0), then warm (cached > 0).
                    for turn in (1, 2):
                        payload = _request(api, stream=stream, calls=calls)
                        async with http.post(url + PATHS[api], json=payload) as resp:
                            assert 200 == resp.status
                            body = await resp.read()
                            rid = resp.headers["x-emulator-request-id"]
                        (truth,) = pools.log(request_id=rid)
                        out.append(Recording(api, stream, calls, turn, body, truth))
                pools.reset()
    return out


@functools.cache
def recordings() -> tuple[Recording, ...]:
    """Every emulator exchange, recorded once per test session."""
    return tuple(asyncio.run(_record_all()))


def recording(api: Api, *, stream: bool, calls: str = "text", turn: int = 2) -> Recording:
    """One recorded exchange."""
    return next(
        r for r in recordings() if (r.api, r.stream, r.calls, r.turn) == (api, stream, calls, turn)
    )


def observe(
    api: Api,
    chunks: Iterable[bytes],
    *,
    status: int = 200,
    streaming: bool = True,
    complete: bool = True,
    max_buffer_bytes: int = 4 * 1024 * 1024,
) -> ResponseFacts:
    """Feed ``chunks`` to a fresh observer and finish it."""
    observer = ResponseObserver(
        api, request_id="r1", status=status, streaming=streaming, max_buffer_bytes=max_buffer_bytes
    )
    for chunk in chunks:
        observer.feed(chunk)
    return observer.finish(complete=complete)


def split_at(data: bytes, cuts: Sequence[int]) -> list[bytes]:
    """Split ``data`` at the given offsets (sorted, deduplicated, clamped)."""
    points = sorted({min(max(c, 0), len(data)) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


def expected_finish(api: Api, calls: str) -> str:
    """The finish reason each API reports for a text answer or tool calls."""
    tool = calls != "text"
    if api is Api.CHAT:
        return "tool_calls" if tool else "stop"
    if api is Api.RESPONSES:
        return "completed"
    return "tool_use" if tool else "end_turn"


SCENARIOS = [
    (api, stream, calls, turn)
    for api in APIS
    for stream in (False, True)
    for calls in CALLS
    for turn in (1, 2)
]


def _scenario_id(case: tuple[Api, bool, str, int]) -> str:
    api, stream, calls, turn = case
    return f"{api}-{'sse' if stream else 'json'}-{calls}-turn{turn}"


STREAMS = [(api, calls) for api in APIS for calls in CALLS]


# -- the emulator's real output ------------------------------------------------------------


@pytest.mark.parametrize("case", SCENARIOS, ids=_scenario_id)
def test_emulator_response_matches_backend_truth(case: tuple[Api, bool, str, int]) -> None:
    """Ids, usage, cached tokens and finish reason equal what the emulated replica logged."""
    api, stream, calls, turn = case
    rec = recording(api, stream=stream, calls=calls, turn=turn)
    truth = rec.truth
    expected = ResponseFacts(
        request_id="r1",
        status=200,
        response_id=truth["response_id"] if api is Api.RESPONSES else None,
        tool_call_ids=tuple(truth["tool_call_ids"]),
        finish_reason=expected_finish(api, calls),
        prompt_tokens=truth["prompt_tokens"],
        cached_tokens=truth["cached_tokens"],
        completion_tokens=truth["completion_tokens"],
        complete=True,
    )
    assert expected == observe(api, [rec.body], streaming=stream)


@pytest.mark.parametrize("api", APIS, ids=str)
def test_warm_turn_reports_cached_tokens(api: Api) -> None:
    """The repeated request reports a warm prefix; the first one a cold cache."""
    cold = observe(api, [recording(api, stream=True, turn=1).body])
    warm = observe(api, [recording(api, stream=True, turn=2).body])
    assert (0, True) == (cold.cached_tokens, (warm.cached_tokens or 0) > 0)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("api", APIS, ids=str)
def test_message_id_is_exposed_but_only_responses_is_provider_state(api: Api, stream: bool) -> None:
    """chatcmpl-/msg_ ids are message_id only; the Responses id is also response_id."""
    rec = recording(api, stream=stream)
    observer = ResponseObserver(api, request_id="r1", status=200, streaming=stream)
    observer.feed(rec.body)
    facts = observer.finish()
    pinned = rec.truth["response_id"] if api is Api.RESPONSES else None
    assert (rec.truth["response_id"], pinned) == (observer.message_id, facts.response_id)


@settings(max_examples=60, deadline=None)
@given(
    case=st.sampled_from(STREAMS),
    cuts=st.lists(st.integers(min_value=0, max_value=20_000), max_size=40),
    ending=st.sampled_from([b"\n", b"\r\n", b"\r"]),
)
def test_any_chunking_and_line_ending_gives_the_same_facts(
    case: tuple[Api, str], cuts: list[int], ending: bytes
) -> None:
    """A recorded stream split at random points, with any line ending, yields the same facts."""
    api, calls = case
    body = recording(api, stream=True, calls=calls).body
    whole = observe(api, [body])
    # Raw newlines only occur in SSE framing: JSON escapes them inside strings.
    converted = body.replace(b"\n", ending)
    assert whole == observe(api, split_at(converted, cuts))


@pytest.mark.parametrize("api", APIS, ids=str)
def test_byte_by_byte_crlf_stream_gives_the_same_facts(api: Api) -> None:
    """One byte per chunk with CRLF endings: every \\r\\n pair is split across chunks."""
    body = recording(api, stream=True, calls="two").body
    crlf = body.replace(b"\n", b"\r\n")
    assert observe(api, [body]) == observe(api, [crlf[i : i + 1] for i in range(len(crlf))])


TERMINAL = {
    Api.CHAT: b"data: [DONE]",
    Api.RESPONSES: b"event: response.completed",
    Api.MESSAGES: b"event: message_stop",
}


@pytest.mark.parametrize("api", APIS, ids=str)
def test_stream_cut_before_terminal_event_is_incomplete(api: Api) -> None:
    """A stream that ends before its terminal event is incomplete; earlier facts are kept."""
    rec = recording(api, stream=True, calls="two")
    body = rec.body
    if api is Api.CHAT:
        # Cut before the finish chunk: no finish reason + usage and no [DONE].
        body = body[: body.index(b'"finish_reason":"tool_calls"')]
    else:
        body = body[: body.index(TERMINAL[api])]
    facts = observe(api, [body])
    pinned = rec.truth["response_id"] if api is Api.RESPONSES else None
    assert (False, tuple(rec.truth["tool_call_ids"]), pinned) == (
        facts.complete,
        facts.tool_call_ids,
        facts.response_id,
    )


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("api", APIS, ids=str)
def test_caller_reporting_a_cut_stream_makes_facts_incomplete(api: Api, stream: bool) -> None:
    """finish(complete=False) (client abort, upstream reset) wins over a whole-looking body."""
    rec = recording(api, stream=stream)
    assert False is observe(api, [rec.body], complete=False).complete


@pytest.mark.parametrize("api", APIS, ids=str)
def test_non_streaming_body_cut_short_is_incomplete(api: Api) -> None:
    """A JSON body missing its tail cannot be decoded: incomplete, no facts invented."""
    body = recording(api, stream=False, calls="one").body
    facts = observe(api, [body[: len(body) // 2]], streaming=False)
    assert (False, None) == (facts.complete, facts.prompt_tokens)


# -- robustness ----------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    api=st.sampled_from(APIS),
    streaming=st.booleans(),
    junk=st.lists(st.binary(max_size=300), max_size=8),
)
def test_garbage_never_raises_and_is_incomplete(
    api: Api, streaming: bool, junk: list[bytes]
) -> None:
    """Random bytes never raise out of feed/finish, and the facts say incomplete."""
    facts = observe(api, [b"\x00\xff", *junk], streaming=streaming)
    assert (False, None) == (facts.complete, facts.response_id)


GARBAGE = [
    b"data: {not json\n\n",
    b'data: {"choices": 5}\n\n',
    b'event: message_start\ndata: {"message": "x"}\n\n',
    b'event: response.completed\ndata: {"response": [1]}\n\n',
    b"\xff\xfe\xfd\n\n\n",
    b'{"id": ',
    b'{"choices": [{"message": {"tool_calls": "nope"}}]}',
]


@pytest.mark.parametrize("payload", GARBAGE, ids=range(len(GARBAGE)))
@pytest.mark.parametrize("api", APIS, ids=str)
def test_malformed_provider_output_is_incomplete(api: Api, payload: bytes) -> None:
    """Malformed events or bodies mark the facts incomplete instead of raising."""
    assert False is observe(api, [payload]).complete


@pytest.mark.parametrize("api", APIS, ids=str)
def test_oversized_json_body_stops_with_bounded_memory(api: Api) -> None:
    """Past max_buffer_bytes the observer drops what it held, stops, and says incomplete."""
    observer = ResponseObserver(
        api, request_id="r1", status=200, streaming=False, max_buffer_bytes=4096
    )
    held = []
    for _ in range(64):
        observer.feed(b'{"pad": "' + b"x" * 1000 if not held else b"x" * 1000)
        held.append(observer.buffered_bytes)
    assert (True, False) == (max(held) <= 4096, observer.finish().complete)


@pytest.mark.parametrize("api", APIS, ids=str)
def test_oversized_sse_event_stops_with_bounded_memory(api: Api) -> None:
    """An SSE event larger than max_buffer_bytes stops the observer: bounded, incomplete."""
    observer = ResponseObserver(
        api, request_id="r1", status=200, streaming=True, max_buffer_bytes=4096
    )
    held = []
    observer.feed(b"data: ")
    for _ in range(64):
        observer.feed(b"y" * 1000)
        held.append(observer.buffered_bytes)
    observer.feed(b"\n\n" + recording(api, stream=True).body)
    assert (True, False) == (max(held) <= 4096, observer.finish().complete)


@pytest.mark.parametrize("status", [400, 404, 429, 500, 503])
@pytest.mark.parametrize("api", APIS, ids=str)
def test_error_status_yields_status_only(api: Api, status: int) -> None:
    """Non-2xx bodies are not parsed: the facts are the status, complete."""
    body = json.dumps({"error": {"message": "boom", "type": "X", "code": status}}).encode()
    assert ResponseFacts(request_id="r1", status=status) == observe(api, [body], status=status)


@pytest.mark.parametrize("api", APIS, ids=str)
def test_empty_success_body_is_incomplete(api: Api) -> None:
    """A 2xx that never delivered a body taught nothing and did not finish properly."""
    assert False is observe(api, [b"", b"  \n"]).complete


@pytest.mark.parametrize("api", APIS, ids=str)
def test_framing_is_sniffed_not_trusted(api: Api) -> None:
    """A JSON body announced as a stream (and SSE announced as JSON) is still read right."""
    json_body = recording(api, stream=False, calls="one")
    sse_body = recording(api, stream=True, calls="one")
    as_stream = observe(api, [json_body.body], streaming=True)
    as_json = observe(api, [sse_body.body], streaming=False)
    assert (tuple(json_body.truth["tool_call_ids"]), tuple(sse_body.truth["tool_call_ids"])) == (
        as_stream.tool_call_ids,
        as_json.tool_call_ids,
    )


def test_finish_is_idempotent_and_feed_after_finish_is_ignored() -> None:
    """finish returns the same facts twice; late chunks change nothing."""
    observer = ResponseObserver(Api.CHAT, request_id="r1", status=200, streaming=True)
    observer.feed(recording(Api.CHAT, stream=True).body)
    first = observer.finish()
    observer.feed(b'data: {"choices":[{"index":0,"finish_reason":"length"}]}\n\n')
    assert first is observer.finish()


# -- provider-shaped samples ---------------------------------------------------------------


def sse(*events: tuple[str | None, dict[str, Any] | str]) -> bytes:
    """Encode events as a provider would (spaced JSON, as Python's json module writes it)."""
    out = []
    for name, data in events:
        payload = data if isinstance(data, str) else json.dumps(data)
        out.append((f"event: {name}\n" if name else "") + f"data: {payload}\n\n")
    return "".join(out).encode()


def openai_chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    """An OpenAI chat.completion.chunk with include_usage (usage: null until the end)."""
    return {
        "id": "chatcmpl-abc",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4.1",
        "system_fingerprint": "fp_1",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        "usage": None,
        "obfuscation": "xyz",
        **extra,
    }


def test_openai_chat_stream_with_parallel_calls_and_null_usage() -> None:
    """OpenAI's shape: usage null per chunk, two calls, ids once per index, final usage."""
    call = {"type": "function", "function": {"name": "f", "arguments": ""}}
    body = sse(
        (None, openai_chunk({"role": "assistant", "content": None, "refusal": None})),
        (None, openai_chunk({"tool_calls": [{"index": 0, "id": "call_A", **call}]})),
        (None, openai_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a"'}}]})),
        (None, openai_chunk({"tool_calls": [{"index": 1, "id": "call_B", **call}]})),
        (None, openai_chunk({"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]})),
        (None, openai_chunk({}, "tool_calls")),
        (
            None,
            {
                "id": "chatcmpl-abc",
                "object": "chat.completion.chunk",
                "choices": [],
                "usage": {
                    "prompt_tokens": 900,
                    "completion_tokens": 20,
                    "total_tokens": 920,
                    "prompt_tokens_details": {"cached_tokens": 768, "audio_tokens": 0},
                    "completion_tokens_details": {"reasoning_tokens": 0},
                },
            },
        ),
        (None, "[DONE]"),
    )
    expected = ResponseFacts(
        request_id="r1",
        status=200,
        tool_call_ids=("call_A", "call_B"),
        finish_reason="tool_calls",
        prompt_tokens=900,
        cached_tokens=768,
        completion_tokens=20,
    )
    assert expected == observe(Api.CHAT, [body])


def test_chat_repeated_ids_per_index_are_counted_once() -> None:
    """Servers that repeat the id on every delta of a call still yield one id per call."""
    deltas = [
        {"tool_calls": [{"index": 0, "id": "call_A", "function": {"arguments": a}}]}
        for a in ("{", "}")
    ]
    body = sse(
        *((None, openai_chunk(d)) for d in deltas),
        (None, openai_chunk({}, "tool_calls")),
        (None, "[DONE]"),
    )
    assert ("call_A",) == observe(Api.CHAT, [body]).tool_call_ids


def test_chat_first_id_per_index_wins() -> None:
    """A server minting a fresh id on every delta of one call still yields its first id."""
    deltas = [{"tool_calls": [{"index": 0, "id": f"call_{n}"}]} for n in range(3)]
    body = sse(
        *((None, openai_chunk(d)) for d in deltas),
        (None, openai_chunk({}, "tool_calls")),
        (None, "[DONE]"),
    )
    assert ("call_0",) == observe(Api.CHAT, [body]).tool_call_ids


def test_chat_parallel_calls_in_one_delta() -> None:
    """Two calls announced in a single delta (one chunk, two indexes) both count."""
    delta = {"tool_calls": [{"index": 0, "id": "c0"}, {"index": 1, "id": "c1"}]}
    body = sse(
        (None, openai_chunk(delta)), (None, openai_chunk({}, "tool_calls")), (None, "[DONE]")
    )
    assert ("c0", "c1") == observe(Api.CHAT, [body]).tool_call_ids


def test_chat_stream_without_usage_completes_on_done() -> None:
    """Without include_usage the stream is complete at [DONE]; usage stays unknown."""
    body = sse(
        (None, openai_chunk({"content": "hi"})), (None, openai_chunk({}, "stop")), (None, "[DONE]")
    )
    facts = observe(Api.CHAT, [body])
    assert (True, "stop", None) == (facts.complete, facts.finish_reason, facts.prompt_tokens)


def test_chat_finish_and_usage_without_done_is_complete() -> None:
    """A final finish_reason and usage make the stream complete even if [DONE] was lost."""
    body = recording(Api.CHAT, stream=True).body
    assert True is observe(Api.CHAT, [body.replace(b"data: [DONE]\n\n", b"")]).complete


def test_chat_finish_without_usage_or_done_is_incomplete() -> None:
    """A finish chunk alone may still be followed by usage: without [DONE] it is incomplete."""
    body = sse((None, openai_chunk({"content": "hi"})), (None, openai_chunk({}, "length")))
    facts = observe(Api.CHAT, [body])
    assert (False, "length") == (facts.complete, facts.finish_reason)


@pytest.mark.parametrize(
    "error",
    [
        {"error": {"message": "engine dead", "type": "InternalServerError", "code": 500}},
        {"object": "error", "message": "engine dead", "type": "InternalServerError", "code": 500},
    ],
    ids=["vllm", "vllm-legacy"],
)
def test_chat_mid_stream_error_is_an_error_finish(error: dict[str, Any]) -> None:
    """vLLM's in-stream error event (then [DONE]) shows up as finish_reason 'error'."""
    body = sse((None, openai_chunk({"content": "hi"})), (None, error), (None, "[DONE]"))
    assert "error" == observe(Api.CHAT, [body]).finish_reason


def test_chat_non_streaming_multiple_choices() -> None:
    """n=2: tool ids from every choice, the finish reason of choice 0."""
    body = json.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "choices": [
                {
                    "index": 1,
                    "message": {"role": "assistant", "content": "x"},
                    "finish_reason": "length",
                },
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "tool_calls": [{"id": "call_Z", "type": "function"}],
                    },
                    "finish_reason": "tool_calls",
                },
            ],
            "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13},
        }
    ).encode()
    facts = observe(Api.CHAT, [body], streaming=False)
    assert (("call_Z",), "tool_calls", 10, None) == (
        facts.tool_call_ids,
        facts.finish_reason,
        facts.prompt_tokens,
        facts.cached_tokens,
    )


def responses_body(status: str, output: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """A Responses object as OpenAI returns it."""
    return {
        "id": "resp_123",
        "object": "response",
        "status": status,
        "output": output,
        "usage": {
            "input_tokens": 2000,
            "input_tokens_details": {"cached_tokens": 1920},
            "output_tokens": 50,
            "output_tokens_details": {"reasoning_tokens": 32},
            "total_tokens": 2050,
        },
        "incomplete_details": None,
        "error": None,
        **extra,
    }


def test_openai_responses_stream_with_reasoning_and_function_call() -> None:
    """OpenAI's event sequence: reasoning item, a function_call item, response.completed."""
    call = {
        "type": "function_call",
        "id": "fc_1",
        "call_id": "call_R",
        "name": "f",
        "arguments": "",
    }
    reasoning = {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAA"}
    created = responses_body("in_progress", [], usage=None)
    body = sse(
        (
            "response.created",
            {"type": "response.created", "sequence_number": 0, "response": created},
        ),
        ("response.in_progress", {"type": "response.in_progress", "response": created}),
        ("response.output_item.added", {"type": "response.output_item.added", "item": reasoning}),
        ("response.output_item.done", {"type": "response.output_item.done", "item": reasoning}),
        ("response.output_item.added", {"type": "response.output_item.added", "item": call}),
        (
            "response.function_call_arguments.delta",
            {"type": "response.function_call_arguments.delta", "delta": "{}"},
        ),
        (
            "response.output_item.done",
            {"type": "response.output_item.done", "item": {**call, "arguments": "{}"}},
        ),
        (
            "response.completed",
            {
                "type": "response.completed",
                "response": responses_body("completed", [reasoning, call]),
            },
        ),
    )
    expected = ResponseFacts(
        request_id="r1",
        status=200,
        response_id="resp_123",
        tool_call_ids=("call_R",),
        finish_reason="completed",
        prompt_tokens=2000,
        cached_tokens=1920,
        completion_tokens=50,
    )
    assert expected == observe(Api.RESPONSES, [body])


def test_responses_incomplete_reports_the_reason() -> None:
    """response.incomplete is terminal and names why (max_output_tokens)."""
    body = sse(
        (
            "response.created",
            {"type": "response.created", "response": responses_body("in_progress", [])},
        ),
        (
            "response.incomplete",
            {
                "type": "response.incomplete",
                "response": responses_body(
                    "incomplete", [], incomplete_details={"reason": "max_output_tokens"}
                ),
            },
        ),
    )
    facts = observe(Api.RESPONSES, [body])
    assert (True, "max_output_tokens", "resp_123") == (
        facts.complete,
        facts.finish_reason,
        facts.response_id,
    )


def test_responses_failed_and_error_events_are_terminal() -> None:
    """response.failed and error end the stream: complete, with their status."""
    failed = sse(
        (
            "response.failed",
            {"type": "response.failed", "response": responses_body("failed", [], usage=None)},
        )
    )
    error = sse(("error", {"type": "error", "code": "server_error", "message": "x"}))
    got = [observe(Api.RESPONSES, [b]) for b in (failed, error)]
    assert [(True, "failed"), (True, "error")] == [(f.complete, f.finish_reason) for f in got]


def test_responses_events_without_event_lines_are_read_by_type() -> None:
    """A proxy that drops `event:` lines: events are recognised by their data's type."""
    body = recording(Api.RESPONSES, stream=True, calls="two")
    stripped = b"\n".join(line for line in body.body.split(b"\n") if not line.startswith(b"event:"))
    assert observe(Api.RESPONSES, [body.body]) == observe(Api.RESPONSES, [stripped])


def test_responses_cut_after_created_still_knows_the_id() -> None:
    """The id comes from response.created, so a cut stream still names its response."""
    body = recording(Api.RESPONSES, stream=True)
    cut = body.body[: body.body.index(b"event: response.output_item.added")]
    facts = observe(Api.RESPONSES, [cut])
    assert (body.truth["response_id"], False) == (facts.response_id, facts.complete)


def test_anthropic_stream_with_cache_usage_and_tool_use() -> None:
    """Anthropic's shape: ping, text + tool_use blocks; usage merged from start and delta."""
    start = {
        "type": "message_start",
        "message": {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "content": [],
            "stop_reason": None,
            "usage": {
                "input_tokens": 12,
                "cache_creation_input_tokens": 100,
                "cache_read_input_tokens": 4000,
                "output_tokens": 1,
            },
        },
    }
    body = sse(
        ("message_start", start),
        ("ping", {"type": "ping"}),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "ok"},
            },
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 1,
                "content_block": {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}},
            },
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": "{}"},
            },
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": 1}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                "usage": {"output_tokens": 42},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    )
    expected = ResponseFacts(
        request_id="r1",
        status=200,
        tool_call_ids=("toolu_1",),
        finish_reason="tool_use",
        prompt_tokens=4112,
        cached_tokens=4000,
        completion_tokens=42,
    )
    assert expected == observe(Api.MESSAGES, [body])


def test_anthropic_message_delta_usage_overrides_start() -> None:
    """Newer servers repeat the input counts in message_delta; the later values win."""
    body = sse(
        (
            "message_start",
            {
                "type": "message_start",
                "message": {"id": "m", "usage": {"input_tokens": 5, "output_tokens": 1}},
            },
        ),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn"},
                "usage": {"input_tokens": 7, "cache_read_input_tokens": 3, "output_tokens": 9},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    )
    facts = observe(Api.MESSAGES, [body])
    assert (10, 3, 9, "end_turn") == (
        facts.prompt_tokens,
        facts.cached_tokens,
        facts.completion_tokens,
        facts.finish_reason,
    )


def test_anthropic_error_event_is_terminal() -> None:
    """An overloaded_error event mid-stream ends it: complete, finish 'error'."""
    body = sse(
        (
            "message_start",
            {"type": "message_start", "message": {"id": "m", "usage": {"input_tokens": 5}}},
        ),
        (
            "error",
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
        ),
    )
    facts = observe(Api.MESSAGES, [body])
    assert (True, "error") == (facts.complete, facts.finish_reason)


def test_anthropic_server_tool_use_is_not_a_client_tool_call() -> None:
    """server_tool_use blocks (web search) run at the provider: no tool loop opens."""
    body = json.dumps(
        {
            "id": "msg_1",
            "type": "message",
            "content": [
                {"type": "server_tool_use", "id": "srvtoolu_1"},
                {"type": "tool_use", "id": "toolu_2"},
            ],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 1, "output_tokens": 1},
        }
    ).encode()
    assert ("toolu_2",) == observe(Api.MESSAGES, [body], streaming=False).tool_call_ids


def test_ids_are_bounded_and_tool_calls_capped() -> None:
    """Absurd ids are cut to the request-side bound; at most MAX_TOOL_CALLS ids are kept."""
    calls = [{"type": "function_call", "call_id": f"call_{i}"} for i in range(MAX_TOOL_CALLS + 10)]
    body = json.dumps(responses_body("completed", calls, id="resp_" + "x" * 1000)).encode()
    facts = observe(Api.RESPONSES, [body], streaming=False)
    assert (256, MAX_TOOL_CALLS) == (len(facts.response_id or ""), len(facts.tool_call_ids))


# -- needs_body ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("api", "stream", "has_tools", "status", "content_type", "expected"),
    [
        (Api.RESPONSES, True, False, 200, "text/event-stream", True),
        (Api.CHAT, False, True, 200, "application/json", True),
        (Api.MESSAGES, True, False, 200, "text/event-stream; charset=utf-8", True),
        (Api.CHAT, False, False, 201, "Application/JSON", True),
        (Api.CHAT, False, False, 200, "", True),
        (Api.CHAT, False, False, 200, "application/problem+json", True),
        (Api.RESPONSES, False, True, 500, "application/json", False),
        (Api.CHAT, True, True, 429, "application/json", False),
        (Api.MESSAGES, False, True, 302, "text/html", False),
        (Api.RESPONSES, False, True, 200, "text/html", False),
        (Api.CHAT, False, True, 200, "text/plain", False),
    ],
)
def test_needs_body_rule(
    api: Api, stream: bool, has_tools: bool, status: int, content_type: str, expected: bool
) -> None:
    """Only 2xx JSON/SSE bodies are observed; error bodies and other media never."""
    assert expected == needs_body(
        api, stream=stream, has_tools=has_tools, status=status, content_type=content_type
    )


@pytest.mark.parametrize(
    "body",
    [
        b"data: [DONE]\n\n",
        b"data:[DONE]\ndata:[DONE]\n",
        b"data: [DONE] trailing\n\n",
        b'data: {"id": "c1", "choices": [{"index": 0, "delta": {"content": "x"}}]}\n\n'
        b"data: [DONE]\n\n",
    ],
    ids=["done-only", "done-twice-one-event", "done-with-junk", "no-finish-reason"],
)
def test_chat_stream_without_a_finish_reason_is_not_whole(body: bytes) -> None:
    """[DONE] alone is not an answer: a Chat stream is whole only once it said why it ended."""
    assert False is observe(Api.CHAT, [body]).complete


def test_chat_stream_with_finish_reason_and_done_is_whole() -> None:
    """The ordinary vLLM ending (a finish reason, then exactly ``[DONE]``) is complete."""
    body = (
        b'data: {"id": "c1", "choices": [{"index": 0, "delta": {"content": "x"}}]}\n\n'
        b'data: {"id": "c1", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}'
        b"\n\ndata: [DONE]\n\n"
    )
    facts = observe(Api.CHAT, [body])
    assert (True, "stop") == (facts.complete, facts.finish_reason)
