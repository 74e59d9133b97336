"""Every manifest under deploy/ validates offline, and the pod shape keeps its invariants."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from saar.deploy.patch import apply_json_patch
from saar.observability.metrics import Metrics
from saar.settings import parse_settings

from .conftest import (
    CRD_KINDS,
    DEPLOY,
    ROOT,
    envoy_validate,
    load_all,
    pod_spec,
    validate,
)

YAML_FILES = sorted(p for p in DEPLOY.rglob("*.yaml"))
KUSTOMIZATIONS = [p for p in YAML_FILES if p.name == "kustomization.yaml"]
JSON_PATCHES = [p for p in YAML_FILES if p.name.endswith(".patch.yaml")]
MANIFESTS = [p for p in YAML_FILES if p not in KUSTOMIZATIONS and p not in JSON_PATCHES]


def _id(path: Path) -> str:
    return str(path.relative_to(DEPLOY))


def _objects() -> list[tuple[Path, dict[str, Any]]]:
    return [(path, doc) for path in MANIFESTS for doc in load_all(path)]


def _workloads(names: tuple[str, ...] = ()) -> list[Any]:
    return [
        pytest.param(p, d, id=f"{_id(p)}:{d['metadata']['name']}")
        for p, d in _objects()
        if d["kind"] in ("Deployment", "StatefulSet", "Pod") and (not names or p.name in names)
    ]


def _containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*spec.get("initContainers", []), *spec["containers"]]


def _gateway_overlay(overlay: str) -> dict[str, Any]:
    """The gateway Deployment with an overlay's JSON patches applied (what kustomize does)."""
    (document,) = load_all(DEPLOY / "base" / "gateway.yaml")
    kustomization = load_all(DEPLOY / overlay / "kustomization.yaml")[0]
    for entry in kustomization.get("patches", []):
        if entry["path"].endswith(".patch.yaml"):
            document = apply_json_patch(document, load_all(DEPLOY / overlay / entry["path"])[0])
    return document


def test_deploy_tree_has_the_expected_layout() -> None:
    """The base, the Redis overlay, the webhook and the pools are all there."""
    expected = {
        "base/kustomization.yaml",
        "overlays/redis/kustomization.yaml",
        "webhook/kustomization.yaml",
        "pools/kustomization.yaml",
    }
    assert expected <= {_id(p) for p in KUSTOMIZATIONS}
    assert (DEPLOY / "dashboards" / "saar.json").is_file()


@pytest.mark.parametrize("path", MANIFESTS, ids=_id)
def test_manifest_validates_strictly(path: Path) -> None:
    """Each Kubernetes object validates in strict mode; only cert-manager CRDs are skipped."""
    documents = load_all(path)
    assert documents, f"{path} has no documents"
    for document in documents:
        if document["kind"] in CRD_KINDS:
            assert document["apiVersion"] == "cert-manager.io/v1"
            continue
        validate(document)


