"""The gRPC ``saar.api.replay.v1.Replay`` service over a ``ReplayStore``.

Registration (the server owns the grpc.aio server)::

    from saar.api.replay.v1 import replay_pb2_grpc
    replay_pb2_grpc.add_ReplayServicer_to_server(ReplayService(store), server)

Every store call runs in a worker thread (``asyncio.to_thread``): SQLite reads are blocking and
the event loop also serves ext_proc streams.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import grpc

from saar.api.replay.v1 import replay_pb2, replay_pb2_grpc
from saar.policy.config import PolicyConfig
from saar.replay.explain import explain, format_explanation, history_for
from saar.replay.query import FeedbackError, add_feedback, record_json, session_key
from saar.replay.record import ReplayRecord
from saar.replay.store import ReplayStore
from saar.wire.json import dumps

__all__ = ["ReplayService"]


def _message(record: ReplayRecord) -> Any:
    d = record.decision
    resp = record.response
    return replay_pb2.Record(
        replay_id=record.replay_id,
        time=record.time,
        session_id=record.session_id or "",
        conversation_id=record.conversation_id or "",
        decision=d.name,
        action=d.action,
        reason=d.reason,
        phase=d.phase,
        mode=d.mode,
        base=d.base,
        target=d.target,
        switched=d.switched,
        status=(resp.status or 0) if resp else 0,
        prompt_tokens=(resp.prompt_tokens or 0) if resp else 0,
        cached_tokens=(resp.cached_tokens or 0) if resp else 0,
        completion_tokens=(resp.completion_tokens or 0) if resp else 0,
        turn=record.request.turn_index,
        record_json=dumps(record_json(record)).decode(),
    )


class ReplayService(replay_pb2_grpc.ReplayServicer):  # type: ignore[misc]
    """Reads replay records and stores feedback.

    ``config`` (optional) returns the policy config in force; with it ``Explain`` also re-runs
    the pure policy for the mode counterfactuals.
    """

    def __init__(
        self,
        store: ReplayStore,
        *,
        config: Callable[[], PolicyConfig] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._config = config
        self._clock = clock

    async def GetRecord(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """Return one record, or NOT_FOUND."""
        record = await asyncio.to_thread(self._store.get, request.replay_id)
        if record is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "unknown replay id")
        assert record is not None
        return _message(record)

    async def ListSession(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """Return a session's records, oldest first."""
        try:
            sid = session_key(request.session_id, "session", hashed=request.hashed)
            cid = (
                session_key(request.conversation_id, "conversation", hashed=request.hashed)
                if request.conversation_id
                else None
            )
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise
        limit = request.limit if request.limit > 0 else 1000
        records = await asyncio.to_thread(self._store.session, sid, cid, min(limit, 10_000))
        return replay_pb2.ListSessionResponse(
            session_id=sid, records=[_message(r) for r in records]
        )

    async def Explain(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """Return the explanation of one decision."""
        config = self._config() if self._config is not None else None

        def work() -> dict[str, Any] | None:
            record = self._store.get(request.replay_id)
            if record is None:
                return None
            history = history_for(self._store, record) if config is not None else ()
            return explain(record, config, history)

        data = await asyncio.to_thread(work)
        if data is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "unknown replay id")
        assert data is not None
        return replay_pb2.ExplainResponse(
            text=format_explanation(data), explanation_json=dumps(data).decode()
        )

    async def Feedback(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """Store feedback; the same ``idempotency_key`` stores it once."""
        try:
            outcome, created = await asyncio.to_thread(
                add_feedback,
                self._store,
                request.replay_id,
                request.score,
                request.note or None,
                request.idempotency_key or None,
                now=self._clock(),
            )
        except FeedbackError as exc:
            code = grpc.StatusCode.NOT_FOUND if exc.missing else grpc.StatusCode.INVALID_ARGUMENT
            await context.abort(code, str(exc))
            raise
        return replay_pb2.FeedbackResponse(
            created=created, key=outcome.key, score=outcome.score or 0.0
        )
