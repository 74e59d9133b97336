"""The Router Replay HTTP JSON endpoint (aiohttp), off unless ``replay.http_address`` is set.

Routes::

    GET  /v1/replay/{replay_id}            the record
    GET  /v1/replay/{replay_id}/explain    the explanation (JSON; ``?format=text`` for text)
    GET  /v1/replay?session_id=RAW[&conversation_id=RAW][&hashed=1][&limit=N]
                                           the session's turns, oldest first
    POST /v1/feedback                      {"replay_id", "score" in [0, 1], "note"?};
                                           ``Idempotency-Key`` header: stored once per key

It has no authentication: bind it to loopback (the default host when ``http_address`` has none)
or put it behind an authenticating proxy. Store calls run in worker threads.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from saar.policy.config import PolicyConfig
from saar.replay.config import is_loopback, split_address
from saar.replay.explain import explain, format_explanation, history_for
from saar.replay.query import (
    FeedbackError,
    add_feedback,
    record_json,
    session_key,
    timeline,
)
from saar.replay.store import ReplayStore
from saar.wire.json import JsonError, dumps, loads

__all__ = ["ReplayHttpServer", "make_app"]

_MAX_BODY = 64 * 1024
_STORE: web.AppKey[ReplayStore] = web.AppKey("replay_store", ReplayStore)
_CONFIG: web.AppKey[Callable[[], PolicyConfig] | None] = web.AppKey("replay_config")
_CLOCK: web.AppKey[Callable[[], float]] = web.AppKey("replay_clock")


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(body=dumps(data), status=status, content_type="application/json")


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status)


async def _get_record(request: web.Request) -> web.Response:
    store = request.app[_STORE]
    record = await asyncio.to_thread(store.get, request.match_info["replay_id"])
    if record is None:
        return _error(404, "unknown replay id")
    return _json(record_json(record))


async def _explain(request: web.Request) -> web.Response:
    store = request.app[_STORE]
    provider = request.app[_CONFIG]
    config = provider() if provider is not None else None
    replay_id = request.match_info["replay_id"]

    def work() -> dict[str, Any] | None:
        record = store.get(replay_id)
        if record is None:
            return None
        history = history_for(store, record) if config is not None else ()
        return explain(record, config, history)

    data = await asyncio.to_thread(work)
    if data is None:
        return _error(404, "unknown replay id")
    if request.query.get("format") == "text":
        return web.Response(text=format_explanation(data) + "\n")
    return _json(data)


async def _list(request: web.Request) -> web.Response:
    store = request.app[_STORE]
    raw_session = request.query.get("session_id", "")
    if not raw_session:
        return _error(400, "session_id is required")
    hashed = request.query.get("hashed", "") in ("1", "true")
    try:
        sid = session_key(raw_session, "session", hashed=hashed)
        raw_conv = request.query.get("conversation_id")
        cid = session_key(raw_conv, "conversation", hashed=hashed) if raw_conv else None
        limit = min(max(int(request.query.get("limit", "1000")), 1), 10_000)
    except ValueError as exc:
        return _error(400, str(exc))
    records = await asyncio.to_thread(store.session, sid, cid, limit)
    return _json(
        {
            "session_id": sid,
            "conversation_id": cid,
            "turns": [row.to_dict() for row in timeline(records)],
        }
    )


async def _feedback(request: web.Request) -> web.Response:
    if request.content_length is not None and request.content_length > _MAX_BODY:
        return _error(413, "body too large")
    body = await request.read()
    if len(body) > _MAX_BODY:
        return _error(413, "body too large")
    try:
        data = loads(body)
    except JsonError as exc:
        return _error(400, f"invalid JSON: {exc}")
    if not isinstance(data, dict):
        return _error(400, "body must be a JSON object")
    key = request.headers.get("Idempotency-Key")
    try:
        outcome, created = await asyncio.to_thread(
            add_feedback,
            request.app[_STORE],
            data.get("replay_id"),  # type: ignore[arg-type]  # validated in add_feedback
            data.get("score"),
            data.get("note"),
            key,
            now=request.app[_CLOCK](),
        )
    except FeedbackError as exc:
        return _error(404 if exc.missing else 400, str(exc))
    return _json(
        {
            "replay_id": data["replay_id"],
            "key": outcome.key,
            "score": outcome.score,
            "note": outcome.note,
            "created": created,
        },
        201 if created else 200,
    )


def make_app(
    store: ReplayStore,
    *,
    config: Callable[[], PolicyConfig] | None = None,
    clock: Callable[[], float] = time.time,
) -> web.Application:
    """The aiohttp application; ``config`` (optional) enables re-run counterfactuals."""
    app = web.Application(client_max_size=_MAX_BODY)
    app[_STORE] = store
    app[_CONFIG] = config
    app[_CLOCK] = clock
    app.router.add_get("/v1/replay", _list)
    app.router.add_get("/v1/replay/{replay_id}", _get_record)
    app.router.add_get("/v1/replay/{replay_id}/explain", _explain)
    app.router.add_post("/v1/feedback", _feedback)
    return app


class ReplayHttpServer:
    """Runs ``make_app`` on ``host:port`` (an empty host binds 127.0.0.1)."""

    def __init__(self, app: web.Application, address: str) -> None:
        self._app = app
        self.host, self.port = split_address(address)
        self.remote = not is_loopback(self.host)
        """True when bound beyond loopback (the operator asked for it explicitly)."""
        self._runner: web.AppRunner | None = None

    async def start(self) -> str:
        """Start listening; return the bound ``host:port`` (port 0 picks a free port)."""
        runner = web.AppRunner(self._app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        await site.start()
        self._runner = runner
        addresses = runner.addresses
        if addresses:
            self.port = int(addresses[0][1])
        return f"{self.host}:{self.port}"

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
