"""Structure-aware fuzzing of the three API parsers: well-formed agent conversations with
hostile ids and one field of the wrong type, where random JSON rarely gets past the top.

tests/unit/wire already fuzzes arbitrary bytes and arbitrary JSON; these examples reach the
tool-loop walk (Anthropic tool_use/tool_result blocks, Responses function_call items).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from saar.policy.facts import Api
from saar.wire import ClientError

from .fuzz_budget import budget

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit" / "wire"))
from wire_bodies import APIS, body_for, parse

ids = st.one_of(
    st.text(min_size=1, max_size=30),
    st.sampled_from(["call_1", "toolu_1", "*", "../x", "\x00", "a" * 5000, " "]),
)
events = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(["system", "user", "assistant"]), st.text(max_size=30)),
        st.tuples(st.just("calls"), st.lists(ids, min_size=1, max_size=3)),
        st.tuples(st.just("results"), st.lists(ids, min_size=1, max_size=3)),
    ),
    min_size=1,
    max_size=8,
)
wrong = st.one_of(
    st.none(), st.integers(), st.booleans(), st.lists(st.integers(), max_size=2), st.just({})
)


def corrupt(node: Any, path: list[int], value: Any) -> None:
    """Replace one leaf value reached by walking ``path`` through dicts and lists."""
    for step in path:
        children = list(node.values()) if isinstance(node, dict) else node
        containers = [c for c in children if isinstance(c, dict | list) and c]
        if not containers:
            break
        node = containers[step % len(containers)]
    if isinstance(node, dict) and node:
        key = sorted(node)[path[-1] % len(node) if path else 0]
        if key != "model":
            node[key] = value
    elif isinstance(node, list) and node:
        node[(path[-1] if path else 0) % len(node)] = value


@budget(300)
@given(st.sampled_from(APIS), events)
def test_well_formed_conversations_parse_and_rewrite_exactly(api: Api, conversation: Any) -> None:
    """A well-formed conversation parses; its pending calls were issued; the rewrite is exact."""
    body = body_for(api, conversation)
    try:
        parsed = parse(api, json.dumps(body).encode())
    except ClientError as err:  # e.g. a blank id where the API requires one
        assert 400 == err.status
        return
    issued = {i for kind, value in conversation if kind == "calls" for i in value}
    assert set(parsed.facts.pending_tool_call_ids) <= issued
    rewritten = json.loads(parsed.rewrite_model("qwen3-8b"))
    assert {**body, "model": "qwen3-8b"} == rewritten


@budget(300)
@given(st.sampled_from(APIS), events, st.lists(st.integers(0, 50), max_size=5), wrong)
def test_one_wrong_field_anywhere_is_a_client_error_or_ignored(
    api: Api, conversation: Any, path: list[int], value: Any
) -> None:
    """One field of a wrong type anywhere in the conversation: 400 or parsed, nothing else."""
    body = body_for(api, conversation)
    corrupt(body, path, value)
    try:
        parsed = parse(api, json.dumps(body).encode())
    except ClientError as err:
        assert 400 == err.status
        assert err.message and len(err.message) < 300
    else:
        assert {**body, "model": "m"} == json.loads(parsed.rewrite_model("m"))
