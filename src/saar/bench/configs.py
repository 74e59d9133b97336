"""Benchmark configurations: the matrix's model portfolio and routing rules, as saar YAML.

The matrix config is a real saar config (it goes through ``saar.settings.parse_settings``), so
the benchmark exercises the same validation and the same ``PolicyConfig`` the sidecar runs on.

Portfolio: three tiers roughly 10x apart in price and clearly apart in quality, and the same
medium model on two pools (AMD MI300 and NVIDIA H100) at different prices, so that a move
between pools of one model is a real switch (it loses the prefix cache) with no quality gain.

Worlds: the matrix runs the same portfolio, decisions and knobs under two valuations of the
hybrid base selector (``WORLDS``). The published evaluation does not state its base selector's
weights, and whether a router meets the published cost target depends on how the operator
weights cost against quality, so both are reported with equal standing.
"""

from __future__ import annotations

import copy
from typing import Any, Final

from saar.policy import PolicyConfig
from saar.settings import parse_settings

__all__ = [
    "IDLE_TIMEOUT_S",
    "MATRIX_CONFIG",
    "PRIMARY_WORLD",
    "WORLDS",
    "matrix_policy",
    "topic_keywords",
    "world_config",
]

IDLE_TIMEOUT_S: Final = 300.0
"""The matrix's idle boundary (the published default)."""

_KNOBS: Final[dict[str, Any]] = {
    "fallback_method": "hybrid",
    "idle_timeout_seconds": IDLE_TIMEOUT_S,
}

MATRIX_CONFIG: Final[dict[str, Any]] = {
    "server": {
        "grpc_socket": "run/saar.sock",
        "logical_models": ["auto"],
        "fail_open_pool": "mi300-small",
    },
    "models": {
        "small-8b": {"quality": 0.62},
        "medium-32b": {"quality": 0.80},
        "frontier-r1": {"quality": 0.94},
    },
    "pools": {
        "mi300-small": {
            "cluster": "pool_mi300_small",
            "accelerator": "amd-mi300x",
            "serves": [
                {
                    "model": "small-8b",
                    "pricing": {
                        "prompt_per_1m": 0.10,
                        "cached_prompt_per_1m": 0.01,
                        "completion_per_1m": 0.40,
                    },
                }
            ],
        },
        "mi300-medium": {
            "cluster": "pool_mi300_medium",
            "accelerator": "amd-mi300x",
            "serves": [
                {
                    "model": "medium-32b",
                    "pricing": {
                        "prompt_per_1m": 1.00,
                        "cached_prompt_per_1m": 0.10,
                        "completion_per_1m": 4.00,
                    },
                }
            ],
        },
        "h100-medium": {
            "cluster": "pool_h100_medium",
            "accelerator": "nvidia-h100",
            "serves": [
                {
                    "model": "medium-32b",
                    "pricing": {
                        "prompt_per_1m": 1.25,
                        "cached_prompt_per_1m": 0.125,
                        "completion_per_1m": 5.00,
                    },
                }
            ],
        },
        "h100-frontier": {
            "cluster": "pool_h100_frontier",
            "accelerator": "nvidia-h100",
            "serves": [
                {
                    "model": "frontier-r1",
                    "pricing": {
                        "prompt_per_1m": 10.00,
                        "cached_prompt_per_1m": 1.00,
                        "completion_per_1m": 40.00,
                    },
                }
            ],
        },
    },
    "global": {
        "router": {
            "learning": {
                "enabled": True,
                "adaptations": {"session_aware": {"enabled": True, "scope": "conversation"}},
            }
        }
    },
    "routing": {
        "default_decision": "general",
        "decisions": [
            {
                "name": "reasoning",
                "priority": 30,
                "signals": [
                    {"keywords": ["prove", "derive", "step by step", "architecture", "root cause"]}
                ],
                # The medium model is weak at long reasoning: a decision-local quality.
                "modelRefs": [
                    {"model": "frontier-r1", "quality": 0.96},
                    {"model": "medium-32b", "pool": "mi300-medium", "quality": 0.70},
                ],
                "algorithm": {
                    "type": "session_aware",
                    "session_aware": dict(_KNOBS),
                    "hybrid": {"cost_weight": 0.2},
                },
            },
            {
                "name": "coding",
                "priority": 20,
                "signals": [
                    {
                        "keywords": [
                            "code",
                            "function",
                            "refactor",
                            "test",
                            "bug",
                            "compile",
                            "stack trace",
                        ]
                    }
                ],
                "modelRefs": [
                    {"model": "medium-32b", "pool": "mi300-medium"},
                    {"model": "medium-32b", "pool": "h100-medium"},
                    {"model": "small-8b", "quality": 0.58},
                    {"model": "frontier-r1"},
                ],
                "algorithm": {"type": "session_aware", "session_aware": dict(_KNOBS)},
            },
            {
                "name": "research",
                "priority": 10,
                "signals": [{"keywords": ["summarize", "summary", "compare", "research", "cite"]}],
                "modelRefs": [{"model": "small-8b", "quality": 0.66}, {"model": "medium-32b"}],
                "algorithm": {"type": "session_aware", "session_aware": dict(_KNOBS)},
            },
            {
                "name": "general",
                "priority": 0,
                "modelRefs": [
                    {"model": "small-8b"},
                    {"model": "medium-32b", "pool": "mi300-medium"},
                ],
                "algorithm": {"type": "session_aware", "session_aware": dict(_KNOBS)},
            },
        ],
    },
}


def topic_keywords() -> dict[str, tuple[str, ...]]:
    """Each keyword-signalled decision's keywords (the generator writes them into user text)."""
    out: dict[str, tuple[str, ...]] = {}
    for decision in MATRIX_CONFIG["routing"]["decisions"]:
        words: list[str] = []
        for signal in decision.get("signals", []):
            words.extend(signal.get("keywords", []))
        if words:
            out[decision["name"]] = tuple(words)
    return out


WORLDS: Final[dict[str, str]] = {
    "quality-weighted": (
        "the reasoning decision's hybrid base selector weights cost at 0.2 (library default 0.3): "
        "the frontier's quality on reasoning turns is worth its 10x price to the operator"
    ),
    "defaults": (
        "every base-selector weight at its library default (hybrid quality_weight 1.0, "
        "cost_weight 0.3) in every decision"
    ),
}
"""The matrix's worlds: name -> one-line description. Same portfolio, decisions and knobs."""

PRIMARY_WORLD: Final = "quality-weighted"
"""The world ``MATRIX_CONFIG`` is (and the one the primary plots show)."""


def world_config(world: str) -> dict[str, Any]:
    """A deep copy of the matrix config for ``world`` (see ``WORLDS``)."""
    raw = copy.deepcopy(MATRIX_CONFIG)
    if world == "defaults":
        for decision in raw["routing"]["decisions"]:
            decision["algorithm"].pop("hybrid", None)
    elif world != PRIMARY_WORLD:
        raise ValueError(f"unknown matrix world {world!r} (known: {', '.join(WORLDS)})")
    return raw


def matrix_policy(raw: dict[str, Any] | None = None) -> PolicyConfig:
    """Parse the matrix config (or an edited deep copy of it) into a ``PolicyConfig``."""
    source = copy.deepcopy(MATRIX_CONFIG) if raw is None else raw
    return parse_settings(source, source="<bench matrix config>").policy
