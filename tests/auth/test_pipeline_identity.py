"""The pipeline's identity of a call is the Authenticator's, though it only
asks the Authenticator about calls that carry an ``authorization`` entry."""

from __future__ import annotations

from collections.abc import Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest
from auth.helpers import ALICE_TOKEN, EC_KEY, NOW, ROBOT_NEW, mint
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ep_server.auth import Authenticator, AuthError, authorization_values
from ep_server.errors import EPError, ResourceExhausted, Unauthenticated
from ep_server.model import Identity
from ep_server.pipeline import Call, CallPipeline
from ep_server.ratelimit import RateLimiter

ANONYMOUS_RPCS = ("Ask", "GetServiceInfo")

#: Keys that are, or look like, or lower to something like "authorization".
KEYS = st.sampled_from(
    [
        "authorization",
        "Authorization",
        "AUTHORIZATION",
        "aUtHoRiZaTiOn",
        "authorizatio",
        "authorizations",
        "proxy-authorization",
        "AUTHOR\u0130ZATION",  # dotted capital I: lowers to "i" and a combining dot
        "\u212aauthorization",  # Kelvin sign: lowers to "k"
        "x-request-id",
        "user-agent",
    ]
) | st.text(max_size=14)

VALUES = st.sampled_from(
    [
        f"Bearer {ALICE_TOKEN}",
        f"bearer {ROBOT_NEW}",
        f"Bearer {mint()}",
        f"Bearer {mint(key=EC_KEY, alg='ES256', kid='ec-1')}",
        f"Bearer {mint(exp=NOW - 1)}",  # expired
        f"Bearer {mint(aud='elsewhere')}",
        "Bearer guess",
        "Bearer a.b.c",
        "Basic YWxhZGRpbjpvcGVuc2VzYW1l",
        "Bearer",
        "",
        f"Bearer {ALICE_TOKEN}".encode(),
        b"Bearer \xff",
        "trace-42",
    ]
) | st.text(max_size=20)

METADATA = st.lists(st.tuples(KEYS, VALUES), max_size=4)
SUBJECTS = st.sampled_from([None, "", "CN=alice,O=Example"])
RPCS = st.sampled_from(["Ask", "GetServiceInfo", "AcceptOffer"])


@dataclass
class Inbound:
    metadata: list[tuple[str, str | bytes]]
    subject: str | None = None
    address: str = "ipv4:127.0.0.1:5555"
    request_id: str = ""
    transport: str = "test"

    def peer(self) -> str:
        return self.address

    def peer_subject(self) -> str | None:
        return self.subject

    def time_remaining(self) -> float | None:
        return None


@dataclass
class Spy:
    """An Authenticator that records the calls it is asked about."""

    real: Authenticator
    asked: list[list[tuple[str, str | bytes]]] = field(default_factory=list)

    def from_metadata(
        self, metadata: Iterable[tuple[str, str | bytes]], peer_subject: str | None
    ) -> Identity:
        self.asked.append(list(metadata))
        return self.real.from_metadata(metadata, peer_subject)


