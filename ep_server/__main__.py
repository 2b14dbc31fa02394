"""``python -m ep_server``: the same as the ``ep-server`` command."""

from ep_server.cli import run

run()
