"""The public API's errors: a gRPC status with google.rpc details.

Every refusal carries an ``ErrorInfo`` (domain ``aip.v1``, a :class:`Reason`), so a
client branches on the reason rather than the prose; an INVALID_ARGUMENT also carries a
``BadRequest`` naming each field at fault. A :class:`~aip_wire.vocab.RejectionCode`
becomes its gRPC code and reason here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import NoReturn

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from aip_wire.vocab import RejectionCode

#: ErrorInfo.domain of every error this API gives.
DOMAIN = "aip.v1"


class Reason(StrEnum):
    """ErrorInfo.reason values; stable, part of the API."""

    INVALID_REQUEST = "INVALID_REQUEST"
    DEVICE_NOT_CONNECTED = "DEVICE_NOT_CONNECTED"
    SESSION_NOT_FOUND = "SESSION_NOT_FOUND"
    SESSION_EXISTS = "SESSION_EXISTS"
    REPLICA_DRAINING = "REPLICA_DRAINING"
    STORE_UNAVAILABLE = "STORE_UNAVAILABLE"
    OWNER_UNREACHABLE = "OWNER_UNREACHABLE"
    DEVICE_AT_LIMIT = "DEVICE_AT_LIMIT"
    RATE_LIMITED = "RATE_LIMITED"
    REJECTED = "REJECTED"


REJECTIONS: dict[RejectionCode, tuple[grpc.StatusCode, Reason]] = {
    RejectionCode.EXISTS: (grpc.StatusCode.ALREADY_EXISTS, Reason.SESSION_EXISTS),
    RejectionCode.NOT_FOUND: (grpc.StatusCode.NOT_FOUND, Reason.DEVICE_NOT_CONNECTED),
    RejectionCode.INVALID: (grpc.StatusCode.INVALID_ARGUMENT, Reason.INVALID_REQUEST),
    RejectionCode.DRAINING: (grpc.StatusCode.UNAVAILABLE, Reason.REPLICA_DRAINING),
    RejectionCode.UNAVAILABLE: (grpc.StatusCode.UNAVAILABLE, Reason.STORE_UNAVAILABLE),
    RejectionCode.LIMIT: (grpc.StatusCode.RESOURCE_EXHAUSTED, Reason.DEVICE_AT_LIMIT),
    RejectionCode.RATE_LIMITED: (grpc.StatusCode.RESOURCE_EXHAUSTED, Reason.RATE_LIMITED),
    RejectionCode.TIMEOUT: (grpc.StatusCode.UNAVAILABLE, Reason.STORE_UNAVAILABLE),
}


class ApiError(Exception):
    """A refusal to answer with; raised by pure checks, sent by :func:`abort`."""

    def __init__(self, code: grpc.StatusCode, reason: Reason, message: str,
                 violations: Sequence[tuple[str, str]] = (),
                 metadata: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.violations = tuple(violations)
        self.metadata = dict(metadata or {})

    def status(self) -> grpc.Status:
        """The status with its details, as ``grpc_status`` packs it."""
        details = [error_details_pb2.ErrorInfo(reason=self.reason, domain=DOMAIN,
                                               metadata=self.metadata)]
        if self.violations:
            details.append(error_details_pb2.BadRequest(field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=name, description=text)
                for name, text in self.violations
            ]))
        packed = []
        for detail in details:
            holder = any_pb2.Any()
            holder.Pack(detail)
            packed.append(holder)
        return rpc_status.to_status(status_pb2.Status(
            code=self.code.value[0], message=str(self), details=packed))


def invalid(violations: Sequence[tuple[str, str]]) -> ApiError:
    """INVALID_ARGUMENT for ``(field, description)`` violations."""
    message = "; ".join(f"{name}: {text}" for name, text in violations)
    return ApiError(grpc.StatusCode.INVALID_ARGUMENT, Reason.INVALID_REQUEST, message,
                    violations)


def rejected(code: RejectionCode, message: str) -> ApiError:
    """The API's error for a session the rules refused."""
    status, reason = REJECTIONS.get(code, (grpc.StatusCode.ABORTED, Reason.REJECTED))
    return ApiError(status, reason, message)


def not_found(message: str, reason: Reason = Reason.SESSION_NOT_FOUND) -> ApiError:
    return ApiError(grpc.StatusCode.NOT_FOUND, reason, message)


async def abort(context: grpc.aio.ServicerContext, error: ApiError) -> NoReturn:
    """End the call with ``error``: its code, message and details (trailing metadata)."""
    status = error.status()
    await context.abort(status.code, status.details,
                        trailing_metadata=status.trailing_metadata)
    raise AssertionError("unreachable")  # abort raises
