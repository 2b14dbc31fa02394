"""End to end: the hooks of the installed plugin, in a real in-process EP, over gRPC."""

from __future__ import annotations

import importlib.metadata
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ep_server.errors import StartupError
from ep_server.testing import EPTestServer

NOTEBOOK = "uri://jupyter-notebook"
EB_NOTEBOOK = "https://www.purl.org/ivoa.net/EB/schema/v1.0/types/executable/jupyter-notebook-1.0"
HOST = {"cores": 4, "memory": "8GiB"}
GiB = 1024**3
SEED = {"notebook": "https://example.org/notebooks/analysis.ipynb"}

Start = Callable[..., EPTestServer]


def start(ep_server: Start, **jupyter: Any) -> EPTestServer:
    return ep_server(allow=["jupyter"], config={"host": HOST, "plugin": {"jupyter": jupyter}})


def codes(answer: dict[str, Any]) -> list[tuple[str, str]]:
    return [(r["code"], r.get("field", "")) for r in answer.get("reasons", [])]


def test_discovered_through_its_entry_point(ep_server: Start) -> None:
    info = start(ep_server).service_info()
    (plugin,) = [p for p in info["plugins"] if p["name"] == "jupyter"]
    assert plugin["state"] == "LOADED"
    assert plugin["distribution"] == "ep-plugin-jupyter"
    assert plugin["version"] == importlib.metadata.version("ep-plugin-jupyter")
    assert sorted(plugin["tasktypes"]) == sorted([NOTEBOOK, EB_NOTEBOOK])
    assert plugin["servicetypes"] == ["uri://jupyter-hub"]
    assert {t["tasktype"] for t in info["tasktypes"]} >= {NOTEBOOK, EB_NOTEBOOK}


def test_with_no_config_the_seed_gets_the_example_hub(ep_server: Start) -> None:
    answer = ep_server(allow=["jupyter"]).ask(NOTEBOOK, SEED)
    assert answer["responseword"] == "YES", answer
    (offer,) = answer["offers"]
    assert offer["servicetype"] == "uri://jupyter-hub"
    assert offer["serviceinfo"] == {"endpoint": "http://example.org/hub"}
    assert offer["plugin"] == "jupyter"


def test_a_language_the_host_lacks_is_named(ep_server: Start) -> None:
    ep = start(ep_server, kernels=["python"])
    answer = ep.ask(NOTEBOOK, {**SEED, "kernel": "R"})
    assert answer["responseword"] == "NO"
    (reason,) = answer["reasons"]
    assert reason["code"] == "KERNEL_UNAVAILABLE"
    assert reason["cause"] == "CAPACITY"
    assert reason["field"] == "taskinfo.kernel"
    assert "'R'" in reason["message"]
    assert not reason.get("retryable", False)
    assert ep.ask(NOTEBOOK, {**SEED, "kernel": "python"})["responseword"] == "YES"


