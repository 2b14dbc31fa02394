"""Errors at the edge: an EPError as a google.rpc.Status, with the details
that say what to do (ErrorInfo always; RetryInfo when waiting helps)."""

from __future__ import annotations

from typing import Any

from google.rpc import code_pb2, error_details_pb2

from ep_server.errors import ERROR_DOMAIN, ResourceExhausted
from ep_server.schedule.ledger import LedgerUnavailable, OfferNotFound
from ep_server.wire.status import status_proto


def details(status: Any) -> dict[str, Any]:
    """The status's details by type name, unpacked."""
    found: dict[str, Any] = {}
    for packed in status.details:
        for kind in (error_details_pb2.ErrorInfo, error_details_pb2.RetryInfo):
            if packed.Is(kind.DESCRIPTOR):
                message = kind()
                packed.Unpack(message)
                found[kind.__name__] = message
    return found


def test_an_unreachable_ledger_is_unavailable_with_when_to_retry_and_not_where() -> None:
    error = LedgerUnavailable("ledger call failed (host=db.internal port=5432): refused", 1.5)
    status = status_proto(error)
    assert status.code == code_pb2.UNAVAILABLE
    assert "db.internal" not in status.message
    found = details(status)
    info = found["ErrorInfo"]
    assert (info.reason, info.domain) == ("LEDGER_UNAVAILABLE", ERROR_DOMAIN)
    assert info.metadata["retry_after_seconds"] == "1.500"
    assert found["RetryInfo"].retry_delay.ToNanoseconds() == 1_500_000_000


def test_retry_info_only_where_waiting_helps() -> None:
    assert "RetryInfo" in details(status_proto(ResourceExhausted("slow down", 0.25)))
    assert "RetryInfo" not in details(status_proto(OfferNotFound("no offer 'x'")))
