"""Hardening fixtures: the dataplane's real-process stack and Redis, plus a settings factory.

The stack fixtures are the dataplane's own (re-exported, not copied), so hostile-input tests
run the very configuration users run.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from dataplane.conftest import make_stack, redis_server  # noqa: F401 - re-exported fixtures

from saar.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config" / "local.yaml"
ENVOY = ROOT / "envoy" / "local.yaml"


@pytest.fixture
def settings() -> Settings:
    """The local config, with replay off (these tests pin the data path, not replay)."""
    loaded = load_settings(CONFIG)
    return replace(loaded, replay=replace(loaded.replay, enabled=False))
