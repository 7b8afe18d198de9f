"""Every error leaves as RFC 9457 problem details with a stable `code` (docs/api.md, "Errors")."""

from __future__ import annotations

import logging
import traceback
from typing import Any

from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.plugins.problem_details import ProblemDetailsConfig, ProblemDetailsException, ProblemDetailsPlugin
from msgspec import Struct
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from consent.adapters.database import sqlstate
from consent.app.ports import StoreUnavailable
from consent.domain.errors import DomainError

log = logging.getLogger("consent.api")

_CODE_BY_STATUS = {
    400: "validation_failed", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 409: "conflict", 413: "payload_too_large", 415: "unsupported_media_type",
    422: "validation_failed", 429: "rate_limited", 503: "unavailable",
}


def problem(status: int, code: str, detail: str, headers: dict[str, str] | None = None,
            **extra: Any) -> ProblemDetailsException:
    return ProblemDetailsException(
        status_code=status, type_=f"urn:consent:problem:{code}", title=code.replace("_", " ").capitalize(),
        detail=detail, headers=headers, extra={"code": code, **extra},
    )


def unauthorized(detail: str = "missing or invalid credentials") -> ProblemDetailsException:
    return problem(401, "unauthorized", detail, headers={"WWW-Authenticate": "Bearer"})


def forbidden(detail: str) -> ProblemDetailsException:
    return problem(403, "forbidden", detail)


def _from_domain(error: DomainError) -> ProblemDetailsException:
    return problem(error.status, error.code, error.detail)


def _from_validation(error: ValidationException) -> ProblemDetailsException:
    errors = error.extra if isinstance(error.extra, list) else []
    # Litestar's messages name the field; they never echo a secret header value.
    return problem(400, "validation_failed", str(error.detail), errors=errors)


def _from_http(error: HTTPException) -> ProblemDetailsException:
    if isinstance(error, ProblemDetailsException):
        return error
    code = _CODE_BY_STATUS.get(error.status_code, "client_error" if error.status_code < 500 else "internal_error")
    return problem(error.status_code, code, str(error.detail), headers=error.headers)


def _from_database(error: Exception) -> ProblemDetailsException:
    # The SQLSTATE tells "too many clients" (53300) from a failover (57P01, 08006) or a read-only standby
    # (25006); the message is never logged: it can quote row values.
    log.error("database unavailable: %s (SQLSTATE %s)", type(error).__name__, sqlstate(error) or "none")
    return problem(503, "unavailable", "the database is unavailable; retry later", headers={"Retry-After": "1"})


def _from_pool_timeout(_error: PoolTimeout) -> ProblemDetailsException:
    # Every connection of this process's budget stayed busy for CONSENT_DATABASE_POOL_TIMEOUT seconds.
    log.error("database connection budget exhausted (CONSENT_DATABASE_POOL_SIZE)")
    return problem(503, "unavailable", "the service is busy; retry later", headers={"Retry-After": "1"})


def log_unexpected(error: BaseException) -> None:
    """The exception's type and where it was raised, never its message: messages can quote request data."""
    where = "".join(traceback.format_tb(error.__traceback__))
    log.error("unexpected %s\n%s", type(error).__name__, where)


def _from_unexpected(error: Exception) -> ProblemDetailsException:
    log_unexpected(error)
    return problem(500, "internal_error", "an unexpected error occurred")


_PROBLEM_FROM = {
    DomainError: _from_domain,
    ValidationException: _from_validation,
    HTTPException: _from_http,
    StoreUnavailable: _from_database,
    PoolTimeout: _from_pool_timeout,
    OperationalError: _from_database,
    DBAPIError: _from_database,
    ConnectionError: _from_database,
    Exception: _from_unexpected,
}


def problem_details_plugin() -> ProblemDetailsPlugin:
    return ProblemDetailsPlugin(ProblemDetailsConfig(exception_to_problem_detail_map=_PROBLEM_FROM))


def as_problem(error: Exception) -> ProblemDetailsException:
    """The problem an exception becomes, as the plugin makes it: for the hot routes (thin_asgi.py)."""
    for kind in type(error).__mro__:
        if kind in _PROBLEM_FROM:
            return _PROBLEM_FROM[kind](error)
    return _from_unexpected(error)


class Problem(Struct):
    """RFC 9457 problem details, with this service's stable `code`."""

    type: str
    title: str
    status: int
    detail: str
    code: str


def _problem_spec(description: str) -> ResponseSpec:
    return ResponseSpec(Problem, generate_examples=False, description=description,
                        media_type="application/problem+json")


# Documented on every route so that clients see the error shape in the OpenAPI document.
ERRORS = {
    400: _problem_spec("Malformed request"),
    401: _problem_spec("Missing or invalid credentials"),
    403: _problem_spec("The caller may not do this"),
    404: _problem_spec("No such resource"),
    409: _problem_spec("Version conflict, or an Idempotency-Key reused with another body"),
    422: _problem_spec("Well-formed but refused by the rules"),
}


def created(view: type) -> dict[int, ResponseSpec]:
    return {**ERRORS, 201: ResponseSpec(view, generate_examples=False, description="Created")}
