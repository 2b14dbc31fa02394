"""docs/http.md against the code: the [http] block's defaults, the routes
table against the proto's rules, and the error example against what a
server sends for that request."""

from __future__ import annotations

import json
import re
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

import docblocks
import pytest

from ep_server.config import RPC_NAMES, HttpSettings, Settings
from ep_server.http.routes import rest_routes
from ep_server.servicer import SERVICE

DOC = Path(docblocks.ROOT) / "docs" / "http.md"


def _block(text: str) -> str:
    [block] = [b for _, b in docblocks.blocks(DOC.read_text()) if text in b]
    return block


def test_the_config_block_shows_the_defaults():
    section = tomllib.loads(_block("[http]"))["http"]
    defaults = HttpSettings()
    assert set(section) == set(HttpSettings.model_fields)
    assert HttpSettings.model_validate(section) == defaults
    # The packaged default config serves HTTP on that address too.
    assert Settings().http.listen == section["listen"] == "127.0.0.1:8080"


def test_the_routes_table_is_the_protos_rules():
    rows = [line.split() for line in _block("POST /v1/ask").splitlines()]
    table = {(method, path, rpc) for method, path, rpc, *_ in rows}
    rules = {(r.method, r.template, r.rpc) for r in rest_routes(SERVICE)}
    assert table == rules
    for method, path, rpc, *who in rows:
        expected = "anonymous by default" if rpc in RPC_NAMES else "needs credentials"
        assert " ".join(who) == expected, (method, path)


def test_the_error_example_is_what_the_server_sends(ep_server):
    example = json.loads(_block('"code": 3'))
    url = ep_server(entry_points=False).http_url
    request = urllib.request.Request(
        f"{url}/v1/ask", data=b'{"tasktype": "docker-container"}',
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    assert caught.value.code == 400
    sent = json.loads(caught.value.read())
    assert sent == example
    assert re.search(r"docker-container", sent["message"])
