"""saar.replay: Router Replay records, the off-hot-path SQLite writer, queries, priors, re-runs.

The hot path only calls ``submit`` (and ``record_response`` from the response path) on the
recorder ``app`` built: ``saar.replay.process.ProcessReplayRecorder`` by default, or the
in-process ``ReplayRecorder`` (``replay.writer: thread``); everything else reads the store.
See docs/replay.md. ``saar.replay.process`` and ``saar.replay.writer`` are not imported here:
``python -m saar.replay.writer`` imports this package first.
"""

from saar.replay.config import ReplayConfig, ReplayConfigError
from saar.replay.explain import explain, format_explanation, history_for
from saar.replay.priors import PriorsFileError, build_priors, load_priors, priors_from_dict
from saar.replay.query import add_feedback, format_record, format_timeline, session_key, timeline
from saar.replay.record import (
    DecisionRecord,
    Outcome,
    ReplayRecord,
    RequestShape,
    ResponseRecord,
    build_record,
)
from saar.replay.recorder import NullObserver, RecorderStats, ReplayObserver, ReplayRecorder
from saar.replay.rerun import RerunReport, rerun
from saar.replay.store import ReplayStore, SqliteReplayStore

__all__ = [
    "DecisionRecord",
    "NullObserver",
    "Outcome",
    "PriorsFileError",
    "RecorderStats",
    "ReplayConfig",
    "ReplayConfigError",
    "ReplayObserver",
    "ReplayRecord",
    "ReplayRecorder",
    "ReplayStore",
    "RequestShape",
    "RerunReport",
    "ResponseRecord",
    "SqliteReplayStore",
    "add_feedback",
    "build_priors",
    "build_record",
    "explain",
    "format_explanation",
    "format_record",
    "format_timeline",
    "history_for",
    "load_priors",
    "priors_from_dict",
    "rerun",
    "session_key",
    "timeline",
]
