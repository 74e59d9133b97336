"""YAML configuration → validated, frozen settings.

Theory of operation: the config file is read once per (re)load into plain Python values, then
walked by ``_Node`` helpers that know the dotted path of every value. Each check raises
``ConfigError`` naming that exact path (``routing.decisions[1].algorithm.session_aware.stay_bias
must be in [0, 1]``), so an operator can fix a typo without reading code. Unknown keys are
errors too: a misspelt knob that is silently ignored is worse than a refused config.

The result is a frozen ``Settings`` holding a ``PolicyConfig`` for the pure policy and the
server/state sections for the adapters. A reload builds a new ``Settings`` and swaps it whole;
a bad file never replaces a good one.

The keys of the published session-aware design (``algorithm.session_aware.*``,
``global.router.learning.adaptations.session_aware.*`` and the per-decision
``adaptations.session_aware.mode``) are accepted exactly as documented there.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

import yaml

from saar.policy.config import (
    AdaptationMode,
    DecisionSpec,
    HybridWeights,
    LearningConfig,
    MatchMode,
    ModelRef,
    PhysicalModel,
    PolicyConfig,
    Pool,
    Pricing,
    Scope,
    SelectionMethod,
    SessionAwareKnobs,
    Signal,
    SignalKind,
)
from saar.replay.config import ReplayConfig, ReplayConfigError
from saar.replay.priors import PriorsFileError, load_priors
from saar.state.config import Backend, FailOpenTo, StoreConfig, StoreConfigError

__all__ = [
    "ConfigError",
    "ResponsePath",
    "ServerSettings",
    "Settings",
    "Transport",
    "load_settings",
    "parse_settings",
]


class ResponsePath(StrEnum):
    """Where the response path learns from (``server.response_path``, docs/design/0004)."""

    ACCESS_LOG = "access_log"
    """Two ext_proc messages per Chat/Messages call; status from Envoy's gRPC access log."""
    STREAM = "stream"
    """Response headers on the ext_proc stream; 2xx bodies observed to the end."""


class Transport(StrEnum):
    """What serves Envoy's data-path streams (``server.transport``, docs/design/0005)."""

    GRPCIO = "grpcio"
    """grpc.aio serves every service."""
    H2 = "h2"
    """ext_proc and the access log on an HTTP/2 transport on the event loop; every other
    service forwarded to grpc.aio. Less CPU and lower tails per request."""


_E = TypeVar("_E", SelectionMethod, AdaptationMode, Scope, MatchMode, ResponsePath, Transport)

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")
_CLUSTER_RE = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
_HEADER_RE = re.compile(r"^[a-z0-9-]{1,128}$")


class ConfigError(ValueError):
    """A configuration value is missing, mistyped or out of range; ``path`` names it."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path} {message}" if path else message)
        self.path = path
        self.message = message


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """Where saar listens and the limits it enforces on the request path."""

    grpc_socket: str | None = "run/saar.sock"
    """Unix socket for Envoy's ext_proc filter (relative paths are from the working directory)."""
    grpc_address: str | None = None
    """Optional ``host:port`` TCP listener for ext_proc and the admin service."""
    metrics_address: str | None = None
    """``host:port`` of the Prometheus endpoint; ``None`` turns it off."""
    max_body_bytes: int = 8 * 1024 * 1024
    fail_open_pool: str = ""
    """The pool of Envoy's default route: where requests go when saar is unavailable."""
    decision_budget_ms: float = 150.0
    """Upper bound on the time spent deciding one request before failing open.

    Enforced where a decision can be interrupted: at its waits on the session store. A
    decision on the in-process store never waits and arms no timer."""
    hash_identities_in_logs: bool = True
    drain_seconds: float = 20.0
    """How long a draining saar waits for in-flight streams after SIGTERM."""
    learn_from_response_bodies: bool = True
    """Stream 2xx response bodies through saar (never altered) to learn tool calls, response
    ids and cached tokens; off, saar learns only from statuses and the next request. Under
    ``response_path: access_log`` only Responses API bodies are observed, up to their id."""
    response_path: ResponsePath = ResponsePath.ACCESS_LOG
    """Where the response path learns from (docs/design/0004). ``access_log``: Chat and
    Messages requests cost two ext_proc messages; the route copies the contract headers and
    status and served-by arrive batched on Envoy's gRPC access log; Responses API streams are
    released once their id is seen. ``stream``: every response's headers come back on the
    ext_proc stream and 2xx bodies are observed to the end (tool call ids, usage)."""
    transport: Transport = Transport.H2
    """What serves Envoy's ext_proc and access-log streams (docs/design/0005): ``grpcio``
    (grpc.aio) or ``h2`` (an HTTP/2 transport on the event loop; Admin, Replay and health
    calls on the same socket are forwarded to grpc.aio)."""
    access_log_pending_max: int = 100_000
    """How many routed requests may await their access-log entry (oldest dropped beyond)."""
    access_log_pending_seconds: float = 900.0
    """How long a routed request awaits its access-log entry (longer than the route timeout:
    the entry is written when the response ends)."""


