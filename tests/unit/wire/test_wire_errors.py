"""Client errors: statuses, messages, error bodies, and that nothing else ever escapes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wire_bodies import APIS, parse

from saar.policy.facts import Api
from saar.wire import ClientError, api_for_path, error_body

VALID_MESSAGES: dict[Api, Any] = {
    Api.CHAT: {"messages": [{"role": "user", "content": "hi"}]},
    Api.RESPONSES: {"input": "hi"},
    Api.MESSAGES: {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8},
}


def _error(api: Api, data: bytes, max_body_bytes: int = 10_000_000) -> ClientError:
    with pytest.raises(ClientError) as caught:
        parse(api, data, max_body_bytes=max_body_bytes)
    return caught.value


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/v1/chat/completions", Api.CHAT),
        ("/v1/chat/completions/", Api.CHAT),
        ("/v1/responses?stream=true", Api.RESPONSES),
        ("/v1/messages/?beta=true", Api.MESSAGES),
        ("/v1/messages#frag", Api.MESSAGES),
        ("/v1/models", None),
        ("/v1/responses/resp_1", None),
        ("/", None),
        ("", None),
    ],
)
def test_api_for_path(path: str, expected: Api | None) -> None:
    """LLM paths map to their API, query and trailing slash ignored; others pass through."""
    assert expected == api_for_path(path)


@pytest.mark.parametrize("api", APIS, ids=str)
@pytest.mark.parametrize(
    "data",
    [b"", b"   ", b"{", b'{"model": "auto"', b"not json", b'{"model": "auto"} x', b"\xff\xfe{}"],
    ids=["empty", "blank", "brace", "truncated", "garbage", "trailing", "bad-utf8-start"],
)
def test_invalid_json_is_400(api: Api, data: bytes) -> None:
    """Bytes that are not one JSON document → 400 invalid_json."""
    err = _error(api, data)
    assert (400, "invalid_json") == (err.status, err.code)


@pytest.mark.parametrize("api", APIS, ids=str)
def test_invalid_utf8_inside_the_conversation_is_400(api: Api) -> None:
    """Invalid UTF-8 deep inside an undecoded field is still caught."""
    data = b'{"model": "auto", "extra": ["\xed\xa0\x80"]}'
    err = _error(api, data)
    assert (400, "invalid_json", "request body is not valid UTF-8") == (
        err.status,
        err.code,
        err.message,
    )


@pytest.mark.parametrize("api", APIS, ids=str)
def test_body_over_the_limit_is_413(api: Api) -> None:
    """A body larger than max_body_bytes → 413 body_too_large, before any parsing."""
    err = _error(api, b"{" + b" " * 2000 + b"}", max_body_bytes=1000)
    assert (413, "body_too_large") == (err.status, err.code)


@pytest.mark.parametrize("api", APIS, ids=str)
@pytest.mark.parametrize(
    "data", [b"[1, 2]", b'"auto"', b"null", b"42"], ids=["array", "string", "null", "number"]
)
def test_non_object_body_is_400(api: Api, data: bytes) -> None:
    """A JSON value that is not an object → 400 invalid_request."""
    err = _error(api, data)
    assert (400, "invalid_request", "request body must be a JSON object") == (
        err.status,
        err.code,
        err.message,
    )


@pytest.mark.parametrize("api", APIS, ids=str)
def test_deep_nesting_is_400(api: Api) -> None:
    """Nesting deeper than the decoder's bound → 400 invalid_json, not a crash."""
    body = {"model": "auto", **VALID_MESSAGES[api]}
    data = json.dumps(body)[:-1].encode() + b', "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    err = _error(api, data)
    assert (400, "invalid_json") == (err.status, err.code)


