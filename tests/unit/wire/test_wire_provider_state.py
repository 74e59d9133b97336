"""Provider state: what pins a request to the backend or model that created its state."""

from __future__ import annotations

from typing import Any

import pytest
from wire_bodies import APIS, body_for, facts, parse

from saar.policy.facts import Api, Pin, ProviderState

OPENING = [("system", "be brief"), ("user", "hi")]


def _states(api: Api, body: dict[str, Any]) -> tuple[ProviderState, ...]:
    return parse(api, body).facts.provider_state


@pytest.mark.parametrize("api", APIS, ids=str)
def test_plain_conversation_has_no_provider_state(api: Api) -> None:
    """A stateless request carries no provider state and no previous response id."""
    got = facts(api, [*OPENING, ("calls", ["c1"]), ("results", ["c1"])])
    assert ((), None) == (got.provider_state, got.previous_response_id)


def test_previous_response_id_pins_the_backend() -> None:
    """previous_response_id → BACKEND pin (vLLM's store is one replica's memory)."""
    got = facts(Api.RESPONSES, [("user", "go on")], previous_response_id="resp_42")
    assert ((ProviderState("previous_response_id", Pin.BACKEND),), "resp_42") == (
        got.provider_state,
        got.previous_response_id,
    )


@pytest.mark.parametrize("value", ["", "  "], ids=["empty", "blank"])
def test_blank_previous_response_id_is_absent(value: str) -> None:
    """A blank previous_response_id is no state at all."""
    got = facts(Api.RESPONSES, [("user", "go on")], previous_response_id=value)
    assert ((), None) == (got.provider_state, got.previous_response_id)


def test_previous_response_id_is_bounded() -> None:
    """A client-chosen id is cut to 256 characters before it reaches the facts."""
    got = facts(Api.RESPONSES, [("user", "go on")], previous_response_id="r" * 5000)
    assert "r" * 256 == got.previous_response_id


@pytest.mark.parametrize("conversation", ["conv_1", {"id": "conv_1"}], ids=["string", "object"])
def test_responses_conversation_pins_the_backend(conversation: object) -> None:
    """A server-side conversation object → BACKEND pin."""
    got = facts(Api.RESPONSES, [("user", "hi")], conversation=conversation)
    assert (ProviderState("responses_conversation", Pin.BACKEND),) == got.provider_state


def test_encrypted_reasoning_pins_the_model() -> None:
    """A reasoning item with encrypted_content → MODEL pin."""
    body = body_for(Api.RESPONSES, [("user", "hi"), ("assistant", "hello"), ("user", "more")])
    body["input"].insert(1, {"type": "reasoning", "summary": [], "encrypted_content": "gAAA"})
    assert (ProviderState("encrypted_reasoning", Pin.MODEL),) == _states(Api.RESPONSES, body)


def test_plain_reasoning_does_not_pin() -> None:
    """A reasoning item without encrypted content is portable."""
    body = body_for(Api.RESPONSES, [("user", "hi"), ("assistant", "hello")])
    body["input"].insert(1, {"type": "reasoning", "summary": [], "encrypted_content": None})
    assert () == _states(Api.RESPONSES, body)


def test_item_reference_pins_the_backend() -> None:
    """An item_reference points at a stored item → BACKEND pin."""
    body = body_for(Api.RESPONSES, [("user", "hi")])
    body["input"].insert(0, {"type": "item_reference", "id": "msg_1"})
    assert (ProviderState("item_reference", Pin.BACKEND),) == _states(Api.RESPONSES, body)


def test_previous_response_and_encrypted_reasoning_are_both_reported() -> None:
    """Several markers are all reported, in a stable order."""
    body = body_for(Api.RESPONSES, [("results", ["c1"])], previous_response_id="resp_1")
    body["input"].insert(0, {"type": "reasoning", "summary": [], "encrypted_content": "x"})
    assert (
        ProviderState("previous_response_id", Pin.BACKEND),
        ProviderState("encrypted_reasoning", Pin.MODEL),
    ) == _states(Api.RESPONSES, body)


@pytest.mark.parametrize(
    "block",
    [
        {"type": "thinking", "thinking": "hmm", "signature": "EqQBCk"},
        {"type": "redacted_thinking", "data": "EmwKAhgB"},
    ],
    ids=["thinking", "redacted"],
)
def test_thinking_signature_pins_the_model(block: dict[str, str]) -> None:
    """Signed thinking in assistant history → MODEL pin."""
    body = body_for(Api.MESSAGES, [("user", "hi"), ("calls", ["t1"]), ("results", ["t1"])])
    body["messages"][1]["content"].insert(0, block)
    assert (ProviderState("thinking_signature", Pin.MODEL),) == _states(Api.MESSAGES, body)


def test_unsigned_thinking_does_not_pin() -> None:
    """A thinking block without a signature is not model-bound."""
    body = body_for(Api.MESSAGES, [("user", "hi"), ("assistant", "ok")])
    body["messages"][1]["content"].insert(0, {"type": "thinking", "thinking": "hmm"})
    assert () == _states(Api.MESSAGES, body)


@pytest.mark.parametrize(
    ("container", "expected"),
    [
        ("container_abc", (ProviderState("container", Pin.BACKEND),)),
        ({"id": "container_abc"}, (ProviderState("container", Pin.BACKEND),)),
        ({"skills": []}, ()),
        (None, ()),
    ],
    ids=["string", "object", "new-container", "null"],
)
def test_anthropic_container_pins_the_backend(
    container: object, expected: tuple[ProviderState, ...]
) -> None:
    """An existing code-execution container → BACKEND pin; a new one does not pin."""
    assert expected == facts(Api.MESSAGES, OPENING, container=container).provider_state
