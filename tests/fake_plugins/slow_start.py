"""A plugin that takes 3 s to configure: for tests of start-up signals."""

from __future__ import annotations

import time

from ep_server import hookimpl


@hookimpl
def ep_configure() -> None:
    time.sleep(3)