def test_skipped_kinds_are_exactly_the_cert_manager_crds() -> None:
    """The kinds without a bundled schema are exactly Issuer and Certificate."""
    unknown: set[str] = set()
    for _, document in _objects():
        try:
            kubernetes_validate.validate(document, "1.33.0", strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            unknown.add(document["kind"])
    assert unknown == CRD_KINDS


def test_strict_validation_rejects_a_misspelt_field(gateway: dict[str, Any]) -> None:
    """The validator really is strict: an unknown container field fails."""
    broken = copy.deepcopy(gateway)
    broken["spec"]["template"]["spec"]["initContainers"][0]["restartPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(broken)


@pytest.mark.parametrize("path", KUSTOMIZATIONS, ids=_id)
def test_kustomization_references_existing_files(path: Path) -> None:
    """Every resource and patch a kustomization names exists."""
    (kustomization,) = load_all(path)
    assert kustomization["kind"] == "Kustomization"
    for resource in kustomization.get("resources", []):
        assert (path.parent / resource).exists(), resource
    for patch in kustomization.get("patches", []):
        assert (path.parent / patch["path"]).is_file(), patch["path"]


@pytest.mark.parametrize("path", JSON_PATCHES, ids=_id)
def test_json_patches_apply_to_the_gateway(path: Path, gateway: dict[str, Any]) -> None:
    """Each JSON 6902 patch applies to the base gateway and the result validates."""
    (operations,) = load_all(path)
    assert isinstance(operations, list)
    validate(apply_json_patch(gateway, operations))


_KUBECTL = shutil.which("kubectl")


@pytest.mark.skipif(_KUBECTL is None, reason="kubectl (with kustomize) is not installed")
@pytest.mark.parametrize("target", ["base", "overlays/redis", "webhook", "pools"])
def test_kustomize_build_validates(target: str) -> None:
    """`kubectl kustomize` renders each kustomization, and every rendered object validates."""
    assert _KUBECTL is not None
    rendered = subprocess.run(
        [_KUBECTL, "kustomize", str(DEPLOY / target)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    kinds = []
    for document in yaml.safe_load_all(rendered):
        kinds.append(document["kind"])
        if document["kind"] not in CRD_KINDS:
            validate(document)
    assert kinds


def test_redis_overlay_renders_redis_state_and_three_replicas() -> None:
    """The overlay's gateway runs 3 replicas with the Redis password from the Secret."""
    gateway = _gateway_overlay("overlays/redis")
    assert 3 == gateway["spec"]["replicas"]
    saar = pod_spec(gateway)["initContainers"][0]
    env = {e["name"]: e for e in saar["env"]}
    (config_map,) = load_all(DEPLOY / "overlays/redis/generated/saar-config.yaml")
    settings = parse_settings(yaml.safe_load(config_map["data"]["config.yaml"]))
    assert "redis" == settings.state.backend.value
    assert settings.state.password_env in env
    secret = env[str(settings.state.password_env)]["valueFrom"]["secretKeyRef"]
    (redis,) = [
        d for d in load_all(DEPLOY / "overlays/redis/redis.yaml") if d["kind"] == "Deployment"
    ]
    redis_env = {e["name"]: e for e in pod_spec(redis)["containers"][0]["env"]}
    assert secret == redis_env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert "saar-redis:6379" == settings.state.redis_address


def test_generated_files_are_up_to_date() -> None:
    """`scripts/gen_deploy.py --check` passes on the committed tree."""
    result = subprocess.run(
        [sys.executable, "scripts/gen_deploy.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert 0 == result.returncode, result.stderr


def test_gen_deploy_check_fails_on_a_stale_file(tmp_path: Path) -> None:
    """`--check` exits 1 and names the file when a generated ConfigMap is edited by hand."""
    copy_root = tmp_path / "repo"
    for part in ("scripts", "src", "envoy", "config", "deploy"):
        shutil.copytree(ROOT / part, copy_root / part, ignore=shutil.ignore_patterns("__pycache__"))
    stale = copy_root / "deploy/base/generated/saar-config.yaml"
    stale.write_text(stale.read_text(encoding="utf-8") + "# edited\n", encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "scripts/gen_deploy.py", "--check"],
        cwd=copy_root,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert 1 == result.returncode
    assert "deploy/base/generated/saar-config.yaml" in result.stderr


def test_generated_config_maps_hold_the_sources_verbatim() -> None:
    """The ConfigMaps carry envoy/kubernetes.yaml and config/kubernetes.yaml byte for byte."""
    (envoy,) = load_all(DEPLOY / "base/generated/envoy-config.yaml")
    (config,) = load_all(DEPLOY / "base/generated/saar-config.yaml")
    assert (ROOT / "envoy/kubernetes.yaml").read_text(encoding="utf-8") == envoy["data"][
        "envoy.yaml"
    ]
    assert (ROOT / "config/kubernetes.yaml").read_text(encoding="utf-8") == config["data"][
        "config.yaml"
    ]


def test_config_hash_differs_between_base_and_redis() -> None:
    """Each variant stamps its own config hash, so switching backends rolls the pods."""
    base = _gateway_overlay("base")["spec"]["template"]["metadata"]["annotations"]
    redis = _gateway_overlay("overlays/redis")["spec"]["template"]["metadata"]["annotations"]
    assert re.fullmatch(r"[0-9a-f]{16}", base["saar.io/config-hash"])
    assert base["saar.io/config-hash"] != redis["saar.io/config-hash"]


def test_envoy_bootstrap_validates() -> None:
    """`envoy --mode validate` accepts envoy/kubernetes.yaml."""
    result = envoy_validate(ROOT / "envoy/kubernetes.yaml")
    assert 0 == result.returncode, result.stdout + result.stderr


def test_envoy_and_saar_config_agree_on_pools() -> None:
    """Pools are Envoy clusters on headless Services; the default route is the fail-open pool."""
    bootstrap = yaml.safe_load((ROOT / "envoy/kubernetes.yaml").read_text(encoding="utf-8"))
    settings = parse_settings(
        yaml.safe_load((ROOT / "config/kubernetes.yaml").read_text(encoding="utf-8"))
    )
    clusters = {c["name"]: c for c in bootstrap["static_resources"]["clusters"]}
    services = {d["metadata"]["name"]: d for d in load_all(DEPLOY / "base/pools.yaml")}
    pools = settings.policy.pools
    assert {"vllm-mi300", "vllm-h100"} == set(pools)
    for pool in pools.values():
        cluster = clusters[pool.cluster]
        assert "STRICT_DNS" == cluster["type"]
        assert "RING_HASH" == cluster["lb_policy"]
        assert "outlier_detection" in cluster
        address = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        host = address["address"]["socket_address"]["address"]
        assert "None" == services[host]["spec"]["clusterIP"], "pool Services must be headless"
    listener = bootstrap["static_resources"]["listeners"][0]
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
    routes = manager["route_config"]["virtual_hosts"][0]["routes"]
    assert pools[settings.server.fail_open_pool].cluster == routes[-1]["route"]["cluster"]
    assert "/var/run/saar/saar.sock" == settings.server.grpc_socket
    assert "0.0.0.0:9464" == settings.server.metrics_address


def test_mutation_allow_list_never_admits_envoy_headers() -> None:
    """saar may not set x-envoy-* (or any header outside its own) through ext_proc."""
    text = (ROOT / "envoy/kubernetes.yaml").read_text(encoding="utf-8")
    bootstrap = yaml.safe_load(text)
    manager = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    (ext_proc,) = [
        f for f in manager["typed_config"]["http_filters"] if f["name"].endswith("ext_proc")
    ]
    rules = ext_proc["typed_config"]["mutation_rules"]
    assert rules["disallow_all"] and rules["disallow_is_error"]
    allow = re.compile(rules["allow_expression"]["regex"])
    assert allow.fullmatch("x-saar-cluster") and allow.fullmatch("x-vsr-selected-model")
    for header in ("x-envoy-original-path", "x-envoy-upstream-alt-stat-name", "host", ":path"):
        assert not allow.fullmatch(header), header
    assert "x-envoy" not in rules["allow_expression"]["regex"]
    assert ext_proc["typed_config"]["failure_mode_allow"] is True


def test_gateway_runs_saar_as_a_native_sidecar_before_envoy(gateway: dict[str, Any]) -> None:
    """saar is the first init container (restartPolicy Always, probes); Envoy is main."""
    spec = pod_spec(gateway)
    saar = spec["initContainers"][0]
    assert "saar" == saar["name"]
    assert "Always" == saar["restartPolicy"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert "saar.deploy.probe" in saar[probe]["exec"]["command"], probe
    assert "--alive" in saar["livenessProbe"]["exec"]["command"]
    assert ["envoy"] == [c["name"] for c in spec["containers"]]
    envoy = spec["containers"][0]
    assert "/ready" == envoy["readinessProbe"]["httpGet"]["path"]
    assert "livenessProbe" in envoy
    assert "preStop" in envoy["lifecycle"]


def test_socket_volume_is_shared_by_saar_and_envoy(gateway: dict[str, Any]) -> None:
    """The UDS emptyDir is mounted at the same path in both containers and matches the configs."""
    spec = pod_spec(gateway)
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes["saar-socket"]
    paths = {
        c["name"]: m["mountPath"]
        for c in _containers(spec)
        for m in c["volumeMounts"]
        if m["name"] == "saar-socket"
    }
    assert {"saar": "/var/run/saar", "envoy": "/var/run/saar"} == paths
    bootstrap = yaml.safe_load((ROOT / "envoy/kubernetes.yaml").read_text(encoding="utf-8"))
    (saar_cluster,) = [c for c in bootstrap["static_resources"]["clusters"] if c["name"] == "saar"]
    endpoint = saar_cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    socket = endpoint["address"]["pipe"]["path"]
    assert socket.startswith(paths["envoy"] + "/")
    assert socket in spec["initContainers"][0]["args"]


def test_termination_grace_covers_envoy_and_saar_drains(gateway: dict[str, Any]) -> None:
    """terminationGracePeriodSeconds exceeds Envoy's drain time plus saar's drain_seconds."""
    spec = pod_spec(gateway)
    args = spec["containers"][0]["args"]
    envoy_drain = int(args[args.index("--drain-time-s") + 1])
    settings = parse_settings(
        yaml.safe_load((ROOT / "config/kubernetes.yaml").read_text(encoding="utf-8"))
    )
    assert spec["terminationGracePeriodSeconds"] > envoy_drain + settings.server.drain_seconds


def test_prometheus_annotations_match_the_metrics_port(gateway: dict[str, Any]) -> None:
    """The scrape annotations point at saar's metrics container port."""
    annotations = gateway["spec"]["template"]["metadata"]["annotations"]
    assert "true" == annotations["prometheus.io/scrape"]
    saar = pod_spec(gateway)["initContainers"][0]
    ports = {p["name"]: p["containerPort"] for p in saar["ports"]}
    assert int(annotations["prometheus.io/port"]) == ports["saar-metrics"]
    assert "saar.io/config-hash" in annotations


@pytest.mark.parametrize(("path", "workload"), _workloads())
def test_every_container_has_a_security_context(path: Path, workload: dict[str, Any]) -> None:
    """Every container drops all capabilities, forbids escalation, uses RuntimeDefault."""
    spec = pod_spec(workload)
    for container in _containers(spec):
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False, container["name"]
        assert ["ALL"] == context["capabilities"]["drop"], container["name"]
        seccomp = context.get("seccompProfile") or spec["securityContext"]["seccompProfile"]
        assert "RuntimeDefault" == seccomp["type"], container["name"]
        assert "resources" in container, container["name"]


_OURS = ("gateway.yaml", "redis.yaml", "deployment.yaml", "envoy-gateway.yaml")


@pytest.mark.parametrize(("path", "workload"), _workloads(_OURS))
def test_our_containers_are_non_root_with_read_only_root(
    path: Path, workload: dict[str, Any]
) -> None:
    """saar, Envoy, Redis and the webhook run non-root on a read-only root filesystem."""
    spec = pod_spec(workload)
    for container in _containers(spec):
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True, container["name"]
        pod = spec.get("securityContext", {})
        assert context.get("runAsNonRoot", pod.get("runAsNonRoot")) is True, container["name"]
        assert context.get("runAsUser", pod.get("runAsUser")), container["name"]


def test_vllm_pools_request_their_accelerators() -> None:
    """The MI300 pool asks for amd.com/gpu on MI300 nodes, the H100 pool for nvidia.com/gpu."""
    expected = {
        "vllm-mi300": ("amd.com/gpu", "amd.com/gpu.product-name"),
        "vllm-h100": ("nvidia.com/gpu", "nvidia.com/gpu.product"),
    }
    for name, (resource, label) in expected.items():
        (deployment,) = load_all(DEPLOY / "pools" / f"{name}.yaml")
        spec = pod_spec(deployment)
        container = spec["containers"][0]
        assert resource in container["resources"]["limits"]
        assert label in spec["nodeSelector"]
        assert resource in {t["key"] for t in spec["tolerations"]}
        args = container["args"]
        for flag in ("--enable-prompt-tokens-details", "--enable-prefix-caching"):
            assert flag in args
        assert "auto" in args[args.index("--served-model-name") + 1 :]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert "1" == env["VLLM_ENABLE_RESPONSES_API_STORE"]


def test_webhook_configuration_is_scoped_and_side_effect_free() -> None:
    """The webhook selects labelled pods, has no side effects, a timeout and an explicit policy."""
    (config,) = load_all(DEPLOY / "webhook/mutatingwebhook.yaml")
    (hook,) = config["webhooks"]
    assert {"saar.io/inject": "true"} == hook["objectSelector"]["matchLabels"]
    assert "None" == hook["sideEffects"]
    assert hook["failurePolicy"] in ("Ignore", "Fail")
    assert hook["timeoutSeconds"] <= 10
    assert "/mutate" == hook["clientConfig"]["service"]["path"]
    assert "cert-manager.io/inject-ca-from" in config["metadata"]["annotations"]


def test_dashboard_queries_only_existing_metrics() -> None:
    """Every saar_* series the Grafana dashboard queries is exported by saar."""
    dashboard = json.loads((DEPLOY / "dashboards/saar.json").read_text(encoding="utf-8"))
    exported = set()
    for info in Metrics().describe():
        exported.add(info.name)
        if info.kind == "histogram":
            exported.update({f"{info.name}_bucket", f"{info.name}_sum", f"{info.name}_count"})
    used = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\bsaar_[a-z_]+", target["expr"])
    }
    assert used
    assert set() == used - exported
    for required in (
        "saar_decisions_total",
        "saar_switches_total",
        "saar_hard_locks_total",
        "saar_fail_open_total",
        "saar_extproc_message_seconds_bucket",
        "saar_store_operation_seconds_bucket",
        "saar_store_fallbacks_total",
        "saar_store_breaker_open",
        "saar_config_reloads_total",
    ):
        assert required in used, required


def test_dashboard_panels_tile_the_grid() -> None:
    """Every panel has an integer position inside Grafana's 24-column grid, none overlap,
    and stat panels colour by thresholds that sit where Grafana reads them."""
    dashboard = json.loads((DEPLOY / "dashboards/saar.json").read_text(encoding="utf-8"))
    taken: set[tuple[int, int]] = set()
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        assert all(type(pos[k]) is int for k in ("x", "y", "w", "h")), panel["title"]
        assert 0 <= pos["x"] and pos["w"] > 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        cells = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells
        if panel["type"] == "stat":
            steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
            assert steps and steps[0]["value"] is None, panel["title"]
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert any("saar_transport_errors_total" in expr for expr in exprs)
    assert any("saar_replay_dropped_total" in expr for expr in exprs)
