"""Facts extracted per API: tool-loop state per call id, turns, text, sizes, flags."""

from __future__ import annotations

import json

import pytest
from wire_bodies import APIS, body_for, facts, parse

from saar.policy.facts import Api, IdentitySource

OPENING = [("system", "You are a coding agent."), ("user", "fix the failing test")]


@pytest.mark.parametrize("api", APIS, ids=str)
def test_parallel_calls_answered_in_one_exchange(api: Api) -> None:
    """Two parallel calls both answered: both ids are results, nothing is pending."""
    got = facts(api, [*OPENING, ("calls", ["c1", "c2"]), ("results", ["c1", "c2"])])
    assert (("c1", "c2"), ()) == (got.tool_result_ids, got.pending_tool_call_ids)
    assert got.in_tool_loop


@pytest.mark.parametrize("api", APIS, ids=str)
def test_partly_answered_calls_leave_the_rest_pending(api: Api) -> None:
    """A call without a result in the trailing exchange is pending, per id."""
    got = facts(api, [*OPENING, ("calls", ["c1", "c2"]), ("results", ["c1"])])
    assert (("c1",), ("c2",)) == (got.tool_result_ids, got.pending_tool_call_ids)


@pytest.mark.parametrize("api", APIS, ids=str)
def test_dangling_call_at_the_end_is_pending(api: Api) -> None:
    """The last assistant turn's unanswered call is pending."""
    got = facts(api, [*OPENING, ("calls", ["c1"])])
    assert ((), ("c1",)) == (got.tool_result_ids, got.pending_tool_call_ids)


@pytest.mark.parametrize("api", APIS, ids=str)
def test_user_message_after_results_ends_the_loop(api: Api) -> None:
    """A user message after the results: no trailing results, nothing pending."""
    events = [*OPENING, ("calls", ["c1", "c2"]), ("results", ["c1", "c2"]), ("user", "thanks")]
    got = facts(api, events)
    assert ((), (), False) == (got.tool_result_ids, got.pending_tool_call_ids, got.in_tool_loop)


@pytest.mark.parametrize("api", APIS, ids=str)
def test_old_dangling_call_does_not_lock_forever(api: Api) -> None:
    """A call never answered in older history is not pending once a new exchange started."""
    events = [*OPENING, ("calls", ["old"]), ("user", "never mind")]
    got = facts(api, events)
    later = facts(api, [*events, ("assistant", "ok"), ("user", "next task")])
    assert ((), (), (), ()) == (
        got.tool_result_ids,
        got.pending_tool_call_ids,
        later.tool_result_ids,
        later.pending_tool_call_ids,
    )


@pytest.mark.parametrize("api", APIS, ids=str)
def test_only_the_trailing_exchange_counts(api: Api) -> None:
    """Earlier answered calls are history, not results; the call count covers all of them."""
    events = [
        *OPENING,
        ("calls", ["a1"]),
        ("results", ["a1"]),
        ("assistant", "done with a"),
        ("user", "now b"),
        ("calls", ["b1", "b2"]),
        ("results", ["b2"]),
    ]
    got = facts(api, events)
    assert (("b2",), ("b1",), 3) == (
        got.tool_result_ids,
        got.pending_tool_call_ids,
        got.tool_call_count,
    )


@pytest.mark.parametrize("api", APIS, ids=str)
def test_turn_index_counts_assistant_turns(api: Api) -> None:
    """turn_index is the number of assistant turns already in the history."""
    events = [*OPENING, ("calls", ["c1", "c2"]), ("results", ["c1", "c2"]), ("assistant", "ok")]
    assert 0 == facts(api, OPENING).turn_index
    assert 2 == facts(api, [*events, ("user", "more")]).turn_index


@pytest.mark.parametrize("api", APIS, ids=str)
def test_last_user_text_is_the_last_human_message(api: Api) -> None:
    """last_user_text is the last user message's text, not tool results."""
    events = [*OPENING, ("assistant", "which one?"), ("user", "the auth test")]
    tool_events = [*events, ("calls", ["c1"]), ("results", ["c1"])]
    assert "the auth test" == facts(api, events).last_user_text
    assert "the auth test" == facts(api, tool_events).last_user_text


@pytest.mark.parametrize("api", APIS, ids=str)
def test_last_user_text_is_bounded(api: Api) -> None:
    """A huge user message is cut to 8 Ki characters for the signals."""
    got = facts(api, [("user", "x" * 100_000)])
    assert 8192 == len(got.last_user_text)


@pytest.mark.parametrize("api", APIS, ids=str)
def test_context_tokens_grow_with_the_conversation(api: Api) -> None:
    """context_tokens is about a quarter of the conversation's bytes."""
    got = facts(api, [("user", "word " * 4000)])
    assert 5000 <= got.context_tokens <= 5100


@pytest.mark.parametrize("api", APIS, ids=str)
@pytest.mark.parametrize(
    ("extra", "expected"),
    [({}, (False, False)), ({"stream": True}, (True, False)), ({"stream": None}, (False, False))],
    ids=["absent", "stream", "null"],
)
def test_stream_flag(api: Api, extra: dict[str, object], expected: tuple[bool, bool]) -> None:
    """stream is read from the body; absent or null means False."""
    got = facts(api, OPENING, **extra)
    assert expected == (got.stream, got.has_tools)


@pytest.mark.parametrize("api", APIS, ids=str)
@pytest.mark.parametrize(
    ("tools", "expected"),
    [([], False), (None, False), ([{"type": "function", "name": "read"}], True)],
    ids=["empty", "null", "one"],
)
def test_has_tools_means_a_nonempty_tools_array(api: Api, tools: object, expected: bool) -> None:
    """has_tools is True only for a non-empty ``tools`` array."""
    assert expected == facts(api, OPENING, tools=tools).has_tools


