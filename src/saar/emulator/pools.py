"""The in-process handle: start every replica of every pool (and the control port) at once.

Example::

    async with EmulatorPools(spec, control_port=0) as pools:
        url = pools.replicas[0].url
        ...
        records = pools.log(session_id="s1")
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from aiohttp import web

from saar.emulator.backend_log import DEFAULT_LOG_SIZE
from saar.emulator.control import build_control_app
from saar.emulator.faults import FaultPlan
from saar.emulator.server import Replica
from saar.emulator.spec import DEFAULT_HOST, EmulatorSpec

__all__ = ["EmulatorPools", "ReplicaAddress"]

# In-flight streams get this long to finish when the emulator stops; tests and Ctrl-C
# should not wait aiohttp's default 60 s for a held "timeout" fault.
_SHUTDOWN_TIMEOUT_S = 1.0


@dataclass(frozen=True, slots=True)
class ReplicaAddress:
    """Where one replica listens."""

    pool: str
    index: int
    host: str
    port: int

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:18101`` (append ``/v1`` for the OpenAI SDK)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def name(self) -> str:
        """``<pool>/<index>``."""
        return f"{self.pool}/{self.index}"


class EmulatorPools:
    """Every emulated replica of a spec, plus the optional control port, in one event loop.

    Args:
        spec: the parsed pools.
        host: address for pools without their own ``emulator.host`` and for the control port.
        control_port: port of the control API; ``None`` for no control port, 0 for any free
            port (see :attr:`control_url`).
        faults: an initial fault plan (parsed or raw mapping).
        log_size: records kept per replica in the truth log.

    """

    def __init__(
        self,
        spec: EmulatorSpec,
        *,
        host: str = DEFAULT_HOST,
        control_port: int | None = None,
        faults: FaultPlan | Mapping[str, Any] | None = None,
        log_size: int = DEFAULT_LOG_SIZE,
    ) -> None:
        self.spec = spec
        self.host = host
        if isinstance(faults, FaultPlan):
            self.faults = faults
        else:
            self.faults = FaultPlan.from_mapping(faults) if faults is not None else FaultPlan()
        self._replicas: list[Replica] = [
            Replica(pool, i, pool.host or host, port, self.faults, log_size=log_size)
            for pool in spec.pools
            for i, port in enumerate(pool.ports)
        ]
        self._control_port = control_port
        self.control_port: int | None = None
        self._runners: list[web.AppRunner] = []

    async def __aenter__(self) -> EmulatorPools:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Bind every replica (and the control port); ports 0 become real ports."""
        try:
            for replica in self._replicas:
                replica.port = await self._listen(replica.app, replica.host, replica.port)
            if self._control_port is not None:
                self.control_port = await self._listen(
                    build_control_app(self), self.host, self._control_port
                )
        except BaseException:
            await self.stop()
            raise

    async def _listen(self, app: web.Application, host: str, port: int) -> int:
        # access_log=None: benchmarks push thousands of requests; the truth log is the record.
        runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=_SHUTDOWN_TIMEOUT_S
        )
        await runner.setup()
        self._runners.append(runner)
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[-1]
        return int(bound[1])

    async def stop(self) -> None:
        """Close every listener; in-flight requests get a short grace period."""
        runners, self._runners = self._runners, []
        for runner in reversed(runners):
            await runner.cleanup()

    @property
    def replicas(self) -> list[ReplicaAddress]:
        """Every replica's address, in config order (pools, then index)."""
        return [ReplicaAddress(r.pool.name, r.index, r.host, r.port) for r in self._replicas]

    @property
    def control_url(self) -> str | None:
        """Base URL of the control API, or None when it is off."""
        if self.control_port is None:
            return None
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.control_port}"

    def replica(self, pool: str, index: int) -> Replica:
        """Return the live replica object (cache, store, log, ``down`` flag).

        Raises:
            KeyError: when there is no such replica.

        """
        for replica in self._replicas:
            if replica.pool.name == pool and replica.index == index:
                return replica
        raise KeyError(f"{pool}/{index}")

    @property
    def all_replicas(self) -> list[Replica]:
        """The live replica objects, in config order."""
        return list(self._replicas)

    def urls(self, pool: str) -> list[str]:
        """Return the base URLs of one pool's replicas, by index."""
        return [a.url for a in self.replicas if a.pool == pool]

    def log(self, **filters: object) -> list[dict[str, Any]]:
        """Return the truth log of every replica, oldest first, as JSON dicts.

        Keyword filters keep records whose field equals the value, e.g.
        ``pools.log(session_id="s1", pool="mi300-small")``; None values are ignored.
        """
        wanted = {k: v for k, v in filters.items() if v is not None}
        records = [
            r.to_json()
            for replica in self._replicas
            for r in replica.log
            if all(getattr(r, k, None) == v for k, v in wanted.items())
        ]
        records.sort(key=lambda rec: rec["time"])
        return records

    def clear_log(self) -> None:
        """Forget every replica's log."""
        for replica in self._replicas:
            replica.log.clear()

    def set_faults(self, plan: FaultPlan | Mapping[str, Any]) -> None:
        """Replace the fault plan (shared by every replica)."""
        parsed = plan if isinstance(plan, FaultPlan) else FaultPlan.from_mapping(plan)
        self.faults.rules = list(parsed.rules)

    def clear_faults(self) -> None:
        """Remove every fault rule."""
        self.faults.rules = []

    def set_down(self, pool: str, index: int, down: bool = True) -> None:
        """Mark a replica down (503 to everything, /health included) or up again."""
        self.replica(pool, index).down = down

    def reset(self) -> None:
        """Clear every replica's prefix cache and response store."""
        for replica in self._replicas:
            replica.reset()
