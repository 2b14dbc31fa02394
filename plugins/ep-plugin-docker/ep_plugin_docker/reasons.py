"""Every reason code this plugin gives, with its cause, and the one builder.

Every code is stable: clients may rely on it. Each reason names the request
field it is about (``taskinfo.image``, ``resources.cores.min``...). A code's
cause is data here (:data:`CAUSES`), so a code cannot be given with two
causes; the README's table of reason codes lists the same.
"""

from __future__ import annotations

from ep_server import Cause, Reason
from ep_server.fitting import INSUFFICIENT_CORES, INSUFFICIENT_MEMORY

__all__ = [
    "CAUSES",
    "DIGEST_MISMATCH",
    "HOST_NETWORK_NOT_ALLOWED",
    "INSUFFICIENT_CORES",
    "INSUFFICIENT_MEMORY",
    "INVALID_DIGEST",
    "INVALID_FIELD",
    "INVALID_IMAGE_REFERENCE",
    "INVALID_PLATFORM",
    "INVALID_PORT",
    "INVALID_PROTOCOL",
    "MISSING_IMAGE",
    "PORT_NOT_ALLOWED",
    "PRIVILEGED_NOT_ALLOWED",
    "PROTOCOL_NOT_ALLOWED",
    "RUNTIME_UNAVAILABLE",
    "UNSUPPORTED_PLATFORM",
    "reason",
]

# Cause REQUEST: the taskinfo cannot be satisfied as written.
MISSING_IMAGE = "MISSING_IMAGE"
INVALID_IMAGE_REFERENCE = "INVALID_IMAGE_REFERENCE"
INVALID_DIGEST = "INVALID_DIGEST"
DIGEST_MISMATCH = "DIGEST_MISMATCH"
INVALID_PLATFORM = "INVALID_PLATFORM"
INVALID_PORT = "INVALID_PORT"
INVALID_PROTOCOL = "INVALID_PROTOCOL"
INVALID_FIELD = "INVALID_FIELD"

# Cause POLICY: the site's policy refuses it.
PRIVILEGED_NOT_ALLOWED = "PRIVILEGED_NOT_ALLOWED"
HOST_NETWORK_NOT_ALLOWED = "HOST_NETWORK_NOT_ALLOWED"
PROTOCOL_NOT_ALLOWED = "PROTOCOL_NOT_ALLOWED"
PORT_NOT_ALLOWED = "PORT_NOT_ALLOWED"

# Cause CAPACITY: this host lacks what it takes (retryable only for the
# runtime). INSUFFICIENT_CORES and INSUFFICIENT_MEMORY come with their
# reasons from ep_server.fit_resources.
UNSUPPORTED_PLATFORM = "UNSUPPORTED_PLATFORM"
RUNTIME_UNAVAILABLE = "RUNTIME_UNAVAILABLE"

#: Each code's cause.
CAUSES: dict[str, Cause] = {
    **dict.fromkeys(
        (
            MISSING_IMAGE,
            INVALID_IMAGE_REFERENCE,
            INVALID_DIGEST,
            DIGEST_MISMATCH,
            INVALID_PLATFORM,
            INVALID_PORT,
            INVALID_PROTOCOL,
            INVALID_FIELD,
        ),
        Cause.REQUEST,
    ),
    **dict.fromkeys(
        (PRIVILEGED_NOT_ALLOWED, HOST_NETWORK_NOT_ALLOWED, PROTOCOL_NOT_ALLOWED, PORT_NOT_ALLOWED),
        Cause.POLICY,
    ),
    **dict.fromkeys(
        (UNSUPPORTED_PLATFORM, INSUFFICIENT_CORES, INSUFFICIENT_MEMORY, RUNTIME_UNAVAILABLE),
        Cause.CAPACITY,
    ),
}


def reason(code: str, field: str, message: str, *, retryable: bool = False) -> Reason:
    """A reason with ``code``'s cause, about the request field ``field``."""
    return Reason(code, message, CAUSES[code], retryable, field)
