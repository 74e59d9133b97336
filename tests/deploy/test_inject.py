"""`saar inject`: the sidecar, the volumes and the Envoy bootstrap patch, idempotently."""

from __future__ import annotations

import argparse
import copy
import io
from pathlib import Path
from typing import Any

import pytest
import yaml

from saar.deploy.command import register
from saar.deploy.inject import (
    INJECTED_ANNOTATION,
    InjectError,
    InjectOptions,
    dump_yaml,
    inject_documents,
    inject_pod_template,
    load_documents,
    patch_bootstrap,
    sidecar_container,
)
from saar.policy.headers import CONTRACT_HEADERS

from .conftest import DEPLOY, ROOT, envoy_validate, load_all, pod_spec, validate

EXAMPLE = DEPLOY / "examples" / "envoy-gateway.yaml"


def _example() -> list[Any]:
    return load_all(EXAMPLE)


def _inject(documents: list[Any], **options: Any) -> list[Any]:
    return inject_documents(documents, InjectOptions(**options)).documents


def _run_cli(argv: list[str], stdin: str = "", monkeypatch: Any = None) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="saar")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    out, err = io.StringIO(), io.StringIO()
    assert monkeypatch is not None
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    monkeypatch.setattr("sys.stdout", out)
    monkeypatch.setattr("sys.stderr", err)
    code: int = args.func(args)
    return code, out.getvalue(), err.getvalue()


def _bootstrap(documents: list[Any]) -> dict[str, Any]:
    (config_map,) = [d for d in documents if d["kind"] == "ConfigMap"]
    bootstrap: dict[str, Any] = yaml.safe_load(config_map["data"]["envoy.yaml"])
    return bootstrap


def test_injected_example_validates_strictly() -> None:
    """The example gateway, injected, still validates against the Kubernetes schemas."""
    for document in _inject(_example()):
        validate(document)


def test_inject_is_idempotent() -> None:
    """Injecting twice gives exactly the same YAML as injecting once."""
    once = dump_yaml(_inject(_example()))
    twice = dump_yaml(_inject(load_documents(once)))
    assert once == twice


def test_inject_adds_a_native_sidecar_and_shares_the_socket() -> None:
    """The sidecar is an init container with restartPolicy Always; Envoy mounts the socket dir."""
    documents = _inject(_example())
    (deployment,) = [d for d in documents if d["kind"] == "Deployment"]
    spec = pod_spec(deployment)
    (saar,) = spec["initContainers"]
    assert "Always" == saar["restartPolicy"]
    assert "startupProbe" in saar
    envoy = spec["containers"][0]
    assert {"name": "saar-socket", "mountPath": "/var/run/saar"} in envoy["volumeMounts"]
    volumes = {v["name"] for v in spec["volumes"]}
    assert {"envoy-config", "saar-socket", "saar-config", "saar-tmp", "saar-data"} == volumes
    assert "true" == deployment["spec"]["template"]["metadata"]["annotations"][INJECTED_ANNOTATION]


def test_patched_bootstrap_passes_envoy_validate(tmp_path: Path) -> None:
    """`envoy --mode validate` accepts the bootstrap inject wrote into the ConfigMap."""
    (config_map,) = [d for d in _inject(_example()) if d["kind"] == "ConfigMap"]
    path = tmp_path / "envoy.yaml"
    path.write_text(config_map["data"]["envoy.yaml"], encoding="utf-8")
    result = envoy_validate(path)
    assert 0 == result.returncode, result.stdout + result.stderr


