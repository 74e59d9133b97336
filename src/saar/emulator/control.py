"""The control API: one port for the whole emulator process (faults, replica state, log).

Endpoints:

- ``GET /health``: 200.
- ``GET /_emulator/replicas``: every replica with pool, index, host, port, url, state.
- ``POST /_emulator/replicas/{pool}/{index}/down`` | ``/up`` | ``/reset`` (reset clears
  that replica's prefix cache and response store).
- ``POST /_emulator/reset``: reset every replica.
- ``GET /_emulator/log``: every replica's truth log, oldest first; query parameters filter on
  record fields (``?session_id=s1&pool=mi300-small&replica=0``). ``DELETE`` clears it.
- ``GET /_emulator/faults``: the current plan with remaining counts; ``POST`` replaces it
  (JSON plan, 400 with the path of the error when malformed); ``DELETE`` clears it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec
from aiohttp import web

from saar.emulator.backend_log import LogRecord

if TYPE_CHECKING:
    from saar.emulator.pools import EmulatorPools

__all__ = ["build_control_app"]

_json = msgspec.json.Encoder()
_INT_FIELDS = frozenset(
    name for name, kind in LogRecord.__annotations__.items() if kind in {"int", "int | None"}
)
_BOOL_FIELDS = frozenset(name for name, kind in LogRecord.__annotations__.items() if kind == "bool")


def _reply(body: object, status: int = 200) -> web.Response:
    return web.Response(status=status, body=_json.encode(body), content_type="application/json")


def _bad(message: str, status: int = 400) -> web.Response:
    return _reply(
        {"error": {"message": message, "type": "BadRequestError", "code": status}}, status
    )


def build_control_app(pools: EmulatorPools) -> web.Application:
    """Return the aiohttp application of the control port for ``pools``."""

    async def health(request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def replicas(request: web.Request) -> web.Response:
        return _reply([r.describe() for r in pools.all_replicas])

    async def replica_action(request: web.Request) -> web.Response:
        pool = request.match_info["pool"]
        action = request.match_info["action"]
        try:
            replica = pools.replica(pool, int(request.match_info["index"]))
        except (KeyError, ValueError):
            return _bad(f"no replica {pool}/{request.match_info['index']}", 404)
        if action == "down":
            replica.down = True
        elif action == "up":
            replica.down = False
        elif action == "reset":
            replica.reset()
        else:
            return _bad(f"unknown action '{action}' (down, up, reset)", 404)
        return _reply(replica.describe())

    async def reset_all(request: web.Request) -> web.Response:
        pools.reset()
        return _reply({"reset": len(pools.all_replicas)})

    async def get_log(request: web.Request) -> web.Response:
        filters: dict[str, Any] = {}
        for key, value in request.query.items():
            if key not in LogRecord.__annotations__:
                return _bad(f"unknown log field '{key}'")
            if key in _INT_FIELDS:
                try:
                    filters[key] = int(value)
                except ValueError:
                    return _bad(f"log field '{key}' needs an integer")
            elif key in _BOOL_FIELDS:
                filters[key] = value.lower() in {"1", "true", "yes"}
            else:
                filters[key] = value
        return _reply(pools.log(**filters))

    async def clear_log(request: web.Request) -> web.Response:
        pools.clear_log()
        return _reply({"cleared": True})

    async def get_faults(request: web.Request) -> web.Response:
        return _reply(pools.faults.to_json())

    async def set_faults(request: web.Request) -> web.Response:
        try:
            raw = msgspec.json.decode(await request.read())
        except msgspec.DecodeError as exc:
            return _bad(f"invalid JSON: {exc}")
        try:
            pools.set_faults(raw)
        except ValueError as exc:
            return _bad(str(exc))
        return _reply(pools.faults.to_json())

    async def clear_faults(request: web.Request) -> web.Response:
        pools.clear_faults()
        return _reply(pools.faults.to_json())

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/_emulator/replicas", replicas)
    app.router.add_post("/_emulator/replicas/{pool}/{index}/{action}", replica_action)
    app.router.add_post("/_emulator/reset", reset_all)
    app.router.add_get("/_emulator/log", get_log)
    app.router.add_delete("/_emulator/log", clear_log)
    app.router.add_get("/_emulator/faults", get_faults)
    app.router.add_post("/_emulator/faults", set_faults)
    app.router.add_delete("/_emulator/faults", clear_faults)
    return app
