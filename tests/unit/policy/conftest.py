"""Fixtures for the policy tests; the builders live in ``policy_builders``."""

from __future__ import annotations

import pytest
from policy_builders import make_config

from saar.policy import PolicyConfig


@pytest.fixture
def config() -> PolicyConfig:
    """The default three-tier config (small, medium on two pools, frontier)."""
    return make_config()
