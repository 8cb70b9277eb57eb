"""Errors the service layers raise, and how they become gRPC statuses.

Domain and service code raise these plain exceptions; `ErrorMappingInterceptor` turns them into
a gRPC status with `google.rpc` details. Anything else becomes INTERNAL with a correlation id,
logged with its stack trace but never sent to the client.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import grpc


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


class ServiceError(Exception):
    """Base of the errors that carry a gRPC status code and a safe message."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(ServiceError):
    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, message: str, violations: Sequence[FieldViolation] = ()) -> None:
        super().__init__(message)
        self.violations = list(violations)

    @classmethod
    def for_field(cls, field: str, description: str) -> InvalidArgument:
        return cls(f"invalid {field}: {description}", [FieldViolation(field, description)])


class NotFound(ServiceError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(ServiceError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(ServiceError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(ServiceError):
    """A conditional change refused because its target changed since the caller read it."""

    code = grpc.StatusCode.ABORTED


class PermissionDenied(ServiceError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(ServiceError):
    code = grpc.StatusCode.UNAUTHENTICATED


class Unavailable(ServiceError):
    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(ServiceError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Validator:
    """Collects field violations and raises them together as one InvalidArgument."""

    def __init__(self) -> None:
        self.violations: list[FieldViolation] = []

    def check(self, ok: bool, field: str, description: str) -> None:
        if not ok:
            self.violations.append(FieldViolation(field, description))

    def raise_if_invalid(self) -> None:
        if self.violations:
            first = self.violations[0]
            more = f" (and {len(self.violations) - 1} more)" if len(self.violations) > 1 else ""
            raise InvalidArgument(
                f"invalid {first.field}: {first.description}{more}", self.violations
            )
