"""Backoff, deadlines and error classification: no network."""

from __future__ import annotations

import random
from pathlib import Path

import grpc
import pytest

from ep_server.client import Deadline, Failure, FailureKind, RetryPolicy
from ep_server.client.retry import failure_from_error, is_retryable
from ep_server.client.sites import TLS


def error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


def test_backoff_grows_to_the_cap_with_jitter() -> None:
    policy = RetryPolicy(max_attempts=6, initial_backoff=0.1, max_backoff=0.5, jitter=0.2)
    delays = list(policy.delays(random.Random(7)))
    assert len(delays) == 5
    for delay, base in zip(delays, [0.1, 0.2, 0.4, 0.5, 0.5], strict=True):
        assert base * 0.8 <= delay <= base * 1.2
    assert len(set(delays)) == 5  # jittered, not identical


def test_no_jitter_is_exact() -> None:
    policy = RetryPolicy(max_attempts=4, initial_backoff=1, multiplier=3, max_backoff=100, jitter=0)
    assert list(policy.delays()) == [1, 3, 9]


def test_one_attempt_means_no_retries() -> None:
    assert list(RetryPolicy(max_attempts=1).delays()) == []


def test_deadline_counts_down_and_stops_at_zero() -> None:
    assert 9 < Deadline.after(10).remaining() <= 10
    assert Deadline.after(-1).remaining() == 0


@pytest.mark.parametrize(
    ("code", "details", "kind", "retryable"),
    [
        (
            grpc.StatusCode.UNAVAILABLE,
            "failed to connect: Connection refused",
            FailureKind.UNREACHABLE,
            True,
        ),
        (
            grpc.StatusCode.UNAVAILABLE,
            "Ssl handshake failed (TSI_PROTOCOL_FAILURE)",
            FailureKind.TLS,
            False,
        ),
        (
            grpc.StatusCode.DEADLINE_EXCEEDED,
            "Deadline Exceeded",
            FailureKind.DEADLINE_EXCEEDED,
            False,
        ),
        (grpc.StatusCode.INVALID_ARGUMENT, "bad tasktype", FailureKind.REFUSED, False),
        (grpc.StatusCode.UNIMPLEMENTED, "", FailureKind.REFUSED, False),
    ],
)
def test_classification(
    code: grpc.StatusCode, details: str, kind: FailureKind, retryable: bool
) -> None:
    exc = error(code, details)
    assert is_retryable(exc) is retryable
    assert failure_from_error(exc, 3) == Failure(kind, details or code.name, code, 3)


def test_failure_describe() -> None:
    failure = Failure(FailureKind.UNREACHABLE, "refused", grpc.StatusCode.UNAVAILABLE)
    assert failure.describe() == "unreachable [UNAVAILABLE]: refused"
    assert Failure(FailureKind.TLS, "no CA").describe() == "TLS error: no CA"


CLOSED_CONNECTING = (
    "failed to connect to all addresses; last error: UNAVAILABLE: ipv4:127.0.0.1:1: Socket closed"
)


def test_a_connection_closed_while_connecting_on_a_tls_channel_is_a_tls_failure() -> None:
    exc = error(grpc.StatusCode.UNAVAILABLE, CLOSED_CONNECTING)
    assert not is_retryable(exc, TLS())
    failure = failure_from_error(exc, 1, TLS(ca=Path("ca.pem")))
    assert failure.kind is FailureKind.TLS
    assert "it may require a client certificate (--cert and --key" in failure.message
    assert failure.message.endswith(f"gRPC said: {CLOSED_CONNECTING}")
    with_cert = failure_from_error(exc, 1, TLS(cert=Path("c.pem"), key=Path("c.key")))
    assert "may not trust the client certificate sent" in with_cert.message


def test_a_connection_closed_mid_call_on_a_tls_channel_is_retried() -> None:
    exc = error(grpc.StatusCode.UNAVAILABLE, "Socket closed")
    assert is_retryable(exc, TLS())
    assert failure_from_error(exc, 4, TLS()).kind is FailureKind.UNREACHABLE


def test_a_closed_plaintext_connection_is_retried_with_a_hint_about_tls() -> None:
    exc = error(grpc.StatusCode.UNAVAILABLE, "ipv4:127.0.0.1:1: Socket closed")
    assert is_retryable(exc)
    failure = failure_from_error(exc, 4)
    assert failure.kind is FailureKind.UNREACHABLE
    assert "try --tls or --ca" in failure.message
