"""The ``saar inject``, ``saar webhook`` and ``saar probe`` subcommands."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

from saar.deploy.inject import (
    DEFAULT_CONFIG_CONFIGMAP,
    DEFAULT_IMAGE,
    DEFAULT_SOCKET_DIR,
    InjectError,
    InjectOptions,
    dump_yaml,
    inject_documents,
    load_documents,
)

__all__ = ["register", "run_inject", "run_probe", "run_webhook_command"]

_INJECT_HELP = """\
Add the saar native sidecar to Kubernetes workloads running Envoy.

Reads a multi-document YAML stream (a Deployment, StatefulSet, DaemonSet, Job, CronJob or
Pod with an Envoy container, optionally the ConfigMap holding its Envoy bootstrap) and writes
it back with: the saar sidecar (initContainers, restartPolicy: Always), the socket emptyDir
mounted in both containers, saar's config ConfigMap volume, and - when the bootstrap ConfigMap
is in the input - the bootstrap patched (x-saar-* stripped early, ext_proc before the router,
the saar Unix-socket cluster, the x-saar-cluster route first). Idempotent: running it twice
gives the same output. Notes (e.g. a bootstrap it could not see) go to stderr.
"""

_EXAMPLE = """\
example:
  saar inject -f gateway.yaml --image registry.example.com/saar:0.1.0 | kubectl apply -f -
"""


def _add_inject_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", default=DEFAULT_IMAGE, help=f"saar image ({DEFAULT_IMAGE})")
    parser.add_argument(
        "--config-configmap",
        default=DEFAULT_CONFIG_CONFIGMAP,
        help=f"ConfigMap with saar's config.yaml ({DEFAULT_CONFIG_CONFIGMAP})",
    )
    parser.add_argument(
        "--socket-dir",
        default=DEFAULT_SOCKET_DIR,
        help=f"directory of the shared Unix socket ({DEFAULT_SOCKET_DIR})",
    )
    parser.add_argument("--envoy-container", help="name of the Envoy container (default: find it)")


def _inject_options(args: argparse.Namespace) -> InjectOptions:
    return InjectOptions(
        image=args.image,
        config_configmap=args.config_configmap,
        socket_dir=args.socket_dir,
        envoy_container=args.envoy_container,
        listeners=tuple(getattr(args, "listener", None) or ()),
    )


def run_inject(args: argparse.Namespace) -> int:
    """Run ``saar inject``: exit 0 on success, 2 with a message on bad input."""
    try:
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
        result = inject_documents(load_documents(text), _inject_options(args))
    except (OSError, InjectError) as exc:
        print(f"saar inject: {exc}", file=sys.stderr)
        return 2
    for note in result.notes:
        print(f"saar inject: note: {note}", file=sys.stderr)
    output = dump_yaml(result.documents)
    if args.output == "-":
        sys.stdout.write(output)
    else:
        Path(args.output).write_text(output)
    return 0


def run_webhook_command(args: argparse.Namespace) -> int:
    """Run ``saar webhook`` until SIGTERM/SIGINT."""
    from saar.deploy.webhook import WebhookOptions, run_webhook  # noqa: PLC0415 - aiohttp

    if (args.tls_cert is None) != (args.tls_key is None):
        print("saar webhook: give both --tls-cert and --tls-key", file=sys.stderr)
        return 2
    if args.tls_cert is None and not args.plain_http:
        print("saar webhook: --tls-cert/--tls-key required (or --plain-http)", file=sys.stderr)
        return 2
    options = WebhookOptions(
        inject=_inject_options(args),
        host=args.host,
        port=args.port,
        cert_file=args.tls_cert,
        key_file=args.tls_key,
    )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_webhook(options, stop)

    try:
        asyncio.run(main())
    except OSError as exc:
        print(f"saar webhook: {exc}", file=sys.stderr)
        return 2
    return 0


def run_probe(args: argparse.Namespace) -> int:
    """Run ``saar probe`` (the same as ``python -m saar.deploy.probe``)."""
    from saar.deploy.probe import main  # noqa: PLC0415 - grpc is slow to import

    argv = ["--socket", args.socket, "--timeout", str(args.timeout)]
    return main([*argv, "--alive"] if args.alive else argv)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``inject``, ``webhook`` and ``probe``; each sets ``func`` (args -> exit code)."""
    inject = subparsers.add_parser(
        "inject",
        help="add the saar native sidecar to Kubernetes workloads running Envoy",
        description=_INJECT_HELP,
        epilog=_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    inject.add_argument("-f", "--file", default="-", help="input YAML (default stdin)")
    inject.add_argument("-o", "--output", default="-", help="output YAML (default stdout)")
    inject.add_argument(
        "--listener",
        action="append",
        help="bootstrap listener to patch (repeatable; default every inbound HTTP listener)",
    )
    _add_inject_options(inject)
    inject.set_defaults(func=run_inject)

    webhook = subparsers.add_parser(
        "webhook",
        help="serve the mutating admission webhook that injects the saar sidecar",
        description="HTTPS server: POST /mutate (AdmissionReview v1), GET /healthz.",
    )
    webhook.add_argument("--host", default="0.0.0.0", help="bind address (default 0.0.0.0)")
    webhook.add_argument("--port", type=int, default=8443)
    webhook.add_argument("--tls-cert", help="PEM certificate chain (tls.crt)")
    webhook.add_argument("--tls-key", help="PEM private key (tls.key)")
    webhook.add_argument(
        "--plain-http", action="store_true", help="serve without TLS (local testing only)"
    )
    _add_inject_options(webhook)
    webhook.set_defaults(func=run_webhook_command)

    probe = subparsers.add_parser(
        "probe", help="gRPC health check of a running saar over its Unix socket (exec probe)"
    )
    probe.add_argument("--socket", default=f"{DEFAULT_SOCKET_DIR}/saar.sock")
    probe.add_argument("--timeout", type=float, default=3.0)
    probe.add_argument("--alive", action="store_true", help="any answer counts as healthy")
    probe.set_defaults(func=run_probe)
