"""The TOML site list."""

from __future__ import annotations

from pathlib import Path

import pytest

from ep_server.client import TLS, Site, SiteListError, load_sites, parse_address, parse_sites


def test_load_sites(tmp_path: Path) -> None:
    path = tmp_path / "sites.toml"
    path.write_text(
        """
[[site]]
name = "lab"
address = "ep.lab.example.org:50051"

[[site]]
name = "cloud"
address = "[::1]:443"
tls = { ca = "ca.pem", cert = "/abs/client.pem", key = "client.key", server_name = "ep" }

[[site]]
name = "public"
address = "ep.example.org:443"
tls = {}
""",
        encoding="utf-8",
    )
    assert load_sites(path) == [
        Site("lab", "ep.lab.example.org:50051"),
        Site(
            "cloud",
            "[::1]:443",
            TLS(tmp_path / "ca.pem", Path("/abs/client.pem"), tmp_path / "client.key", "ep"),
        ),
        Site("public", "ep.example.org:443", TLS()),
    ]


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(SiteListError, match=r"cannot read site list .*nope\.toml"):
        load_sites(tmp_path / "nope.toml")


def test_not_toml(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[[site]\nname=", encoding="utf-8")
    with pytest.raises(SiteListError, match="not valid TOML"):
        load_sites(path)


def problems(data: dict[str, object]) -> str:
    with pytest.raises(SiteListError) as info:
        parse_sites(data, source="sites.toml")
    return str(info.value)


def test_every_problem_is_named_at_once() -> None:
    message = problems(
        {
            "site": [
                {"name": "a", "address": "nohost"},
                {"address": "h:1"},
                {"name": "c", "address": "h:99999", "port": 1},
                {"name": "d", "address": "h:1", "tls": {"cert": "c.pem", "ca": 3, "sni": "x"}},
                "not a table",
            ],
            "sitez": [],
        }
    )
    assert message.startswith("sites.toml: invalid site list:")
    for expected in [
        "unknown key 'sitez'",
        "site #1 ('a'): address: expected HOST:PORT, got 'nohost'",
        "site #2: name: must be a non-empty string, got None",
        "site #3 ('c'): unknown key 'port'",
        "site #3 ('c'): address: port must be a number from 1 to 65535",
        "site #4 ('d'): tls: unknown key 'sni'",
        "site #4 ('d'): tls.ca: must be a non-empty string",
        "site #4 ('d'): tls: cert and key must be given together",
        "site #5: must be a table",
    ]:
        assert expected in message


def test_empty_list() -> None:
    assert "needs at least one [[site]] entry" in problems({})


def test_tls_must_be_a_table() -> None:
    assert "site #1 ('a'): tls: must be a table" in problems(
        {"site": [{"name": "a", "address": "h:1", "tls": True}]}
    )


def test_duplicate_names() -> None:
    message = problems({"site": [{"name": "a", "address": "h:1"}, {"name": "a", "address": "h:2"}]})
    assert "site 'a': name is used by more than one entry" in message


@pytest.mark.parametrize("address", ["127.0.0.1:50051", "[::1]:1", "ep.example.org:65535"])
def test_good_addresses(address: str) -> None:
    assert parse_address(address) == address


@pytest.mark.parametrize("address", ["ep", ":50051", "ep:0", "ep:x", "ep:65536", "[::1:1"])
def test_bad_addresses(address: str) -> None:
    with pytest.raises(ValueError, match=address.replace("[", r"\[")):
        parse_address(address)


def test_a_site_with_replicas() -> None:
    sites = parse_sites(
        {
            "site": [
                {"name": "listed", "addresses": ["ep1.example.org:50051", "10.0.0.2:50051"]},
                {"name": "dns", "address": "dns:///ep.example.org:50051"},
                {"name": "joined", "address": "a:1, b:2"},
            ]
        }
    )
    assert sites == [
        Site("listed", "ep1.example.org:50051,10.0.0.2:50051"),
        Site("dns", "dns:///ep.example.org:50051"),
        Site("joined", "a:1,b:2"),
    ]


def test_bad_replica_lists_are_named() -> None:
    message = problems(
        {
            "site": [
                {"name": "a", "address": "h:1", "addresses": ["h:2"]},
                {"name": "b", "addresses": []},
                {"name": "c", "addresses": ["h:1", ""]},
                {"name": "d", "addresses": "h:1,h:2"},
                {"name": "e", "addresses": ["h:1,h:2"]},
                {"name": "f", "addresses": ["dns:///h:1"]},
                {"name": "g", "addresses": ["h:1", "h"]},
                {"name": "h", "address": "dns:///h"},
            ]
        }
    )
    for expected in [
        "site #1 ('a'): give one of address, addresses and url, not address and addresses",
        "site #2 ('b'): addresses: must be a list of HOST:PORT strings",
        "site #3 ('c'): addresses: must be a list of HOST:PORT strings",
        "site #4 ('d'): addresses: must be a list of HOST:PORT strings",
        "site #5 ('e'): addresses: each entry is one HOST:PORT, got 'h:1,h:2'",
        "site #6 ('f'): addresses: each entry is one HOST:PORT, got 'dns:///h:1'",
        "site #7 ('g'): addresses: expected HOST:PORT, got 'h'",
        "site #8 ('h'): address: 'dns:///h': expected HOST:PORT",
    ]:
        assert expected in message


def test_a_site_that_speaks_the_notes_http_interface_is_named_by_url(tmp_path: Path) -> None:
    sites = parse_sites(
        {
            "site": [
                {"name": "inaf", "url": "https://EP.inaf.example.org"},
                {"name": "plain", "url": "http://127.0.0.1:8080/ep"},
                {"name": "private", "url": "https://ep.lab/", "tls": {"ca": "ca.pem"}},
                {"name": "empty", "url": "https://ep.lab/x/", "tls": {}},
                {"name": "grpc", "address": "h:1"},
            ]
        },
        base=tmp_path,
    )
    assert sites == [
        Site("inaf", "https://ep.inaf.example.org/"),
        Site("plain", "http://127.0.0.1:8080/ep/"),
        Site("private", "https://ep.lab/", TLS(ca=tmp_path / "ca.pem")),
        Site("empty", "https://ep.lab/x/"),  # TLS with the system's roots, as https says
        Site("grpc", "h:1"),
    ]
    assert [site.over_http for site in sites] == [True, True, True, True, False]


def test_bad_url_sites_are_named() -> None:
    message = problems(
        {
            "site": [
                {"name": "a", "url": "http://h/", "tls": {"ca": "ca.pem"}},
                {"name": "b", "url": "http://h/", "address": "h:1"},
                {"name": "c", "address": "https://h/"},
                {"name": "d", "url": "ftp://h/"},
                {"name": "e", "url": "https://me:secret@h/"},
                {"name": "f", "url": ""},
            ]
        }
    )
    for expected in [
        "site #1 ('a'): tls: an http:// URL is plaintext; use https:// for TLS",
        "site #2 ('b'): give one of address, addresses and url, not address and url",
        "site #3 ('c'): address: 'https://h/' is a URL: name it with url = ... instead",
        "site #4 ('d'): url: expected http://HOST[:PORT]/PATH or https://..., got 'ftp://h/'",
        "site #5 ('e'): url: 'https://me:secret@h/': no user or password in the URL",
        "site #6 ('f'): url: must be a non-empty string",
    ]:
        assert expected in message
