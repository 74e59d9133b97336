"""Scratch prototype: the ext_proc floor on a single-threaded HTTP/2 server. NOT shipped.

Question (issue #8): is the bare Python ext_proc floor (``saar.bench.nullproc``, grpc.aio +
uvloop: +1.5-1.6 ms p50 at 200 req/s over Envoy alone on this 2-core box) a floor of Python,
or of grpcio's threading? grpcio hands every message across its C-core event-engine threads,
a poller thread and the asyncio loop (perf-spike.md: "every message crosses 3-4 threads").

This script serves the same null ext_proc (the 2-message shape saar uses by default:
request headers answered with the same ``mode_override``, the buffered body answered with
the cluster header, affinity key, content-length, the body and the ten contract headers)
with gRPC framed by hand over the ``h2`` library (python-hyper's HTTP/2 state machine) in an
``asyncio.Protocol`` on uvloop: one thread, no completion queue, no hand-offs. The same
protobuf builders as saar (``saar.extproc.responses``). Envoy's access log stream is read
and dropped, as the grpc floor does.

What a production transport would also need (docs/design/0005): outbound flow control
(here Envoy's 256 MiB stream windows are simply trusted), GOAWAY on drain, per-stream tasks
for an async store, gRPC status for unknown methods, health, message size limits. None of
that changes the per-message path measured here.

Run: ``.venv/bin/python bench/prototypes/h2_floor.py [--small]``: Envoy alone, Envoy + the
grpc.aio floor and Envoy + the h2 floor, interleaved per round, 20 KB agent bodies at
200 req/s and at saturation (32 connections); writes
``bench/results/prototype-h2-floor.{json,md}``. ``--serve SOCKET`` runs the h2 floor alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep

from saar.bench import hotpath as hp
from saar.bench.live import repo_root
from saar.bench.matrix import _machine
from saar.extproc import responses
from saar.policy.headers import CONTRACT_HEADERS
from saar.stack import LocalStack

_PROCESS = b"/envoy.service.ext_proc.v3.ExternalProcessor/Process"
_REPLY_HEADERS = [(b":status", b"200"), (b"content-type", b"application/grpc")]
_OK_TRAILERS = [(b"grpc-status", b"0")]
_CONTRACT = responses.response_headers(
    tuple((name, "m") for name in CONTRACT_HEADERS)
).response_headers.response.header_mutation.set_headers
_REQUEST_HEADERS = responses.route_request_headers(response_headers=False).SerializeToString()
_OTHER = responses.continue_response_body().SerializeToString()


class _Stream:
    __slots__ = ("buffer", "path", "replied")

    def __init__(self, path: bytes) -> None:
        self.path = path
        self.buffer = bytearray()
        self.replied = False


class H2Floor(asyncio.Protocol):
    """One HTTP/2 connection from Envoy; answers ext_proc messages inline, on the loop."""

    def __init__(self) -> None:
        config = h2.config.H2Configuration(
            client_side=False,
            header_encoding=None,
            validate_inbound_headers=False,
            normalize_inbound_headers=False,
        )
        self._conn = h2.connection.H2Connection(config=config)
        self._streams: dict[int, _Stream] = {}
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Send our preface with large windows (Envoy's own are 256 MiB)."""
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        conn = self._conn
        conn.initiate_connection()
        conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1})
        conn.increment_flow_control_window(2**31 - 1 - 65_535)
        self._transport.write(conn.data_to_send())

    def data_received(self, data: bytes) -> None:
        """Feed the state machine; answer every complete gRPC message at once."""
        conn = self._conn
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.RequestReceived):
                path = dict(event.headers).get(b":path", b"")
                self._streams[event.stream_id] = _Stream(path)
            elif isinstance(event, h2.events.DataReceived):
                if event.flow_controlled_length:
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                stream = self._streams.get(event.stream_id)
                if stream is not None:
                    self._messages(event.stream_id, stream, event.data)
            elif isinstance(event, h2.events.StreamEnded):
                stream = self._streams.pop(event.stream_id, None)
                if stream is not None:
                    self._close(event.stream_id, stream)
            elif isinstance(event, h2.events.StreamReset):
                self._streams.pop(event.stream_id, None)
        out = conn.data_to_send()
        if out and self._transport is not None:
            self._transport.write(out)

    def _messages(self, stream_id: int, stream: _Stream, data: bytes) -> None:
        buffer = stream.buffer
        buffer += data
        while len(buffer) >= 5:
            size = int.from_bytes(buffer[1:5], "big")
            if len(buffer) < 5 + size:
                return
            message = bytes(buffer[5 : 5 + size])
            del buffer[: 5 + size]
            if stream.path == _PROCESS:
                self._send(stream_id, stream, _answer(message))
            # Anything else (the access log) is read and dropped, as the grpc floor does.

    def _send(self, stream_id: int, stream: _Stream, payload: bytes) -> None:
        conn = self._conn
        if not stream.replied:
            conn.send_headers(stream_id, _REPLY_HEADERS)
            stream.replied = True
        framed = b"\x00" + len(payload).to_bytes(4, "big") + payload
        step = conn.max_outbound_frame_size
        for start in range(0, len(framed), step):
            conn.send_data(stream_id, framed[start : start + step])

    def _close(self, stream_id: int, stream: _Stream) -> None:
        conn = self._conn
        # Envoy may reset a stream it is done with while our trailers are on their way.
        with contextlib.suppress(h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            if not stream.replied:
                conn.send_headers(stream_id, _REPLY_HEADERS)
                if stream.path != _PROCESS:
                    conn.send_data(stream_id, b"\x00\x00\x00\x00\x00")  # empty response
            conn.send_headers(stream_id, _OK_TRAILERS, end_stream=True)


def _answer(raw: bytes) -> bytes:
    message = ep.ProcessingRequest.FromString(raw)
    kind = message.WhichOneof("request")
    if kind == "request_headers":
        return _REQUEST_HEADERS
    if kind == "request_body":
        reply = responses.route_request_body(
            cluster="pool_mi300_small", affinity_key="floor", body=message.request_body.body
        )
        reply.request_body.response.header_mutation.set_headers.extend(_CONTRACT)
        return reply.SerializeToString()
    return _OTHER


async def _serve(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    server = await asyncio.get_running_loop().create_unix_server(H2Floor, path)
    print("nullproc ready", flush=True)
    await server.serve_forever()


# --- measurement -----------------------------------------------------------------------------


async def _measure(small: bool) -> dict[str, Any]:
    rounds, seconds = (1, 1.0) if small else (3, 5.0)
    rate = 50.0 if small else 200.0
    steps = ((f"{rate:.0f} req/s", rate), ("saturation", None))
    root = repo_root()
    with tempfile.TemporaryDirectory(prefix="saar-h2-floor-") as name:
        tmp = Path(name)
        ports = iter(hp._distinct_ports(8))
        upstream_port = next(ports)
        upstream = hp._upstream(root, upstream_port, tmp)
        stacks: dict[str, LocalStack] = {}
        try:
            await upstream.wait_for_output("upstream ready", 15.0)
            with_saar, plain = hp._templates(root, upstream_port, tmp)
            stacks["envoy alone"] = hp._bare_stack(plain, tmp / "plain", ports)
            servers = {
                "grpc.aio floor": [sys.executable, "-m", "saar.bench.nullproc", "--two-messages"],
                "h2 floor": [sys.executable, __file__, "--serve"],
            }
            for i, (label, command) in enumerate(servers.items()):
                stacks[label] = hp._bare_stack(with_saar, tmp / f"s{i}", ports)
                await hp._attach_floor(stacks[label], command, tmp / f"s{i}.log")
            for stack in stacks.values():
                await stack.start()
            for label, stack in stacks.items():
                if label != "envoy alone":
                    seen = await asyncio.to_thread(hp._contract_header, stack.ports.listen)
                    if seen != "m":
                        raise RuntimeError(f"{label}: contract header {seen!r}, not 'm'")
            reqs = hp._requests(20_000, "localhost")
            for stack in stacks.values():
                await hp._closed_loop(stack.ports.listen, reqs, 8, 0.5)
            raw: dict[str, dict[str, list[dict[str, float]]]] = {
                step: {label: [] for label in stacks} for step, _ in steps
            }
            for _ in range(rounds):
                for step, step_rate in steps:
                    for label, stack in stacks.items():
                        pid = hp._pid(stack, "saar")
                        cpu0 = hp._cpu_seconds(pid)
                        port = stack.ports.listen
                        if step_rate is None:
                            result = await hp._closed_loop(port, reqs, 32, seconds)
                        else:
                            result = await hp._open_loop(port, reqs, step_rate, seconds)
                        cpu = hp._cpu_seconds(pid) - cpu0
                        n = max(1, len(result.latencies))
                        raw[step][label].append(
                            {
                                **hp._pct(result.latencies),
                                "throughput": round(result.throughput, 1),
                                "cpu_us_per_request": round(1e6 * cpu / n, 1),
                                "errors": result.errors,
                            }
                        )
        finally:
            for stack in stacks.values():
                await stack.stop()
            await upstream.stop()
    return {"rounds": rounds, "seconds": seconds, "raw": raw, "summary": _summary(raw)}


def _summary(raw: dict[str, dict[str, list[dict[str, float]]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for step, by_label in raw.items():
        base = by_label["envoy alone"]
        for label, runs in by_label.items():
            row = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            for q in ("p50", "p95", "p99"):
                row[f"added_{q}"] = round(
                    statistics.median(r[q] - b[q] for r, b in zip(runs, base, strict=True)), 3
                )
            out[f"{step}/{label}"] = row
    return out


def _markdown(doc: dict[str, Any]) -> str:
    lines = [
        "# Prototype: the ext_proc floor on grpc.aio vs a single-threaded h2 server",
        "",
        f"{doc['date']} · {doc['machine']} · medians of {doc['rounds']} rounds x "
        f"{doc['seconds']} s · 20 KB agent bodies · saar's 2-message shape, no saar logic",
        "",
        "| Step | Server | p50 / p95 / p99 ms | Added p50 / p95 / p99 ms | Throughput req/s | "
        "Server CPU µs/req |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for key, row in doc["summary"].items():
        step, label = key.rsplit("/", 1)
        lines.append(
            f"| {step} | {label} | {row['p50']:.2f} / {row['p95']:.2f} / {row['p99']:.2f} | "
            f"{row['added_p50']:+.2f} / {row['added_p95']:+.2f} / {row['added_p99']:+.2f} | "
            f"{row['throughput']:,.0f} | {row['cpu_us_per_request']:,.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    """Serve the h2 floor (``--serve``) or measure it against the grpc.aio floor."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", metavar="SOCKET", help="run the h2 floor on this socket")
    parser.add_argument("--small", action="store_true", help="one short round (a smoke test)")
    parser.add_argument("--out", default=str(repo_root() / "bench" / "results"))
    args = parser.parse_args()
    if args.serve:
        import uvloop  # noqa: PLC0415 - the same loop as saar serve

        uvloop.run(_serve(args.serve))
        return
    import uvloop  # noqa: PLC0415

    doc = {
        "benchmark": "prototype-h2-floor",
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": _machine(),
        **uvloop.run(_measure(args.small)),
    }
    stem = "prototype-h2-floor-small" if args.small else "prototype-h2-floor"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(doc, indent=2) + "\n")
    text = _markdown(doc)
    (out / f"{stem}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