def test_patched_bootstrap_has_saar_filter_route_and_cluster() -> None:
    """ext_proc precedes the router, the cluster-header route is first, x-saar-* is stripped."""
    bootstrap = _bootstrap(_inject(_example()))
    listener = bootstrap["static_resources"]["listeners"][0]
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
    names = [f["name"] for f in manager["http_filters"]]
    assert ["envoy.filters.http.ext_proc", "envoy.filters.http.router"] == names
    ext_proc = manager["http_filters"][0]["typed_config"]
    assert "saar" == ext_proc["grpc_service"]["envoy_grpc"]["cluster_name"]
    assert ext_proc["failure_mode_allow"] is True
    routes = manager["route_config"]["virtual_hosts"][0]["routes"]
    assert "x-saar-cluster" == routes[0]["route"]["cluster_header"]
    assert "vllm-mi300" == routes[1]["route"]["cluster"], "the old route stays as fail-open default"
    mutations = manager["early_header_mutation_extensions"][0]["typed_config"]["mutations"]
    assert {"remove_on_match": {"key_matcher": {"prefix": "x-saar-"}}} == mutations[0]
    clusters = {c["name"]: c for c in bootstrap["static_resources"]["clusters"]}
    endpoint = clusters["saar"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
    assert "/var/run/saar/saar.sock" == endpoint["endpoint"]["address"]["pipe"]["path"]
    assert 16 * 1024 * 1024 == listener["per_connection_buffer_limit_bytes"]


def test_base_gateway_carries_exactly_the_injected_sidecar(gateway: dict[str, Any]) -> None:
    """The base sidecar is what inject produces; stripping and re-injecting restores it."""
    spec = pod_spec(gateway)
    assert sidecar_container(InjectOptions()) == spec["initContainers"][0]
    assert gateway["spec"]["template"] == inject_pod_template(
        gateway["spec"]["template"], InjectOptions()
    )
    stripped = copy.deepcopy(gateway["spec"]["template"])
    stripped["spec"]["initContainers"] = []
    stripped["spec"]["volumes"] = [
        v for v in stripped["spec"]["volumes"] if "saar" not in v["name"]
    ]
    reinjected = inject_pod_template(stripped, InjectOptions())
    by_name = lambda items: sorted(items, key=lambda item: item["name"])  # noqa: E731
    assert by_name(spec["volumes"]) == by_name(reinjected["spec"]["volumes"])
    assert spec["initContainers"] == reinjected["spec"]["initContainers"]
    assert spec["containers"] == reinjected["spec"]["containers"]


def test_patch_bootstrap_leaves_the_kubernetes_bootstrap_unchanged() -> None:
    """envoy/kubernetes.yaml already is what inject would make of it."""
    bootstrap = yaml.safe_load((ROOT / "envoy/kubernetes.yaml").read_text(encoding="utf-8"))
    assert bootstrap == patch_bootstrap(bootstrap, InjectOptions())


def _manager(bootstrap: dict[str, Any]) -> dict[str, Any]:
    listener = bootstrap["static_resources"]["listeners"][0]
    manager: dict[str, Any] = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return manager


def _kubernetes_bootstrap() -> dict[str, Any]:
    bootstrap: dict[str, Any] = yaml.safe_load(
        (ROOT / "envoy/kubernetes.yaml").read_text(encoding="utf-8")
    )
    return bootstrap


def test_patched_route_copies_every_contract_header() -> None:
    """The x-saar-cluster route echoes each contract header from the request; the default not."""
    routes = _manager(_bootstrap(_inject(_example())))["route_config"]["virtual_hosts"][0]["routes"]
    steered, default = routes
    added = steered["response_headers_to_add"]
    assert list(CONTRACT_HEADERS) == [entry["header"]["key"] for entry in added]
    for entry in added:
        name = entry["header"]["key"]
        assert f"%REQ({name})%" == entry["header"]["value"]
        assert "OVERWRITE_IF_EXISTS_OR_ADD" == entry["append_action"]
    assert "response_headers_to_add" not in default, "the fail-open route echoes nothing"


def test_patched_early_mutation_strips_the_contract_headers() -> None:
    """Client-sent x-saar-* and every contract header are removed before the route is chosen."""
    (extension,) = _manager(_bootstrap(_inject(_example())))["early_header_mutation_extensions"]
    mutations = extension["typed_config"]["mutations"]
    assert [
        {"remove_on_match": {"key_matcher": {"prefix": "x-saar-"}}},
        *({"remove": name} for name in CONTRACT_HEADERS),
    ] == mutations


def test_older_early_mutation_gains_the_contract_headers() -> None:
    """saar's extension from an older inject is completed in place; operator mutations stay."""
    bootstrap = _kubernetes_bootstrap()
    (extension,) = _manager(bootstrap)["early_header_mutation_extensions"]
    strip_saar = {"remove_on_match": {"key_matcher": {"prefix": "x-saar-"}}}
    extension["typed_config"]["mutations"] = [{"remove": "x-operator"}, strip_saar]
    patched = patch_bootstrap(bootstrap, InjectOptions())
    (extension,) = _manager(patched)["early_header_mutation_extensions"]
    assert [
        {"remove": "x-operator"},
        strip_saar,
        *({"remove": name} for name in CONTRACT_HEADERS),
    ] == extension["typed_config"]["mutations"]
    assert patched == patch_bootstrap(patched, InjectOptions())


def test_patched_ext_proc_skips_response_headers_by_default() -> None:
    """Two messages by default; saar turns response headers on per request (mode_override)."""
    manager = _manager(_bootstrap(_inject(_example())))
    ext_proc = manager["http_filters"][0]["typed_config"]
    assert "SKIP" == ext_proc["processing_mode"]["response_header_mode"]
    assert ext_proc["allow_mode_override"] is True


_OPERATOR_LOG = {
    "name": "envoy.access_loggers.stdout",
    "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog"
    },
}


