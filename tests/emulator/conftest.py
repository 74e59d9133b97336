"""Shared fixtures: two emulated pools on ephemeral ports with near-zero latency."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from saar.emulator import EmulatorPools, EmulatorSpec


def config(
    *, small_ports: list[int] | None = None, cache_blocks: int = 4096, block_size: int = 16
) -> dict[str, Any]:
    """A saar config with two emulated pools (other sections present, to be ignored)."""
    return {
        "models": {"qwen3-8b": {"quality": 0.62}, "qwen3-32b": {"quality": 0.78}},
        "routing": {"ignored": True},
        "pools": {
            "mi300-small": {
                "cluster": "pool_mi300_small",
                "accelerator": "amd-mi300x",
                "serves": [{"model": "qwen3-8b", "pricing": {"prompt_per_1m": 0.05}}],
                "emulator": {
                    "ports": small_ports if small_ports is not None else [0, 0],
                    "aliases": ["auto"],
                    "prefill_us_per_token": 0,
                    "decode_us_per_token": 0,
                    "ttft_base_ms": 0,
                    "max_tokens_default": 6,
                    "cache_blocks": cache_blocks,
                    "block_size": block_size,
                },
            },
            "h100-large": {
                "serves": [{"model": "qwen3-32b"}],
                "emulator": {"ports": [0], "decode_us_per_token": 0, "ttft_base_ms": 0},
            },
            "not-emulated": {"serves": [{"model": "qwen3-8b"}]},
        },
    }


@pytest.fixture
async def pools() -> AsyncIterator[EmulatorPools]:
    """Running pools with a control port, stopped after the test."""
    spec = EmulatorSpec.from_mapping(config())
    async with EmulatorPools(spec, control_port=0) as running:
        yield running


@pytest.fixture
def make_config() -> Callable[..., dict[str, Any]]:
    """The config builder, for tests that need other ports or cache sizes."""
    return config
