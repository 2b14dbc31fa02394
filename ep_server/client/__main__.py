"""``python -m ep_server.client``: the ``ep`` command line."""

from __future__ import annotations

from ep_server.client.cli import run

run()
