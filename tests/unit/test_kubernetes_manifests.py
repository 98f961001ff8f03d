"""deploy/kubernetes: every manifest is valid for the Kubernetes API (offline schemas), and
the pieces fit together and fit the services: selectors, ports, probes, Secrets, and the
containers' arguments as the services' own settings parsers read them."""

from __future__ import annotations

import copy
import os
import re
import socket
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from fastapi.routing import APIRoute
from pydantic_settings import BaseSettings

from aip_runtime.cli import LogFormat, load_settings
from gateway_service.http_api import api_routes
from gateway_service.http_guard import OPEN_PATHS
from gateway_service.settings import GatewaySettings
from session_service.security import link_exposure
from session_service.settings import SessionSettings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "kubernetes"
if not DEPLOY.is_dir() and not (ROOT / ".git").exists():
    # scripts/check_floors.py runs a copy of tests/ alone, away from the checkout.
    pytest.skip("no checkout around these tests", allow_module_level=True)
#: The oldest Kubernetes the manifests are for (the README says so; native gRPC probes
#: are GA since 1.27), and the newest the installed validator knows.
VERSIONS = ("1.30", kubernetes_validate.latest_version())
#: What the downward API gives the fieldRefs here, as a kubelet would.
FIELD_VALUES = {"metadata.name": "pod-0", "status.podIP": "10.1.2.3"}
SETTINGS: dict[str, type[BaseSettings]] = {"gateway": GatewaySettings, "session": SessionSettings}


def manifests() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            docs.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return docs


DOCS = manifests()


def named(kind: str, name: str) -> dict[str, Any]:
    found = [d for d in DOCS if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for doc in DOCS if doc["kind"] == kind]


def container(deployment: str) -> dict[str, Any]:
    (only,) = named("Deployment", deployment)["spec"]["template"]["spec"]["containers"]
    return only


def secret_value(name: str, key: str) -> str:
    data = named("Secret", name).get("stringData", {})
    assert key in data, f"Secret {name} has no key {key!r}"
    return str(data[key])


def port_number(spec: dict[str, Any], port: int | str) -> int:
    """A container port given by number or by name."""
    if isinstance(port, int):
        return port
    numbers = [p["containerPort"] for p in spec.get("ports", []) if p.get("name") == port]
    assert numbers, f"no container port named {port!r}"
    return int(numbers[0])


