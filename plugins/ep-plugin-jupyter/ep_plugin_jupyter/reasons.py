"""Every reason code this plugin gives, with its cause, and the one builder.

Every code is stable: clients may rely on it. Each reason names the request
field it is about (``taskinfo.notebook``, ``taskinfo.languages[1]``,
``resources.cores.min``...). A code's cause is data here (:data:`CAUSES`),
so a code cannot be given with two causes; the README's table of reason
codes lists the same.
"""

from __future__ import annotations

from ep_server import Cause, Reason
from ep_server.fitting import INSUFFICIENT_CORES, INSUFFICIENT_MEMORY

__all__ = [
    "CAUSES",
    "INSUFFICIENT_CORES",
    "INSUFFICIENT_MEMORY",
    "INVALID_KERNEL",
    "INVALID_NOTEBOOK_LOCATION",
    "INVALID_REQUIREMENTS",
    "KERNEL_UNAVAILABLE",
    "NOTEBOOK_MISSING",
    "NOTEBOOK_NOT_FOUND",
    "NOTEBOOK_OUTSIDE_ROOTS",
    "NOTEBOOK_URL_REFUSED",
    "reason",
]

# Cause REQUEST: the taskinfo cannot be satisfied as written.
NOTEBOOK_MISSING = "NOTEBOOK_MISSING"
INVALID_NOTEBOOK_LOCATION = "INVALID_NOTEBOOK_LOCATION"
NOTEBOOK_OUTSIDE_ROOTS = "NOTEBOOK_OUTSIDE_ROOTS"
NOTEBOOK_NOT_FOUND = "NOTEBOOK_NOT_FOUND"
INVALID_KERNEL = "INVALID_KERNEL"
INVALID_REQUIREMENTS = "INVALID_REQUIREMENTS"

# Cause POLICY: the site's policy refuses it.
NOTEBOOK_URL_REFUSED = "NOTEBOOK_URL_REFUSED"

# Cause CAPACITY: this host lacks what it takes (never retryable here).
# INSUFFICIENT_CORES and INSUFFICIENT_MEMORY come with their reasons from
# ep_server.fit_resources.
KERNEL_UNAVAILABLE = "KERNEL_UNAVAILABLE"

#: Each code's cause.
CAUSES: dict[str, Cause] = {
    **dict.fromkeys(
        (
            NOTEBOOK_MISSING,
            INVALID_NOTEBOOK_LOCATION,
            NOTEBOOK_OUTSIDE_ROOTS,
            NOTEBOOK_NOT_FOUND,
            INVALID_KERNEL,
            INVALID_REQUIREMENTS,
        ),
        Cause.REQUEST,
    ),
    NOTEBOOK_URL_REFUSED: Cause.POLICY,
    **dict.fromkeys((KERNEL_UNAVAILABLE, INSUFFICIENT_CORES, INSUFFICIENT_MEMORY), Cause.CAPACITY),
}


def reason(code: str, field: str, message: str) -> Reason:
    """A reason with ``code``'s cause, about the request field ``field``."""
    return Reason(code, message, CAUSES[code], False, field)
