"""Addresses and their gRPC targets: one server, a DNS name, a list of replicas; and the
URLs of sites that speak the note's HTTP interface."""

from __future__ import annotations

import ipaddress
import json
import socket
from typing import Any

import pytest

from ep_server.client.targets import (
    ROUND_ROBIN,
    Target,
    TargetError,
    is_url,
    look_up,
    look_up_blocking,
    names_to_look_up,
    parse_endpoint,
    parse_url,
    replicas,
    target,
)

V4 = ipaddress.IPv4Address
V6 = ipaddress.IPv6Address


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:50051", "127.0.0.1:50051"),
        ("[::1]:1", "[::1]:1"),
        ("dns:///ep.example.org:50051", "dns:///ep.example.org:50051"),
        ("dns://10.0.0.53/ep.example.org:50051", "dns://10.0.0.53/ep.example.org:50051"),
        ("a:1,b:2", "a:1,b:2"),
        ("a:1, b:2 ,[::1]:3", "a:1,b:2,[::1]:3"),
    ],
)
def test_good_endpoints(text: str, expected: str) -> None:
    assert parse_endpoint(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ep", "expected HOST:PORT"),
        ("dns:ep:1", "expected dns:///NAME:PORT"),
        ("dns:///ep", "expected HOST:PORT"),
        ("dns:///ep:0", "port must be a number"),
        ("dns:///a/ep:1", "dns://RESOLVER/NAME:PORT"),
        ("a:1,,b:2", "an empty entry"),
        ("a:1,", "an empty entry"),
        ("a:1,dns:///b:2", "a dns: name stands alone"),
        ("a:1,b", "expected HOST:PORT, got 'b'"),
    ],
)
def test_bad_endpoints(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_endpoint(text)


def test_one_address_is_given_to_grpc_as_it_is() -> None:
    assert target("ep.example.org:50051") == Target("ep.example.org:50051")
    assert replicas("ep.example.org:50051") == ["ep.example.org:50051"]
    assert names_to_look_up("ep.example.org:50051") == []


def test_a_dns_name_is_spread_over_round_robin() -> None:
    assert target("dns:///ep:1") == Target("dns:///ep:1", ROUND_ROBIN)
    assert names_to_look_up("dns:///ep:1") == []  # gRPC resolves it, and again later
    config = json.loads(dict(ROUND_ROBIN)["grpc.service_config"])
    assert config == {"loadBalancingConfig": [{"round_robin": {}}]}


def test_a_list_of_ipv4_addresses() -> None:
    where = target("127.0.0.1:1,127.0.0.2:2,127.0.0.1:1")
    assert where.target == "ipv4:127.0.0.1:1,127.0.0.2:2"  # each replica once
    assert where.options == (*ROUND_ROBIN, ("grpc.default_authority", "127.0.0.1:1"))


def test_a_list_of_ipv6_addresses() -> None:
    assert target("[::1]:1,[::1]:2").target == "ipv6:[::1]:1,[::1]:2"


def test_names_in_a_list_take_the_ip_version_every_replica_has() -> None:
    found = {"a": [V6("::1"), V4("127.0.0.1")], "b": [V4("127.0.0.2"), V4("127.0.0.3")]}
    where = target("a:1,b:2", found)
    assert where.target == "ipv4:127.0.0.1:1,127.0.0.2:2,127.0.0.3:2"
    assert ("grpc.default_authority", "a:1") in where.options  # TLS checks the name
    assert target("a:1,[::2]:2", {"a": [V4("127.0.0.1"), V6("::1")]}).target == (
        "ipv6:[::1]:1,[::2]:2"
    )


def test_replicas_with_no_ip_version_in_common_are_refused() -> None:
    with pytest.raises(TargetError, match="no IP version in common"):
        target("127.0.0.1:1,[::1]:2")
    with pytest.raises(TargetError, match="no IP version in common"):
        target("a:1,b:2", {"a": [V4("127.0.0.1")], "b": [V6("::1")]})


def test_a_name_not_looked_up_is_refused() -> None:
    with pytest.raises(TargetError, match="'b' has no address"):
        target("a:1,b:2", {"a": [V4("127.0.0.1")]})


def test_only_names_in_lists_are_looked_up() -> None:
    assert names_to_look_up("a:1,127.0.0.1:2,a:3,[::1]:4,b:5") == ["a", "b"]


def _fake_getaddrinfo(table: dict[str, list[str]]) -> Any:
    def getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, 0)) for ip in table[host]]

    return getaddrinfo


async def test_look_up_finds_every_name_off_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    table = {"a": ["127.0.0.1", "127.0.0.1", "fe80::1%lo"], "b": ["127.0.0.2"]}
    monkeypatch.setattr(socket, "getaddrinfo", _fake_getaddrinfo(table))
    expected = {"a": [V4("127.0.0.1"), V6("fe80::1")], "b": [V4("127.0.0.2")]}
    assert await look_up("a:1,b:2") == expected
    assert look_up_blocking("a:1,b:2") == expected


async def test_a_name_that_cannot_be_looked_up_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", _fake_getaddrinfo({"a": ["127.0.0.1"]}))
    with pytest.raises(TargetError, match="cannot look up 'nowhere'"):
        await look_up("a:1,nowhere:2")
    with pytest.raises(TargetError, match="cannot look up 'nowhere'"):
        look_up_blocking("a:1,nowhere:2")


async def test_localhost_is_found_for_real() -> None:
    found = await look_up("localhost:1,127.0.0.1:2")
    assert V4("127.0.0.1") in found["localhost"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("http://host:8080", "http://host:8080/"),
        ("https://EP.Example.org/", "https://ep.example.org/"),
        ("HTTPS://ep.example.org/ep", "https://ep.example.org/ep/"),
        ("http://[::1]:8080/a/b/", "http://[::1]:8080/a/b/"),
    ],
)
def test_good_urls_end_in_a_slash(text: str, expected: str) -> None:
    assert is_url(text)
    assert parse_url(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("http://", "expected http://HOST"),
        ("http://h/ x", "no spaces or control characters"),
        ("http://h/\x1b", "no spaces or control characters"),
        ("http://u@h/", "no user or password"),
        ("http://h/?q=1", "no query or fragment"),
        ("http://h/#top", "no query or fragment"),
        ("http://h:0/", "port must be a number"),
        ("http://h:99999/", "out of range"),
    ],
)
def test_bad_urls(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_url(text)


def test_addresses_are_not_urls() -> None:
    assert not any(map(is_url, ["h:1", "dns:///h:1", "a:1,b:2", "http:80"]))