@dataclass(frozen=True, slots=True)
class Settings:
    """The whole validated configuration."""

    source: str
    server: ServerSettings
    state: StoreConfig
    policy: PolicyConfig
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    raw: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    """The parsed YAML, for consumers with their own sections (the emulator)."""


class _Node:
    """A value in the YAML tree together with its dotted path, for precise error messages."""

    __slots__ = ("path", "value")

    def __init__(self, value: Any, path: str) -> None:
        self.value = value
        self.path = path

    def _join(self, key: str | int) -> str:
        if isinstance(key, int):
            return f"{self.path}[{key}]"
        return f"{self.path}.{key}" if self.path else key

    def fail(self, message: str) -> ConfigError:
        return ConfigError(self.path or "<root>", message)

    def mapping(self, allowed: frozenset[str] | None = None) -> Mapping[str, Any]:
        if self.value is None:
            return {}
        if not isinstance(self.value, Mapping):
            raise self.fail(f"must be a mapping, got {type(self.value).__name__}")
        for key in self.value:
            if not isinstance(key, str):
                raise self.fail(f"has a non-string key {key!r}")
        if allowed is not None:
            unknown = sorted(set(self.value) - allowed)
            if unknown:
                raise ConfigError(self._join(unknown[0]), "is not a known key")
        return self.value

    def child(self, key: str, allowed: frozenset[str] | None = None) -> _Node:
        mapping = self.mapping(allowed)
        return _Node(mapping.get(key), self._join(key))

    def items(self) -> Iterator[tuple[str, _Node]]:
        for key, value in self.mapping().items():
            yield key, _Node(value, self._join(key))

    def elements(self) -> Iterator[_Node]:
        if self.value is None:
            return
        if not isinstance(self.value, list):
            raise self.fail(f"must be a list, got {type(self.value).__name__}")
        for index, value in enumerate(self.value):
            yield _Node(value, self._join(index))

    @property
    def present(self) -> bool:
        return self.value is not None

    def string(self, default: str | None = None, pattern: re.Pattern[str] | None = None) -> str:
        if self.value is None:
            if default is None:
                raise self.fail("is required")
            return default
        if not isinstance(self.value, str) or not self.value.strip():
            raise self.fail("must be a non-empty string")
        if pattern is not None and not pattern.match(self.value):
            raise self.fail(f"{self.value!r} has characters that are not allowed")
        return self.value

    def optional_string(self) -> str | None:
        return None if self.value is None else self.string()

    def boolean(self, default: bool) -> bool:
        if self.value is None:
            return default
        if not isinstance(self.value, bool):
            raise self.fail("must be true or false")
        return self.value

    def number(
        self,
        default: float | None = None,
        *,
        low: float | None = None,
        high: float | None = None,
    ) -> float:
        if self.value is None:
            if default is None:
                raise self.fail("is required")
            return default
        if isinstance(self.value, bool) or not isinstance(self.value, int | float):
            raise self.fail(f"must be a number, got {self.value!r}")
        number = float(self.value)
        if not math.isfinite(number):
            raise self.fail("must be finite")
        if low is not None and high is not None and not low <= number <= high:
            raise self.fail(f"must be in [{_fmt(low)}, {_fmt(high)}]")
        if low is not None and number < low:
            raise self.fail(f"must be >= {_fmt(low)}")
        if high is not None and number > high:
            raise self.fail(f"must be <= {_fmt(high)}")
        return number

    def integer(
        self, default: int | None = None, *, low: int | None = None, high: int | None = None
    ) -> int:
        if self.value is None:
            if default is None:
                raise self.fail("is required")
            return default
        if isinstance(self.value, bool) or not isinstance(self.value, int):
            raise self.fail(f"must be an integer, got {self.value!r}")
        return int(self.number(low=low, high=high))

    def choice(self, enum: type[_E], default: _E) -> _E:
        if self.value is None:
            return default
        try:
            return enum(self.value)
        except ValueError:
            options = ", ".join(e.value for e in enum)
            raise self.fail(f"must be one of {options}, got {self.value!r}") from None