def test_access_log_is_ensured_and_keeps_the_operators_loggers(tmp_path: Path) -> None:
    """saar's gRPC access log is appended once; the operator's own logger stays first."""
    documents = _example()
    (config_map,) = [d for d in documents if d["kind"] == "ConfigMap"]
    bootstrap = yaml.safe_load(config_map["data"]["envoy.yaml"])
    _manager(bootstrap)["access_log"] = [copy.deepcopy(_OPERATOR_LOG)]
    config_map["data"]["envoy.yaml"] = yaml.safe_dump(bootstrap, sort_keys=False)
    once = _inject(documents)
    entries = _manager(_bootstrap(once))["access_log"]
    assert [_OPERATOR_LOG["name"], "envoy.access_loggers.http_grpc"] == [e["name"] for e in entries]
    assert _OPERATOR_LOG == entries[0]
    saar = entries[1]
    header_filter = saar["filter"]["header_filter"]
    assert {"name": "x-vsr-replay-id", "present_match": True} == header_filter["header"]
    common = saar["typed_config"]["common_config"]
    assert "saar" == common["log_name"]
    assert "saar" == common["grpc_service"]["envoy_grpc"]["cluster_name"]
    assert ["x-vsr-replay-id"] == saar["typed_config"]["additional_request_headers_to_log"]
    assert dump_yaml(once) == dump_yaml(_inject(load_documents(dump_yaml(once))))
    path = tmp_path / "envoy.yaml"
    path.write_text(yaml.safe_dump(_bootstrap(once)), encoding="utf-8")
    result = envoy_validate(path)
    assert 0 == result.returncode, result.stdout + result.stderr


def test_stale_saar_access_log_is_replaced_in_place() -> None:
    """An older saar access logger is replaced where it stands; other gRPC loggers stay."""
    bootstrap = _kubernetes_bootstrap()
    manager = _manager(bootstrap)
    (canonical,) = manager["access_log"]
    stale = copy.deepcopy(canonical)
    stale["typed_config"]["common_config"]["buffer_flush_interval"] = "5s"
    del stale["filter"]
    other_grpc = copy.deepcopy(canonical)
    other_grpc["typed_config"]["common_config"]["log_name"] = "operator"
    other_grpc["typed_config"]["common_config"]["grpc_service"] = {
        "envoy_grpc": {"cluster_name": "als"}
    }
    manager["access_log"] = [stale, other_grpc, copy.deepcopy(_OPERATOR_LOG)]
    patched = patch_bootstrap(bootstrap, InjectOptions())
    assert [canonical, other_grpc, _OPERATOR_LOG] == _manager(patched)["access_log"]
    assert patched == patch_bootstrap(patched, InjectOptions())


def test_older_injection_upgrades_to_the_kubernetes_bootstrap() -> None:
    """A bootstrap injected before docs/design/0004 becomes envoy/kubernetes.yaml again."""
    current = _kubernetes_bootstrap()
    old = copy.deepcopy(current)
    manager = _manager(old)
    del manager["access_log"]
    (steered, _) = manager["route_config"]["virtual_hosts"][0]["routes"]
    del steered["response_headers_to_add"]
    (extension,) = manager["early_header_mutation_extensions"]
    del extension["typed_config"]["mutations"][1:]
    manager["http_filters"][0]["typed_config"]["processing_mode"]["response_header_mode"] = "SEND"
    assert current == patch_bootstrap(old, InjectOptions())


