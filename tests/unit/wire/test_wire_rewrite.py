"""The ``model`` rewrite: a byte splice that leaves every other byte as it was."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wire_bodies import APIS, body_for, parse

from saar.policy.facts import Api
from saar.wire import ClientError
from saar.wire.json import decode_object
from saar.wire.rewrite import find_model_span, splice

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["model", "role", "content", "x", 'é\n"\\']), inner, max_size=4
        )
    ),
    max_leaves=12,
)
whitespace = st.text(alphabet=" \t\n\r", max_size=3)


@st.composite
def bodies(draw: st.DrawFn) -> tuple[bytes, int, int]:
    """A JSON object with a top-level model at a random position and its value's span."""
    keys = draw(
        st.lists(st.text(max_size=8).filter(lambda k: k != "model"), unique=True, max_size=5)
    )
    position = draw(st.integers(min_value=0, max_value=len(keys)))
    keys.insert(position, "model")
    ascii_only = draw(st.booleans())
    out = bytearray(draw(whitespace).encode() + b"{")
    span = (0, 0)
    for index, key in enumerate(keys):
        if index:
            out += b","
        value: Any = draw(st.text()) if key == "model" else draw(json_values)
        out += draw(whitespace).encode() + json.dumps(key, ensure_ascii=ascii_only).encode()
        out += draw(whitespace).encode() + b":" + draw(whitespace).encode()
        encoded = json.dumps(value, ensure_ascii=ascii_only).encode()
        if key == "model":
            span = (len(out), len(out) + len(encoded))
        out += encoded + draw(whitespace).encode()
    out += b"}" + draw(whitespace).encode()
    return bytes(out), *span


@settings(max_examples=300, deadline=None)
@given(bodies(), st.text())
def test_splice_changes_only_the_model_value(case: tuple[bytes, int, int], new: str) -> None:
    """Every byte outside the top-level model value is unchanged; nested models too."""
    body, start, end = case
    top = decode_object(body)
    assert (start, end) == find_model_span(body, top)
    out = splice(body, (start, end), new)
    tail = len(out) - (len(body) - end)
    assert (body[:start], body[end:], new) == (out[:start], out[tail:], json.loads(out[start:tail]))
    assert new == json.loads(out)["model"]


@pytest.mark.parametrize("api", APIS, ids=str)
def test_rewrite_leaves_nested_model_keys_alone(api: Api) -> None:
    """A "model" key inside the conversation is not the top-level model."""
    body = body_for(api, [("user", '{"model": "auto"} "model":"auto"')], stream=True)
    data = json.dumps(body, indent=2).encode()
    parsed = parse(api, data)
    out = parsed.rewrite_model("qwen3-coder@mi300")
    expected = data.replace(b'"model": "auto",', b'"model": "qwen3-coder@mi300",', 1)
    assert expected == out


def test_rewrite_of_escaped_model_key() -> None:
    """A key spelled with escapes (``mod\\u0065l``) is the model key, as JSON says."""
    data = b'{"messages": [], "mod\\u0065l" : "auto", "stream": false}'
    parsed = parse(Api.CHAT, data)
    assert (b'{"messages": [], "mod\\u0065l" : "gpt-x", "stream": false}', "auto") == (
        parsed.rewrite_model("gpt-x"),
        parsed.facts.logical_model,
    )


def test_rewrite_encodes_unicode_and_quotes() -> None:
    """The new name is JSON-encoded: quotes, backslashes and unicode survive a round trip."""
    parsed = parse(Api.CHAT, {"model": "auto", "messages": []})
    name = 'we"ird\\näme ✓'
    assert name == json.loads(parsed.rewrite_model(name))["model"]


def test_rewrite_keeps_the_original_body() -> None:
    """Rewriting twice works from the original body both times."""
    parsed = parse(Api.CHAT, {"model": "auto", "messages": []})
    parsed.rewrite_model("a")
    assert b'{"model": "b", "messages": []}' == parsed.rewrite_model("b")


@pytest.mark.parametrize(
    "data",
    [
        b'{"model": "auto", "messages": [], "model": "auto"}',
        b'{"model": "gpt", "messages": [], "model": "auto"}',
        b'{"model": "auto", "n": 1, "messages": [], "n": 12}',
        b'{"model": "auto", "n": 12, "messages": [], "n": 1}',
    ],
    ids=["same-model", "different-model", "short-then-long", "long-then-short"],
)
def test_duplicate_top_level_keys_are_rejected(data: bytes) -> None:
    """Duplicate top-level keys make the body ambiguous: 400 at parse, never a wrong splice."""
    with pytest.raises(ClientError) as caught:
        parse(Api.CHAT, data)
    assert (400, "invalid_request") == (caught.value.status, caught.value.code)


def test_body_without_top_level_model_has_no_span() -> None:
    """Only a nested model: the walk reports no top-level model."""
    body = b'{"messages": [{"model": "auto"}]}'
    assert None is find_model_span(body, decode_object(body))
