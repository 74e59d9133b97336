"""``python -m saar.deploy.probe``: the Kubernetes exec probe for the saar sidecar.

kubelet's native gRPC probe dials the pod IP, so it cannot reach saar's Unix socket (or a
listener bound to loopback), and exposing the ext_proc and Admin services on the pod IP just
for probes would open them to the cluster network. This probe runs inside the saar container
and asks the standard gRPC health service over the same Unix socket Envoy uses.

Exit 0 when healthy. ``--alive`` (liveness) accepts any answer, SERVING or not: a draining
saar reports NOT_SERVING but must not be killed while it finishes its streams.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["EXTPROC_SERVICE", "check", "main"]

EXTPROC_SERVICE = "envoy.service.ext_proc.v3.ExternalProcessor"


def check(socket: str, service: str, timeout_s: float, *, alive_only: bool) -> tuple[bool, str]:
    """Ask saar's health service; returns (healthy, a one-line explanation)."""
    # Imported here so that `--help` stays instant; grpc is the slow import.
    import grpc  # noqa: PLC0415
    from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: PLC0415

    with grpc.insecure_channel(f"unix:{socket}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
        except grpc.RpcError as exc:
            return False, f"health check failed: {exc.code().name}: {exc.details()}"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    if alive_only:
        return True, f"alive ({status})"
    return reply.status == health_pb2.HealthCheckResponse.SERVING, status


def main(argv: list[str] | None = None) -> int:
    """Run one probe; exit status 0 means healthy."""
    parser = argparse.ArgumentParser(prog="python -m saar.deploy.probe", description=__doc__)
    parser.add_argument("--socket", default="/var/run/saar/saar.sock", help="saar's Unix socket")
    parser.add_argument("--service", default=EXTPROC_SERVICE, help="gRPC health service name")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds")
    parser.add_argument("--alive", action="store_true", help="liveness: any answer is healthy")
    args = parser.parse_args(argv)
    healthy, detail = check(args.socket, args.service, args.timeout, alive_only=args.alive)
    print(detail, file=sys.stdout if healthy else sys.stderr)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
