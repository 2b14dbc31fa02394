"""deploy/kubernetes: the kustomize base renders to objects that the
Kubernetes API schemas accept, and its ConfigMap, Secret and Deployment
configure this server the way the manifests assume.

Rendering is kustomize's, for the features the base uses
(:mod:`kustomize_subset`). Validation is kubernetes-validate's (pinned in
pyproject.toml), which bundles the API's JSON schemas: strict mode (an
unknown field is an error), against the oldest Kubernetes the base is meant
for (1.30: it uses the preStop ``sleep`` action, on by default from 1.30)
and the newest schemas the package bundles, with the network refused.
"""

from __future__ import annotations

import base64
import copy
import importlib.metadata
import json
import re
import shutil
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import grpc
import kubernetes_validate
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from kustomize_subset import Unsupported, render

from ep_server.config import Settings, load_settings
from ep_server.host import detect_host
from ep_server.plugins import PluginState, load_registry
from ep_server.server import start_server

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "deploy" / "kubernetes"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
KUBERNETES_VERSIONS = ("1.30", "1.37")
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")

Obj = dict[str, Any]


@pytest.fixture(scope="module")
def objects() -> list[Obj]:
    return render(BASE)


def one(objects: list[Obj], kind: str, name: str | None = None) -> Obj:
    [found] = [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    return found


def pod_of(objects: list[Obj]) -> Obj:
    return one(objects, "Deployment")["spec"]["template"]["spec"]


def container_of(objects: list[Obj]) -> Obj:
    [container] = pod_of(objects)["containers"]
    return container


def pod_environment(objects: list[Obj]) -> dict[str, str]:
    """The ``EP_*`` variables the container gets, Secrets decoded."""
    container = container_of(objects)
    assert "envFrom" not in container
    environ = {}
    for var in container["env"]:
        if "value" in var:
            environ[var["name"]] = var["value"]
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            data = one(objects, "Secret", ref["name"])["data"][ref["key"]]
            environ[var["name"]] = base64.b64decode(data).decode()
    return environ


def mounted_config(objects: list[Obj], root: Path) -> Path:
    """Write the ConfigMap under ``root`` as the pod's volume mount shows it,
    and return the file that ``--config`` names there."""
    pod, container = pod_of(objects), container_of(objects)
    args = container["args"]
    config = PurePosixPath(args[args.index("--config") + 1])
    [mount] = [m for m in container["volumeMounts"] if config.is_relative_to(m["mountPath"])]
    [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert "items" not in volume["configMap"]  # so each key is a file of that name
    data = one(objects, "ConfigMap", volume["configMap"]["name"])["data"]
    path = root / config.relative_to(mount["mountPath"])
    path.write_text(data[path.name], encoding="utf-8")
    return path


@pytest.fixture
def config_path(objects, tmp_path) -> Path:
    return mounted_config(objects, tmp_path)


@pytest.fixture
def settings(objects, config_path) -> Settings:
    """The settings a replica starts with: the ConfigMap's file and the
    Deployment's environment."""
    return load_settings(config_path, environ=pod_environment(objects))


def port_of(listen: str | None) -> int:
    assert listen is not None
    return int(listen.rpartition(":")[2])


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a network connection fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network used: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def validate(obj: Obj, version: str) -> None:
    """Validate strictly against ``version``'s schemas; fail naming the object."""
    try:
        validated = kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = ".".join(str(part) for part in exc.path)
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        pytest.fail(f"{name} against Kubernetes {version}: {where}: {exc.message}")
    assert validated == version  # these schemas exactly, not an older set


# -- rendering and validation -------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_validates_strictly_against_the_bundled_schemas(objects, version, no_network):
    for obj in objects:
        validate(obj, version)


def _misspelt_field(objects: list[Obj]) -> None:
    container_of(objects)["securityContext"]["readOnlyRootFileSystem"] = True


def _replicas_as_text(objects: list[Obj]) -> None:
    one(objects, "Deployment")["spec"]["replicas"] = "three"


def _probe_port_by_name(objects: list[Obj]) -> None:
    # gRPC probes take a port number; a named port is refused by the API.
    container_of(objects)["readinessProbe"]["grpc"]["port"] = "grpc"


@pytest.mark.parametrize("breakage", [_misspelt_field, _replicas_as_text, _probe_port_by_name])
def test_a_broken_manifest_is_refused(objects, breakage: Callable[[list[Obj]], None], no_network):
    broken = copy.deepcopy(objects)
    breakage(broken)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(one(broken, "Deployment"), KUBERNETES_VERSIONS[0], strict=True)


def test_the_base_renders_its_objects_without_a_namespace(objects):
    names = sorted(
        (o["kind"], re.sub(r"-[a-z0-9]{10}$", "-HASH", o["metadata"]["name"])) for o in objects
    )
    assert names == [
        ("ConfigMap", "ep-server-config-HASH"),
        ("Deployment", "ep-server"),
        ("PodDisruptionBudget", "ep-server"),
        ("Secret", "ep-server-ledger-HASH"),
        ("Service", "ep-server"),
        ("Service", "ep-server-headless"),
    ]
    assert all("namespace" not in o["metadata"] for o in objects)


@pytest.mark.skipif(
    shutil.which("kubectl") is None, reason="kubectl (with kustomize) not installed"
)
def test_the_rendering_is_what_kubectl_kustomize_renders(objects):
    out = subprocess.run(
        ["kubectl", "kustomize", str(BASE)], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    real = [obj for obj in yaml.safe_load_all(out) if obj]

    def key(obj: Obj) -> str:
        return json.dumps(obj, sort_keys=True)

    assert sorted(map(key, objects)) == sorted(map(key, real))


@pytest.mark.parametrize(
    "extra",
    [
        "namePrefix: test-\n",
        "labels:\n  - pairs: {a: b}\n    includeSelectors: true\n",
        "configMapGenerator:\n  - name: c\n    literals: [a=b]\n",
    ],
)
def test_the_renderer_refuses_what_it_does_not_implement(tmp_path, extra):
    (tmp_path / "kustomization.yaml").write_text("resources: []\n" + extra)
    with pytest.raises(Unsupported):
        render(tmp_path)


def test_labels_agree_and_every_selector_selects_the_pods(objects):
    labels = one(objects, "Deployment")["metadata"]["labels"]
    assert labels["app.kubernetes.io/name"] == "ep-server"
    assert all(o["metadata"]["labels"] == labels for o in objects)
    deployment = one(objects, "Deployment")["spec"]
    assert deployment["template"]["metadata"]["labels"] == labels
    selector = deployment["selector"]["matchLabels"]
    assert selector.items() <= labels.items()
    assert one(objects, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"] == selector
    for service in (o for o in objects if o["kind"] == "Service"):
        assert service["spec"]["selector"] == selector
    for spread in pod_of(objects)["topologySpreadConstraints"]:
        assert spread["labelSelector"]["matchLabels"] == selector


# -- the configuration --------------------------------------------------------


def builtin_plugins() -> list[importlib.metadata.EntryPoint]:
    """ep-server's own plugins: what deploy/Dockerfile installs."""
    eps = importlib.metadata.entry_points(group="ep_server")
    return [ep for ep in eps if ep.dist and ep.dist.name == "ep-server"]


def test_the_configmap_loads_with_the_deployments_environment(settings):
    assert settings.server.max_connection_age == 300
    assert 0 < settings.server.max_connection_age_grace < settings.server.max_connection_age
    assert settings.schedule.enabled
    # The Secret's URI reached [schedule] ledger through EP_SCHEDULE__LEDGER.
    assert "ep@postgres:5432/ep" in settings.schedule.ledger
    # Every replica describes and books the same site, whatever its node.
    assert settings.host.cores
    assert settings.host.memory
    registry = load_registry(settings, detect_host(settings.host), builtin_plugins())
    assert [r.name for r in registry.records if r.state is PluginState.LOADED] == ["static"]


def test_the_ledger_uri_reaches_the_server_unchanged(objects, settings):
    assert settings.schedule.ledger == pod_environment(objects)["EP_SCHEDULE__LEDGER"]


def test_the_ledger_secret_is_a_placeholder_without_a_password(objects):
    uri = urlsplit(pod_environment(objects)["EP_SCHEDULE__LEDGER"])
    assert uri.scheme == "postgresql"
    assert uri.password is None


def test_ports_probes_and_services_agree_with_the_config(objects, settings):
    port = port_of(settings.server.listen)
    assert settings.server.listen.rpartition(":")[0] in ("[::]", "0.0.0.0")
    container = container_of(objects)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    http = port_of(settings.http.listen)
    assert settings.http.enabled
    assert settings.http.listen.rpartition(":")[0] in ("[::]", "0.0.0.0")
    assert ports == {"grpc": port, "http": http, "metrics": port_of(settings.metrics.listen)}
    # The kubelet's gRPC probes speak plaintext.
    assert not settings.tls.enabled
    for probe in PROBES:
        assert container[probe]["grpc"]["port"] == port
    services = {o["metadata"]["name"]: o["spec"] for o in objects if o["kind"] == "Service"}
    assert services["ep-server"]["type"] == "ClusterIP"
    assert services["ep-server-headless"]["clusterIP"] == "None"
    # Both Services carry gRPC; the ClusterIP one the HTTP door too (the
    # headless one is for gRPC clients that balance per call).
    served = {
        name: {p["name"]: (p["port"], ports[p["targetPort"]]) for p in spec["ports"]}
        for name, spec in services.items()
    }
    assert served == {
        "ep-server": {"grpc": (port, port), "http": (http, http)},
        "ep-server-headless": {"grpc": (port, port)},
    }


async def test_the_probes_ask_names_the_server_serves(objects, config_path):
    # The server as the ConfigMap configures it, on a free loopback port;
    # its ledger is an in-memory one, as the health service does not use it.
    local = {
        "server.listen": "127.0.0.1:0",
        "http.listen": "127.0.0.1:0",
        "metrics.listen": "127.0.0.1:0",
    }
    settings = load_settings(
        config_path,
        environ=pod_environment(objects),
        overrides={**local, "schedule.ledger": ":memory:"},
    )
    registry = load_registry(settings, detect_host(settings.host), builtin_plugins())
    running = await start_server(settings, registry)
    container = container_of(objects)
    names = {probe: container[probe]["grpc"].get("service", "") for probe in PROBES}
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)

            async def status(name: str) -> int:
                request = health_pb2.HealthCheckRequest(service=name)
                return int((await health.Check(request, timeout=5)).status)

            for probe, name in names.items():
                assert await status(name) == health_pb2.HealthCheckResponse.SERVING, probe
            await running.health.enter_graceful_shutdown()
            ready = await status(names["readinessProbe"])
            assert ready == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        await running.shutdown(0)


# -- the pod ------------------------------------------------------------------


def test_the_pod_runs_unprivileged_on_a_read_only_root(objects):
    pod, container = pod_of(objects), container_of(objects)
    security = pod["securityContext"]
    assert security["runAsNonRoot"] is True
    assert isinstance(security["runAsUser"], int)
    assert security["runAsUser"] > 0
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    locked = container["securityContext"]
    assert locked["allowPrivilegeEscalation"] is False
    assert locked["readOnlyRootFilesystem"] is True
    assert locked["capabilities"] == {"drop": ["ALL"]}
    assert not locked.get("privileged")
    # The pod's user applies (the image's uid).
    assert "runAsUser" not in locked
    assert "runAsGroup" not in locked
    # Nothing writable is mounted: the server writes nothing.
    assert all({"configMap", "secret"} & set(volume) for volume in pod["volumes"])
    assert all(mount["readOnly"] for mount in container["volumeMounts"])
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False  # no stray EP_* variables from Services


def test_resources_are_requested_and_limited(objects):
    resources = container_of(objects)["resources"]
    assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}


def test_shutdown_fits_in_the_termination_grace_period(objects, settings):
    pause = container_of(objects)["lifecycle"]["preStop"]["sleep"]["seconds"]
    grace = pod_of(objects)["terminationGracePeriodSeconds"]
    assert grace > pause + settings.server.grace_period


def test_three_replicas_lose_at_most_one_to_a_rollout_or_a_drain(objects):
    deployment = one(objects, "Deployment")["spec"]
    assert deployment["replicas"] == 3
    assert deployment["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    budget = one(objects, "PodDisruptionBudget")["spec"]
    assert budget.get("maxUnavailable") == 1 or budget.get("minAvailable") == 2


def test_the_image_runs_as_the_pods_user_with_its_ports_and_command(objects, settings):
    lines = [line.split(None, 1) for line in DOCKERFILE.read_text().splitlines()]
    instructions: dict[str, list[str]] = {}
    for parts in lines:
        if len(parts) == 2 and parts[0].isupper():
            instructions.setdefault(parts[0], []).append(parts[1])
    pod = pod_of(objects)["securityContext"]
    assert instructions["USER"][-1] == f"{pod['runAsUser']}:{pod['runAsGroup']}"
    exposed = {int(port) for port in instructions["EXPOSE"][-1].split()}
    listens = (settings.server.listen, settings.http.listen, settings.metrics.listen)
    assert exposed == {port_of(listen) for listen in listens}
    assert json.loads(instructions["ENTRYPOINT"][-1]) == ["ep-server"]
    assert json.loads(instructions["CMD"][-1]) == container_of(objects)["args"]
