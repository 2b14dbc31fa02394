"""The default configuration with every installed plugin, exactly as
`make install` + `make run` serve it: every plugin under plugins/ is loaded,
the seed example gets a YES from the docker plugin, what a plugin cannot or
will not run (too many cores, privileged, a malformed image, a missing kernel
language) is a NO from that plugin, and a static claim offers beside it."""

from __future__ import annotations

import pytest

from ep_server.config import load_settings
from ep_server.testing import EPTestServer, build_registry

DOCKER = "uri://docker-container"
SEED = {"image": "docker.io/example:1.0"}


@pytest.fixture(scope="module")
def ep():
    settings = load_settings(
        environ={},
        overrides={
            "server.listen": "127.0.0.1:0",
            "http.listen": "127.0.0.1:0",  # not the default 8080, which may be taken
            "schedule.ledger": ":memory:",
        },
    )
    server = EPTestServer(settings, build_registry(settings))
    yield server
    server.close()


def reasons(answer, **match):
    return [r for r in answer.get("reasons", []) if all(r.get(k) == v for k, v in match.items())]


def test_every_plugin_under_plugins_is_installed_and_loaded(ep):
    loaded = {p["name"]: p for p in ep.service_info()["plugins"]}
    assert {"static", "docker", "jupyter"} <= set(loaded)
    assert all(p["state"] == "LOADED" for p in loaded.values())
    assert loaded["docker"]["distribution"] == "ep-plugin-docker"
    assert loaded["jupyter"]["distribution"] == "ep-plugin-jupyter"


def test_the_seed_example_gets_yes_from_the_docker_plugin(ep):
    answer = ep.ask(DOCKER, SEED)
    assert answer["responseword"] == "YES"
    assert {o["plugin"] for o in answer["offers"]} == {"docker"}
    assert answer["offers"][0]["servicetype"] == "uri://docker-uws"


def test_ten_thousand_cores_is_a_capacity_no(ep):
    answer = ep.ask(DOCKER, SEED, resources={"cores": {"min": 10_000}})
    assert answer["responseword"] == "NO"
    assert reasons(answer, plugin="docker", cause="CAPACITY")


def test_privileged_is_a_policy_no(ep):
    answer = ep.ask(DOCKER, {**SEED, "privileged": True})
    assert answer["responseword"] == "NO"
    assert reasons(answer, plugin="docker", cause="POLICY")


def test_a_malformed_image_is_a_no_naming_taskinfo_image(ep):
    answer = ep.ask(DOCKER, {"image": "Docker.io/UPPER CASE:tag!"})
    assert answer["responseword"] == "NO"
    assert reasons(answer, plugin="docker", field="taskinfo.image")


def test_a_notebook_in_a_missing_kernel_language_is_a_no_naming_it(ep):
    answer = ep.ask(
        "uri://jupyter-notebook",
        {"notebook": "https://example.org/analysis.ipynb", "kernel": "cobol-kernel-lang"},
    )
    assert answer["responseword"] == "NO"
    assert any("cobol-kernel-lang" in r["message"] for r in reasons(answer, plugin="jupyter"))


def test_a_static_claim_and_the_docker_plugin_both_offer(ep_server):
    static = {
        "claims": [
            {
                "tasktype": DOCKER,
                "servicetype": "uri://rosetta-rest-api",
                "serviceinfo": {"endpoint": "http://inaf.example/rosetta"},
            }
        ]
    }
    ep = ep_server({"plugin": {"static": static}}, allow=["static", "docker"])
    answer = ep.ask(DOCKER, SEED)
    assert answer["responseword"] == "YES"
    assert {(o["plugin"], o["servicetype"]) for o in answer["offers"]} == {
        ("docker", "uri://docker-uws"),
        ("static", "uri://rosetta-rest-api"),
    }
