"""Errors: an :class:`~ep_server.errors.EPError` as a ``google.rpc.Status``
(AIP-193: ErrorInfo always, BadRequest and RetryInfo where they apply)."""

from __future__ import annotations

from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from ep_server.errors import (
    ERROR_DOMAIN,
    EPError,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
)

__all__ = ["status_proto"]


def status_proto(exc: EPError) -> status_pb2.Status:
    """The ``google.rpc.Status`` for an error: ErrorInfo always, BadRequest
    for invalid arguments, RetryInfo when waiting helps."""
    status = status_pb2.Status(code=exc.code.value[0], message=exc.message)
    details: list[Message] = []
    if isinstance(exc, InvalidArgument):
        details.append(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=v.field, description=v.description
                    )
                    for v in exc.violations
                ]
            )
        )
    details.append(
        error_details_pb2.ErrorInfo(reason=exc.reason, domain=ERROR_DOMAIN, metadata=exc.metadata)
    )
    if isinstance(exc, ResourceExhausted | Unavailable):
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(exc.retry_after * 1e9))
        details.append(error_details_pb2.RetryInfo(retry_delay=delay))
    for detail in details:
        packed = any_pb2.Any()
        packed.Pack(detail)
        status.details.append(packed)
    return status
