"""The gRPC Replay service and the HTTP JSON endpoint, over real sockets on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import grpc
import pytest
from replay_builders import SMALL, Run, make_config

from saar.api.replay.v1 import replay_pb2, replay_pb2_grpc
from saar.policy.facts import IdentitySource
from saar.replay.admin import ReplayService
from saar.replay.http import ReplayHttpServer, make_app
from saar.replay.store import SqliteReplayStore
from saar.wire.identity import hash_identity
from saar.wire.json import loads

RAW_SESSION = "user-session-42"
RAW_CONVERSATION = "run-7"


def _filled(tmp_path: Path) -> tuple[SqliteReplayStore, Run]:
    """A store with a tool-loop session whose ids are hashed like the ingress would hash them."""
    sid = hash_identity("session", IdentitySource.HEADER, RAW_SESSION)
    cid = hash_identity("conversation", IdentitySource.HEADER, RAW_CONVERSATION)
    run = Run(make_config())
    run.turn(tool_calls=("call_a",), session_id=sid, conversation_id=cid)
    run.turn(tool_result_ids=("call_a",), has_tools=True, session_id=sid, conversation_id=cid)
    store = SqliteReplayStore(tmp_path / "r.db")
    store.write(run.records, [])
    return store, run


@pytest.fixture
async def grpc_stub(tmp_path: Path) -> AsyncIterator[tuple[object, Run]]:
    store, run = _filled(tmp_path)
    server = grpc.aio.server()
    replay_pb2_grpc.add_ReplayServicer_to_server(
        ReplayService(store, config=lambda: run.config, clock=lambda: 5.0), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    yield replay_pb2_grpc.ReplayStub(channel), run
    await channel.close()
    await server.stop(None)
    store.close()


async def test_grpc_get_list_explain_feedback(grpc_stub: tuple[object, Run]) -> None:
    """GetRecord, ListSession (raw id), Explain and idempotent Feedback round trip."""
    stub, run = grpc_stub
    locked = run.records[1]
    record = await stub.GetRecord(replay_pb2.GetRecordRequest(replay_id=locked.replay_id))
    assert (record.action, record.reason, record.target) == ("hard_lock", "tool_loop", SMALL)
    assert loads(record.record_json)["replay_id"] == locked.replay_id
    listed = await stub.ListSession(
        replay_pb2.ListSessionRequest(session_id=RAW_SESSION, conversation_id=RAW_CONVERSATION)
    )
    assert [r.replay_id for r in listed.records] == [r.replay_id for r in run.records]
    assert listed.session_id == locked.session_id
    explained = await stub.Explain(replay_pb2.ExplainRequest(replay_id=locked.replay_id))
    assert "lock: tool_loop held" in explained.text
    assert loads(explained.explanation_json)["counterfactuals"]["source"] == "rerun"
    request = replay_pb2.FeedbackRequest(
        replay_id=locked.replay_id, score=0.8, note="good", idempotency_key="k1"
    )
    first = await stub.Feedback(request)
    second = await stub.Feedback(request)
    assert (first.created, second.created, second.key) == (True, False, "k1")
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stub.GetRecord(replay_pb2.GetRecordRequest(replay_id="nope"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await stub.Feedback(replay_pb2.FeedbackRequest(replay_id=locked.replay_id, score=2.0))
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_http_endpoint_round_trip(tmp_path: Path) -> None:
    """GET record/session/explain and POST feedback with an Idempotency-Key on 127.0.0.1."""
    store, run = _filled(tmp_path)
    server = ReplayHttpServer(make_app(store, clock=lambda: 5.0), ":0")
    address = await server.start()
    assert address.startswith("127.0.0.1:")
    assert server.remote is False
    base = f"http://{address}"
    locked = run.records[1]
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/v1/replay/{locked.replay_id}") as resp:
                assert resp.status == 200
                body = await resp.json()
            assert body["decision"]["reason"] == "tool_loop"
            assert body["session_id"] == locked.session_id
            async with http.get(f"{base}/v1/replay", params={"session_id": RAW_SESSION}) as resp:
                turns = (await resp.json())["turns"]
            assert [t["replay_id"] for t in turns] == [r.replay_id for r in run.records]
            async with http.get(f"{base}/v1/replay/{locked.replay_id}/explain") as resp:
                explained = await resp.json()
            assert explained["lock"]["reason"] == "tool_loop"
            payload = {"replay_id": locked.replay_id, "score": 0.25, "note": "slow"}
            headers = {"Idempotency-Key": "abc"}
            async with http.post(f"{base}/v1/feedback", json=payload, headers=headers) as resp:
                assert resp.status == 201
            async with http.post(f"{base}/v1/feedback", json=payload, headers=headers) as resp:
                assert resp.status == 200
                assert (await resp.json())["created"] is False
            async with http.post(
                f"{base}/v1/feedback", json={"replay_id": locked.replay_id, "score": -1}
            ) as resp:
                assert resp.status == 400
            async with http.post(
                f"{base}/v1/feedback", json={"replay_id": "nope", "score": 1}
            ) as resp:
                assert resp.status == 404
            async with http.get(f"{base}/v1/replay/nope") as resp:
                assert resp.status == 404
            async with http.get(f"{base}/v1/replay") as resp:
                assert resp.status == 400
        assert store.get(locked.replay_id).feedback_score == 0.25
    finally:
        await server.stop()
        store.close()
