"""The router: load session → ``policy.decide(now=clock())`` → save (compare-and-set) → record.

Theory of operation. The policy is a pure function; this module does the I/O around it. A
decision runs inside ``state.transact``: the session is loaded with its version, the policy
decides, and the new state is saved only if nobody else saved in between; on a conflict the
cycle re-runs on the fresh state. Two concurrent turns of one session therefore never lose
an update and never pick two different models for one tool loop.

The response path (``observe_response``) runs off the hot path: the ext_proc answer never
waits for it. Its work is tracked so a draining server can finish it before exiting. Under
``server.response_path: access_log`` a routed request's decision waits in a bounded,
insertion-ordered map (``await_log``) until Envoy's batched access log reports the response
(``observe_logged``); entries older than ``access_log_pending_seconds`` or beyond
``access_log_pending_max`` are dropped and counted, never kept without bound.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import Any, Protocol

import structlog

from saar import policy
from saar.eager import adopt
from saar.observability.metrics import Metrics
from saar.policy.decision import Decision
from saar.policy.facts import BackendPin, RequestFacts, ResponseFacts
from saar.policy.session import SessionCodecError, SessionState
from saar.settings import Settings
from saar.state import SessionStore, Versioned, transact
from saar.wire import ClientError, ParsedRequest

__all__ = ["Router"]

_log = structlog.get_logger("saar.router")

# Parallel turns of one session (sub-agents, parallel tool results) race on one key; each
# lost race re-runs the pure decision on fresh state. Jittered backoff spreads the retries.
_MAX_ATTEMPTS = 12
_BACKOFF_S = 0.002
# Decoded session records kept by their exact bytes (``_StateMemo``); a few thousand live
# sessions per replica fit, and a miss only costs one decode.
_MEMO_ENTRIES = 4096


class _StateMemo:
    """Stored session bytes -> the immutable ``SessionState`` they encode (bounded, FIFO).

    Every request decodes its session twice and encodes it twice (route, then learn), and the
    record it decodes is nearly always one this process just encoded: the route's new state
    is what the learn step reads, and the learn's new state is what the next turn reads. The
    codec is stdlib JSON (the policy is pure), so remembering what each written record decodes
    to saves the decodes outright. ``SessionState`` is frozen and ``decode(encode(s)) == s``,
    so a hit is exactly what a decode would return; a record written by another replica (or
    changed in Redis) has other bytes and is simply a miss.
    """

    __slots__ = ("_entries", "_limit")

    def __init__(self, limit: int = _MEMO_ENTRIES) -> None:
        self._entries: dict[bytes, SessionState] = {}
        self._limit = limit

    def get(self, data: bytes) -> SessionState | None:
        """The state ``data`` encodes, if this process wrote or read it recently."""
        return self._entries.get(data)

    def put(self, data: bytes, state: SessionState) -> None:
        """Remember that ``data`` decodes to ``state``; the oldest entry goes when full."""
        entries = self._entries
        if len(entries) >= self._limit and data not in entries:
            # Insertion order is age order: drop the oldest (no LRU bookkeeping per hit).
            del entries[next(iter(entries))]
        entries[data] = state


class DecisionRecorder(Protocol):
    """Where decisions and what the response path learned are recorded (Router Replay).

    Both calls run on the event loop once per request and must be O(1) and never block
    (the replay recorder only enqueues).
    """

    def submit(
        self, decision: Decision, facts: RequestFacts, *, latency_s: float | None = None
    ) -> bool:
        """Record one decision and how long it took."""
        ...

    def record_response(self, response: ResponseFacts) -> bool:
        """Record what the response path learned about an earlier decision."""
        ...


class Router:
    """Session-aware routing around the pure policy, with a pluggable session store."""

    def __init__(
        self,
        settings: Settings,
        store: SessionStore,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.time,
        recorder: DecisionRecorder | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._metrics = metrics
        # Wall-clock time: sessions move between replicas, and monotonic clocks differ.
        self._clock = clock
        self._tasks: set[asyncio.Task[None]] = set()
        self._recorder = recorder
        # replay id -> (decision, monotonic time routed); insertion order is time order.
        self._awaiting: OrderedDict[str, tuple[Decision, float]] = OrderedDict()
        # Read at scrape time: no per-request cost.
        metrics.access_log_pending.set_function(lambda: len(self._awaiting))
        self._expiry_logged_at = -60.0
        self._memo = _StateMemo()

    @property
    def settings(self) -> Settings:
        """The settings in force; a reload swaps this reference whole."""
        return self._settings

    @property
    def store(self) -> SessionStore:
        """The session store decisions are saved in."""
        return self._store

    def reload(self, settings: Settings) -> None:
        """Swap in a new, already validated configuration."""
        self._settings = settings

    def new_request_id(self) -> str:
        """A time-ordered, unguessable request id (48-bit ms timestamp + 80 random bits)."""
        return f"{int(self._clock() * 1000) & 0xFFFFFFFFFFFF:012x}{secrets.token_hex(10)}"

    def check_model(self, facts: RequestFacts) -> None:
        """Reject a ``model`` the config does not route (clients never pick a pool)."""
        config = self._settings.policy
        name = facts.logical_model
        if name in config.logical_models:
            return
        if any(pm.model == name for pm in config.physical_models.values()):
            return
        raise ClientError.model_not_found(name)

    async def route(self, parsed: ParsedRequest) -> Decision:
        """Decide where one request goes, updating its session's router memory atomically."""
        started = time.perf_counter()
        settings = self._settings
        config = settings.policy
        facts = parsed.facts
        if facts.previous_response_id is not None:
            facts = await self._resolve_pin(facts)
        key = policy.protected_key(facts, config)
        if key is None:
            decision, _ = policy.decide(None, facts, config, self._clock())
        else:
            metrics = self._metrics

            def step(current: Versioned | None) -> tuple[Decision, bytes | None]:
                state = self._decode(current)
                decision, new_state = policy.decide(state, facts, config, self._clock())
                return decision, None if new_state is None else self._encode(new_state)

            outcome = await transact(
                self._store,
                key,
                step,
                ttl_s=settings.state.ttl_seconds,
                max_attempts=_MAX_ATTEMPTS,
                backoff_s=_BACKOFF_S,
            )
            if outcome.attempts > 1:
                metrics.store_conflicts.inc(outcome.attempts - 1)
            decision = outcome.value
        elapsed = time.perf_counter() - started
        self._metrics.decision_seconds.observe(elapsed)
        self._record(decision, facts, elapsed)
        return decision

    async def _resolve_pin(self, facts: RequestFacts) -> RequestFacts:
        """Attach the backend that minted ``previous_response_id`` (the response index)."""
        assert facts.previous_response_id is not None
        entry = await self._store.load(policy.response_index_key(facts.previous_response_id))
        pin = None if entry is None else BackendPin.decode(entry.data)
        if pin is None:
            return facts
        if pin.physical not in self._settings.policy.physical_models:
            # The backend holding that response is gone from the config: sending the request
            # anywhere else would only earn a "response not found" from the wrong backend.
            raise ClientError(
                409,
                "previous_response_unavailable",
                f"the backend that stored response {facts.previous_response_id[:64]!r} is no "
                "longer served here; start a new conversation or resend the full input",
                param="previous_response_id",
            )
        return replace(facts, response_pin=pin)

    def response_headers(self, decision: Decision) -> tuple[tuple[str, str], ...]:
        """The ``x-vsr-*`` response headers for ``decision``."""
        return policy.response_headers(decision)

    def await_log(self, decision: Decision) -> None:
        """Keep ``decision`` until Envoy's access log reports its response (``observe_logged``)."""
        awaiting = self._awaiting
        now = time.monotonic()
        awaiting[decision.replay_id] = (decision, now)
        server = self._settings.server
        if len(awaiting) > server.access_log_pending_max:
            awaiting.popitem(last=False)
            self._metrics.child(self._metrics.access_log_expired, "overflow").inc()
        # The oldest entry is first: one look per request keeps the map within its age bound.
        oldest = next(iter(awaiting.values()))[1]
        if now - oldest > server.access_log_pending_seconds:
            self._expire(now, now - server.access_log_pending_seconds)

    def _expire(self, now: float, cutoff: float) -> None:
        awaiting = self._awaiting
        expired = 0
        while awaiting and next(iter(awaiting.values()))[1] < cutoff:
            awaiting.popitem(last=False)
            expired += 1
        self._metrics.child(self._metrics.access_log_expired, "age").inc(expired)
        if now - self._expiry_logged_at < 60.0:
            return  # A misconfigured Envoy would otherwise log once per request.
        self._expiry_logged_at = now
        _log.warning(
            "access_log_entries_missing",
            expired=expired,
            hint="is Envoy's saar access logger configured (docs/design/0004)?",
        )

    def observe_logged(self, replay_id: str, *, status: int, served_by: str | None) -> bool:
        """Learn from one access-log entry; False if no routed request awaits ``replay_id``."""
        entry = self._awaiting.pop(replay_id, None)
        metrics = self._metrics
        if entry is None:
            metrics.child(metrics.access_log_entries, "unknown").inc()
            return False
        metrics.child(metrics.access_log_entries, "matched").inc()
        # The response is long gone when its log entry arrives: learning now delays nothing.
        self.observe_response(entry[0], status=status, served_by=served_by, now=True)
        return True

    def observe_response(
        self, decision: Decision, *, status: int, served_by: str | None, now: bool = False
    ) -> None:
        """Learn from the response status off the hot path (never delays the response).

        ``now``: as in ``learn``.
        """
        pool = decision.target.pool
        status_class = f"{status // 100}xx" if 100 <= status < 600 else "unknown"
        metrics = self._metrics
        metrics.child(metrics.responses, pool, status_class).inc()
        response = ResponseFacts(
            request_id=decision.replay_id,
            status=status,
            served_by=served_by,
            physical=decision.target.key,
        )
        self.learn(decision, response, now=now)

    def learn(self, decision: Decision, response: ResponseFacts, *, now: bool = False) -> None:
        """Record ``response`` and fold it into router memory, off the hot path.

        By default the store work runs in a Task, after the caller's reply is on its way (a
        response message saar must answer). ``now=True`` (the access log, which nobody waits
        for) runs it at once and gives a Task only to work that waits on the store: on the
        in-process store a Task per response cost more than the update itself.
        """
        if self._recorder is not None:
            try:
                self._recorder.record_response(response)
            except Exception:
                self._metrics.background_errors.labels(task="replay_response").inc()
                _log.exception("replay_response_error")
        entries = policy.index_entries(decision, response)
        if entries:
            self._spawn(self._index(entries), "index_response", now=now)
        key = decision.protected_key
        if key is None:
            return
        self._spawn(self._learn(key, response), "learn_response", now=now)

    async def _index(self, entries: list[tuple[str, BackendPin]]) -> None:
        ttl = self._settings.state.ttl_seconds
        for key, pin in entries:
            # First writer wins: a response id is minted once, by one backend.
            await self._store.compare_and_set(key, pin.encode(), expected_version=None, ttl_s=ttl)

    async def drain(self) -> None:
        """Wait for the response-path work still in flight (used on shutdown and in tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _learn(self, key: str, response: ResponseFacts) -> None:
        config = self._settings.policy

        def step(current: Versioned | None) -> tuple[None, bytes | None]:
            state = self._decode(current)
            new_state = policy.apply_response(state, response, config, self._clock())
            if new_state is None or new_state is state:
                return None, None
            return None, self._encode(new_state)

        await transact(
            self._store,
            key,
            step,
            ttl_s=self._settings.state.ttl_seconds,
            max_attempts=_MAX_ATTEMPTS,
            backoff_s=_BACKOFF_S,
        )

    def _encode(self, state: SessionState) -> bytes:
        data = state.encode()
        self._memo.put(data, state)
        return data

    def _decode(self, current: Versioned | None) -> SessionState | None:
        if current is None:
            return None
        data = current.data
        known = self._memo.get(data)
        if known is not None:
            return known
        try:
            state = SessionState.decode(data)
        except SessionCodecError as exc:
            # A corrupt or future-version record must not take the request down: start the
            # session afresh (the decision's reason says so) and overwrite it.
            self._metrics.state_decode_errors.inc()
            _log.warning("state_decode_error", error=str(exc))
            return None
        self._memo.put(data, state)
        return state

    def _record(self, decision: Decision, facts: RequestFacts, latency_s: float) -> None:
        metrics = self._metrics
        target = decision.target
        metrics.child(metrics.routed, target.model, target.pool).inc()
        metrics.child(
            metrics.decisions,
            decision.decision_name,
            decision.action.value,
            decision.reason,
            decision.mode.value,
        ).inc()
        if self._recorder is not None:
            try:
                self._recorder.submit(decision, facts, latency_s=latency_s)
            except Exception:  # a broken recorder must never fail a request
                metrics.background_errors.labels(task="replay_submit").inc()
                _log.exception("replay_submit_error")

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str, *, now: bool = False) -> None:
        if now:
            try:
                pending = coro.send(None)
            except StopIteration:
                return  # done without waiting: no Task
            except Exception as exc:
                self._background_error(name, exc)
                return
            task = asyncio.ensure_future(adopt(coro, pending))
        else:
            task = asyncio.ensure_future(coro)
        self._tasks.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and (error := t.exception()) is not None:
                self._background_error(name, error)

        task.add_done_callback(done)

    def _background_error(self, name: str, error: BaseException) -> None:
        self._metrics.background_errors.labels(task=name).inc()
        _log.warning("background_error", task=name, error=repr(error))