def test_has_tools_tolerates_whitespace_in_an_empty_array() -> None:
    """``[`` followed by lots of whitespace and ``]`` is still empty."""
    body = b'{"model":"auto","messages":[],"tools":[' + b" " * 200 + b"]}"
    assert False is parse(Api.CHAT, body).facts.has_tools


@pytest.mark.parametrize("api", APIS, ids=str)
def test_message_count_and_identity_fields(api: Api) -> None:
    """message_count counts messages/items; request id and model are carried through."""
    got = facts(api, [("user", "a"), ("assistant", "b"), ("user", "c")])
    assert (3, "req-1", "auto", api) == (
        got.message_count,
        got.request_id,
        got.logical_model,
        got.api,
    )


def test_anthropic_results_in_one_message_with_appended_text() -> None:
    """Claude Code appends text to a tool_result message: it is still a result message."""
    body = body_for(Api.MESSAGES, [*OPENING, ("calls", ["t1", "t2"])])
    body["messages"].append(
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": "a"},
                {"type": "tool_result", "tool_use_id": "t2", "content": [{"type": "text"}]},
                {"type": "text", "text": "<system-reminder>keep going</system-reminder>"},
            ],
        }
    )
    got = parse(Api.MESSAGES, body).facts
    assert (("t1", "t2"), (), "fix the failing test") == (
        got.tool_result_ids,
        got.pending_tool_call_ids,
        got.last_user_text,
    )


def test_anthropic_results_split_over_two_user_messages() -> None:
    """Results spread over consecutive user messages are all trailing results."""
    events = [*OPENING, ("calls", ["t1", "t2"]), ("results", ["t1"]), ("results", ["t2"])]
    got = facts(Api.MESSAGES, events)
    assert (("t1", "t2"), ()) == (got.tool_result_ids, got.pending_tool_call_ids)


def test_responses_outputs_after_previous_response_id() -> None:
    """Only function_call_output items after previous_response_id: results, none pending."""
    got = facts(Api.RESPONSES, [("results", ["call_a", "call_b"])], previous_response_id="resp_1")
    assert (("call_a", "call_b"), (), "resp_1") == (
        got.tool_result_ids,
        got.pending_tool_call_ids,
        got.previous_response_id,
    )
    assert IdentitySource.PREVIOUS_RESPONSE == got.session_source


def test_responses_reasoning_and_calls_are_one_turn() -> None:
    """reasoning + two function_calls form one assistant turn, as in Chat."""
    body = body_for(Api.RESPONSES, [*OPENING, ("calls", ["c1", "c2"]), ("results", ["c1"])])
    body["input"].insert(1, {"type": "reasoning", "id": "rs_1", "summary": []})
    got = parse(Api.RESPONSES, body).facts
    assert (1, ("c1",), ("c2",), 2) == (
        got.turn_index,
        got.tool_result_ids,
        got.pending_tool_call_ids,
        got.tool_call_count,
    )


def test_responses_string_input_is_one_user_message() -> None:
    """A string ``input`` is the user's text."""
    got = parse(Api.RESPONSES, {"model": "auto", "input": "hello there"}).facts
    assert ("hello there", 1, 0) == (got.last_user_text, got.message_count, got.turn_index)


def test_responses_easy_messages_and_custom_tool_calls() -> None:
    """Easy input messages (no type) and custom_tool_call items are understood."""
    body = {
        "model": "auto",
        "input": [
            {"role": "user", "content": "patch it"},
            {"type": "custom_tool_call", "call_id": "x1", "name": "apply", "input": "..."},
            {"type": "custom_tool_call_output", "call_id": "x1", "output": "done"},
        ],
    }
    got = parse(Api.RESPONSES, body).facts
    assert ("patch it", ("x1",), ()) == (
        got.last_user_text,
        got.tool_result_ids,
        got.pending_tool_call_ids,
    )


def test_chat_content_parts_are_joined() -> None:
    """Text parts of a user message are joined with newlines; images are skipped."""
    content = [
        {"type": "text", "text": "look at"},
        {"type": "image_url", "image_url": {"url": "data:..."}},
        {"type": "text", "text": "this"},
    ]
    body = {"model": "auto", "messages": [{"role": "user", "content": content}]}
    assert "look at\nthis" == parse(Api.CHAT, body).facts.last_user_text


def test_duplicate_call_ids_are_reported_once() -> None:
    """A call id repeated in results is listed once."""
    got = facts(Api.CHAT, [*OPENING, ("calls", ["c1"]), ("results", ["c1", "c1"])])
    assert ("c1",) == got.tool_result_ids


def test_signal_headers_are_filtered_and_bounded() -> None:
    """Only headers named by signals are kept, values cut to 256 characters."""
    headers = {"x-tier": "gold" * 100, "authorization": "secret", "x-other": "1"}
    got = parse(
        Api.CHAT,
        body_for(Api.CHAT, OPENING),
        headers,
        header_signals=frozenset({"x-tier", "x-absent"}),
    ).facts
    assert {"x-tier": ("gold" * 100)[:256]} == dict(got.headers)


def test_facts_survive_pretty_printed_bodies() -> None:
    """Indented JSON parses to the same facts as compact JSON."""
    body = body_for(Api.CHAT, [*OPENING, ("calls", ["c1"]), ("results", ["c1"])])
    compact = parse(Api.CHAT, body).facts
    pretty = parse(Api.CHAT, json.dumps(body, indent=4).encode()).facts
    assert compact.tool_result_ids == pretty.tool_result_ids
    assert compact.session_id == pretty.session_id
