"""``saar inject``: add the saar native sidecar to Kubernetes workloads running Envoy.

Theory of operation. Injection is a pure function on the parsed YAML documents; the CLI
(``saar.deploy.command``) and the admission webhook (``saar.deploy.webhook``) are thin shells
around it, so the two can never disagree. For each workload with an Envoy container it:

* adds (or replaces in place) the ``saar`` *native sidecar*: an ``initContainers`` entry with
  ``restartPolicy: Always`` (Kubernetes >= 1.29). Kubernetes starts it, waits for its
  ``startupProbe`` (gRPC health over the Unix socket), then starts Envoy, so Envoy never
  serves with a dead processor; on shutdown it stops only after Envoy has exited;
* adds the socket ``emptyDir`` mounted in both containers, the config ConfigMap, and a
  writable ``/tmp`` and data directory (replay records) for saar, whose root filesystem is
  read-only;
* patches the Envoy bootstrap, when the ConfigMap holding it is part of the input:

  * early header mutation stripping client ``x-saar-*`` and the ``x-vsr-*`` contract headers
    (``CONTRACT_HEADERS``), before the route is chosen;
  * the ``ext_proc`` filter before the router, with response headers skipped by default
    (saar asks for them per request with ``mode_override``, docs/design/0004);
  * the cluster-header route before the existing routes (which stay as the fail-open
    default), copying each contract header from the request to the response
    (``%REQ(name)%``);
  * saar's gRPC access log (``envoy.access_loggers.http_grpc``, log name ``saar``) on each
    HTTP connection manager, filtered on ``x-vsr-replay-id``: status and upstream host of
    each routed response reach saar there; the operator's other access loggers stay;
  * the ``saar`` Unix-socket cluster (ext_proc and the access log both use it).

Everything is *ensured*, never blindly appended: an existing sidecar, volume, mount, filter,
route, access logger or cluster of saar's is replaced in place by the current one. Running
``inject`` twice therefore gives the same output as running it once, and re-running it with a
new ``--image`` upgrades the sidecar (or an older bootstrap patch).

The canonical sidecar below is also the one ``deploy/base/gateway.yaml`` carries (a test pins
that), and the canonical filters are those of ``envoy/kubernetes.yaml`` (also pinned).
"""

from __future__ import annotations

import copy
import posixpath
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from saar.policy.headers import CONTRACT_HEADERS, HEADER_REPLAY_ID

__all__ = [
    "DEFAULT_CONFIG_CONFIGMAP",
    "DEFAULT_IMAGE",
    "DEFAULT_SOCKET_DIR",
    "INJECTED_ANNOTATION",
    "INJECT_LABEL",
    "SIDECAR_NAME",
    "InjectError",
    "InjectOptions",
    "InjectResult",
    "dump_yaml",
    "find_envoy_container",
    "inject_documents",
    "inject_pod_template",
    "load_documents",
    "patch_bootstrap",
    "sidecar_container",
]

DEFAULT_IMAGE = "ghcr.io/saar-project/saar:0.1.0"
DEFAULT_CONFIG_CONFIGMAP = "saar-config"
DEFAULT_SOCKET_DIR = "/var/run/saar"
SIDECAR_NAME = "saar"
INJECT_LABEL = "saar.io/inject"
"""Pods labelled ``saar.io/inject: "true"`` are injected by the webhook."""
INJECTED_ANNOTATION = "saar.io/injected"
"""Set on injected pod templates: lets operators find pods that missed injection."""

SOCKET_VOLUME = "saar-socket"
CONFIG_VOLUME = "saar-config"
TMP_VOLUME = "saar-tmp"
DATA_VOLUME = "saar-data"
CONFIG_DIR = "/etc/saar"
DATA_DIR = "/var/lib/saar"
METRICS_PORT = 9464
SAAR_UID = 10001
EXTPROC_CLUSTER = "saar"
CLUSTER_HEADER = "x-saar-cluster"
AFFINITY_HEADER = "x-saar-affinity-key"
# Agent bodies: Envoy must buffer the whole request for ext_proc's BUFFERED body mode.
BUFFER_LIMIT = 16 * 1024 * 1024

