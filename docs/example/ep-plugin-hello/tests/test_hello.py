import pytest

from ep_server.errors import StartupError

CONFIG = {"plugin": {"hello": {"endpoint": "http://127.0.0.1:8080/hello"}}}


def test_the_plugin_is_discovered(ep_server):
    ep = ep_server(CONFIG, allow=["hello"])
    # GetServiceInfo lists every installed plugin; the others are blocked here.
    [plugin] = [p for p in ep.service_info()["plugins"] if p["name"] == "hello"]
    assert plugin["name"] == "hello"
    assert plugin["distribution"] == "ep-plugin-hello"
    assert plugin["state"] == "LOADED"
    assert plugin["tasktypes"] == ["uri://hello-world"]


def test_it_offers_the_hello_service(ep_server):
    answer = ep_server(CONFIG, allow=["hello"]).ask("uri://hello-world", {"greeting": "hi"})
    assert answer["responseword"] == "YES"
    [offer] = answer["offers"]
    assert offer["servicetype"] == "uri://hello-service"
    assert offer["serviceinfo"] == {"endpoint": "http://127.0.0.1:8080/hello", "greeting": "hi"}


def test_it_declines_a_bad_greeting(ep_server):
    answer = ep_server(CONFIG, allow=["hello"]).ask("uri://hello-world", {"greeting": 42})
    assert answer["responseword"] == "NO"
    assert answer["reasons"][0]["field"] == "taskinfo.greeting"


def test_it_declines_more_cores_than_the_host_has(ep_server):
    ep = ep_server({**CONFIG, "host": {"cores": 2}}, allow=["hello"])
    answer = ep.ask("uri://hello-world", {}, resources={"cores": {"min": 4}})
    assert answer["responseword"] == "NO"
    assert answer["reasons"][0]["code"] == "INSUFFICIENT_CORES"


def test_a_bad_endpoint_stops_startup(ep_server):
    with pytest.raises(StartupError, match=r"plugin\.hello\.endpoint"):
        ep_server({"plugin": {"hello": {"endpoint": "ftp://x"}}}, allow=["hello"])
