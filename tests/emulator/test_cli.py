"""The `python -m saar.emulator` process: start-up lines, serving, SIGTERM, errors."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import sys
from pathlib import Path

import aiohttp
import yaml

from saar.emulator import register
from saar.emulator.command import run


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_cli_starts_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    """The CLI prints a line per replica and `emulator ready`, serves, and exits 0 on SIGTERM."""
    base = free_port()
    replica_port = free_port()
    config = {
        "models": {"qwen3-8b": {}},
        "pools": {
            "mi300-small": {
                "serves": [{"model": "qwen3-8b"}],
                "emulator": {"ports": [0, 1], "aliases": ["auto"], "decode_us_per_token": 0},
            }
        },
        "observability": {"ignored": True},
    }
    config_path = tmp_path / "saar.yaml"
    config_path.write_text(yaml.safe_dump(config))
    faults_path = tmp_path / "faults.json"
    faults_path.write_text(json.dumps({"rules": [{"match": {"replica": 1}, "status": 429}]}))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "saar.emulator",
        "--config",
        str(config_path),
        "--control-port",
        str(base),
        "--faults",
        str(faults_path),
        "--port-offset",
        str(replica_port - 1),  # shifts port 1 onto the free port; 0 stays ephemeral
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        while not lines or lines[-1] != "emulator ready":
            raw = await asyncio.wait_for(proc.stdout.readline(), timeout=30)
            assert raw, f"emulator exited early: {(await proc.stderr.read()).decode()}"
            lines.append(raw.decode().strip())
        assert [line.split(" listening on ")[0] for line in lines[:-1]] == [
            "emulator replica mi300-small/0",
            "emulator replica mi300-small/1",
            "emulator control",
        ]
        urls = [line.split(" listening on ")[1] for line in lines[:2]]
        assert urls[1] == f"http://127.0.0.1:{replica_port}"
        body = {"model": "auto", "messages": [{"role": "user", "content": "ping"}]}
        async with aiohttp.ClientSession() as session:
            ok = await session.post(urls[0] + "/v1/chat/completions", json=body)
            limited = await session.post(urls[1] + "/v1/chat/completions", json=body)
            replicas = await (
                await session.get(f"http://127.0.0.1:{base}/_emulator/replicas")
            ).json()
            assert (ok.status, limited.status) == (200, 429)
            assert (await ok.json())["model"] == "qwen3-8b"
        assert [r["url"] for r in replicas] == urls
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), timeout=15) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_cli_rejects_bad_config_with_path(tmp_path: Path) -> None:
    """A bad config exits 2 with the error path on stderr."""
    config_path = tmp_path / "bad.yaml"
    config_path.write_text(
        yaml.safe_dump({"pools": {"p": {"serves": [{"model": "m"}], "emulator": {"ports": [-1]}}}})
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "saar.emulator",
        "--config",
        str(config_path),
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode == 2
    assert "pools.p.emulator.ports[0] must be an integer port" in err.decode()


def test_register_adds_emulate_subcommand() -> None:
    """register() adds `emulate` with its options and a handler the saar CLI can call."""
    parser = argparse.ArgumentParser(prog="saar")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["emulate", "--config", "c.yaml", "--port-offset", "7", "--control-port", "9"]
    )
    assert (args.command, args.config, args.port_offset, args.control_port) == (
        "emulate",
        Path("c.yaml"),
        7,
        9,
    )
    assert args.func is run
