"""EmulatorSpec.from_mapping: parsing, defaults, port offsets and path-naming errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from saar.emulator import EmulatorSpec, LatencyModel


def test_parses_emulated_pools_and_skips_others(make_config: Callable[..., dict[str, Any]]) -> None:
    """Pools without an emulator block are skipped; values and defaults are read."""
    spec = EmulatorSpec.from_mapping(make_config(small_ports=[18101, 18102]))
    assert [p.name for p in spec.pools] == ["mi300-small", "h100-large"]
    small = spec.pool("mi300-small")
    assert small.ports == (18101, 18102)
    assert small.models == ("qwen3-8b",)
    assert small.model_names == ("qwen3-8b", "auto")
    assert small.resolve_model("auto") == "qwen3-8b"
    assert small.resolve_model("qwen3-32b") is None
    large = spec.pool("h100-large")
    assert (large.cache_blocks, large.block_size, large.max_tokens_default) == (4096, 16, 16)
    assert large.latency == LatencyModel(40.0, 0.0, 0.0)


def test_port_offset_shifts_non_zero_ports(make_config: Callable[..., dict[str, Any]]) -> None:
    """--port-offset adds to every configured port but leaves 0 (ephemeral) alone."""
    spec = EmulatorSpec.from_mapping(make_config(small_ports=[18101, 18102]), port_offset=100)
    assert spec.pool("mi300-small").ports == (18201, 18202)
    assert spec.pool("h100-large").ports == (0,)


def test_latency_model_ttft() -> None:
    """TTFT is the base plus prefill time for the uncached tokens only."""
    latency = LatencyModel(prefill_us_per_token=100, decode_us_per_token=900, ttft_base_ms=2)
    assert latency.ttft_s(prompt_tokens=100, cached_tokens=80) == pytest.approx(0.004)
    assert latency.decode_s == pytest.approx(0.0009)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda c: c["pools"]["mi300-small"]["emulator"].update(ports=[18101, "x"]),
            r"pools\.mi300-small\.emulator\.ports\[1\] must be an integer port",
        ),
        (
            lambda c: c["pools"]["mi300-small"]["emulator"].update(ports=[18101, 18101]),
            r"pools\.mi300-small\.emulator\.ports\[1\] = 18101 is already used by "
            r"pools\.mi300-small\.emulator\.ports\[0\]",
        ),
        (
            lambda c: c["pools"]["mi300-small"]["emulator"].update(block_size=0),
            r"pools\.mi300-small\.emulator\.block_size must be a positive integer",
        ),
        (
            lambda c: c["pools"]["h100-large"]["serves"][0].update(model="nope"),
            r"pools\.h100-large\.serves\[0\]\.model 'nope' is not defined in models",
        ),
        (
            lambda c: c["pools"]["mi300-small"]["emulator"].update(aliases="auto"),
            r"pools\.mi300-small\.emulator\.aliases must be a list of model names",
        ),
        (
            lambda c: c["pools"]["h100-large"]["emulator"].update(decode_us_per_token=-1),
            r"pools\.h100-large\.emulator\.decode_us_per_token must be a non-negative number",
        ),
        (lambda c: c.pop("pools"), r"pools must be a mapping"),
    ],
)
def test_errors_name_the_path(
    make_config: Callable[..., dict[str, Any]],
    mutate: Callable[[dict[str, Any]], None],
    message: str,
) -> None:
    """Invalid values raise ValueError naming the exact config path."""
    config = make_config(small_ports=[18101, 18102])
    mutate(config)
    with pytest.raises(ValueError, match=message):
        EmulatorSpec.from_mapping(config)


def test_no_emulated_pool_is_an_error() -> None:
    """A config with no emulator block anywhere is rejected."""
    with pytest.raises(ValueError, match="no pool has an emulator block"):
        EmulatorSpec.from_mapping({"pools": {"p": {"serves": [{"model": "m"}]}}})