def _fmt(number: float) -> str:
    return str(int(number)) if number == int(number) else str(number)


_TOP = frozenset({"server", "state", "models", "pools", "global", "routing", "replay", "priors"})
_SERVER = frozenset(
    {
        "grpc_socket",
        "grpc_address",
        "metrics_address",
        "logical_models",
        "max_body_bytes",
        "fail_open_pool",
        "decision_budget_ms",
        "hash_identities_in_logs",
        "drain_seconds",
        "learn_from_response_bodies",
        "response_path",
        "transport",
        "access_log_pending_max",
        "access_log_pending_seconds",
    }
)
_STATE = frozenset(
    {
        "backend",
        "ttl_seconds",
        "timeout_ms",
        "fail_open_to",
        "local",
        "redis",
    }
)
_STATE_LOCAL = frozenset({"max_entries", "idle_ttl_seconds"})
_STATE_REDIS = frozenset(
    {
        "url",
        "address",
        "database",
        "password_env",
        "password_file",
        "key_prefix",
        "username",
        "max_connections",
        "breaker_failures",
        "breaker_cooldown_seconds",
    }
)
_POOL = frozenset({"cluster", "accelerator", "serves", "emulator"})
_SERVE = frozenset({"model", "pricing"})
_PRICING = frozenset({"prompt_per_1m", "cached_prompt_per_1m", "completion_per_1m"})
_MODEL = frozenset({"quality"})
_DECISION = frozenset(
    {
        "name",
        "description",
        "priority",
        "match",
        "signals",
        "modelRefs",
        "algorithm",
        "adaptations",
    }
)
_SIGNAL = frozenset(
    {"keywords", "regex", "min_context_tokens", "max_context_tokens", "has_tools", "header"}
)
_ALGORITHM = frozenset({"type", "session_aware", "hybrid"})
_KNOBS = frozenset(
    {
        "fallback_method",
        "min_turns_before_switch",
        "stay_bias",
        "quality_gap_multiplier",
        "handoff_penalty_weight",
        "remaining_turn_weight",
        "idle_timeout_seconds",
        "tool_loop_hard_lock",
        "context_portability_hard_lock",
        "decision_drift_reset",
        "prefix_cache_weight",
        "switch_history_weight",
        "cache_half_life_seconds",
        "unhealthy_after_failures",
        "follow_up_max_words",
    }
)


