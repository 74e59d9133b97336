"""Memory per stored session: a 20-turn agent session in the in-process store and in Redis.

Usage: ``.venv/bin/python bench/session_memory.py [--sessions N] [--out bench/results/...]``

Builds realistic router memory by driving the pure policy through 20 turns (tool loops with
parallel calls, a Responses chain, usage evidence), then measures:

* the encoded record size (what is sent to Redis and kept in-process);
* in-process bytes per session: ``tracemalloc`` growth while N such sessions are stored in
  ``MemoryStore`` (keys, values, LRU bookkeeping), divided by N;
* Redis bytes per session: ``MEMORY USAGE`` of the stored key on a real ``redis-server``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from saar import policy  # noqa: E402
from saar.policy.facts import Api, RequestFacts, ResponseFacts  # noqa: E402
from saar.settings import load_settings  # noqa: E402
from saar.state import MemoryStore, RedisStore, redis_client  # noqa: E402
from saar.testing.redis_server import RedisServer  # noqa: E402

TURNS = 20


def twenty_turn_state(session: str) -> bytes:
    """The encoded router memory of one 20-turn agent session."""
    config = load_settings(ROOT / "config" / "local.yaml").policy
    state = None
    now = 1_000_000.0
    context = 2_000
    for turn in range(TURNS):
        loop = turn % 4 in (1, 2)
        facts = RequestFacts(
            request_id=f"{session}-{turn:02d}".ljust(32, "0"),
            api=Api.RESPONSES if turn % 5 == 4 else Api.CHAT,
            logical_model="auto",
            session_id=session,
            conversation_id=f"{session}-c",
            last_user_text="refactor the parser and run the tests" if turn % 6 == 0 else "go on",
            context_tokens=context,
            turn_index=turn,
            has_tools=True,
            tool_result_ids=(f"call_{turn:02d}a", f"call_{turn:02d}b") if loop else (),
        )
        _, state = policy.decide(state, facts, config, now)
        response = ResponseFacts(
            request_id=facts.request_id,
            status=200,
            response_id=f"resp_{session}_{turn:02d}" if facts.api is Api.RESPONSES else None,
            tool_call_ids=(f"call_{turn + 1:02d}a", f"call_{turn + 1:02d}b") if loop else (),
            prompt_tokens=context,
            cached_tokens=int(context * 0.8),
            completion_tokens=200,
        )
        state = policy.apply_response(state, response, config, now + 2)
        now += 30.0
        context += 1_500
    assert state is not None
    return state.encode()


async def measure(sessions: int) -> dict[str, object]:
    """Measure encoded, in-process and Redis bytes per 20-turn session."""
    record = twenty_turn_state("s" * 32)
    values = [twenty_turn_state(f"{i:032x}") for i in range(min(sessions, 50))]
    store = MemoryStore(max_entries=sessions * 2)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(sessions):
        # A private copy per session, as each real session has its own record.
        data = bytes(bytearray(values[i % len(values)]))
        await store.compare_and_set(f"k{i:032x}", data, expected_version=None, ttl_s=86_400)
    in_process = (tracemalloc.get_traced_memory()[0] - before) / sessions
    tracemalloc.stop()
    with RedisServer() as server:
        client = redis_client(server.url, timeout_s=1.0)
        redis_store = RedisStore(client, key_prefix="saar:v1:")
        key = "k" + "0" * 32
        await redis_store.compare_and_set(key, record, expected_version=None, ttl_s=86_400)
        usage = await redis_store.memory_usage(key)
        await redis_store.close()
    return {
        "turns": TURNS,
        "encoded_bytes": len(record),
        "in_process_bytes_per_session": round(in_process),
        "redis_bytes_per_session": usage,
        "sessions_measured_in_process": sessions,
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()} {platform.python_implementation()} "
        f"{platform.python_version()}",
    }


def main() -> int:
    """Run and print (and optionally write) the measurement."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result = asyncio.run(measure(args.sessions))
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