def parse_container(deployment: str, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The container's settings, as its service parses them in the pod: environment from
    its env (fieldRefs, Secret keys), ``$(VAR)`` expanded in the arguments, and each
    Secret volume's files written under ``tmp`` in place of its mount path."""
    spec = container(deployment)
    service = spec["name"]
    command = spec["command"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert command == [f"aip-{service}"], command
    assert scripts[command[0]] == f"{service}_service.__main__:main"
    for name in [name for name in os.environ if name.startswith("AIP_")]:
        monkeypatch.delenv(name)
    env: dict[str, str] = {}
    for var in spec.get("env", []):
        source = var.get("valueFrom", {})
        if "fieldRef" in source:
            env[var["name"]] = FIELD_VALUES[source["fieldRef"]["fieldPath"]]
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            env[var["name"]] = secret_value(ref["name"], ref["key"])
        else:
            env[var["name"]] = var["value"]
    settings_class = SETTINGS[service]
    prefix = str(settings_class.model_config["env_prefix"])
    for name, value in env.items():
        if name.startswith(prefix):
            assert name[len(prefix) :].lower() in settings_class.model_fields, name
            monkeypatch.setenv(name, value)
    pod = named("Deployment", deployment)["spec"]["template"]["spec"]
    volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
    mounts: dict[str, Path] = {}
    for mount in spec.get("volumeMounts", []):
        secret = volumes[mount["name"]].get("secret")
        if secret is None:
            continue
        local = tmp / mount["name"]
        local.mkdir()
        for item in secret["items"]:
            (local / item["path"]).write_text(secret_value(secret["secretName"], item["key"]))
        mounts[mount["mountPath"]] = local
    args = []
    for arg in spec["args"]:
        arg = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env[m.group(1)], arg)
        for mount_path, local in mounts.items():
            arg = arg.replace(f"={mount_path}/", f"={local}/")
        args.append(arg)
    return load_settings(settings_class, args)


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_is_valid_offline(version: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the validator tried the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    assert {doc["kind"] for doc in DOCS} >= {
        "Deployment",
        "Service",
        "Secret",
        "PodDisruptionBudget",
    }
    for doc in DOCS:
        kubernetes_validate.validate(doc, version, strict=True)
    # The validator does reject: a field the API does not know, a port that is no number.
    broken = copy.deepcopy(named("Deployment", "aip-gateway"))
    broken["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "http"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, version, strict=True)
    broken = copy.deepcopy(named("Service", "aip-session-link"))
    broken["spec"]["publishNotReady"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, version, strict=True)


def test_the_kustomization_lists_every_manifest_and_image() -> None:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    files = {path.name for path in DEPLOY.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(files)
    images = {image["name"] for image in kustomization["images"]}
    used = {container(d["metadata"]["name"])["image"].split(":")[0] for d in of_kind("Deployment")}
    assert images == used


def test_selectors_match_the_pods_and_ports_exist() -> None:
    for deployment in of_kind("Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    selected = [*of_kind("Service"), *of_kind("PodDisruptionBudget")]
    assert len(selected) == 4
    for doc in selected:
        selector = doc["spec"]["selector"]
        selector = selector.get("matchLabels", selector)
        pods = [
            d
            for d in of_kind("Deployment")
            if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(pods) == 1, doc["metadata"]["name"]
        if doc["kind"] == "Service":
            spec = container(pods[0]["metadata"]["name"])
            for port in doc["spec"]["ports"]:
                port_number(spec, port["targetPort"])
    # A draining replica stays resolvable: its links carry its last sessions.
    link = named("Service", "aip-session-link")["spec"]
    assert link["clusterIP"] == "None" and link["publishNotReadyAddresses"] is True


def test_no_service_link_variable_is_a_setting() -> None:
    """With service links on, a Service named aip-gateway would set AIP_GATEWAY_PORT to
    tcp://...; the pods turn them off and no Service name would make one anyway."""
    settings_vars = {
        (str(cls.model_config["env_prefix"]) + field).upper()
        for cls in SETTINGS.values()
        for field in cls.model_fields
    }
    for service in of_kind("Service"):
        base = service["metadata"]["name"].upper().replace("-", "_")
        made = {f"{base}_SERVICE_HOST", f"{base}_SERVICE_PORT", f"{base}_PORT"}
        for port in service["spec"]["ports"]:
            made |= {
                f"{base}_SERVICE_PORT_{port['name'].upper().replace('-', '_')}",
                f"{base}_PORT_{port['port']}_TCP",
            }
        assert not made & settings_vars, service["metadata"]["name"]
    for deployment in of_kind("Deployment"):
        assert deployment["spec"]["template"]["spec"]["enableServiceLinks"] is False


def test_the_containers_arguments_are_the_services_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "gw").mkdir()
    (tmp_path / "ss").mkdir()
    try:
        gateway = parse_container("aip-gateway", tmp_path / "gw", monkeypatch)
        session = parse_container("aip-session", tmp_path / "ss", monkeypatch)
    except SystemExit:
        pytest.fail(f"a container's arguments do not parse: {capsys.readouterr().err}")
    assert isinstance(gateway, GatewaySettings) and isinstance(session, SessionSettings)
    # One link token on both sides, read from the mounted Secret; the API token differs.
    assert gateway.link_token == session.link_token == secret_value("aip-link", "token")
    assert gateway.session_token == session.auth_token == secret_value("aip-api", "token")
    assert link_exposure(session.host, session.link_token, session.insecure_link) is None
    assert gateway.api_key == secret_value("aip-gateway", "api-key")
    assert session.store_location.startswith("postgresql://")
    # The gateway finds the replicas through the headless Service, on its port.
    link = named("Service", "aip-session-link")
    assert gateway.session_addresses() == [
        f"{link['metadata']['name']}:{link['spec']['ports'][0]['port']}"
    ]
    session_spec, gateway_spec = container("aip-session"), container("aip-gateway")
    assert port_number(gateway_spec, "http") == gateway.port
    assert port_number(session_spec, "grpc") == session.port
    assert port_number(session_spec, "metrics") == session.metrics_port
    assert gateway.gateway_id == session.replica_id == FIELD_VALUES["metadata.name"]
    assert session.advertise_address == f"{FIELD_VALUES['status.podIP']}:{session.port}"
    assert gateway.log_format is session.log_format is LogFormat.JSON
    for name, parsed in (("aip-gateway", gateway), ("aip-session", session)):
        pod = named("Deployment", name)["spec"]["template"]["spec"]
        assert parsed.drain_timeout + 5 <= pod["terminationGracePeriodSeconds"]


def test_probes_reach_the_health_endpoints() -> None:
    gateway = container("aip-gateway")
    routes = {
        route.path
        for route in api_routes.routes
        if isinstance(route, APIRoute) and "GET" in (route.methods or ())
    }
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        http = gateway[probe]["httpGet"]
        # Open without the API key the gateway is given here.
        assert http["path"] in routes and http["path"] in OPEN_PATHS, http
        assert port_number(gateway, http["port"]) == 8000
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/api/health/ready"
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/api/health/live"
    session = container("aip-session")
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert port_number(session, session[probe]["grpc"]["port"]) == 50051


def test_pods_run_unprivileged_within_limits() -> None:
    for deployment in of_kind("Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] > 0
        assert pod["automountServiceAccountToken"] is False
        for spec in pod["containers"]:
            context = spec["securityContext"]
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
            assert {"cpu", "memory"} <= spec["resources"]["requests"].keys()
            assert "memory" in spec["resources"]["limits"]
        volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
        for volume in volumes.values():
            if "secret" in volume:
                for item in volume["secret"]["items"]:
                    secret_value(volume["secret"]["secretName"], item["key"])
