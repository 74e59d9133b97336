"""Prototype: what one ext_proc round trip per request would save. NOT a shipped shape.

saar's default shape costs two round trips between Envoy and saar per routed request: the
request headers (answered at once, with ``mode_override``) and the buffered body. Envoy's
``FULL_DUPLEX_STREAMED`` body mode sends the headers and the body without waiting for an
answer; a processor that holds its header answer until the body's last chunk then answers
both at once, so a request costs one round trip. This script measures that saving on the
floor (no saar logic, the same mutations as ``saar.bench.nullproc``), grpc.aio both sides:

* ``floor2``: ``nullproc --two-messages`` (saar's current shape);
* ``duplex``: the same answers in full-duplex shape, served by this script.

What the shape costs is not measured here but is why it is not shipped: in full-duplex mode
Envoy hands the body to the processor and does not keep it, so ``failure_mode_allow`` cannot
pass a request on unmodified when saar is down or slow (saar's fail-open promise), and
``mode_override`` cannot ask per request for the Responses API's response headers.

Run: ``.venv/bin/python bench/prototypes/full_duplex_floor.py [--seconds S] [--rounds N]``;
writes ``bench/results/prototype-full-duplex.{json,md}``. Serving side (a child process):
``full_duplex_floor.py --serve SOCKET``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import yaml
from envoy.service.accesslog.v3 import als_pb2_grpc
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ep_grpc

from saar.bench import hotpath
from saar.bench.live import repo_root
from saar.bench.nullproc import NullAccessLog
from saar.extproc import responses
from saar.policy.headers import CONTRACT_HEADERS

_CLUSTER = "pool_mi300_small"
_CONTRACT = tuple((name, "m") for name in CONTRACT_HEADERS)
_THIS = Path(__file__).resolve()


class DuplexProcessor(ep_grpc.ExternalProcessorServicer):  # type: ignore[misc]
    """Holds the header answer until the body's last chunk, then answers both."""

    async def Process(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> None:
        """One stream: headers, body chunks (end_of_stream last), maybe trailers."""
        chunks: list[bytes] = []
        while True:
            message = await context.read()
            if message is grpc.aio.EOF:
                return
            kind = message.WhichOneof("request")
            if kind == "request_headers":
                if message.request_headers.end_of_stream:
                    await context.write(responses.passthrough_request_headers())
                continue
            if kind == "request_body":
                chunks.append(message.request_body.body)
                if not message.request_body.end_of_stream:
                    continue
                body = b"".join(chunks)
                head = ep.ProcessingResponse()
                common = head.request_headers.response
                for name, value in (
                    ("x-saar-cluster", _CLUSTER),
                    ("x-saar-affinity-key", "floor"),
                    *_CONTRACT,
                ):
                    entry = common.header_mutation.set_headers.add()
                    entry.header.key = name
                    entry.header.raw_value = value.encode()
                common.clear_route_cache = True
                await context.write(head)
                reply = ep.ProcessingResponse()
                streamed = reply.request_body.response.body_mutation.streamed_response
                streamed.body = body
                streamed.end_of_stream = True
                await context.write(reply)
                continue
            if kind == "request_trailers":
                await context.write(ep.ProcessingResponse(request_trailers=ep.TrailersResponse()))
                continue
            await context.write(responses.continue_response_body())


async def _serve(socket_path: str) -> None:
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
        ]
    )
    ep_grpc.add_ExternalProcessorServicer_to_server(DuplexProcessor(), server)
    als_pb2_grpc.add_AccessLogServiceServicer_to_server(NullAccessLog(), server)
    server.add_insecure_port(f"unix:{socket_path}")
    await server.start()
    print("nullproc ready", flush=True)
    await server.wait_for_termination()


