"""What the client hands back: plain frozen dataclasses, never protobuf.

Every endpoint asked ends in a :class:`Result` whose ``outcome`` is either an
:class:`Answer` (the site's verdict) or a :class:`Failure` (the call itself
failed). The raw protobuf message stays reachable as ``Answer.raw`` for the
rare caller that needs a field this module does not expose.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import grpc

from ep_server.client.sites import Site
from ep_server.model import Cause, HostInfo, Resources, Slot
from ep_server.pb import execution_planner_pb2 as pb

__all__ = [
    "Answer",
    "Failure",
    "FailureKind",
    "Offer",
    "PluginInfo",
    "Reason",
    "Result",
    "ServiceInfo",
    "ServiceType",
    "TaskTypeInfo",
]


@dataclass(frozen=True, slots=True)
class Offer:
    """One service a site offers for the task (``ivoa.ep.v1.Offer``).

    ``resources`` is ``None`` when the site stated no resources for the offer.
    """

    servicetype: str
    serviceinfo: Mapping[str, Any] = field(default_factory=dict)
    resources: Resources | None = None
    plugin: str = ""
    message: str = ""
    #: For an Ask with a schedule: the offer's id (to accept it), when it
    #: lapses, its time slot, and what it holds from the site's pools.
    id: str = ""
    expire_time: datetime | None = None
    slot: Slot | None = None
    hold: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Reason:
    """Why a site (or one of its plugins) declined (``ivoa.ep.v1.Reason``).

    ``cause`` is ``None`` when the server left it unspecified.
    """

    code: str
    message: str = ""
    plugin: str = ""
    cause: Cause | None = None
    retryable: bool = False
    field: str = ""
    #: On a NO for lack of capacity: the earliest slot that would fit.
    earliest_slot: Slot | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    """A site's verdict: ``word`` is ``"YES"`` or ``"NO"``."""

    word: str
    offers: tuple[Offer, ...] = ()
    reasons: tuple[Reason, ...] = ()
    raw: pb.AskResponse | None = field(default=None, compare=False, repr=False)

    @property
    def yes(self) -> bool:
        """True for a YES answer."""
        return self.word == "YES"


class FailureKind(enum.Enum):
    """Why a call to an endpoint gave no answer."""

    #: No connection could be made (refused, no route, unknown host...):
    #: UNAVAILABLE after every retry the deadline allowed (over HTTP, also
    #: 502, 503 or 504 after every retry).
    UNREACHABLE = "unreachable"
    #: The deadline passed before an answer came (DEADLINE_EXCEEDED).
    DEADLINE_EXCEEDED = "deadline exceeded"
    #: The TLS handshake failed, or the CA, certificate or key could not be read.
    TLS = "TLS error"
    #: The server answered the call with an error status (INVALID_ARGUMENT,
    #: UNIMPLEMENTED, PERMISSION_DENIED...; over HTTP, any 4xx or 5xx not
    #: retried, or a redirect not followed): it refused this request.
    REFUSED = "refused"
    #: The client failed locally in an unforeseen way (a bug; see the
    #: message), or could not read what the site answered ("unreadable
    #: answer": a reply from a newer protocol; over HTTP, an answer that is
    #: not JSON, not in the note's shape, or larger than the client reads).
    CLIENT_ERROR = "client error"


@dataclass(frozen=True, slots=True)
class Failure:
    """A call that ended without an answer.

    ``code`` is the final gRPC status code (``None`` when no call was made,
    as when a certificate file cannot be read). For a site asked over HTTP
    it is the code gRPC gives the same event (UNAVAILABLE for a connection
    not made or dropped) or the one the error status stands for (its
    ``google.rpc.Status`` body's, when it has one), and ``None`` for an
    answer the client cannot read. ``attempts`` counts the calls made,
    retries included.
    """

    kind: FailureKind
    message: str
    code: grpc.StatusCode | None = None
    attempts: int = 1

    def describe(self) -> str:
        """One line: kind, status code and message."""
        code = f" [{self.code.name}]" if self.code is not None else ""
        return f"{self.kind.value}{code}: {self.message}"


@dataclass(frozen=True, slots=True)
class Result:
    """How asking one site ended: an :class:`Answer` or a :class:`Failure`.

    ``elapsed`` is the seconds from the start of the ask to its end, retries
    included.
    """

    site: Site
    outcome: Answer | Failure
    elapsed: float = 0.0

    @property
    def answer(self) -> Answer | None:
        """The answer, or ``None`` when the call failed."""
        return self.outcome if isinstance(self.outcome, Answer) else None

    @property
    def failure(self) -> Failure | None:
        """The failure, or ``None`` when an answer came."""
        return self.outcome if isinstance(self.outcome, Failure) else None


@dataclass(frozen=True, slots=True)
class ServiceType:
    """A service type offered for a task type, and the plugin offering it."""

    servicetype: str
    plugin: str


@dataclass(frozen=True, slots=True)
class TaskTypeInfo:
    """A task type an EP claims, with the service types offered for it."""

    tasktype: str
    services: tuple[ServiceType, ...] = ()


@dataclass(frozen=True, slots=True)
class PluginInfo:
    """A plugin the EP knows of; ``state`` is LOADED, FAILED or BLOCKED."""

    name: str
    distribution: str
    version: str
    state: str
    error: str = ""
    tasktypes: tuple[str, ...] = ()
    servicetypes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ServiceInfo:
    """What an EP says about itself (``GetServiceInfo``)."""

    server_version: str
    capacity: HostInfo
    tasktypes: tuple[TaskTypeInfo, ...] = ()
    plugins: tuple[PluginInfo, ...] = ()
    raw: pb.GetServiceInfoResponse | None = field(default=None, compare=False, repr=False)