def test_kernels_are_discovered_from_kernelspecs(
    ep_server: Start, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kernel_dir = tmp_path / "kernels" / "julia-1.10"
    kernel_dir.mkdir(parents=True)
    (kernel_dir / "kernel.json").write_text(json.dumps({"argv": [], "language": "julia"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))
    ep = start(ep_server)
    assert ep.ask(NOTEBOOK, {**SEED, "languages": ["julia"]})["responseword"] == "YES"
    answer = ep.ask(NOTEBOOK, {**SEED, "languages": ["julia", "no-such-language"]})
    assert codes(answer) == [("KERNEL_UNAVAILABLE", "taskinfo.languages[1]")]
    assert "'no-such-language'" in answer["reasons"][0]["message"]


def test_kernels_are_discovered_once_at_start_up(
    ep_server: Start, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))
    ep = start(ep_server)
    kernel_dir = tmp_path / "kernels" / "late-kernel"
    kernel_dir.mkdir(parents=True)
    (kernel_dir / "kernel.json").write_text(json.dumps({"argv": [], "language": "late"}))
    answer = ep.ask(NOTEBOOK, {**SEED, "kernel": "late"})
    assert codes(answer) == [("KERNEL_UNAVAILABLE", "taskinfo.kernel")]
    assert start(ep_server).ask(NOTEBOOK, {**SEED, "kernel": "late"})["responseword"] == "YES"


def test_default_config_declines_a_language_the_host_lacks(ep_server: Start) -> None:
    answer = ep_server(allow=["jupyter"]).ask(NOTEBOOK, {**SEED, "kernel": "no-such-language"})
    assert answer["responseword"] == "NO"
    assert codes(answer) == [("KERNEL_UNAVAILABLE", "taskinfo.kernel")]
    assert "'no-such-language'" in answer["reasons"][0]["message"]


def test_several_services_give_several_offers(ep_server: Start) -> None:
    services = [
        {"servicetype": "uri://jupyter-hub", "serviceinfo": {"endpoint": "https://hub.example"}},
        {
            "servicetype": "uri://binder-hub",
            "serviceinfo": {"endpoint": "https://mybinder.example"},
        },
    ]
    ep = start(ep_server, services=services)
    answer = ep.ask(EB_NOTEBOOK, {"notebook": {"location": "https://example.org/nb.ipynb"}})
    assert answer["responseword"] == "YES", answer
    assert [(o["servicetype"], o["serviceinfo"]["endpoint"]) for o in answer["offers"]] == [
        ("uri://jupyter-hub", "https://hub.example"),
        ("uri://binder-hub", "https://mybinder.example"),
    ]
    plugin = next(p for p in ep.service_info()["plugins"] if p["name"] == "jupyter")
    assert plugin["servicetypes"] == ["uri://jupyter-hub", "uri://binder-hub"]


def test_local_notebooks_under_a_root(ep_server: Start, tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "nb.ipynb").write_text("{}")
    (tmp_path / "secret.ipynb").write_text("{}")
    ep = start(ep_server, notebook_roots=[str(tmp_path / "root")])
    assert ep.ask(NOTEBOOK, {"location": f"{tmp_path}/root/nb.ipynb"})["responseword"] == "YES"
    escape = ep.ask(NOTEBOOK, {"notebook": f"{tmp_path}/root/../secret.ipynb"})
    assert codes(escape) == [("NOTEBOOK_OUTSIDE_ROOTS", "taskinfo.notebook")]
    assert escape["reasons"][0]["cause"] == "REQUEST"


def test_a_decline_lists_every_problem(ep_server: Start) -> None:
    ep = start(ep_server, kernels=["python"], max_memory="2GiB")
    answer = ep.ask(
        NOTEBOOK,
        {"notebook": "ftp://example.org/nb.ipynb", "languages": ["python", "R", 7]},
        resources={"cores": {"min": 5}, "memory": {"min": 3 * GiB}},
    )
    assert answer["responseword"] == "NO"
    assert codes(answer) == [
        ("INVALID_NOTEBOOK_LOCATION", "taskinfo.notebook"),
        ("INVALID_KERNEL", "taskinfo.languages[2]"),
        ("KERNEL_UNAVAILABLE", "taskinfo.languages[1]"),
        ("INSUFFICIENT_CORES", "resources.cores.min"),
        ("INSUFFICIENT_MEMORY", "resources.memory.min"),
    ]


def test_a_maximum_above_the_limit_is_capped_in_the_offer(ep_server: Start) -> None:
    ep = start(ep_server, max_cores=2)
    answer = ep.ask(NOTEBOOK, SEED, resources={"cores": {"min": 1, "max": 16}})
    assert answer["responseword"] == "YES", answer
    (offer,) = answer["offers"]
    assert offer["resources"]["cores"] == {"min": 1, "max": 2}
    assert offer["resources"]["memory"] == {"max": 8 * GiB}
    assert offer["message"] == "cores capped at 2 (the per-task limit of cores)"


def test_a_minimum_at_the_host_limit_fits(ep_server: Start) -> None:
    answer = start(ep_server).ask(NOTEBOOK, SEED, resources={"cores": {"min": 4}})
    assert answer["responseword"] == "YES", answer
    answer = start(ep_server).ask(NOTEBOOK, SEED, resources={"cores": {"min": 10000}})
    assert codes(answer) == [("INSUFFICIENT_CORES", "resources.cores.min")]
    assert answer["reasons"][0]["cause"] == "CAPACITY"


def test_urls_may_be_refused_by_policy(ep_server: Start) -> None:
    answer = start(ep_server, allow_urls=False).ask(NOTEBOOK, SEED)
    assert codes(answer) == [("NOTEBOOK_URL_REFUSED", "taskinfo.notebook")]
    assert answer["reasons"][0]["cause"] == "POLICY"


def test_a_bad_config_stops_start_up_naming_the_key(ep_server: Start) -> None:
    with pytest.raises(StartupError) as caught:
        start(ep_server, max_cores=0, colour="blue", max_memory="8GiB")
    message = str(caught.value)
    assert "plugin.jupyter.max_cores" in message
    assert "plugin.jupyter.colour" in message
    assert "max_memory" not in message