def _duplex_template(with_saar: Path, out: Path) -> Path:
    raw = yaml.safe_load(with_saar.read_text())
    for listener in raw["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for flt in chain["filters"]:
                for http in flt["typed_config"]["http_filters"]:
                    if http["name"] != "envoy.filters.http.ext_proc":
                        continue
                    config = http["typed_config"]
                    config["processing_mode"].update(
                        request_body_mode="FULL_DUPLEX_STREAMED", request_trailer_mode="SEND"
                    )
                    config["allow_mode_override"] = False
                    # Envoy does not keep a full-duplex body: it cannot fail open.
                    config["failure_mode_allow"] = False
    out.write_text(yaml.safe_dump(raw, sort_keys=False))
    return out  # written before the loop measures anything


async def run(seconds: float, rounds: int) -> dict[str, Any]:
    """Envoy alone, the 2-message floor and the full-duplex floor, interleaved."""
    root = repo_root()
    with tempfile.TemporaryDirectory(prefix="saar-proto-fd-") as tmp_name:
        tmp = Path(tmp_name)
        ports = iter(hotpath._distinct_ports(12))
        upstream_port = next(ports)
        upstream = hotpath._upstream(root, upstream_port, tmp)
        stacks = {}
        try:
            await upstream.wait_for_output("upstream ready", 15.0)
            with_saar, plain = hotpath._templates(root, upstream_port, tmp)
            duplex = _duplex_template(with_saar, tmp / "envoy-duplex.yaml")
            stacks["plain"] = hotpath._bare_stack(plain, tmp / "plain", ports)
            stacks["floor2"] = hotpath._bare_stack(with_saar, tmp / "floor2", ports)
            await hotpath._attach_floor(
                stacks["floor2"],
                [sys.executable, "-m", "saar.bench.nullproc", "--two-messages"],
                tmp / "floor2.log",
            )
            stacks["duplex"] = hotpath._bare_stack(duplex, tmp / "duplex", ports)
            await hotpath._attach_floor(
                stacks["duplex"], [sys.executable, str(_THIS), "--serve"], tmp / "duplex.log"
            )
            for stack in stacks.values():
                await stack.start()
            for name in ("floor2", "duplex"):
                seen = await asyncio.to_thread(hotpath._contract_header, stacks[name].ports.listen)
                if seen != "m":
                    raise RuntimeError(f"{name}: x-vsr-selected-model was {seen!r}, not 'm'")
            reqs = hotpath._requests(20_000, "bench")
            for stack in stacks.values():
                await hotpath._open_loop(stack.ports.listen, reqs, 100.0, 1.0)
            results: dict[str, list[dict[str, Any]]] = {}
            for r in range(rounds):
                order = list(stacks) if r % 2 == 0 else list(reversed(stacks))
                for mode in ("rate", "sat"):
                    for name in order:
                        stack = stacks[name]
                        pid = hotpath._pid(stack, "saar")
                        before = hotpath._cpu_seconds(pid)
                        if mode == "rate":
                            step = await hotpath._open_loop(
                                stack.ports.listen, reqs, 200.0, seconds
                            )
                        else:
                            step = await hotpath._closed_loop(stack.ports.listen, reqs, 32, seconds)
                        done = max(1, len(step.latencies))
                        results.setdefault(f"{name}/{mode}", []).append(
                            {
                                **hotpath._pct(step.latencies),
                                "throughput": round(step.throughput, 1),
                                "errors": step.errors,
                                "cpu_us_per_request": round(
                                    1e6 * (hotpath._cpu_seconds(pid) - before) / done, 1
                                ),
                            }
                        )
        finally:
            for stack in stacks.values():
                await stack.stop()
            await upstream.stop()
    summary = {
        key: {
            m: statistics.median(r[m] for r in rows)
            for m in ("p50", "p95", "p99", "throughput", "cpu_us_per_request")
        }
        | {"errors": sum(r["errors"] for r in rows)}
        for key, rows in results.items()
    }
    return {
        "prototype": "full-duplex floor",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "rounds": rounds,
        "seconds": seconds,
        "summary": summary,
        "rounds_detail": results,
    }


def markdown(doc: dict[str, Any]) -> str:
    """The comparison as Markdown (added = floor minus Envoy alone, medians of the rounds)."""
    s = doc["summary"]
    lines = [
        "# Prototype: one ext_proc round trip per request (full duplex) vs two (saar's shape)",
        "",
        f"{doc['date']} · medians of {doc['rounds']} rounds x {doc['seconds']} s · 20 KB "
        "agent bodies · both floors on grpc.aio, no saar logic (bench/prototypes/"
        "full_duplex_floor.py)",
        "",
        "| Step | Shape | p50 / p95 / p99 ms | Added p50 / p95 / p99 ms | Throughput req/s | "
        "Processor CPU µs/req | Errors |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for mode, label in (("rate", "20 KB @ 200 req/s"), ("sat", "20 KB saturation (32 conns)")):
        plain = s[f"plain/{mode}"]
        for name, shape in (
            ("plain", "Envoy alone"),
            ("floor2", "2 round trips"),
            ("duplex", "1 round trip"),
        ):
            row = s[f"{name}/{mode}"]
            added = " / ".join(f"+{row[m] - plain[m]:.2f}" for m in ("p50", "p95", "p99"))
            lines.append(
                f"| {label} | {shape} | {row['p50']:.2f} / {row['p95']:.2f} / "
                f"{row['p99']:.2f} | {added if name != 'plain' else '-'} | "
                f"{row['throughput']:,.0f} | {row['cpu_us_per_request']:,.0f} | "
                f"{row['errors']} |"
            )
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    """Measure, or (``--serve``) be the full-duplex floor processor."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", metavar="SOCKET")
    parser.add_argument("socket", nargs="?")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import uvloop  # noqa: PLC0415 - as saar serve

    if args.serve is not None or args.socket is not None:
        uvloop.run(_serve(args.serve or args.socket))
        return
    doc = uvloop.run(run(args.seconds, args.rounds))
    out = repo_root() / "bench" / "results"
    (out / "prototype-full-duplex.json").write_text(json.dumps(doc, indent=2) + "\n")
    text = markdown(doc)
    (out / "prototype-full-duplex.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
