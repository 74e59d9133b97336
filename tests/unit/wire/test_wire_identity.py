"""Identity: precedence of sources, hashing, fingerprint stability, conversation ids."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from wire_bodies import APIS, body_for, facts, parse

from saar.policy.config import LearningConfig
from saar.policy.facts import Api, IdentitySource
from saar.wire.identity import hash_identity, opener_fingerprint

HEX32 = re.compile(r"[0-9a-f]{32}")
S = IdentitySource
ALL_HEADERS = {
    "x-session-id": "sess",
    "x-claude-code-session-id": "claude",
    "x-session-affinity": "affinity",
}
ALL_BODY = {
    "prompt_cache_key": "pck",
    "user": "alice",
    "conversation": "conv_1",
    "previous_response_id": "resp_1",
}
OPENING = [("system", "You are terse."), ("user", "rename foo to bar")]

# Each row drops the strongest remaining source: the next one must win.
PRECEDENCE = [
    ("header", [], [], S.HEADER, "sess"),
    ("claude-code", ["x-session-id"], [], S.HARNESS_HEADER, "claude"),
    (
        "affinity",
        ["x-session-id", "x-claude-code-session-id"],
        [],
        S.HARNESS_HEADER,
        "affinity",
    ),
    ("prompt-cache-key", list(ALL_HEADERS), [], S.PROMPT_CACHE_KEY, "pck"),
    ("user", list(ALL_HEADERS), ["prompt_cache_key"], S.USER, "alice"),
    (
        "conversation",
        list(ALL_HEADERS),
        ["prompt_cache_key", "user"],
        S.RESPONSES_CONVERSATION,
        "conv_1",
    ),
    (
        "previous-response",
        list(ALL_HEADERS),
        ["prompt_cache_key", "user", "conversation"],
        S.PREVIOUS_RESPONSE,
        "resp_1",
    ),
]


@pytest.mark.parametrize(
    ("drop_headers", "drop_body", "source", "value"),
    [row[1:] for row in PRECEDENCE],
    ids=[row[0] for row in PRECEDENCE],
)
def test_session_precedence(
    drop_headers: list[str], drop_body: list[str], source: IdentitySource, value: str
) -> None:
    """The strongest present source wins, in the documented order."""
    headers = {k: v for k, v in ALL_HEADERS.items() if k not in drop_headers}
    extra = {k: v for k, v in ALL_BODY.items() if k not in drop_body}
    got = facts(Api.RESPONSES, OPENING, headers, **extra)
    assert (hash_identity("session", source, value), source) == (
        got.session_id,
        got.session_source,
    )


@pytest.mark.parametrize("api", APIS, ids=str)
def test_fingerprint_is_the_fallback(api: Api) -> None:
    """With no explicit id, the opener fingerprint (system + first user text) is used."""
    got = facts(api, OPENING)
    expected = opener_fingerprint("You are terse.", "rename foo to bar")
    assert (expected, S.FINGERPRINT) == (got.session_id, got.session_source)


def test_no_identity_at_all() -> None:
    """Only tool outputs and no id: the session is unknown."""
    got = facts(Api.RESPONSES, [("results", ["c1"])])
    assert (None, S.NONE, None, S.NONE) == (
        got.session_id,
        got.session_source,
        got.conversation_id,
        got.conversation_source,
    )


@pytest.mark.parametrize(
    ("api", "extra", "value"),
    [
        (Api.CHAT, {"user": "bob"}, "bob"),
        (Api.CHAT, {"safety_identifier": "bob"}, "bob"),
        (Api.CHAT, {"user": "  ", "safety_identifier": "bob"}, "bob"),
        (Api.MESSAGES, {"metadata": {"user_id": "bob"}}, "bob"),
    ],
    ids=["chat-user", "chat-safety-identifier", "chat-blank-user", "anthropic-metadata"],
)
def test_user_sources_per_api(api: Api, extra: dict[str, Any], value: str) -> None:
    """OpenAI ``user``/``safety_identifier`` and Anthropic ``metadata.user_id`` are USER."""
    got = facts(api, OPENING, **extra)
    assert (hash_identity("session", S.USER, value), S.USER) == (
        got.session_id,
        got.session_source,
    )


def test_chat_prompt_cache_key_beats_user() -> None:
    """prompt_cache_key outranks user in Chat too."""
    got = facts(Api.CHAT, OPENING, user="bob", prompt_cache_key="k")
    assert S.PROMPT_CACHE_KEY == got.session_source


def test_blank_header_counts_as_absent() -> None:
    """A session header that is blank after trimming falls through to the next source."""
    got = facts(Api.CHAT, OPENING, {"x-session-id": "  \t ", "x-session-affinity": "aff"})
    assert (hash_identity("session", S.HARNESS_HEADER, "aff"), S.HARNESS_HEADER) == (
        got.session_id,
        got.session_source,
    )


def test_configured_header_names_are_used() -> None:
    """learning.session_header/conversation_header (any case) replace the defaults."""
    learning = LearningConfig(session_header="X-Team-Session", conversation_header="X-Run")
    headers = {"x-team-session": "t1", "x-run": "r1", "x-session-id": "ignored"}
    got = parse(Api.CHAT, body_for(Api.CHAT, OPENING), headers, learning=learning).facts
    assert (
        hash_identity("session", S.HEADER, "t1"),
        hash_identity("conversation", S.HEADER, "r1"),
    ) == (got.session_id, got.conversation_id)


@pytest.mark.parametrize(
    ("headers", "extra", "expected"),
    [
        ({"x-conversation-id": "c-hdr"}, {"conversation": "conv_9"}, (S.HEADER, "c-hdr")),
        ({}, {"conversation": {"id": "conv_9"}}, (S.RESPONSES_CONVERSATION, "conv_9")),
        (
            {"x-conversation-id": " "},
            {"conversation": "conv_9"},
            (S.RESPONSES_CONVERSATION, "conv_9"),
        ),
    ],
    ids=["header", "responses-conversation", "blank-header"],
)
def test_conversation_precedence(
    headers: dict[str, str], extra: dict[str, Any], expected: tuple[IdentitySource, str]
) -> None:
    """Conversation id: configured header, then the Responses conversation."""
    source, value = expected
    got = facts(Api.RESPONSES, OPENING, headers, **extra)
    assert (hash_identity("conversation", source, value), source) == (
        got.conversation_id,
        got.conversation_source,
    )


def test_chat_without_conversation_header_has_none() -> None:
    """Chat and Messages have no body conversation id."""
    got = facts(Api.CHAT, OPENING, {"x-session-id": "s"})
    assert (None, S.NONE) == (got.conversation_id, got.conversation_source)


def test_hashed_ids_differ_between_sources_and_kinds() -> None:
    """The same raw value from different sources or kinds never gives the same id."""
    ids = {hash_identity("session", source, "abc") for source in IdentitySource}
    ids.add(hash_identity("conversation", S.HEADER, "abc"))
    assert len(IdentitySource) + 1 == len(ids)


def test_hashed_ids_are_stable_and_trimmed() -> None:
    """Hashing is deterministic and ignores surrounding whitespace."""
    assert hash_identity("session", S.HEADER, "abc") == hash_identity("session", S.HEADER, " abc\n")


def test_long_values_are_bounded_but_told_apart_by_length() -> None:
    """Values past the hashed prefix still differ when their lengths differ."""
    a = hash_identity("session", S.HEADER, "x" * 10_000)
    b = hash_identity("session", S.HEADER, "x" * 10_001)
    assert a != b


@given(st.text(min_size=0, max_size=3000))
def test_any_header_value_hashes_to_32_hex_or_none(value: str) -> None:
    """Hostile charsets and lengths always give a 32-hex id, or None when blank."""
    got = hash_identity("session", S.HEADER, value)
    if value.strip():
        assert got is not None and HEX32.fullmatch(got)
    else:
        assert got is None


def test_hostile_header_reaches_facts_hashed() -> None:
    """A megabyte of control and bidi characters becomes a bounded hex id."""
    hostile = "\x00\u202e\ud800/../" * 200_000
    got = facts(Api.CHAT, OPENING, {"x-session-id": hostile})
    assert (True, S.HEADER) == (bool(HEX32.fullmatch(got.session_id or "")), got.session_source)


@pytest.mark.parametrize("api", APIS, ids=str)
def test_fingerprint_is_stable_across_turns(api: Api) -> None:
    """Later turns of the same conversation keep the same fingerprint id."""
    first = facts(api, OPENING)
    later = facts(
        api,
        [*OPENING, ("calls", ["c1"]), ("results", ["c1"]), ("assistant", "done"), ("user", "more")],
    )
    assert first.session_id == later.session_id


@pytest.mark.parametrize("api", APIS, ids=str)
def test_fingerprint_differs_per_opener(api: Api) -> None:
    """A different first user message or system prompt is a different session."""
    base = facts(api, OPENING).session_id
    other_user = facts(api, [("system", "You are terse."), ("user", "rename bar")]).session_id
    other_system = facts(api, [("system", "Be verbose."), ("user", "rename foo to bar")]).session_id
    assert len({base, other_user, other_system}) == 3


def test_fingerprint_parts_are_length_prefixed() -> None:
    """Moving text between system prompt and first message changes the fingerprint."""
    assert opener_fingerprint("ab", "c") != opener_fingerprint("a", "bc")