def test_options_set_image_configmap_and_socket_dir() -> None:
    """--image, --config-configmap and --socket-dir reach the sidecar, volumes and Envoy cluster."""
    documents = _inject(
        _example(), image="reg.example/saar:9", config_configmap="my-cfg", socket_dir="/run/x"
    )
    (deployment,) = [d for d in documents if d["kind"] == "Deployment"]
    spec = pod_spec(deployment)
    saar = spec["initContainers"][0]
    assert "reg.example/saar:9" == saar["image"]
    assert "/run/x/saar.sock" in saar["args"]
    assert {"name": "saar-config", "configMap": {"name": "my-cfg"}} in spec["volumes"]
    assert {"name": "saar-socket", "mountPath": "/run/x"} in spec["containers"][0]["volumeMounts"]
    clusters = {c["name"]: c for c in _bootstrap(documents)["static_resources"]["clusters"]}
    endpoint = clusters["saar"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
    assert "/run/x/saar.sock" == endpoint["endpoint"]["address"]["pipe"]["path"]


def test_reinjecting_with_a_new_image_upgrades_in_place() -> None:
    """A second inject with another image replaces the sidecar instead of adding one."""
    first = _inject(_example(), image="saar:1")
    second = _inject(first, image="saar:2")
    (deployment,) = [d for d in second if d["kind"] == "Deployment"]
    images = [c["image"] for c in pod_spec(deployment)["initContainers"]]
    assert ["saar:2"] == images


def test_no_envoy_container_is_an_error() -> None:
    """A workload without an Envoy container is refused, saying what was looked for."""
    (deployment,) = [d for d in _example() if d["kind"] == "Deployment"]
    container = pod_spec(deployment)["containers"][0]
    container.update(name="app", image="nginx:1.27", command=["nginx"])
    with pytest.raises(InjectError, match="no workload with an Envoy container"):
        _inject([deployment])
    with pytest.raises(InjectError, match="no Envoy container found"):
        inject_pod_template(deployment["spec"]["template"], InjectOptions())


def test_several_envoy_containers_need_a_name() -> None:
    """Two Envoy-like containers are ambiguous unless --envoy-container names one."""
    (deployment,) = [d for d in _example() if d["kind"] == "Deployment"]
    spec = pod_spec(deployment)
    twin = copy.deepcopy(spec["containers"][0])
    twin["name"] = "envoy-2"
    spec["containers"].append(twin)
    with pytest.raises(InjectError, match="several Envoy-like containers"):
        inject_pod_template(deployment["spec"]["template"], InjectOptions())
    injected = inject_pod_template(
        deployment["spec"]["template"], InjectOptions(envoy_container="envoy-2")
    )
    mounts = [[m["name"] for m in c["volumeMounts"]] for c in injected["spec"]["containers"]]
    assert [["envoy-config"], ["envoy-config", "saar-socket"]] == mounts


def test_saar_as_a_regular_container_is_refused() -> None:
    """An old-style saar container (not a native sidecar) is an error, not a second saar."""
    (deployment,) = [d for d in _example() if d["kind"] == "Deployment"]
    pod_spec(deployment)["containers"].append({"name": "saar", "image": "saar:0"})
    with pytest.raises(InjectError, match="regular container"):
        _inject([deployment])


def test_rds_listener_is_refused() -> None:
    """A listener taking its routes over RDS cannot be patched and says so."""
    bootstrap = _bootstrap(_example())
    manager = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    del manager["typed_config"]["route_config"]
    manager["typed_config"]["rds"] = {"route_config_name": "x"}
    with pytest.raises(InjectError, match="RDS"):
        patch_bootstrap(bootstrap, InjectOptions())


def test_bootstrap_without_http_listener_is_refused() -> None:
    """A bootstrap with no HTTP connection manager is an error."""
    with pytest.raises(InjectError, match="no HTTP listener"):
        patch_bootstrap({"static_resources": {"listeners": []}}, InjectOptions())


def test_missing_bootstrap_configmap_is_a_note_not_an_error() -> None:
    """Without the bootstrap ConfigMap in the input, the pod is injected and a note explains."""
    deployment = [d for d in _example() if d["kind"] == "Deployment"]
    result = inject_documents(deployment, InjectOptions())
    assert any("llm-gateway-envoy" in note for note in result.notes)
    assert pod_spec(result.documents[0])["initContainers"][0]["name"] == "saar"


def test_missing_bootstrap_key_is_an_error() -> None:
    """A ConfigMap without the key Envoy reads is an error naming it."""
    documents = _example()
    config_map = documents[0]
    config_map["data"] = {"other.yaml": config_map["data"]["envoy.yaml"]}
    with pytest.raises(InjectError, match=r"has no key 'envoy\.yaml'"):
        _inject(documents)


def test_cli_reads_stdin_and_writes_stdout(monkeypatch: pytest.MonkeyPatch) -> None:
    """`saar inject` filters YAML from stdin to stdout, the same as the library."""
    code, out, err = _run_cli(["inject"], EXAMPLE.read_text(encoding="utf-8"), monkeypatch)
    assert (0, "") == (code, err)
    assert dump_yaml(_inject(_example())) == out


def test_cli_reports_errors_with_exit_code_2(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bad input exits 2 with a `saar inject:` message and no output."""
    code, out, err = _run_cli(["inject"], "kind: Service\napiVersion: v1\n", monkeypatch)
    assert (2, "") == (code, out)
    assert err.startswith("saar inject: no workload with an Envoy container")
    code, out, err = _run_cli(["inject"], "a: [unclosed\n", monkeypatch)
    assert 2 == code
    assert "not valid YAML" in err


def test_cli_writes_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """-f/-o read and write files; notes go to stderr."""
    source = tmp_path / "in.yaml"
    source.write_text(dump_yaml([d for d in _example() if d["kind"] == "Deployment"]))
    target = tmp_path / "out.yaml"
    code, out, err = _run_cli(["inject", "-f", str(source), "-o", str(target)], "", monkeypatch)
    assert (0, "") == (code, out)
    assert "note:" in err
    (deployment,) = load_all(target)
    validate(deployment)
