"""Run a coroutine eagerly, and finish it properly if it turns out to wait.

Theory of operation. Most of saar's per-message work never waits: the in-process session
store answers at once, so a decision is plain computation wrapped in ``async def``. Handing
such a coroutine to a new Task, or arming a timer for it, costs more than some of the work
itself (a Task step, a loop round trip, a timer handle created and cancelled per request:
~9 µs of the ~250 µs saar spends on a request, measured in bench/results/hotpath.md). So the
callers drive the coroutine by hand with ``coro.send(None)``:

* it returns (``StopIteration``): done, no Task, no timer;
* it yields: it waits on something (a Redis round trip, a backoff sleep). ``adopt`` finishes
  it, either awaited inside the current Task (the request-body handler arms its decision
  budget only then) or wrapped in a new Task (the transport, for a message handler that
  suspended).

``adopt`` hands each future the coroutine yields to the Task that runs it, exactly as
``await`` would have: the Task waits on that future, a cancellation of the Task cancels the
future and is thrown into the coroutine (so its ``finally`` blocks and ``asyncio.timeout``
contexts run), and the coroutine reads the future's outcome itself when resumed.
"""

from __future__ import annotations

from collections.abc import Coroutine, Generator
from typing import Any, TypeVar

__all__ = ["adopt"]

T = TypeVar("T")


class _Handoff:
    """An awaitable that yields one value to the Task running it: the future to wait on."""

    __slots__ = ("_pending",)

    def __init__(self, pending: Any) -> None:
        self._pending = pending

    def __await__(self) -> Generator[Any, None, None]:
        yield self._pending


async def adopt(coro: Coroutine[Any, Any, T], pending: Any) -> T:
    """Finish ``coro``, which was started with ``send(None)`` and yielded ``pending``.

    ``pending`` is what that ``send`` yielded: the asyncio future the coroutine waits on
    (its ``_asyncio_future_blocking`` flag already set by the future's own ``__await__``),
    or ``None`` for a bare yield (``asyncio.sleep(0)``). Returns the coroutine's result or
    raises its error; a cancellation of the calling Task is thrown into the coroutine.
    """
    while True:
        try:
            await _Handoff(pending)
        except BaseException as exc:  # CancelledError (or anything thrown in): pass it on
            try:
                pending = coro.throw(exc)
            except StopIteration as done:
                result: T = done.value
                return result
            continue
        try:
            pending = coro.send(None)
        except StopIteration as done:
            finished: T = done.value
            return finished
