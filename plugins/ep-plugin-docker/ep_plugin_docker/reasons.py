"""The reason codes this plugin gives, and helpers to build its reasons.

Every code is stable: clients may rely on it. Each reason names the request
field it is about (``taskinfo.image``, ``resources.cores.min``...).
"""

from __future__ import annotations

from ep_server import Cause, Reason

__all__ = [
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
    "capacity",
    "policy",
    "request",
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

# Cause CAPACITY: this host lacks what it takes (retryable only for the runtime).
UNSUPPORTED_PLATFORM = "UNSUPPORTED_PLATFORM"
INSUFFICIENT_CORES = "INSUFFICIENT_CORES"
INSUFFICIENT_MEMORY = "INSUFFICIENT_MEMORY"
RUNTIME_UNAVAILABLE = "RUNTIME_UNAVAILABLE"


def request(code: str, field: str, message: str) -> Reason:
    """A reason whose cause is the request itself."""
    return Reason(code, message, Cause.REQUEST, False, field)


def policy(code: str, field: str, message: str) -> Reason:
    """A reason whose cause is the site's policy."""
    return Reason(code, message, Cause.POLICY, False, field)


def capacity(code: str, field: str, message: str, *, retryable: bool = False) -> Reason:
    """A reason whose cause is this host's capacity."""
    return Reason(code, message, Cause.CAPACITY, retryable, field)