def now(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine that never waits (no event loop needed)."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    raise AssertionError("the coroutine waited")


async def identity_of(request: None, call: Call) -> Identity:
    return call.identity


def outcome(pipeline: CallPipeline, name: str, inbound: Inbound) -> object:
    """The identity the handler got, or the error's class and reason."""
    try:
        return now(pipeline.run(name, inbound, identity_of, None))
    except EPError as exc:
        return type(exc).__name__, exc.reason


def expected(auth: Authenticator, name: str, inbound: Inbound, mtls: bool) -> object:
    """What calling the Authenticator for every call gives."""
    try:
        identity = auth.from_metadata(inbound.metadata, inbound.subject if mtls else None)
    except AuthError as exc:
        return "Unauthenticated", exc.reason
    if identity.anonymous and name not in ANONYMOUS_RPCS:
        return "Unauthenticated", "CREDENTIALS_REQUIRED"
    return identity


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(name=RPCS, metadata=METADATA, subject=SUBJECTS, mtls=st.booleans())
def test_the_identity_or_refusal_is_the_authenticators(
    auth: Authenticator,
    name: str,
    metadata: list[tuple[str, str | bytes]],
    subject: str | None,
    mtls: bool,
) -> None:
    spy = Spy(auth)
    pipeline = CallPipeline(spy, mtls=mtls, anonymous=ANONYMOUS_RPCS)
    inbound = Inbound(metadata, subject)

    assert outcome(pipeline, name, inbound) == expected(auth, name, inbound, mtls)
    # Only calls with credentials are shown to the Authenticator.
    assert spy.asked == ([metadata] if authorization_values(metadata) else [])


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    calls=st.lists(
        st.tuples(METADATA, st.sampled_from(["ipv4:10.0.0.1:1", "ipv4:10.0.0.2:2"])),
        max_size=12,
    )
)
def test_calls_with_credentials_count_towards_and_meet_the_lockout(
    auth: Authenticator, calls: list[tuple[list[tuple[str, str | bytes]], str]]
) -> None:
    """Against the rule: a call with credentials from a locked-out address
    is refused unchecked; a refused credential counts once per address;
    a call without credentials is never refused for its address."""
    clock = [0.0]
    limiter = RateLimiter(rate=0.001, burst=2, clock=lambda: clock[0])
    pipeline = CallPipeline(auth, auth_failures=limiter, anonymous=ANONYMOUS_RPCS)
    model = RateLimiter(rate=0.001, burst=2, clock=lambda: clock[0])
    counted: set[tuple[str, tuple[str | bytes, ...]]] = set()
    for metadata, address in calls:
        clock[0] += 1.0
        inbound = Inbound(metadata, address=address)
        sent = tuple(authorization_values(metadata))
        host = address.rpartition(":")[0]
        if sent and model.wait(host) > 0:
            assert outcome(pipeline, "Ask", inbound) == ("ResourceExhausted", "AUTH_FAILURES")
            continue
        want = expected(auth, "Ask", inbound, mtls=False)
        assert outcome(pipeline, "Ask", inbound) == want
        if isinstance(want, tuple) and (host, sent) not in counted:
            counted.add((host, sent))
            model.take(host)


async def test_a_call_without_credentials_is_not_shown_to_the_authenticator(
    auth: Authenticator,
) -> None:
    spy = Spy(auth)
    pipeline = CallPipeline(spy, mtls=True)
    anonymous = await pipeline.run("Ask", Inbound([("user-agent", "x")]), identity_of, None)
    certified = await pipeline.run("Ask", Inbound([], "CN=bob"), identity_of, None)
    assert spy.asked == []
    assert anonymous.anonymous
    assert (certified.subject, certified.method) == ("CN=bob", "mtls")
    upper = [("Authorization", f"Bearer {ALICE_TOKEN}")]
    alice = await pipeline.run("Ask", Inbound(upper), identity_of, None)
    assert spy.asked == [upper]
    assert alice.subject == "alice"


async def test_two_authorization_entries_in_any_case_are_refused_as_malformed(
    auth: Authenticator,
) -> None:
    two = [("authorization", f"Bearer {ALICE_TOKEN}"), ("AUTHORIZATION", "Bearer x")]
    with pytest.raises(Unauthenticated) as info:
        await CallPipeline(auth).run("Ask", Inbound(two), identity_of, None)
    assert info.value.reason == "MALFORMED_AUTHORIZATION"


async def test_a_locked_out_address_still_makes_anonymous_calls(auth: Authenticator) -> None:
    pipeline = CallPipeline(auth, auth_failures=RateLimiter(rate=0.001, burst=1))
    with pytest.raises(Unauthenticated):
        await pipeline.run("Ask", Inbound([("authorization", "Bearer one")]), identity_of, None)
    with pytest.raises(ResourceExhausted):
        await pipeline.run("Ask", Inbound([("Authorization", "Bearer two")]), identity_of, None)
    identity = await pipeline.run("Ask", Inbound([]), identity_of, None)
    assert identity.anonymous