_WORKLOAD_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"})
_HCM = "envoy.filters.network.http_connection_manager"
_HCM_TYPE = (
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
    "HttpConnectionManager"
)
_EXT_PROC = "envoy.filters.http.ext_proc"
_ROUTER = "envoy.filters.http.router"
_ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
_EARLY_MUTATION = "envoy.http.early_header_mutation.header_mutation"
_STRIP_SAAR = {"remove_on_match": {"key_matcher": {"prefix": "x-saar-"}}}
# Clients may not forge the contract either: the route echoes it, the access log keys on it.
_STRIP_CONTRACT = tuple({"remove": name} for name in CONTRACT_HEADERS)
_ACCESS_LOG = "envoy.access_loggers.http_grpc"
_ACCESS_LOG_NAME = "saar"


class InjectError(ValueError):
    """The input cannot be injected (no Envoy container, unparsable bootstrap, RDS, ...)."""


@dataclass(frozen=True, slots=True)
class InjectOptions:
    """What to inject and where."""

    image: str = DEFAULT_IMAGE
    config_configmap: str = DEFAULT_CONFIG_CONFIGMAP
    """ConfigMap holding saar's ``config.yaml`` (must exist in the workload's namespace)."""
    socket_dir: str = DEFAULT_SOCKET_DIR
    envoy_container: str | None = None
    """Name of the Envoy container; ``None`` finds it by name ``envoy`` or image."""
    listeners: tuple[str, ...] = ()
    """Bootstrap listeners to patch; empty patches every HTTP listener."""

    @property
    def socket_path(self) -> str:
        """The Unix socket saar serves and Envoy's ``saar`` cluster dials."""
        return posixpath.join(self.socket_dir, "saar.sock")


@dataclass(slots=True)
class InjectResult:
    """Injected documents plus notes for the operator (printed on stderr by the CLI)."""

    documents: list[Any]
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- pod side


def _probe(*extra: str) -> dict[str, Any]:
    return {"exec": {"command": ["python", "-m", "saar.deploy.probe", *extra]}}


