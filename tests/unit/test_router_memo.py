"""Router's decoded-session memo: hits skip the stdlib-JSON decode, and it never lies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from saar import policy
from saar.observability.metrics import Metrics
from saar.policy.facts import Api
from saar.policy.session import SessionState
from saar.router import Router, _StateMemo
from saar.settings import Settings, load_settings
from saar.state import MemoryStore
from saar.wire import ParsedRequest, parse_request

ROOT = Path(__file__).resolve().parents[2]
HEADERS = {"x-session-id": "s-memo", "x-conversation-id": "c-memo"}


@pytest.fixture
def settings() -> Settings:
    return load_settings(ROOT / "config" / "local.yaml")


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every ``SessionState.decode`` call's input, in order."""
    seen: list[bytes] = []
    real = SessionState.decode.__func__  # type: ignore[attr-defined]

    def counting(cls: type[SessionState], data: bytes) -> SessionState:
        seen.append(data)
        result: SessionState = real(cls, data)
        return result

    monkeypatch.setattr(SessionState, "decode", classmethod(counting))
    return seen


def parsed(router: Router, text: str) -> ParsedRequest:
    settings = router.settings
    body = json.dumps({"model": "auto", "messages": [{"role": "user", "content": text}]})
    return parse_request(
        Api.CHAT,
        HEADERS,
        body.encode(),
        request_id=router.new_request_id(),
        learning=settings.policy.learning,
        header_signals=settings.policy.header_signals,
        max_body_bytes=settings.server.max_body_bytes,
    )


async def turn(router: Router, text: str) -> None:
    decision = await router.route(parsed(router, text))
    router.observe_response(decision, status=200, served_by="127.0.0.1:1")
    await router.drain()


async def test_records_this_process_wrote_are_not_decoded_again(
    settings: Settings, decodes: list[bytes]
) -> None:
    """Route writes the state the learn step reads, and learn the one the next turn reads."""
    router = Router(settings, MemoryStore(), Metrics())
    for text in ("hello", "and then?", "one more question"):
        await turn(router, text)
    assert [] == decodes


async def test_a_record_written_elsewhere_is_decoded(
    settings: Settings, decodes: list[bytes]
) -> None:
    """Other bytes in the store (another replica's write) are a miss: decoded, not guessed."""
    store = MemoryStore()
    router = Router(settings, store, Metrics())
    await turn(router, "hello")
    request = parsed(router, "next")
    key = policy.protected_key(request.facts, settings.policy)
    assert key is not None
    current = await store.load(key)
    assert current is not None
    ours = SessionState.decode(current.data)
    decodes.clear()
    # Another replica moved the session on: one more turn, a different replay id.
    theirs = SessionState(**{**_fields(ours), "turn_count": 41, "replay_id": "other"})
    await store.compare_and_set(key, theirs.encode(), expected_version=current.version, ttl_s=60)
    decision = await router.route(request)
    assert [theirs.encode()] == decodes
    saved = await store.load(key)
    assert saved is not None
    assert 42 == SessionState.decode(saved.data).turn_count
    assert decision.replay_id == request.facts.request_id


async def test_a_corrupt_record_is_still_counted_and_replaced(settings: Settings) -> None:
    """The memo does not hide a record nobody can read."""
    store = MemoryStore()
    metrics = Metrics()
    router = Router(settings, store, metrics)
    request = parsed(router, "hello")
    key = policy.protected_key(request.facts, settings.policy)
    assert key is not None
    await store.compare_and_set(key, b"{not json", expected_version=None, ttl_s=60)
    await router.route(request)
    assert 1.0 == metrics.registry.get_sample_value("saar_state_decode_errors_total")
    saved = await store.load(key)
    assert saved is not None
    assert 1 == SessionState.decode(saved.data).turn_count


def test_memo_is_bounded_oldest_first() -> None:
    """Past its limit the memo forgets the oldest record, not the newest."""
    memo = _StateMemo(limit=3)
    states = [SessionState(affinity_key=f"ak-{i}", turn_count=i) for i in range(5)]
    for state in states:
        memo.put(state.encode(), state)
    assert memo.get(states[0].encode()) is None
    assert memo.get(states[1].encode()) is None
    for state in states[2:]:
        assert memo.get(state.encode()) is state
    # Writing a known record again neither grows the memo nor evicts anything.
    memo.put(states[4].encode(), states[4])
    assert memo.get(states[2].encode()) is states[2]


def _fields(state: SessionState) -> dict[str, object]:
    return {name: getattr(state, name) for name in SessionState.__slots__}
