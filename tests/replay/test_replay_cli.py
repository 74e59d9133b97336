"""The CLI: show, session timeline, explain, rerun and priors build on a real SQLite file."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml
from replay_builders import SMALL, Run, make_config

from saar.policy.facts import IdentitySource
from saar.replay.command import load_policy, register
from saar.replay.query import format_timeline, session_key, timeline
from saar.replay.store import SqliteReplayStore
from saar.wire.identity import hash_identity
from saar.wire.json import loads

CONFIG = Path(__file__).resolve().parents[2] / "config" / "local.yaml"


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="saar")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


@pytest.fixture
def db(tmp_path: Path) -> tuple[Path, Run]:
    sid = hash_identity("session", IdentitySource.HEADER, "raw-s")
    run = Run(make_config())
    run.turn(tool_calls=("call_a",), session_id=sid, cached=None)
    run.turn(tool_result_ids=("call_a",), has_tools=True, session_id=sid)
    path = tmp_path / "replay.sqlite3"
    store = SqliteReplayStore(path)
    store.write(run.records, [])
    store.close()
    return path, run


def test_session_key_hashes_like_ingress() -> None:
    """The CLI's hash of a raw id equals what wire.identity stored."""
    assert session_key("raw-s") == hash_identity("session", IdentitySource.HEADER, "raw-s")
    assert session_key("x" * 32, hashed=True) == "x" * 32


def test_timeline_lists_turns_with_tokens(db: tuple[Path, Run]) -> None:
    """The timeline shows turn, decision, action/reason, model@pool, status and tokens."""
    _, run = db
    text = format_timeline(timeline(run.records))
    lines = text.splitlines()
    assert "action/reason" in lines[0]
    assert "establish_baseline/new_key" in lines[2]
    assert "hard_lock/tool_loop" in lines[3]
    assert SMALL in lines[3]
    assert "15000/20000" in lines[3]
    assert "-/20000" in lines[2]


def test_cli_show_session_explain(db: tuple[Path, Run], capsys: pytest.CaptureFixture[str]) -> None:
    """show, session (raw id) and explain print readable text and JSON."""
    path, run = db
    locked = run.records[1].replay_id
    assert _main(["replay", "show", locked, "--db", str(path)]) == 0
    assert "hard_lock / tool_loop" in capsys.readouterr().out
    assert _main(["replay", "session", "raw-s", "--db", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.count("small-8b@mi300") == 2
    assert _main(["replay", "session", "raw-s", "--db", str(path), "--json"]) == 0
    assert len(loads(capsys.readouterr().out)["turns"]) == 2
    assert _main(["explain", locked, "--db", str(path)]) == 0
    assert "lock: tool_loop held" in capsys.readouterr().out
    assert _main(["explain", locked, "--db", str(path), "--json"]) == 0
    assert loads(capsys.readouterr().out)["lock"]["owner"] == SMALL
    assert _main(["replay", "show", "nope", "--db", str(path)]) == 2
    assert "unknown replay id" in capsys.readouterr().err


def test_cli_rerun_and_priors_build(
    db: tuple[Path, Run], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """rerun loads a YAML config (with replay/priors sections); priors build writes a file."""
    path, _ = db
    raw = yaml.safe_load(CONFIG.read_text())
    raw["replay"] = {"path": str(path), "capture_prompts": False}
    config_path = tmp_path / "new.yaml"
    config_path.write_text(yaml.safe_dump(raw))
    out_path = tmp_path / "priors.json"
    assert (
        _main(["priors", "build", "--db", str(path), "--out", str(out_path), "--min-samples", "1"])
        == 0
    )
    assert "wrote" in capsys.readouterr().out
    raw["priors"] = {"path": str(out_path)}
    config_path.write_text(yaml.safe_dump(raw))
    assert load_policy(str(config_path)).priors is not None
    # Records name models of the test catalogue, not local.yaml's: re-decided on facts.
    assert _main(["replay", "rerun", "--config", str(config_path), "--json"]) == 0
    report = loads(capsys.readouterr().out)
    assert report["records"] == 2
    assert _main(["replay", "rerun", "--config", str(config_path)]) == 0
    assert "re-evaluated 2 decisions" in capsys.readouterr().out
