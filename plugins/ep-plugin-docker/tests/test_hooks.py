"""End to end: the hooks of the installed plugin, in a real in-process EP, over gRPC.

Host capacity comes from the ``[host]`` config section, never the machine.
Answers are in the protocol's JSON form (int64 values are strings there).
"""

from __future__ import annotations

import importlib.metadata
import socket
import tempfile
import tomllib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ep_plugin_docker.decide import TASKTYPES
from ep_server.config import default_config_text
from ep_server.errors import StartupError
from ep_server.testing import EPTestServer

DOCKER = "uri://docker-container"
EB_DOCKER = "https://www.purl.org/ivoa.net/EB/schema/v1.0/types/executable/docker-container-1.0"
NOTE_EXAMPLE = {"image": "docker.io/example:1.0"}
HOST = {"cores": 4, "memory": "8GiB", "architecture": "x86_64", "os": "linux"}

Start = Callable[..., EPTestServer]


def _docker(ep_server: Start, **settings: Any) -> EPTestServer:
    config = {"host": HOST, "plugin": {"docker": settings}}
    return ep_server(allow=["docker"], config=config)


def _reasons(answer: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(r["code"], r["cause"], r.get("field", "")) for r in answer.get("reasons", [])]


def test_the_plugin_is_discovered_through_its_entry_point_and_listed(ep_server: Start) -> None:
    info = _docker(ep_server).service_info()
    (plugin,) = [p for p in info["plugins"] if p["name"] == "docker"]
    assert plugin["distribution"] == "ep-plugin-docker"
    assert plugin["version"] == importlib.metadata.version("ep-plugin-docker")
    assert plugin["state"] == "LOADED"
    assert plugin["tasktypes"] == [DOCKER, EB_DOCKER]
    assert plugin["servicetypes"] == ["uri://docker-uws"]
    by_type = {t["tasktype"]: t["services"] for t in info["tasktypes"]}
    for tasktype in TASKTYPES:
        assert by_type[tasktype] == [{"servicetype": "uri://docker-uws", "plugin": "docker"}]


def test_the_note_s_example_gets_yes_from_the_docker_plugin(ep_server: Start) -> None:
    answer = _docker(ep_server).ask(DOCKER, NOTE_EXAMPLE)
    assert answer["responseword"] == "YES"
    (offer,) = answer["offers"]
    assert offer["plugin"] == "docker"
    assert offer["servicetype"] == "uri://docker-uws"
    assert offer["serviceinfo"] == {"endpoint": "http://example.org/dkuws"}
    assert offer["resources"] == {"cores": {"max": 4}, "memory": {"max": 8 * 1024**3}}


def test_the_execution_broker_alias_and_taskinfo_are_understood(ep_server: Start) -> None:
    taskinfo = {
        "image": {
            "locations": ["ghcr.io/ivoa/oligia-webtop:ubuntu-2022.01.13"],
            "platform": {"architecture": "amd64", "os": "linux"},
        },
        "privileged": False,
        "entrypoint": "/start",
        "environment": {"LANG": "C"},
        "network": {"ports": [{"internal": {"port": 3000}, "protocol": "HTTP"}]},
    }
    answer = _docker(ep_server).ask(EB_DOCKER, taskinfo)
    assert answer["responseword"] == "YES", answer
    assert answer["offers"][0]["plugin"] == "docker"


def test_ten_thousand_cores_is_no_for_capacity(ep_server: Start) -> None:
    answer = _docker(ep_server).ask(DOCKER, NOTE_EXAMPLE, resources={"cores": {"min": 10_000}})
    assert answer["responseword"] == "NO"
    assert _reasons(answer) == [("INSUFFICIENT_CORES", "CAPACITY", "resources.cores.min")]
    assert answer["reasons"][0]["plugin"] == "docker"


def test_a_maximum_above_the_limit_is_capped_in_the_offer(ep_server: Start) -> None:
    ep = _docker(ep_server, max_memory="1GiB")
    answer = ep.ask(
        DOCKER, NOTE_EXAMPLE, resources={"cores": {"max": 64}, "memory": {"max": 2**40}}
    )
    (offer,) = answer["offers"]
    assert offer["resources"] == {"cores": {"max": 4}, "memory": {"max": 1024**3}}
    assert "cores capped at the limit of 4" in offer["message"]
    assert "memory capped" in offer["message"]


def test_privileged_is_no_for_policy(ep_server: Start) -> None:
    answer = _docker(ep_server).ask(DOCKER, {**NOTE_EXAMPLE, "privileged": True})
    assert answer["responseword"] == "NO"
    assert _reasons(answer) == [("PRIVILEGED_NOT_ALLOWED", "POLICY", "taskinfo.privileged")]


def test_privileged_is_yes_where_the_site_allows_it(ep_server: Start) -> None:
    ep = _docker(ep_server, allow_privileged=True)
    assert ep.ask(DOCKER, {**NOTE_EXAMPLE, "privileged": True})["responseword"] == "YES"


@pytest.mark.parametrize("image", ["docker.io/Example:1.0", "example:", "x@sha256:abc", "a b"])
def test_a_malformed_image_is_no_naming_taskinfo_image(ep_server: Start, image: str) -> None:
    answer = _docker(ep_server).ask(DOCKER, {"image": image})
    assert answer["responseword"] == "NO"
    assert _reasons(answer) == [("INVALID_IMAGE_REFERENCE", "REQUEST", "taskinfo.image")]


