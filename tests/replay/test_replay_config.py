"""ReplayConfig: defaults, validation naming the YAML path, parsing from the document."""

from __future__ import annotations

import pytest

from saar.replay.config import ReplayConfig, ReplayConfigError, split_address


def test_defaults() -> None:
    """Enabled, local file, prompts not captured, HTTP off, no priors file."""
    config = ReplayConfig()
    assert (config.enabled, config.path, config.capture_prompts) == (
        True,
        "run/replay.sqlite3",
        False,
    )
    assert config.http_address is None
    assert config.priors_path is None
    assert config.retention_seconds == 14 * 86400


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({"queue_size": 0}, "replay.queue_size"),
        ({"batch_size": 20_000, "queue_size": 100}, "replay.batch_size"),
        ({"flush_interval_ms": 0}, "replay.flush_interval_ms"),
        ({"retention_days": -1}, "replay.retention_days"),
        ({"max_rows": 0}, "replay.max_rows"),
        ({"http_address": "nowhere"}, "replay.http_address"),
        ({"path": " "}, "replay.path"),
    ],
)
def test_invalid_values_name_their_path(fields: dict[str, object], path: str) -> None:
    """Each bad value is refused with its dotted path."""
    with pytest.raises(ReplayConfigError) as err:
        ReplayConfig(**fields)  # type: ignore[arg-type]
    assert err.value.path == path


def test_from_mapping_reads_replay_and_priors() -> None:
    """The replay and priors sections of the YAML document map onto the fields."""
    config = ReplayConfig.from_mapping(
        {
            "replay": {"path": "x.db", "capture_prompts": True, "http_address": ":8089"},
            "priors": {"path": "p.json"},
            "server": {},
        }
    )
    assert (config.path, config.capture_prompts, config.priors_path) == ("x.db", True, "p.json")
    with pytest.raises(ReplayConfigError, match=r"replay\.typo"):
        ReplayConfig.from_mapping({"replay": {"typo": 1}})
    with pytest.raises(ReplayConfigError, match=r"replay\.enabled"):
        ReplayConfig.from_mapping({"replay": {"enabled": "yes"}})


def test_split_address_defaults_to_loopback() -> None:
    """An empty host binds 127.0.0.1."""
    assert split_address(":8089") == ("127.0.0.1", 8089)
    assert split_address("[::1]:9") == ("::1", 9)