def load_settings(path: str | Path) -> Settings:
    """Read and validate the YAML file at ``path``; raises ``ConfigError`` naming the bad value."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(source, f"cannot be read: {exc.strerror or exc}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(source, f"is not valid YAML{where}: {problem}") from None
    settings = parse_settings(raw, source=source)
    priors_path = settings.replay.priors_path
    if priors_path is None:
        return settings
    # Replay-built priors (``saar priors build``) replace the configured defaults; they are
    # re-read with the config, so a rebuilt file applies on reload.
    try:
        priors = load_priors(priors_path, defaults=settings.policy.priors)
    except PriorsFileError as exc:
        raise ConfigError("priors.path", str(exc)) from None
    return replace(settings, policy=replace(settings.policy, priors=priors))


def parse_settings(raw: Any, *, source: str = "<config>") -> Settings:
    """Validate an already-parsed YAML document and build the frozen ``Settings``."""
    root = _Node(raw, "")
    if not isinstance(raw, Mapping):
        raise ConfigError(source, "must be a YAML mapping at the top level")
    root.mapping(_TOP)

    models = _parse_models(root.child("models"))
    pools, physical = _parse_pools(root.child("pools"), models)
    if not physical:
        raise ConfigError("pools", "must serve at least one model")
    server = _parse_server(root.child("server"), pools)
    learning = _parse_learning(root.child("global"))
    decisions, default_decision = _parse_routing(root.child("routing"), models, physical)
    header_signals = frozenset(
        signal.header
        for spec in decisions
        for signal in spec.signals
        if signal.kind is SignalKind.HEADER
    )
    logical = server_logical_models(root.child("server"))
    clash = sorted(logical & set(models))
    if clash:
        raise ConfigError("server.logical_models", f"{clash[0]!r} is also a model name")
    policy = PolicyConfig(
        logical_models=logical,
        pools=MappingProxyType(pools),
        physical_models=MappingProxyType(physical),
        decisions=decisions,
        default_decision=default_decision,
        learning=learning,
        header_signals=header_signals,
    )
    try:
        replay = ReplayConfig.from_mapping(raw)
    except ReplayConfigError as exc:
        raise ConfigError(exc.path, exc.message) from None
    return Settings(
        source=source,
        server=server,
        state=_parse_state(root.child("state")),
        policy=policy,
        replay=replay,
        raw=MappingProxyType(dict(raw)),
    )


def server_logical_models(node: _Node) -> frozenset[str]:
    """The logical model names from the ``server`` section (default ``auto``)."""
    names = node.child("logical_models", _SERVER)
    if not names.present:
        return frozenset({"auto"})
    result = [element.string(pattern=_NAME_RE) for element in names.elements()]
    if not result:
        raise names.fail("must name at least one logical model")
    return frozenset(result)


def _parse_models(node: _Node) -> dict[str, float]:
    models: dict[str, float] = {}
    for name, model in node.items():
        if not _NAME_RE.match(name):
            raise model.fail("is not a valid model name")
        models[name] = model.child("quality", _MODEL).number(low=0.0, high=1.0)
    if not models:
        raise node.fail("must define at least one model")
    return models


def _parse_pools(
    node: _Node, models: Mapping[str, float]
) -> tuple[dict[str, Pool], dict[str, PhysicalModel]]:
    pools: dict[str, Pool] = {}
    physical: dict[str, PhysicalModel] = {}
    clusters: set[str] = set()
    for name, pool_node in node.items():
        if not _NAME_RE.match(name) or "@" in name:
            raise pool_node.fail("is not a valid pool name")
        pool_node.mapping(_POOL)
        cluster = pool_node.child("cluster").string(pattern=_CLUSTER_RE)
        if cluster in clusters:
            raise pool_node.child("cluster").fail(f"{cluster!r} is used by another pool")
        clusters.add(cluster)
        pool = Pool(
            name=name,
            cluster=cluster,
            accelerator=pool_node.child("accelerator").string(default=""),
        )
        pools[name] = pool
        serves = pool_node.child("serves")
        if not serves.present:
            raise serves.fail("is required")
        for serve in serves.elements():
            serve.mapping(_SERVE)
            model_node = serve.child("model")
            model = model_node.string()
            if model not in models:
                raise model_node.fail(f"names an unknown model {model!r}")
            physical_model = PhysicalModel(
                model=model,
                pool=name,
                cluster=cluster,
                pricing=_parse_pricing(serve.child("pricing")),
                quality=models[model],
            )
            if physical_model.key in physical:
                raise model_node.fail(f"{model!r} is listed twice in this pool")
            physical[physical_model.key] = physical_model
    return pools, physical


def _parse_pricing(node: _Node) -> Pricing:
    node.mapping(_PRICING)
    if not node.present:
        raise node.fail("is required")
    prompt = node.child("prompt_per_1m").number(low=0.0)
    cached = node.child("cached_prompt_per_1m").number(default=prompt, low=0.0)
    if cached > prompt:
        raise node.child("cached_prompt_per_1m").fail("must not exceed prompt_per_1m")
    return Pricing(
        prompt_per_1m=prompt,
        cached_prompt_per_1m=cached,
        completion_per_1m=node.child("completion_per_1m").number(low=0.0),
    )


def _parse_server(node: _Node, pools: Mapping[str, Pool]) -> ServerSettings:
    node.mapping(_SERVER)
    socket = node.child("grpc_socket")
    address = node.child("grpc_address")
    grpc_socket = socket.optional_string()
    grpc_address = address.optional_string()
    if grpc_address is not None:
        _check_address(address)
    if grpc_socket is None and grpc_address is None:
        raise node.fail("needs grpc_socket or grpc_address")
    metrics = node.child("metrics_address")
    if metrics.present:
        _check_address(metrics)
    fail_open = node.child("fail_open_pool")
    fail_open_pool = fail_open.string(default=next(iter(pools)))
    if fail_open_pool not in pools:
        raise fail_open.fail(f"names an unknown pool {fail_open_pool!r}")
    return ServerSettings(
        grpc_socket=grpc_socket,
        grpc_address=grpc_address,
        metrics_address=metrics.optional_string(),
        max_body_bytes=node.child("max_body_bytes").integer(
            default=8 * 1024 * 1024, low=1024, high=256 * 1024 * 1024
        ),
        fail_open_pool=fail_open_pool,
        decision_budget_ms=node.child("decision_budget_ms").number(
            default=150.0, low=1.0, high=10_000.0
        ),
        hash_identities_in_logs=node.child("hash_identities_in_logs").boolean(True),
        drain_seconds=node.child("drain_seconds").number(default=20.0, low=0.0, high=3600.0),
        learn_from_response_bodies=node.child("learn_from_response_bodies").boolean(True),
        response_path=node.child("response_path").choice(ResponsePath, ResponsePath.ACCESS_LOG),
        transport=node.child("transport").choice(Transport, Transport.H2),
        access_log_pending_max=node.child("access_log_pending_max").integer(
            default=100_000, low=1_000, high=10_000_000
        ),
        access_log_pending_seconds=node.child("access_log_pending_seconds").number(
            default=900.0, low=10.0, high=86_400.0
        ),
    )


def _check_address(node: _Node) -> None:
    value = node.string()
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise node.fail(f"must be host:port, got {value!r}")


def _parse_state(node: _Node) -> StoreConfig:
    node.mapping(_STATE)
    backend = node.child("backend").string(default="local")
    if backend not in ("local", "redis"):
        raise node.child("backend").fail(f"must be one of local, redis, got {backend!r}")
    local = node.child("local")
    local.mapping(_STATE_LOCAL)
    redis = node.child("redis")
    redis.mapping(_STATE_REDIS)
    url = redis.child("url").optional_string()
    address = redis.child("address").optional_string()
    if backend == "redis" and (url is None) == (address is None):
        raise redis.fail("needs exactly one of url or address when backend is redis")
    fail_open_to = node.child("fail_open_to").string(default="local")
    if fail_open_to not in ("local", "none"):
        raise node.child("fail_open_to").fail(f"must be one of local, none, got {fail_open_to!r}")
    idle = local.child("idle_ttl_seconds")
    try:
        return StoreConfig(
            backend=Backend(backend),
            redis_url=url,
            redis_address=address,
            db=redis.child("database").integer(default=0, low=0, high=1023),
            username=redis.child("username").optional_string(),
            password_env=redis.child("password_env").optional_string(),
            password_file=redis.child("password_file").optional_string(),
            key_prefix=redis.child("key_prefix").string(default="saar:v1:"),
            ttl_seconds=node.child("ttl_seconds").number(default=86400.0, low=1.0),
            timeout_ms=node.child("timeout_ms").number(default=50.0, low=1.0, high=10_000.0),
            max_connections=redis.child("max_connections").integer(default=64, low=1),
            local_max_entries=local.child("max_entries").integer(
                default=100_000, low=1, high=100_000_000
            ),
            local_idle_ttl_seconds=idle.number(low=1.0) if idle.present else None,
            fail_open_to=FailOpenTo(fail_open_to),
            breaker_failure_threshold=redis.child("breaker_failures").integer(default=3, low=1),
            breaker_cooldown_seconds=redis.child("breaker_cooldown_seconds").number(
                default=5.0, low=0.01
            ),
        )
    except StoreConfigError as exc:
        raise node.fail(str(exc)) from None


def _parse_learning(node: _Node) -> LearningConfig:
    router = node.child("router", frozenset({"router"}))
    learning = router.child("learning", frozenset({"learning"}))
    adaptations = learning.child("adaptations", frozenset({"enabled", "adaptations", "identity"}))
    sa = adaptations.child("session_aware", frozenset({"session_aware"}))
    sa.mapping(frozenset({"enabled", "scope"}))
    identity = learning.child("identity")
    identity.mapping(frozenset({"headers"}))
    headers = identity.child("headers")
    headers.mapping(frozenset({"session", "conversation"}))
    return LearningConfig(
        enabled=learning.child("enabled").boolean(True),
        session_aware_enabled=sa.child("enabled").boolean(True),
        scope=sa.child("scope").choice(Scope, Scope.CONVERSATION),
        session_header=headers.child("session").string("x-session-id", _HEADER_RE),
        conversation_header=headers.child("conversation").string("x-conversation-id", _HEADER_RE),
    )


def _parse_routing(
    node: _Node, models: Mapping[str, float], physical: Mapping[str, PhysicalModel]
) -> tuple[tuple[DecisionSpec, ...], str]:
    node.mapping(frozenset({"default_decision", "decisions"}))
    decisions_node = node.child("decisions")
    if not decisions_node.present:
        raise decisions_node.fail("is required")
    specs: list[DecisionSpec] = []
    names: set[str] = set()
    for element in decisions_node.elements():
        spec = _parse_decision(element, models, physical)
        if spec.name in names:
            raise element.child("name").fail(f"{spec.name!r} is used by another decision")
        names.add(spec.name)
        specs.append(spec)
    if not specs:
        raise decisions_node.fail("must define at least one decision")
    default_node = node.child("default_decision")
    default = default_node.string(default=specs[-1].name)
    if default not in names:
        raise default_node.fail(f"names an unknown decision {default!r}")
    # Stable sort: equal priorities keep config order, so the first listed wins a tie.
    ordered = sorted(specs, key=lambda spec: -spec.priority)
    return tuple(ordered), default


def _parse_decision(
    node: _Node, models: Mapping[str, float], physical: Mapping[str, PhysicalModel]
) -> DecisionSpec:
    node.mapping(_DECISION)
    name = node.child("name").string(pattern=_NAME_RE)
    signals = tuple(_parse_signal(element) for element in node.child("signals").elements())
    refs = _parse_model_refs(node.child("modelRefs"), models, physical)
    algorithm = node.child("algorithm")
    algorithm.mapping(_ALGORITHM)
    method = algorithm.child("type").choice(SelectionMethod, SelectionMethod.STATIC)
    knobs = _parse_knobs(algorithm.child("session_aware"))
    hybrid_node = algorithm.child("hybrid")
    hybrid_node.mapping(frozenset({"quality_weight", "cost_weight", "expected_completion_tokens"}))
    hybrid_defaults = HybridWeights()
    hybrid = HybridWeights(
        quality_weight=hybrid_node.child("quality_weight").number(
            default=hybrid_defaults.quality_weight, low=0.0
        ),
        cost_weight=hybrid_node.child("cost_weight").number(
            default=hybrid_defaults.cost_weight, low=0.0
        ),
        expected_completion_tokens=hybrid_node.child("expected_completion_tokens").integer(
            default=hybrid_defaults.expected_completion_tokens, low=0, high=1_000_000
        ),
    )
    adaptations = node.child("adaptations")
    adaptations.mapping(frozenset({"session_aware"}))
    sa = adaptations.child("session_aware")
    sa.mapping(frozenset({"mode"}))
    return DecisionSpec(
        name=name,
        priority=node.child("priority").integer(default=0, low=-1_000_000, high=1_000_000),
        signals=signals,
        match=node.child("match").choice(MatchMode, MatchMode.ANY),
        model_refs=refs,
        method=method,
        session_aware=knobs,
        mode=sa.child("mode").choice(AdaptationMode, AdaptationMode.APPLY),
        hybrid=hybrid,
    )


def _parse_signal(node: _Node) -> Signal:
    mapping = node.mapping(_SIGNAL)
    if len(mapping) != 1:
        raise node.fail(f"must have exactly one of {', '.join(sorted(_SIGNAL))}")
    (kind_name,) = mapping
    kind = SignalKind(kind_name)
    value = node.child(kind_name)
    if kind is SignalKind.KEYWORDS:
        words = tuple(element.string().lower() for element in value.elements())
        if not words:
            raise value.fail("must list at least one keyword")
        return Signal(kind=kind, keywords=words)
    if kind is SignalKind.REGEX:
        pattern = value.string()
        try:
            re.compile(pattern)
        except re.error as exc:
            raise value.fail(f"is not a valid regular expression: {exc}") from None
        return Signal(kind=kind, pattern=pattern)
    if kind in (SignalKind.MIN_CONTEXT_TOKENS, SignalKind.MAX_CONTEXT_TOKENS):
        return Signal(kind=kind, threshold=value.integer(low=0))
    if kind is SignalKind.HAS_TOOLS:
        return Signal(kind=kind, flag=value.boolean(True))
    value.mapping(frozenset({"name", "equals"}))
    header = value.child("name").string().lower()
    if not _HEADER_RE.match(header):
        raise value.child("name").fail(f"{header!r} is not a valid header name")
    equals = value.child("equals")
    return Signal(kind=kind, header=header, value=equals.optional_string())


def _parse_model_refs(
    node: _Node, models: Mapping[str, float], physical: Mapping[str, PhysicalModel]
) -> tuple[ModelRef, ...]:
    refs: list[ModelRef] = []
    seen: set[str] = set()
    for element in node.elements():
        element.mapping(frozenset({"model", "pool", "quality"}))
        model_node = element.child("model")
        model = model_node.string()
        if model not in models:
            raise model_node.fail(f"names an unknown model {model!r}")
        pool_node = element.child("pool")
        quality_node = element.child("quality")
        quality = quality_node.number(low=0.0, high=1.0) if quality_node.present else None
        if pool_node.present:
            key = f"{model}@{pool_node.string()}"
            if key not in physical:
                raise pool_node.fail(f"names a pool that does not serve {model!r}")
            keys = [key]
        else:
            # A ref without a pool means "this model on every pool that serves it".
            keys = [k for k, pm in physical.items() if pm.model == model]
            if not keys:
                raise model_node.fail(f"{model!r} is not served by any pool")
        for key in keys:
            if key in seen:
                raise element.fail(f"repeats {key!r}")
            seen.add(key)
            refs.append(ModelRef(physical=key, quality=quality))
    if not refs:
        raise node.fail("must list at least one model")
    return tuple(refs)


def _parse_knobs(node: _Node) -> SessionAwareKnobs:
    node.mapping(_KNOBS)
    defaults = SessionAwareKnobs()
    fallback = node.child("fallback_method").choice(SelectionMethod, defaults.fallback_method)
    if fallback is SelectionMethod.SESSION_AWARE:
        raise node.child("fallback_method").fail("must be static or hybrid")
    return SessionAwareKnobs(
        fallback_method=fallback,
        min_turns_before_switch=node.child("min_turns_before_switch").integer(
            default=defaults.min_turns_before_switch, low=0, high=10_000
        ),
        stay_bias=node.child("stay_bias").number(default=defaults.stay_bias, low=0.0, high=1.0),
        quality_gap_multiplier=node.child("quality_gap_multiplier").number(
            default=defaults.quality_gap_multiplier, low=0.0, high=100.0
        ),
        handoff_penalty_weight=node.child("handoff_penalty_weight").number(
            default=defaults.handoff_penalty_weight, low=0.0, high=100.0
        ),
        remaining_turn_weight=node.child("remaining_turn_weight").number(
            default=defaults.remaining_turn_weight, low=0.0, high=1.0
        ),
        idle_timeout_seconds=node.child("idle_timeout_seconds").number(
            default=defaults.idle_timeout_seconds, low=0.0
        ),
        tool_loop_hard_lock=node.child("tool_loop_hard_lock").boolean(defaults.tool_loop_hard_lock),
        context_portability_hard_lock=node.child("context_portability_hard_lock").boolean(
            defaults.context_portability_hard_lock
        ),
        decision_drift_reset=node.child("decision_drift_reset").boolean(
            defaults.decision_drift_reset
        ),
        prefix_cache_weight=node.child("prefix_cache_weight").number(
            default=defaults.prefix_cache_weight, low=0.0, high=100.0
        ),
        switch_history_weight=node.child("switch_history_weight").number(
            default=defaults.switch_history_weight, low=0.0, high=100.0
        ),
        cache_half_life_seconds=node.child("cache_half_life_seconds").number(
            default=defaults.cache_half_life_seconds, low=1.0
        ),
        unhealthy_after_failures=node.child("unhealthy_after_failures").integer(
            default=defaults.unhealthy_after_failures, low=1, high=1000
        ),
        follow_up_max_words=node.child("follow_up_max_words").integer(
            default=defaults.follow_up_max_words, low=0, high=64
        ),
    )
