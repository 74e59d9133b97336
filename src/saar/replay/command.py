"""CLI: ``saar replay show|session|rerun``, ``saar explain``, ``saar priors build``.

All commands read the SQLite file: ``--db PATH``, else ``replay.path`` of ``--config``, else
``run/replay.sqlite3``. Session and conversation ids are given **raw** (what the client sent
in ``x-session-id`` / ``x-conversation-id``) and hashed here exactly as at ingress; ``--hashed``
takes a stored id as is.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

import yaml

from saar.policy.config import PolicyConfig
from saar.policy.facts import IdentitySource
from saar.replay.config import ReplayConfig, ReplayConfigError
from saar.replay.explain import explain, format_explanation, history_for
from saar.replay.priors import PriorsFileError, build_priors, load_priors, write_priors
from saar.replay.query import format_record, format_timeline, record_json, session_key, timeline
from saar.replay.rerun import rerun
from saar.replay.store import SqliteReplayStore
from saar.settings import ConfigError, parse_settings
from saar.wire.json import dumps

__all__ = ["load_policy", "register"]

_DEFAULT_DB = "run/replay.sqlite3"
_OWN_SECTIONS = ("replay", "priors")


class _CommandError(Exception):
    """A user error: printed as ``saar: ...`` with exit status 2."""


def _read_yaml(path: str) -> Mapping[str, Any]:
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise _CommandError(f"{path}: cannot be read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise _CommandError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, Mapping):
        raise _CommandError(f"{path}: must be a YAML mapping")
    return raw


def _replay_config(raw: Mapping[str, Any]) -> ReplayConfig:
    try:
        return ReplayConfig.from_mapping(raw)
    except ReplayConfigError as exc:
        raise _CommandError(f"config error: {exc}") from None


def load_policy(path: str, priors: str | None = None) -> PolicyConfig:
    """The policy of a saar YAML file, with the priors file it names (or ``priors``) loaded."""
    raw = _read_yaml(path)
    replay_config = _replay_config(raw)
    # The replay sections are parsed here, so the policy loads whether or not settings
    # already knows them.
    rest = {k: v for k, v in raw.items() if k not in _OWN_SECTIONS}
    try:
        policy = parse_settings(rest, source=path).policy
    except ConfigError as exc:
        raise _CommandError(f"config error: {exc}") from None
    priors_path = priors if priors is not None else replay_config.priors_path
    if priors_path:
        try:
            policy = replace(policy, priors=load_priors(priors_path, policy.priors))
        except PriorsFileError as exc:
            raise _CommandError(str(exc)) from None
    return policy


def _db_path(args: argparse.Namespace) -> str:
    if args.db:
        return str(args.db)
    config = getattr(args, "config", None)
    if config:
        return _replay_config(_read_yaml(config)).path
    return _DEFAULT_DB


def _open(args: argparse.Namespace) -> SqliteReplayStore:
    path = _db_path(args)
    if not Path(path).exists():
        raise _CommandError(f"{path}: no replay database (set --db or --config)")
    return SqliteReplayStore(path)


def _emit(data: object, out: TextIO) -> None:
    out.write(dumps(data).decode() + "\n")


def _show(args: argparse.Namespace, out: TextIO) -> int:
    store = _open(args)
    try:
        record = store.get(args.replay_id)
    finally:
        store.close()
    if record is None:
        raise _CommandError(f"unknown replay id {args.replay_id!r}")
    if args.json:
        _emit(record_json(record), out)
    else:
        out.write(format_record(record) + "\n")
    return 0


def _session(args: argparse.Namespace, out: TextIO) -> int:
    source = IdentitySource(args.source)
    try:
        sid = session_key(args.session_id, "session", source, hashed=args.hashed)
        cid = (
            session_key(args.conversation, "conversation", hashed=args.hashed)
            if args.conversation
            else None
        )
    except ValueError as exc:
        raise _CommandError(str(exc)) from None
    store = _open(args)
    try:
        records = store.session(sid, cid, args.limit)
    finally:
        store.close()
    rows = timeline(records)
    if args.json:
        _emit(
            {"session_id": sid, "conversation_id": cid, "turns": [r.to_dict() for r in rows]}, out
        )
    else:
        out.write(f"session {sid}" + (f" conversation {cid}" if cid else "") + "\n")
        out.write(format_timeline(rows) + "\n")
    return 0


def _explain(args: argparse.Namespace, out: TextIO) -> int:
    config = load_policy(args.config, args.priors) if args.config else None
    store = _open(args)
    try:
        record = store.get(args.replay_id)
        if record is None:
            raise _CommandError(f"unknown replay id {args.replay_id!r}")
        history = history_for(store, record) if config is not None else ()
    finally:
        store.close()
    data = explain(record, config, history)
    if args.json:
        _emit(data, out)
    else:
        out.write(format_explanation(data) + "\n")
    return 0


def _rerun(args: argparse.Namespace, out: TextIO) -> int:
    config = load_policy(args.config, args.priors)
    baseline = load_policy(args.baseline_config) if args.baseline_config else None
    store = _open(args)
    try:
        report = rerun(
            store.scan(since=args.since, until=args.until),
            config,
            baseline=baseline,
            rematch=not args.no_rematch,
        )
    finally:
        store.close()
    if args.json:
        _emit(report.to_dict(), out)
    else:
        out.write(report.format_table() + "\n")
    return 0


def _priors_build(args: argparse.Namespace, out: TextIO) -> int:
    store = _open(args)
    try:
        document = build_priors(
            store.scan(),
            min_samples=args.min_samples,
            shrinkage=args.shrinkage,
            open_after_s=args.open_after,
        )
    finally:
        store.close()
    write_priors(document, args.out)
    out.write(
        f"wrote {args.out}: {len(document['quality_gap'])} quality gaps, "
        f"{len(document['handoff_penalty'])} handoff penalties, "
        f"{len(document['remaining_turns'])} remaining-turn priors "
        f"from {document['records']} records in {document['keys']} sessions\n"
    )
    return 0


def _run(handler: Any) -> Any:
    def command(args: argparse.Namespace) -> int:
        try:
            result: int = handler(args, sys.stdout)
        except _CommandError as exc:
            print(f"saar: {exc}", file=sys.stderr)
            return 2
        return result

    return command


def _db_args(parser: argparse.ArgumentParser, *, config_help: str | None = None) -> None:
    parser.add_argument("--db", help=f"replay SQLite file (default: replay.path, {_DEFAULT_DB})")
    parser.add_argument("--config", help=config_help or "saar YAML config (for replay.path)")
    parser.add_argument("--json", action="store_true", help="print JSON")


def register(subparsers: Any) -> None:
    """Add ``replay``, ``explain`` and ``priors`` to the ``saar`` subcommands."""
    replay = subparsers.add_parser("replay", help="inspect and re-evaluate recorded decisions")
    sub = replay.add_subparsers(dest="replay_command", required=True)

    show = sub.add_parser("show", help="one record, readable")
    show.add_argument("replay_id", help="the x-vsr-replay-id of the request")
    _db_args(show)
    show.set_defaults(func=_run(_show))

    session = sub.add_parser("session", help="a session's turns as a timeline")
    session.add_argument("session_id", help="the raw session id the client sent")
    session.add_argument("--conversation", help="raw conversation id: only that conversation")
    session.add_argument(
        "--source",
        default=IdentitySource.HEADER.value,
        choices=[s.value for s in IdentitySource if s is not IdentitySource.NONE],
        help="where the raw session id came from (default: the session header)",
    )
    session.add_argument("--hashed", action="store_true", help="ids are already hashed")
    session.add_argument("--limit", type=int, default=1000, help="newest N turns (default 1000)")
    _db_args(session)
    session.set_defaults(func=_run(_session))

    again = sub.add_parser(
        "rerun", help="re-run the policy under a new config and report what would change"
    )
    again.add_argument("--config", required=True, help="the NEW saar YAML config")
    again.add_argument("--db", help=f"replay SQLite file (default: replay.path, {_DEFAULT_DB})")
    again.add_argument("--baseline-config", help="price the recorded routing with this config")
    again.add_argument("--priors", help="priors JSON to use (default: priors.path of --config)")
    again.add_argument("--since", type=float, help="only records at or after this Unix time")
    again.add_argument("--until", type=float, help="only records at or before this Unix time")
    again.add_argument(
        "--no-rematch",
        action="store_true",
        help="keep the recorded decision even when prompts were captured",
    )
    again.add_argument("--json", action="store_true", help="print JSON")
    again.set_defaults(func=_run(_rerun))

    why = subparsers.add_parser("explain", help="why one request went where it went")
    why.add_argument("replay_id")
    _db_args(
        why,
        config_help="saar YAML config: also re-runs the policy for the mode counterfactuals",
    )
    why.add_argument("--priors", help="priors JSON for the re-run (default: priors.path)")
    why.set_defaults(func=_run(_explain))

    priors = subparsers.add_parser("priors", help="replay-backed priors for switch economics")
    psub = priors.add_subparsers(dest="priors_command", required=True)
    build = psub.add_parser("build", help="build a priors JSON from replay records")
    build.add_argument("--db", help=f"replay SQLite file (default: {_DEFAULT_DB})")
    build.add_argument("--config", help="saar YAML config (for replay.path)")
    build.add_argument("--out", required=True, help="priors JSON to write")
    build.add_argument(
        "--min-samples", type=int, default=20, help="leave out entries with fewer samples"
    )
    build.add_argument(
        "--shrinkage", type=float, default=5.0, help="pseudo-samples of shrinkage towards 0"
    )
    build.add_argument(
        "--open-after",
        type=float,
        default=1800.0,
        help="sessions active this recently (s) are open: left out of remaining turns",
    )
    build.set_defaults(func=_run(_priors_build))