def test_a_decline_lists_every_problem(ep_server: Start) -> None:
    taskinfo = {"image": "BAD", "privileged": True, "ports": [{"internal": 80, "protocol": 3}]}
    answer = _docker(ep_server).ask(DOCKER, taskinfo, resources={"memory": {"min": 2**40}})
    assert _reasons(answer) == [
        ("INVALID_IMAGE_REFERENCE", "REQUEST", "taskinfo.image"),
        ("INVALID_FIELD", "REQUEST", "taskinfo.ports[0].protocol"),
        ("PRIVILEGED_NOT_ALLOWED", "POLICY", "taskinfo.privileged"),
        ("INSUFFICIENT_MEMORY", "CAPACITY", "resources.memory.min"),
    ]


def test_the_platform_is_checked_against_the_configured_host(ep_server: Start) -> None:
    config = {"host": {**HOST, "architecture": "aarch64"}}
    ep = ep_server(allow=["docker"], config=config)
    assert ep.ask(DOCKER, {**NOTE_EXAMPLE, "platform": "linux/arm64/v8"})["responseword"] == "YES"
    answer = ep.ask(DOCKER, {**NOTE_EXAMPLE, "platform": "linux/amd64"})
    assert _reasons(answer) == [("UNSUPPORTED_PLATFORM", "CAPACITY", "taskinfo.platform")]


def test_several_configured_services_give_several_offers(ep_server: Start) -> None:
    ep = _docker(
        ep_server,
        services=[
            {"servicetype": "uri://docker-uws", "serviceinfo": {"endpoint": "http://a/uws"}},
            {"servicetype": "uri://docker-batch", "serviceinfo": {"queue": "short"}},
        ],
    )
    answer = ep.ask(DOCKER, NOTE_EXAMPLE)
    assert [(o["servicetype"], o["serviceinfo"]) for o in answer["offers"]] == [
        ("uri://docker-uws", {"endpoint": "http://a/uws"}),
        ("uri://docker-batch", {"queue": "short"}),
    ]
    (plugin,) = [p for p in ep.service_info()["plugins"] if p["name"] == "docker"]
    assert plugin["servicetypes"] == ["uri://docker-uws", "uri://docker-batch"]


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"max_cores": 0}, "plugin.docker.max_cores"),
        ({"allow_privilege": True}, "plugin.docker.allow_privilege"),
        ({"max_memory": "lots"}, "plugin.docker.max_memory"),
        ({"services": [{"servicetype": "no uri"}]}, "plugin.docker.services.0.servicetype"),
    ],
)
def test_an_invalid_config_stops_start_up_naming_the_key(
    ep_server: Start, settings: dict[str, Any], key: str
) -> None:
    with pytest.raises(StartupError, match=key.replace(".", r"\.")):
        _docker(ep_server, **settings)


def test_with_the_default_config_the_docker_plugin_answers(ep_server: Start) -> None:
    # The default config's static claim on docker-container is a fallback:
    # with this plugin installed, this plugin answers instead.
    config = tomllib.loads(default_config_text())
    config["host"] = HOST
    ep = ep_server(allow=["static", "docker"], config=config, listen="127.0.0.1:0")
    answer = ep.ask(DOCKER, NOTE_EXAMPLE)
    assert answer["responseword"] == "YES"
    assert [o["plugin"] for o in answer["offers"]] == ["docker"]
    big = ep.ask(DOCKER, NOTE_EXAMPLE, resources={"cores": {"min": 10_000}})
    assert _reasons(big) == [("INSUFFICIENT_CORES", "CAPACITY", "resources.cores.min")]


def test_a_static_claim_and_the_plugin_both_offer_in_one_answer(ep_server: Start) -> None:
    static = {
        "tasktype": DOCKER,
        "servicetype": "uri://docker-uws",
        "serviceinfo": {"endpoint": "http://static.example/uws"},
    }
    config = {"host": HOST, "plugin": {"static": {"claims": [static]}}}
    answer = ep_server(allow=["static", "docker"], config=config).ask(DOCKER, NOTE_EXAMPLE)
    assert sorted((o["plugin"], o["serviceinfo"]["endpoint"]) for o in answer["offers"]) == [
        ("docker", "http://example.org/dkuws"),
        ("static", "http://static.example/uws"),
    ]


@pytest.fixture
def runtime_socket() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="epd") as name:
        path = f"{name}/docker.sock"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
            server.bind(path)
            server.listen(8)
            yield path


def test_a_reachable_runtime_socket_is_yes(ep_server: Start, runtime_socket: str) -> None:
    answer = _docker(ep_server, runtime_socket=runtime_socket).ask(DOCKER, NOTE_EXAMPLE)
    assert answer["responseword"] == "YES"


def test_an_absent_runtime_socket_is_a_retryable_no(ep_server: Start) -> None:
    with tempfile.TemporaryDirectory(prefix="epd") as name:
        ep = _docker(ep_server, runtime_socket=f"{name}/docker.sock")
        answer = ep.ask(DOCKER, {**NOTE_EXAMPLE, "privileged": True})
    assert answer["responseword"] == "NO"
    assert [(r["code"], r["cause"], r.get("retryable", False)) for r in answer["reasons"]] == [
        ("PRIVILEGED_NOT_ALLOWED", "POLICY", False),
        ("RUNTIME_UNAVAILABLE", "CAPACITY", True),
    ]