def sidecar_container(options: InjectOptions) -> dict[str, Any]:
    """The saar native sidecar container, as Kubernetes wants it in ``initContainers``."""
    socket = options.socket_path
    return {
        "name": SIDECAR_NAME,
        "image": options.image,
        "imagePullPolicy": "IfNotPresent",
        # Native sidecar: an init container that keeps running (Kubernetes >= 1.29).
        "restartPolicy": "Always",
        # Envoy may run under another UID than saar; a socket needs write permission to
        # connect, so it is created world-writable. Only this pod mounts the emptyDir.
        "command": ["/bin/sh", "-c", 'umask 000 && exec saar "$@"', "saar"],
        # The root filesystem is read-only: relative paths (replay.path defaults to
        # run/replay.sqlite3) land on the writable data volume.
        "workingDir": DATA_DIR,
        "args": [
            "serve",
            "--config",
            f"{CONFIG_DIR}/config.yaml",
            "--grpc-socket",
            socket,
            "--metrics-address",
            f"0.0.0.0:{METRICS_PORT}",
        ],
        "ports": [{"name": "saar-metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}],
        # Requests are buffered whole (up to server.max_body_bytes, 8 MiB by default) and
        # parsed once; ~100 concurrent agent requests fit in the limit with headroom.
        "resources": {
            "requests": {"cpu": "500m", "memory": "512Mi"},
            "limits": {"cpu": "2", "memory": "2Gi"},
        },
        # kubelet's gRPC probes dial the pod IP, so they cannot reach a loopback or Unix
        # socket listener; an exec probe speaks gRPC health over the socket Envoy uses.
        "startupProbe": {
            **_probe("--socket", socket),
            "periodSeconds": 2,
            "timeoutSeconds": 5,
            "failureThreshold": 30,
        },
        "readinessProbe": {
            **_probe("--socket", socket),
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
        # Alive means "answers health", SERVING or not: a draining saar is alive.
        "livenessProbe": {
            **_probe("--socket", socket, "--alive"),
            "periodSeconds": 20,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": SAAR_UID,
            "runAsGroup": SAAR_UID,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [
            {"name": SOCKET_VOLUME, "mountPath": options.socket_dir},
            {"name": CONFIG_VOLUME, "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": TMP_VOLUME, "mountPath": "/tmp"},
            {"name": DATA_VOLUME, "mountPath": DATA_DIR},
        ],
    }


def _volumes(options: InjectOptions) -> list[dict[str, Any]]:
    return [
        {"name": SOCKET_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
        {"name": CONFIG_VOLUME, "configMap": {"name": options.config_configmap}},
        {"name": TMP_VOLUME, "emptyDir": {"sizeLimit": "64Mi"}},
        # Replay records (SQLite); survives container restarts, not pod deletion.
        {"name": DATA_VOLUME, "emptyDir": {"sizeLimit": "2Gi"}},
    ]


def _ensure_named(
    items: list[Any], item: dict[str, Any], *, ours: Callable[[Any], bool] | None = None
) -> None:
    """Replace saar's entry in place, or append ``item``.

    saar's entry is the one with ``item``'s name, or the one ``ours`` recognises when the name
    alone is shared with the operator's entries (access loggers).
    """
    for index, existing in enumerate(items):
        mine = (
            ours(existing)
            if ours is not None
            else isinstance(existing, dict) and existing.get("name") == item["name"]
        )
        if mine:
            items[index] = item
            return
    items.append(item)


def _looks_like_envoy(container: dict[str, Any]) -> bool:
    image = str(container.get("image", ""))
    command = [str(part) for part in container.get("command") or []]
    return (
        container.get("name") == "envoy"
        or "envoyproxy/envoy" in image
        or any(posixpath.basename(part) == "envoy" for part in command[:1])
    )


def find_envoy_container(spec: dict[str, Any], name: str | None, where: str) -> dict[str, Any]:
    """The pod spec's Envoy container: the one named ``name``, else the only Envoy-like one."""
    containers = [c for c in spec.get("containers") or [] if isinstance(c, dict)]
    if name is not None:
        for container in containers:
            if container.get("name") == name:
                return container
        raise InjectError(f"{where}: no container named {name!r}")
    found = [c for c in containers if _looks_like_envoy(c)]
    if not found:
        raise InjectError(
            f"{where}: no Envoy container found (looked for a container named 'envoy', an "
            "envoyproxy/envoy image or an 'envoy' command); pass --envoy-container NAME"
        )
    if len(found) > 1:
        names = ", ".join(str(c.get("name")) for c in found)
        raise InjectError(
            f"{where}: several Envoy-like containers ({names}); pass --envoy-container"
        )
    return found[0]


def inject_pod_template(
    template: dict[str, Any], options: InjectOptions, where: str = "pod"
) -> dict[str, Any]:
    """Return a copy of a pod (or pod template: ``metadata`` + ``spec``) with saar injected."""
    result = copy.deepcopy(template)
    spec = result.get("spec")
    if not isinstance(spec, dict):
        raise InjectError(f"{where}: has no pod spec")
    envoy = find_envoy_container(spec, options.envoy_container, where)
    for container in spec.get("containers") or []:
        if isinstance(container, dict) and container.get("name") == SIDECAR_NAME:
            raise InjectError(
                f"{where}: runs saar as a regular container; remove it (saar must be a native "
                "sidecar so that it starts before Envoy and stops after it)"
            )
    init = spec.setdefault("initContainers", [])
    _ensure_named(init, sidecar_container(options))
    volumes = spec.setdefault("volumes", [])
    for volume in _volumes(options):
        _ensure_named(volumes, volume)
    mounts = envoy.setdefault("volumeMounts", [])
    _ensure_named(mounts, {"name": SOCKET_VOLUME, "mountPath": options.socket_dir})
    metadata = result.setdefault("metadata", {})
    annotations = metadata.get("annotations") or {}
    metadata["annotations"] = annotations
    annotations[INJECTED_ANNOTATION] = "true"
    return result


# --------------------------------------------------------------------- Envoy side


def _ext_proc_filter(options: InjectOptions) -> dict[str, Any]:
    """The ext_proc filter for saar; docs/design/0001-data-path.md explains every field."""
    return {
        "name": _EXT_PROC,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3."
            "ExternalProcessor",
            "grpc_service": {
                "envoy_grpc": {
                    "cluster_name": EXTPROC_CLUSTER,
                    "max_receive_message_length": 67108864,
                }
            },
            "processing_mode": {
                "request_header_mode": "SEND",
                "request_body_mode": "BUFFERED",
                # SKIP: saar asks for the response headers (and Responses API bodies) per
                # request with mode_override; Chat/Messages requests cost two messages.
                "response_header_mode": "SKIP",
                "response_body_mode": "NONE",
                "request_trailer_mode": "SKIP",
                "response_trailer_mode": "SKIP",
            },
            "allow_mode_override": True,
            # Fail open: if saar is down, slow or errs, the request goes on unmodified.
            "failure_mode_allow": True,
            "message_timeout": "1s",
            "max_message_timeout": "5s",
            # saar may set only its own headers and content-length; never x-envoy-*.
            "mutation_rules": {
                "disallow_all": True,
                "disallow_is_error": True,
                "allow_expression": {
                    "regex": "^(x-saar-[a-z-]+|x-vsr-[a-z-]+|content-length|content-type)$"
                },
            },
            "forward_rules": {
                "disallowed_headers": {
                    "patterns": [
                        {"exact": name}
                        for name in (
                            "authorization",
                            "proxy-authorization",
                            "cookie",
                            "x-api-key",
                            "api-key",
                        )
                    ]
                }
            },
            "stat_prefix": "saar",
        },
    }


def _saar_cluster(options: InjectOptions) -> dict[str, Any]:
    return {
        "name": EXTPROC_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "0.25s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3."
                "HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
        "load_assignment": {
            "cluster_name": EXTPROC_CLUSTER,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {"endpoint": {"address": {"pipe": {"path": options.socket_path}}}}
                    ]
                }
            ],
        },
    }


def _cluster_header_route() -> dict[str, Any]:
    return {
        "match": {"prefix": "/", "headers": [{"name": CLUSTER_HEADER, "present_match": True}]},
        "route": {
            "cluster_header": CLUSTER_HEADER,
            "timeout": "600s",
            "hash_policy": [{"header": {"header_name": AFFINITY_HEADER}, "terminal": True}],
        },
        # saar sets the contract as request headers; Envoy omits a header whose value is
        # empty, so nothing is doubled when saar answers the response headers itself.
        "response_headers_to_add": [
            {
                "header": {"key": name, "value": f"%REQ({name})%"},
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
            }
            for name in CONTRACT_HEADERS
        ],
    }


def _saar_mutations() -> list[dict[str, Any]]:
    return [copy.deepcopy(_STRIP_SAAR), *(dict(remove) for remove in _STRIP_CONTRACT)]


def _early_mutation() -> dict[str, Any]:
    return {
        "name": _EARLY_MUTATION,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.http.early_header_mutation."
            "header_mutation.v3.HeaderMutation",
            "mutations": _saar_mutations(),
        },
    }


