"""Every reason code this plugin gives, with its cause.

* ``BAD_GREETING`` (REQUEST): the taskinfo's greeting is not a string.
* ``INSUFFICIENT_CORES`` (CAPACITY): more cores asked for than this host has;
  the reason comes from ``ep_server.fit_resources``.
"""

from __future__ import annotations

from ep_server import Cause, Reason

BAD_GREETING = "BAD_GREETING"


def bad_greeting(greeting: object) -> Reason:
    """The taskinfo's greeting is not a string."""
    message = f"greeting must be a string, not {type(greeting).__name__}"
    return Reason(BAD_GREETING, message, Cause.REQUEST, field="taskinfo.greeting")
