"""Config loading: validated, frozen settings; every error names the exact path."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from saar.policy.config import AdaptationMode, Scope, SelectionMethod, SignalKind
from saar.settings import ConfigError, load_settings, parse_settings

ROOT = Path(__file__).resolve().parents[2]
LOCAL = ROOT / "config" / "local.yaml"


def base() -> dict[str, Any]:
    raw: dict[str, Any] = yaml.safe_load(LOCAL.read_text())
    return raw


def error_of(raw: Any) -> str:
    with pytest.raises(ConfigError) as info:
        parse_settings(raw)
    return str(info.value)


def test_local_config_loads() -> None:
    """The shipped local config is valid and expands pool-less model refs to every pool."""
    settings = load_settings(LOCAL)
    config = settings.policy
    assert frozenset({"auto"}) == config.logical_models
    general = config.decision("general")
    assert ["qwen3-8b@mi300-small", "qwen3-8b@h100-small", "qwen3-32b@mi300-medium"] == [
        ref.physical for ref in general.model_refs
    ]
    assert [d.name for d in config.decisions] == ["reasoning", "coding", "general"]
    assert config.physical("qwen3-8b@h100-small").cluster == "pool_h100_small"
    assert config.physical("qwen3-8b@h100-small").pricing.prompt_per_1m == 0.07


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda r: r["routing"]["decisions"][1]["algorithm"]["session_aware"].update(
                stay_bias=1.5
            ),
            "routing.decisions[1].algorithm.session_aware.stay_bias must be in [0, 1]",
        ),
        (
            lambda r: r["routing"]["decisions"][1]["algorithm"]["session_aware"].update(
                follow_up_max_words=65
            ),
            "routing.decisions[1].algorithm.session_aware.follow_up_max_words must be in [0, 64]",
        ),
        (
            lambda r: r["pools"]["h100-small"]["serves"][0]["pricing"].update(prompt_per_1m=-1),
            "pools.h100-small.serves[0].pricing.prompt_per_1m must be >= 0",
        ),
        (
            lambda r: r["routing"]["decisions"][0]["modelRefs"].append(
                {"model": "qwen3-8b", "pool": "nowhere"}
            ),
            "routing.decisions[0].modelRefs[2].pool names a pool that does not serve 'qwen3-8b'",
        ),
        (
            lambda r: r["server"].update(fail_open_pool="nowhere"),
            "server.fail_open_pool names an unknown pool 'nowhere'",
        ),
        (
            lambda r: r["routing"]["decisions"][2]["algorithm"]["session_aware"].update(
                stay_bais=0.2
            ),
            "routing.decisions[2].algorithm.session_aware.stay_bais is not a known key",
        ),
        (
            lambda r: r["routing"]["decisions"][0]["algorithm"].update(type="bandit"),
            "routing.decisions[0].algorithm.type must be one of static, hybrid, session_aware,"
            " got 'bandit'",
        ),
        (
            lambda r: r["routing"]["decisions"][1]["signals"].append({"regex": "("}),
            "routing.decisions[1].signals[3].regex is not a valid regular expression",
        ),
        (
            lambda r: r["models"]["qwen3-8b"].update(quality="high"),
            "models.qwen3-8b.quality must be a number, got 'high'",
        ),
        (
            lambda r: r["state"].update(backend="redis"),
            "state.redis needs exactly one of url or address when backend is redis",
        ),
        (
            lambda r: r["global"]["router"]["learning"]["adaptations"]["session_aware"].update(
                scope="user"
            ),
            "global.router.learning.adaptations.session_aware.scope must be one of"
            " conversation, session, got 'user'",
        ),
    ],
)
def test_errors_name_the_path(mutate: Any, expected: str) -> None:
    """Each invalid value is reported with its dotted path and what is wrong."""
    raw = base()
    mutate(raw)
    assert error_of(raw).startswith(expected)


def test_unknown_pool_in_model_ref_is_an_error_without_pool_serving_it() -> None:
    """A model that no pool serves cannot be a candidate."""
    raw = base()
    raw["models"]["orphan"] = {"quality": 0.5}
    raw["routing"]["decisions"][0]["modelRefs"].append({"model": "orphan"})
    assert (
        error_of(raw)
        == "routing.decisions[0].modelRefs[2].model 'orphan' is not served by any pool"
    )


def test_seed_keys_load_unchanged() -> None:
    """The published session_aware algorithm block and Router Learning block load as written."""
    raw = base()
    raw["routing"]["decisions"][1]["algorithm"] = yaml.safe_load(
        """
        type: session_aware
        session_aware:
          fallback_method: hybrid
          min_turns_before_switch: 2
          stay_bias: 0.3
          quality_gap_multiplier: 1.15
          handoff_penalty_weight: 0.9
          remaining_turn_weight: 0.45
        """
    )
    raw["routing"]["decisions"][2]["adaptations"] = {"session_aware": {"mode": "bypass"}}
    raw["global"] = yaml.safe_load(
        """
        router:
          learning:
            enabled: true
            adaptations:
              session_aware:
                enabled: true
                scope: session
        """
    )
    config = parse_settings(raw).policy
    coding = config.decision("coding")
    assert coding.method is SelectionMethod.SESSION_AWARE
    assert coding.session_aware.fallback_method is SelectionMethod.HYBRID
    assert coding.session_aware.min_turns_before_switch == 2
    assert coding.session_aware.stay_bias == 0.3
    assert coding.session_aware.quality_gap_multiplier == 1.15
    assert coding.session_aware.handoff_penalty_weight == 0.9
    assert coding.session_aware.remaining_turn_weight == 0.45
    assert config.decision("general").mode is AdaptationMode.BYPASS
    assert config.learning.scope is Scope.SESSION


def test_documented_defaults() -> None:
    """Knobs left out take the documented defaults."""
    raw = base()
    raw["routing"]["decisions"][2]["algorithm"] = {"type": "session_aware"}
    knobs = parse_settings(raw).policy.decision("general").session_aware
    assert knobs.fallback_method is SelectionMethod.STATIC
    assert knobs.min_turns_before_switch == 1
    assert knobs.stay_bias == 0.25
    assert knobs.quality_gap_multiplier == 1.0
    assert knobs.handoff_penalty_weight == 1.0
    assert knobs.remaining_turn_weight == 0.15


def test_header_signals_are_collected() -> None:
    """Header names that decisions match on are the only headers kept as facts."""
    raw = copy.deepcopy(base())
    raw["routing"]["decisions"][0]["signals"].append(
        {"header": {"name": "X-Tenant-Tier", "equals": "gold"}}
    )
    config = parse_settings(raw).policy
    assert frozenset({"x-tenant-tier"}) == config.header_signals
    signal = config.decision("reasoning").signals[-1]
    assert (SignalKind.HEADER, "x-tenant-tier", "gold") == (
        signal.kind,
        signal.header,
        signal.value,
    )


def test_malformed_yaml_reports_line(tmp_path: Path) -> None:
    """A YAML syntax error names the file and the line."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  a: {quality: 0.5\n")
    with pytest.raises(ConfigError) as info:
        load_settings(bad)
    assert str(info.value).startswith(f"{bad} is not valid YAML at line 3")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("models: [", "is not valid YAML"),
        (
            "models: {a: {quality: 0.5}}\npools: {p: {cluster: c, serves: [{model: b,"
            " pricing: {prompt_per_1m: 1, completion_per_1m: 1}}]}}\n",
            "pools.p.serves[0].model names an unknown model 'b'",
        ),
        (
            "models: {a: {quality: 0.5}}\npools: {p: {cluster: c, serves: [{model: a,"
            " pricing: {prompt_per_1m: -2, completion_per_1m: 1}}]}}\n",
            "pools.p.serves[0].pricing.prompt_per_1m must be >= 0",
        ),
    ],
)
def test_check_config_command(tmp_path: Path, text: str, expected: str) -> None:
    """`saar check-config` prints one line naming the path and exits non-zero."""
    path = tmp_path / "c.yaml"
    path.write_text(text)
    result = subprocess.run(
        [sys.executable, "-m", "saar", "check-config", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert expected in lines[0]


def test_check_config_accepts_local_config() -> None:
    """`saar check-config` accepts the shipped config and says what it holds."""
    result = subprocess.run(
        [sys.executable, "-m", "saar", "check-config", str(LOCAL)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "ok (3 decisions, 4 physical models on 4 pools, state backend local)" in result.stdout
