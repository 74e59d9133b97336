"""A trivial HTTP/1.1 upstream for the hot-path benchmark: a fixed chat completion, keep-alive.

It stands in for every pool so the benchmark measures Envoy and saar, not an emulator: it costs
a few microseconds per request (a raw asyncio ``Protocol`` on uvloop, as in the perf spike).
Run it as ``python -m saar.bench.upstream --port N``; it prints ``upstream ready`` when it listens.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from typing import Any, Final

__all__ = ["UpstreamProtocol", "main"]

_BODY: Final = (
    b'{"id":"chatcmpl-bench","object":"chat.completion","created":0,"model":"bench",'
    b'"choices":[{"index":0,"message":{"role":"assistant","content":"ok"},'
    b'"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,'
    b'"total_tokens":2,"prompt_tokens_details":{"cached_tokens":0}}}'
)
_RESPONSE: Final = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
    + str(len(_BODY)).encode()
    + b"\r\n\r\n"
    + _BODY
)


class UpstreamProtocol(asyncio.Protocol):
    """Parse pipelined HTTP/1.1 requests (content-length or chunked) and answer each at once."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport for the answers (uvloop's is no ``asyncio.Transport`` subclass)."""
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        """Consume every complete request in the buffer."""
        self._buf += data
        while True:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self._buf[:end]).lower()
            start = end + 4
            length = 0
            chunked = b"transfer-encoding: chunked" in head
            marker = head.find(b"content-length:")
            if marker >= 0:
                line_end = head.find(b"\r\n", marker)
                length = int(head[marker + 15 : line_end if line_end >= 0 else None].strip())
            if chunked:
                done = self._buf.find(b"\r\n0\r\n\r\n", start - 2)
                if done < 0:
                    return
                consumed = done + 7
            else:
                if len(self._buf) < start + length:
                    return
                consumed = start + length
            del self._buf[:consumed]
            self._transport.write(_RESPONSE)


async def _serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(UpstreamProtocol, "127.0.0.1", port, backlog=1024)
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    print("upstream ready", flush=True)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``--port N``."""
    parser = argparse.ArgumentParser(prog="saar-bench-upstream")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    try:
        import uvloop  # noqa: PLC0415 - optional speed-up, as in saar serve
    except ImportError:  # pragma: no cover
        asyncio.run(_serve(args.port))
    else:
        uvloop.run(_serve(args.port))
    return 0


if __name__ == "__main__":  # pragma: no cover
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())
