"""The emulator's view of the saar YAML config: which pools to emulate, on which ports.

`saar emulate` reads the same file as the router. Only `models` and `pools.*.serves` /
`pools.*.emulator` matter here; every other section is ignored so that the emulator never
has to change when the router's config grows. Pools without an `emulator` block are not
emulated.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

__all__ = ["DEFAULT_HOST", "EmulatorSpec", "LatencyModel", "PoolSpec"]

DEFAULT_HOST = "127.0.0.1"
_MAX_PORT = 65535


@dataclass(frozen=True, slots=True)
class LatencyModel:
    """How long a replica takes: the llm-d simulator's per-token calculator.

    Time to first token is ``ttft_base_ms + prefill_us_per_token * uncached_prompt_tokens``;
    every further output token costs ``decode_us_per_token``.
    """

    prefill_us_per_token: float = 40.0
    decode_us_per_token: float = 900.0
    ttft_base_ms: float = 2.0

    def ttft_s(self, prompt_tokens: int, cached_tokens: int) -> float:
        """Return the time to first token in seconds for a prompt with a cached prefix."""
        uncached = max(prompt_tokens - cached_tokens, 0)
        return (self.ttft_base_ms * 1000.0 + self.prefill_us_per_token * uncached) / 1e6

    @property
    def decode_s(self) -> float:
        """Seconds per output token after the first."""
        return self.decode_us_per_token / 1e6


@dataclass(frozen=True, slots=True)
class PoolSpec:
    """One emulated pool: the models it serves and one replica per port.

    ``max_num_seqs`` plays vLLM's ``--max-num-seqs``: at most that many requests generate at
    once per replica, the rest wait (0, the default, means no limit).
    """

    name: str
    models: tuple[str, ...]
    aliases: tuple[str, ...]
    host: str | None
    ports: tuple[int, ...]
    latency: LatencyModel
    max_tokens_default: int = 16
    cache_blocks: int = 4096
    block_size: int = 16
    max_num_seqs: int = 0

    def resolve_model(self, requested: str) -> str | None:
        """Return the served model a request name maps to, or None when the pool lacks it.

        An alias maps to the pool's first served model, as vLLM reports its first
        ``--served-model-name`` in responses.
        """
        if requested in self.models:
            return requested
        if requested in self.aliases:
            return self.models[0]
        return None

    @property
    def model_names(self) -> tuple[str, ...]:
        """Every name the pool answers to: served models first, then aliases."""
        return self.models + tuple(a for a in self.aliases if a not in self.models)


@dataclass(frozen=True, slots=True)
class EmulatorSpec:
    """All pools the emulator hosts, parsed and validated from the saar YAML config."""

    pools: tuple[PoolSpec, ...]

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], *, port_offset: int = 0) -> EmulatorSpec:
        """Parse the loaded YAML mapping.

        Args:
            raw: the whole saar config as loaded by ``yaml.safe_load``.
            port_offset: added to every non-zero port (tests use it to avoid clashes).

        Raises:
            ValueError: with the offending path, e.g.
                ``pools.mi300-small.emulator.ports[1] must be an integer port``.

        """
        if not isinstance(raw, Mapping):
            raise ValueError("config must be a mapping")
        models_raw = raw.get("models")
        known_models: set[str] | None = None
        if models_raw is not None:
            if not isinstance(models_raw, Mapping):
                raise ValueError("models must be a mapping of model name to model card")
            known_models = {str(k) for k in models_raw}
        pools_raw = raw.get("pools")
        if not isinstance(pools_raw, Mapping):
            raise ValueError("pools must be a mapping of pool name to pool")
        pools: list[PoolSpec] = []
        for name, pool_raw in pools_raw.items():
            path = f"pools.{name}"
            if not isinstance(pool_raw, Mapping):
                raise ValueError(f"{path} must be a mapping")
            if pool_raw.get("emulator") is None:
                continue
            pools.append(_parse_pool(str(name), pool_raw, path, known_models))
        if not pools:
            raise ValueError("no pool has an emulator block (pools.<name>.emulator)")
        spec = cls(pools=tuple(pools))
        spec = spec.with_port_offset(port_offset)
        spec._check_unique_ports()
        return spec

    def with_port_offset(self, offset: int) -> EmulatorSpec:
        """Return a copy with every non-zero port shifted by ``offset`` (0 stays ephemeral)."""
        if offset == 0:
            return self
        pools = []
        for pool in self.pools:
            ports = tuple(p + offset if p else 0 for p in pool.ports)
            for i, port in enumerate(ports):
                if not 0 <= port <= _MAX_PORT:
                    raise ValueError(
                        f"pools.{pool.name}.emulator.ports[{i}] + port offset {offset} "
                        f"= {port} is outside 0..{_MAX_PORT}"
                    )
            pools.append(replace(pool, ports=ports))
        return EmulatorSpec(pools=tuple(pools))

    def pool(self, name: str) -> PoolSpec:
        """Return the pool called ``name``.

        Raises:
            KeyError: when no emulated pool has that name.

        """
        for pool in self.pools:
            if pool.name == name:
                return pool
        raise KeyError(name)

    def _check_unique_ports(self) -> None:
        seen: dict[tuple[str | None, int], str] = {}
        for pool in self.pools:
            for i, port in enumerate(pool.ports):
                if port == 0:
                    continue
                key = (pool.host, port)
                where = f"pools.{pool.name}.emulator.ports[{i}]"
                if key in seen:
                    raise ValueError(f"{where} = {port} is already used by {seen[key]}")
                seen[key] = where


def _parse_pool(
    name: str, raw: Mapping[str, Any], path: str, known_models: set[str] | None
) -> PoolSpec:
    serves = raw.get("serves")
    if not isinstance(serves, Sequence) or isinstance(serves, str) or not serves:
        raise ValueError(f"{path}.serves must be a non-empty list")
    models: list[str] = []
    for i, entry in enumerate(serves):
        where = f"{path}.serves[{i}]"
        if not isinstance(entry, Mapping) or not isinstance(entry.get("model"), str):
            raise ValueError(f"{where}.model must be a model name")
        model = entry["model"]
        if known_models is not None and model not in known_models:
            raise ValueError(f"{where}.model '{model}' is not defined in models")
        models.append(model)
    emu = raw["emulator"]
    epath = f"{path}.emulator"
    if not isinstance(emu, Mapping):
        raise ValueError(f"{epath} must be a mapping")
    host = emu.get("host")
    if host is not None and (not isinstance(host, str) or not host):
        raise ValueError(f"{epath}.host must be a host name or address")
    ports_raw = emu.get("ports")
    if not isinstance(ports_raw, Sequence) or isinstance(ports_raw, str) or not ports_raw:
        raise ValueError(f"{epath}.ports must be a non-empty list of ports")
    ports: list[int] = []
    for i, port in enumerate(ports_raw):
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= _MAX_PORT:
            raise ValueError(f"{epath}.ports[{i}] must be an integer port (0..{_MAX_PORT})")
        ports.append(port)
    aliases_raw = emu.get("aliases", [])
    if not isinstance(aliases_raw, Sequence) or isinstance(aliases_raw, str):
        raise ValueError(f"{epath}.aliases must be a list of model names")
    aliases: list[str] = []
    for i, alias in enumerate(aliases_raw):
        if not isinstance(alias, str) or not alias:
            raise ValueError(f"{epath}.aliases[{i}] must be a model name")
        aliases.append(alias)
    latency = LatencyModel(
        prefill_us_per_token=_number(emu, "prefill_us_per_token", 40.0, epath),
        decode_us_per_token=_number(emu, "decode_us_per_token", 900.0, epath),
        ttft_base_ms=_number(emu, "ttft_base_ms", 2.0, epath),
    )
    return PoolSpec(
        name=name,
        models=tuple(models),
        aliases=tuple(aliases),
        host=host,
        ports=tuple(ports),
        latency=latency,
        max_tokens_default=_positive_int(emu, "max_tokens_default", 16, epath),
        cache_blocks=_positive_int(emu, "cache_blocks", 4096, epath),
        block_size=_positive_int(emu, "block_size", 16, epath),
        max_num_seqs=_non_negative_int(emu, "max_num_seqs", 0, epath),
    )


def _number(raw: Mapping[str, Any], key: str, default: float, path: str) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"{path}.{key} must be a non-negative number")
    return float(value)


def _non_negative_int(raw: Mapping[str, Any], key: str, default: int, path: str) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{path}.{key} must be a non-negative integer")
    return value


def _positive_int(raw: Mapping[str, Any], key: str, default: int, path: str) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{path}.{key} must be a positive integer")
    return value
