"""The ``saar`` command line.

Subcommands: ``serve`` (the ext_proc sidecar), ``up`` (a whole local stack: emulated pools,
saar and Envoy), ``emulate`` (the vLLM pool emulator alone) and ``check-config``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from saar import __version__

__all__ = ["main"]


def _cmd_check_config(args: argparse.Namespace) -> int:
    from saar.settings import ConfigError, load_settings

    try:
        settings = load_settings(args.file)
    except ConfigError as exc:
        print(f"saar: config error: {exc}", file=sys.stderr)
        return 2
    config = settings.policy
    print(
        f"{settings.source}: ok ({len(config.decisions)} decisions, "
        f"{len(config.physical_models)} physical models on {len(config.pools)} pools, "
        f"state backend {settings.state.backend})"
    )
    return 0


def _run_loop(coro: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.run(coro)
    result: int = uvloop.run(coro)
    return result


def _cmd_serve(args: argparse.Namespace) -> int:
    from saar.app import ServeOptions, serve
    from saar.observability.logging import configure_logging
    from saar.settings import ConfigError

    configure_logging(args.log_level, json=not args.console_logs)
    options = ServeOptions(
        grpc_socket=args.grpc_socket,
        grpc_address=args.grpc_address,
        metrics_address=args.metrics_address,
    )
    try:
        return _run_loop(serve(args.config, options))
    except ConfigError as exc:
        print(f"saar: config error: {exc}", file=sys.stderr)
        return 2


def _cmd_up(args: argparse.Namespace) -> int:
    from saar.stack import LocalStack, StackPorts

    async def run() -> int:
        stack = LocalStack(
            config_path=Path(args.config),
            envoy_template=Path(args.envoy),
            workdir=Path(args.workdir),
            ports=StackPorts(listen=args.port, envoy_admin=args.admin_port),
        )
        await stack.start()
        url = stack.base_url
        print(
            f"""
saar is up: Envoy → saar (ext_proc) → emulated vLLM pools (config {args.config})

  endpoint      {url}/v1   (OpenAI and Anthropic compatible; model "auto")
  metrics       http://127.0.0.1:9464/metrics
  envoy admin   http://127.0.0.1:{args.admin_port}
  logs          {args.workdir}/*.log

Try it:

  curl -si {url}/v1/chat/completions \\
    -H 'content-type: application/json' -H 'x-session-id: demo' -H 'x-conversation-id: c1' \\
    -d '{{"model": "auto", "messages": [{{"role": "user", "content": "refactor this function"}}]}}'

The x-vsr-* response headers say which physical model served it, and why.
Press Ctrl-C to stop.""",
            flush=True,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        try:
            while not stop.is_set():
                for child in stack.children.values():
                    if not child.alive():
                        print(f"saar up: {child.name} exited:\n{child.output()[-2000:]}")
                        return 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
        finally:
            await stack.stop()
        return 0

    return asyncio.run(run())


def build_parser() -> argparse.ArgumentParser:
    """The ``saar`` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="saar",
        description="Session-aware model router for LLM agent traffic (an Envoy ext_proc sidecar).",
    )
    parser.add_argument("--version", action="version", version=f"saar {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the ext_proc sidecar")
    serve.add_argument("--config", required=True, help="saar YAML config")
    serve.add_argument("--grpc-socket", help="override server.grpc_socket")
    serve.add_argument("--grpc-address", help="override server.grpc_address (host:port)")
    serve.add_argument("--metrics-address", help="override server.metrics_address (host:port)")
    serve.add_argument("--log-level", default="info", help="debug, info, warning, error")
    serve.add_argument("--console-logs", action="store_true", help="human-readable logs")
    serve.set_defaults(func=_cmd_serve)

    up = sub.add_parser(
        "up", help="run a local stack: emulated vLLM pools + saar + Envoy (what `make run` does)"
    )
    up.add_argument("--config", default="config/local.yaml")
    up.add_argument("--envoy", default="envoy/local.yaml", help="Envoy bootstrap template")
    up.add_argument("--port", type=int, default=8080, help="client-facing port")
    up.add_argument("--admin-port", type=int, default=9901, help="Envoy admin port")
    up.add_argument("--workdir", default="run", help="socket and logs directory")
    up.set_defaults(func=_cmd_up)

    check = sub.add_parser("check-config", help="validate a config file without serving")
    check.add_argument("file")
    check.set_defaults(func=_cmd_check_config)

    from saar.bench.command import register as register_bench
    from saar.deploy.command import register as register_deploy
    from saar.emulator.command import register as register_emulator
    from saar.replay.command import register as register_replay

    register_emulator(sub)
    register_replay(sub)
    register_deploy(sub)
    register_bench(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``saar`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result