def _access_log() -> dict[str, Any]:
    """The gRPC access log to saar: status and upstream host of the responses it routed."""
    return {
        "name": _ACCESS_LOG,
        "filter": {"header_filter": {"header": {"name": HEADER_REPLAY_ID, "present_match": True}}},
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.grpc.v3."
            "HttpGrpcAccessLogConfig",
            "common_config": {
                "log_name": _ACCESS_LOG_NAME,
                "transport_api_version": "V3",
                "grpc_service": {"envoy_grpc": {"cluster_name": EXTPROC_CLUSTER}},
                "buffer_flush_interval": "0.1s",
                "buffer_size_bytes": 65536,
            },
            "additional_request_headers_to_log": [HEADER_REPLAY_ID],
        },
    }


def _http_managers(bootstrap: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    resources = bootstrap.get("static_resources") or {}
    for listener in resources.get("listeners") or []:
        for chain in listener.get("filter_chains") or []:
            for network_filter in chain.get("filters") or []:
                config = network_filter.get("typed_config") or {}
                if network_filter.get("name") == _HCM or config.get("@type") == _HCM_TYPE:
                    yield listener, config


def _is_router(http_filter: dict[str, Any]) -> bool:
    config = http_filter.get("typed_config") or {}
    return bool(http_filter.get("name") == _ROUTER or config.get("@type") == _ROUTER_TYPE)


def _is_saar_ext_proc(http_filter: dict[str, Any]) -> bool:
    config = http_filter.get("typed_config") or {}
    grpc = (config.get("grpc_service") or {}).get("envoy_grpc") or {}
    return bool(
        http_filter.get("name") == _EXT_PROC and grpc.get("cluster_name") == EXTPROC_CLUSTER
    )


def _is_saar_route(route: dict[str, Any]) -> bool:
    return bool((route.get("route") or {}).get("cluster_header") == CLUSTER_HEADER)


def _is_saar_access_log(entry: Any) -> bool:
    if not isinstance(entry, dict) or entry.get("name") != _ACCESS_LOG:
        return False
    common = (entry.get("typed_config") or {}).get("common_config") or {}
    return bool(common.get("log_name") == _ACCESS_LOG_NAME)


def _ensure_early_mutation(manager: dict[str, Any]) -> None:
    """Strip client x-saar-* and contract headers before the route is chosen.

    saar's extension is the one stripping ``x-saar-*``; mutations it lacks are appended to it
    (an older injection that stripped only ``x-saar-*`` gains the contract headers), the
    operator's own mutations stay where they are.
    """
    extensions = manager.setdefault("early_header_mutation_extensions", [])
    for extension in extensions:
        config = extension.get("typed_config") if isinstance(extension, dict) else None
        mutations = (config or {}).get("mutations")
        if isinstance(mutations, list) and _STRIP_SAAR in mutations:
            missing = [m for m in _saar_mutations() if m not in mutations]
            mutations.extend(missing)
            return
    extensions.append(_early_mutation())


def _ensure_access_log(manager: dict[str, Any]) -> None:
    """Replace saar's access logger in place, or append it; other loggers stay."""
    entries = manager.get("access_log")
    if not isinstance(entries, list):
        entries = []
        manager["access_log"] = entries
    _ensure_named(entries, _access_log(), ours=_is_saar_access_log)


def _patch_manager(
    listener: dict[str, Any], manager: dict[str, Any], options: InjectOptions
) -> None:
    name = listener.get("name", "?")
    routes_config = manager.get("route_config")
    if not isinstance(routes_config, dict):
        raise InjectError(
            f"listener {name!r} gets its routes over RDS (or scoped routes): saar inject patches "
            "inline route_config only; add the x-saar-cluster route to your route configuration "
            "and pass --listener to choose the listeners to patch"
        )
    # Early header mutation: drop client-sent x-saar-* and x-vsr-* contract headers before
    # the route is chosen.
    _ensure_early_mutation(manager)
    # Status and served-by of routed responses reach saar through its access log.
    _ensure_access_log(manager)
    # ext_proc right before the router (the router must stay the last filter).
    filters = [f for f in manager.get("http_filters") or [] if not _is_saar_ext_proc(f)]
    routers = [index for index, f in enumerate(filters) if _is_router(f)]
    if not routers:
        raise InjectError(f"listener {name!r}: no envoy.filters.http.router filter")
    filters.insert(routers[-1], _ext_proc_filter(options))
    manager["http_filters"] = filters
    # The cluster-header route first in every virtual host; existing routes stay as the
    # fail-open default.
    for host in routes_config.get("virtual_hosts") or []:
        routes = [r for r in host.get("routes") or [] if not _is_saar_route(r)]
        host["routes"] = [_cluster_header_route(), *routes]
        host.setdefault("request_body_buffer_limit", BUFFER_LIMIT)
    listener.setdefault("per_connection_buffer_limit_bytes", BUFFER_LIMIT)


def patch_bootstrap(bootstrap: dict[str, Any], options: InjectOptions) -> dict[str, Any]:
    """Return a copy of an Envoy bootstrap with saar's filters, route and cluster ensured."""
    if not isinstance(bootstrap, dict):
        raise InjectError("the Envoy bootstrap is not a mapping")
    result = copy.deepcopy(bootstrap)
    managers = [
        (listener, manager)
        for listener, manager in _http_managers(result)
        if not options.listeners or listener.get("name") in options.listeners
    ]
    if not managers:
        raise InjectError("the Envoy bootstrap has no HTTP listener (http_connection_manager)")
    # By default OUTBOUND listeners are left alone: envoy/kubernetes.yaml's readiness listener
    # forwards two admin paths and must not depend on saar.
    chosen = [
        (listener, manager)
        for listener, manager in managers
        if options.listeners or listener.get("traffic_direction") != "OUTBOUND"
    ]
    if not chosen:
        raise InjectError("every HTTP listener is OUTBOUND; name the ones to patch (--listener)")
    for listener, manager in chosen:
        _patch_manager(listener, manager, options)
    resources = result.setdefault("static_resources", {})
    clusters = resources.setdefault("clusters", [])
    _ensure_named(clusters, _saar_cluster(options))
    return result


# --------------------------------------------------------------------- documents


class _Dumper(yaml.SafeDumper):
    """Block style for multi-line strings, so ConfigMap data stays readable."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump_yaml(documents: Sequence[Any]) -> str:
    """Serialise documents as a multi-document YAML stream (keys in their given order)."""
    return yaml.dump_all(
        list(documents),
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        width=100,
        allow_unicode=True,
    )


def load_documents(text: str) -> list[Any]:
    """Parse a multi-document YAML stream, dropping empty documents."""
    try:
        return [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as exc:
        raise InjectError(f"input is not valid YAML: {exc}") from None


def _template_of(document: dict[str, Any]) -> dict[str, Any] | None:
    kind = document.get("kind")
    spec = document.get("spec") or {}
    if kind == "Pod":
        return document
    if kind in _WORKLOAD_KINDS:
        template = spec.get("template")
        return template if isinstance(template, dict) else None
    if kind == "CronJob":
        job = (spec.get("jobTemplate") or {}).get("spec") or {}
        template = job.get("template")
        return template if isinstance(template, dict) else None
    return None


def _config_path(envoy: dict[str, Any]) -> str | None:
    argv = [str(part) for part in [*(envoy.get("command") or []), *(envoy.get("args") or [])]]
    for index, part in enumerate(argv):
        if part in ("-c", "--config-path") and index + 1 < len(argv):
            return argv[index + 1]
        if part.startswith("--config-path="):
            return part.split("=", 1)[1]
    return None


def _bootstrap_source(spec: dict[str, Any], envoy: dict[str, Any]) -> tuple[str, str] | None:
    """(ConfigMap name, key) of the Envoy container's bootstrap file, if it comes from one."""
    path = _config_path(envoy)
    if path is None:
        return None
    volumes = {v.get("name"): v for v in spec.get("volumes") or [] if isinstance(v, dict)}
    for mount in envoy.get("volumeMounts") or []:
        volume = volumes.get(mount.get("name")) or {}
        config_map = volume.get("configMap")
        if not isinstance(config_map, dict):
            continue
        mount_path = str(mount.get("mountPath", "")).rstrip("/")
        if mount.get("subPath") and mount_path == path:
            relative = str(mount["subPath"])
        elif not mount.get("subPath") and posixpath.dirname(path) == mount_path:
            relative = posixpath.basename(path)
        else:
            continue
        key = relative
        for item in config_map.get("items") or []:
            if item.get("path") == relative:
                key = str(item.get("key"))
        return str(config_map.get("name")), key
    return None


def _name(document: dict[str, Any]) -> str:
    metadata = document.get("metadata") or {}
    return f"{document.get('kind')}/{metadata.get('name', '?')}"


def inject_documents(documents: Sequence[Any], options: InjectOptions) -> InjectResult:
    """Inject every workload with an Envoy container; patch the bootstraps found in the input."""
    result = copy.deepcopy(list(documents))
    notes: list[str] = []
    bootstraps: dict[tuple[str, str, str], str] = {}  # (namespace, configmap, key) -> workload
    injected = 0
    for document in result:
        if not isinstance(document, dict):
            continue
        template = _template_of(document)
        if template is None:
            continue
        where = _name(document)
        spec = template.get("spec") or {}
        try:
            find_envoy_container(spec, options.envoy_container, where)
        except InjectError:
            if options.envoy_container is not None or document.get("kind") == "Pod":
                raise
            notes.append(f"{where}: no Envoy container, left unchanged")
            continue
        patched = inject_pod_template(template, options, where)
        template.clear()
        template.update(patched)
        injected += 1
        envoy = find_envoy_container(template["spec"], options.envoy_container, where)
        source = _bootstrap_source(template["spec"], envoy)
        namespace = str((document.get("metadata") or {}).get("namespace", ""))
        if source is None:
            notes.append(
                f"{where}: Envoy's bootstrap does not come from a ConfigMap; it must already "
                "carry saar's filter, route and cluster (docs/kubernetes.md)"
            )
        else:
            bootstraps[(namespace, *source)] = where
    if injected == 0:
        raise InjectError(
            "no workload with an Envoy container in the input (Deployment, StatefulSet, "
            "DaemonSet, ReplicaSet, Job, CronJob or Pod)"
        )
    for (namespace, config_map, key), where in bootstraps.items():
        document = _find_config_map(result, namespace, config_map)
        if document is None:
            notes.append(
                f"{where}: ConfigMap {config_map!r} (Envoy bootstrap) is not in the input; it "
                "must already carry saar's filter, route and cluster (docs/kubernetes.md)"
            )
            continue
        data = document.get("data") or {}
        if key not in data:
            raise InjectError(f"ConfigMap/{config_map}: has no key {key!r} (Envoy bootstrap)")
        try:
            bootstrap = yaml.safe_load(data[key])
        except yaml.YAMLError as exc:
            raise InjectError(f"ConfigMap/{config_map} key {key!r}: not YAML: {exc}") from None
        patched = patch_bootstrap(bootstrap, options)
        if patched != bootstrap:
            data[key] = yaml.dump(
                patched, Dumper=_Dumper, sort_keys=False, width=100, allow_unicode=True
            )
    return InjectResult(result, notes)


def _find_config_map(documents: list[Any], namespace: str, name: str) -> dict[str, Any] | None:
    for document in documents:
        if not isinstance(document, dict) or document.get("kind") != "ConfigMap":
            continue
        metadata = document.get("metadata") or {}
        if metadata.get("name") == name and str(metadata.get("namespace", "")) in (
            namespace,
            "",
        ):
            return document
    return None
