"""The ``saar emulate`` subcommand: run emulated vLLM pools until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TextIO

import yaml

from saar.emulator.backend_log import DEFAULT_LOG_SIZE
from saar.emulator.faults import FaultPlan
from saar.emulator.pools import EmulatorPools
from saar.emulator.spec import DEFAULT_HOST, EmulatorSpec

__all__ = ["DESCRIPTION", "add_arguments", "build_parser", "register", "run", "serve"]

DESCRIPTION = """\
Emulate vLLM pools for development, tests and benchmarks (no GPU needed).

Reads the saar config (--config) and starts one HTTP server per port listed under
pools.<name>.emulator.ports. Each replica serves /v1/chat/completions, /v1/responses and
/v1/messages (streaming and not), /v1/models, /health and /metrics like vLLM, with a real
per-replica prefix cache (usage.prompt_tokens_details.cached_tokens), a per-replica
Responses store (previous_response_id answers 404 on any other replica) and scripted
answers: with `tools` declared, a last user message containing [[call:NAME]] or
[[call:NAME {"json": "args"}]] makes the model call those tools; a tool result is answered
with text. Each replica logs what it received at GET /_emulator/log.

The pool block:
  pools:
    <pool>:
      serves: [{model: qwen3-8b}]
      emulator:
        ports: [18101, 18102]      # one replica per port (0 = any free port)
        host: 127.0.0.1            # optional, default --host
        aliases: [auto]            # extra model names (optional)
        prefill_us_per_token: 40   # TTFT = ttft_base_ms + prefill_us * uncached tokens
        decode_us_per_token: 900   # per further output token
        ttft_base_ms: 2
        max_tokens_default: 16
        cache_blocks: 4096         # prefix cache capacity (LRU, in blocks)
        block_size: 16
        max_num_seqs: 0            # concurrent generations per replica (0 = no limit)

Fault plan (--faults FILE or POST /_emulator/faults), first active match fires:
  {"rules": [{"match": {"session": "s1", "pool": "mi300-small", "replica": 0,
                        "api": "chat", "turn": 3, "phase": "tool_result"},
              "status": 503, "times": 1}]}
  status: 429|500|502|503|504|"timeout" (hold delay_s, then 504); times: int or null.

Control port (--control-port): GET /_emulator/replicas, POST
/_emulator/replicas/<pool>/<i>/down|up|reset, GET|DELETE /_emulator/log,
GET|POST|DELETE /_emulator/faults. Prints one line per replica, then "emulator ready".
See docs/emulator.md.
"""

_EXAMPLE = """\
example:
  saar emulate --config config/local.yaml --control-port 18100
  curl -s localhost:18101/v1/chat/completions -H 'content-type: application/json' \\
    -d '{"model": "qwen3-8b", "messages": [{"role": "user", "content": "hi"}]}'
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``emulate`` options to ``parser``."""
    parser.add_argument(
        "--config", required=True, type=Path, help="saar YAML config with pools.*.emulator"
    )
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"bind address for pools without emulator.host and the control port "
        f"(default {DEFAULT_HOST})",
    )
    parser.add_argument(
        "--port-offset",
        type=int,
        default=0,
        metavar="N",
        help="add N to every configured port (0 stays 'any free port'); default 0",
    )
    parser.add_argument(
        "--control-port",
        type=int,
        default=None,
        metavar="PORT",
        help="serve the control API (faults, replica up/down, merged log) on PORT; "
        "default: no control port",
    )
    parser.add_argument(
        "--faults",
        type=Path,
        default=None,
        metavar="FILE",
        help='fault plan (JSON or YAML: {"rules": [...]}) active from start-up',
    )
    parser.add_argument(
        "--log-size",
        type=int,
        default=DEFAULT_LOG_SIZE,
        metavar="N",
        help=f"truth-log records kept per replica (default {DEFAULT_LOG_SIZE})",
    )


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``emulate`` subcommand; its ``func`` default is :func:`run` (args → exit code)."""
    parser = subparsers.add_parser(
        "emulate",
        help="run emulated vLLM pools (no GPU) for development, tests and benchmarks",
        description=DESCRIPTION,
        epilog=_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def build_parser() -> argparse.ArgumentParser:
    """Return a stand-alone parser (``python -m saar.emulator``) with the same options."""
    parser = argparse.ArgumentParser(
        prog="python -m saar.emulator",
        description=DESCRIPTION,
        epilog=_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    return parser


def _load(path: Path) -> Any:
    with path.open(encoding="utf-8") as fh:
        return yaml.safe_load(fh)


async def serve(
    spec: EmulatorSpec,
    *,
    host: str = DEFAULT_HOST,
    control_port: int | None = None,
    faults: FaultPlan | Mapping[str, Any] | None = None,
    log_size: int = DEFAULT_LOG_SIZE,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[EmulatorPools], None] | None = None,
) -> None:
    """Run the pools until ``stop`` is set (forever when None), calling ``on_ready`` once up."""
    stop = stop if stop is not None else asyncio.Event()
    async with EmulatorPools(
        spec, host=host, control_port=control_port, faults=faults, log_size=log_size
    ) as pools:
        if on_ready is not None:
            on_ready(pools)
        await stop.wait()


def _announce(pools: EmulatorPools, out: TextIO) -> None:
    for address in pools.replicas:
        print(f"emulator replica {address.name} listening on {address.url}", file=out)
    if pools.control_url is not None:
        print(f"emulator control listening on {pools.control_url}", file=out)
    print("emulator ready", file=out, flush=True)


def run(args: argparse.Namespace) -> int:
    """Run ``emulate`` from parsed arguments; returns the process exit code."""
    try:
        spec = EmulatorSpec.from_mapping(_load(args.config), port_offset=args.port_offset)
        faults = FaultPlan.from_mapping(_load(args.faults)) if args.faults else None
    except (OSError, ValueError, yaml.YAMLError) as exc:
        print(f"saar emulate: {exc}", file=sys.stderr)
        return 2
    if args.log_size < 1:
        print("saar emulate: --log-size must be positive", file=sys.stderr)
        return 2

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(
            spec,
            host=args.host,
            control_port=args.control_port,
            faults=faults,
            log_size=args.log_size,
            stop=stop,
            on_ready=lambda pools: _announce(pools, sys.stdout),
        )

    try:
        asyncio.run(main())
    except OSError as exc:
        # Typically a port already in use: say which and exit non-zero instead of a trace.
        print(f"saar emulate: {exc}", file=sys.stderr)
        return 1
    return 0