@pytest.mark.parametrize(
    ("api", "body", "param", "message"),
    [
        (Api.CHAT, {"messages": []}, "model", "`model` is required"),
        (
            Api.CHAT,
            {"model": 5, "messages": []},
            "model",
            "`model` must be a string, got an integer",
        ),
        (Api.CHAT, {"model": " ", "messages": []}, "model", "`model` must not be empty"),
        (Api.CHAT, {"model": "auto"}, "messages", "`messages` is required"),
        (Api.MESSAGES, {"model": "auto"}, "messages", "`messages` is required"),
        (
            Api.CHAT,
            {"model": "auto", "messages": {"role": "user"}},
            "messages",
            "`messages` must be an array, got an object",
        ),
        (
            Api.CHAT,
            {
                "model": "auto",
                "messages": [{"role": "user", "content": "a"}, {"role": "user", "content": 3}],
            },
            "messages[1].content",
            "`messages[1].content` must be a string or an array of content parts, got an integer",
        ),
        (
            Api.CHAT,
            {"model": "auto", "messages": [{"content": "a"}]},
            "messages[0].role",
            "`messages[0].role` is required",
        ),
        (
            Api.CHAT,
            {"model": "auto", "messages": [], "stream": "yes"},
            "stream",
            "`stream` must be a boolean, got a string",
        ),
        (
            Api.CHAT,
            {"model": "auto", "messages": [], "tools": {}},
            "tools",
            "`tools` must be an array",
        ),
        (
            Api.RESPONSES,
            {"model": "auto", "input": [{"type": "function_call_output", "call_id": 7}]},
            "input[0].call_id",
            "`input[0].call_id` must be a string, got an integer",
        ),
        (
            Api.RESPONSES,
            {"model": "auto", "input": 3},
            "input",
            "`input` must be a string or an array, got an integer",
        ),
        (
            Api.MESSAGES,
            {
                "model": "auto",
                "messages": [{"role": "user", "content": [{"type": "text", "text": 1}]}],
            },
            "messages[0].content[0].text",
            "`messages[0].content[0].text` must be a string, got an integer",
        ),
        (
            Api.MESSAGES,
            {"model": "auto", "messages": [], "metadata": {"user_id": 5}},
            "metadata.user_id",
            "`metadata.user_id` must be a string, got an integer",
        ),
    ],
    ids=[
        "missing-model",
        "model-int",
        "model-blank",
        "chat-no-messages",
        "anthropic-no-messages",
        "messages-object",
        "content-int",
        "role-missing",
        "stream-string",
        "tools-object",
        "call-id-int",
        "input-int",
        "block-text-int",
        "metadata-user-int",
    ],
)
def test_wrong_types_are_400_naming_the_field(
    api: Api, body: dict[str, Any], param: str, message: str
) -> None:
    """A wrong or missing field → 400 invalid_request, with a clear message and param."""
    err = _error(api, json.dumps(body).encode())
    assert (400, "invalid_request", param, message) == (
        err.status,
        err.code,
        err.param,
        err.message,
    )


@pytest.mark.parametrize("api", [Api.CHAT, Api.RESPONSES, None], ids=str)
def test_openai_style_error_body(api: Api | None) -> None:
    """Chat, Responses and unknown paths get OpenAI's error shape."""
    err = ClientError(400, "invalid_request", "`stream` must be a boolean", param="stream")
    expected = {
        "error": {
            "message": "`stream` must be a boolean",
            "type": "invalid_request_error",
            "param": "stream",
            "code": "invalid_request",
        }
    }
    assert expected == json.loads(error_body(api, err))


@pytest.mark.parametrize(
    ("err", "kind"),
    [
        (ClientError.invalid_json("bad"), "invalid_request_error"),
        (ClientError.body_too_large(10, 5), "request_too_large"),
        (ClientError.model_not_found("gpt-9"), "not_found_error"),
    ],
    ids=["400", "413", "404"],
)
def test_anthropic_style_error_body(err: ClientError, kind: str) -> None:
    """Messages gets Anthropic's error shape, the type following the status."""
    expected = {"type": "error", "error": {"type": kind, "message": err.message}}
    assert expected == json.loads(error_body(Api.MESSAGES, err))


def test_model_not_found_bounds_the_name() -> None:
    """An unknown model is 404 and its (client-chosen) name is shown bounded."""
    err = ClientError.model_not_found("m" * 1000)
    assert (404, "model_not_found", "model", True) == (
        err.status,
        err.code,
        err.param,
        len(err.message) < 200,
    )


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(APIS), st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_client_errors(api: Api, data: bytes) -> None:
    """For any bytes, parse_request returns or raises ClientError, nothing else."""
    try:
        parse(api, data).rewrite_model("m")
    except ClientError as err:
        assert err.status in (400, 413)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "role",
                    "content",
                    "type",
                    "text",
                    "id",
                    "call_id",
                    "tool_call_id",
                    "tool_use_id",
                    "tool_calls",
                    "signature",
                    "data",
                    "encrypted_content",
                    "user_id",
                ]
            ),
            inner,
            max_size=4,
        )
    ),
    max_leaves=16,
)
request_like = st.dictionaries(
    st.sampled_from(
        [
            "model",
            "messages",
            "input",
            "instructions",
            "system",
            "tools",
            "functions",
            "stream",
            "user",
            "safety_identifier",
            "metadata",
            "prompt_cache_key",
            "previous_response_id",
            "conversation",
            "container",
            "other",
        ]
    ),
    json_values,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(APIS), request_like, st.dictionaries(st.text(max_size=20), st.text(max_size=20))
)
def test_arbitrary_json_raises_only_client_errors(
    api: Api, body: dict[str, Any], headers: dict[str, str]
) -> None:
    """For any request-shaped JSON and headers, parsing and rewriting raise only ClientError."""
    try:
        parsed = parse(api, json.dumps(body).encode(), headers)
        out = parsed.rewrite_model("m")
    except ClientError as err:
        assert err.status == 400
    else:
        assert "m" == json.loads(out)["model"]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(APIS), st.lists(json_values, max_size=4))
def test_arbitrary_conversations_raise_only_client_errors(api: Api, items: list[Any]) -> None:
    """Random message/item lists in an otherwise valid request raise only ClientError."""
    field = "input" if api is Api.RESPONSES else "messages"
    body = {"model": "auto", field: items}
    try:
        parse(api, json.dumps(body).encode())
    except ClientError as err:
        assert err.status == 400
