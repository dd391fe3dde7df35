"""RFC 9457 problem details for every failure, including the framework's own 404/405/422."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from app.observability.context import request_id_var
from app.store.errors import (
    CommitUnconfirmed,
    DatabaseBusy,
    DatabaseUnavailable,
    StoreError,
    TransactionConflict,
)

PROBLEM_JSON = "application/problem+json"
# What every 503 and 409 idempotency_in_progress asks a client to wait before trying again.
RETRY_AFTER_SECONDS = 1
RETRY_AFTER = {"Retry-After": str(RETRY_AFTER_SECONDS)}

logger = logging.getLogger("kvkit.errors")

TITLES = {
    "bad_request": "Bad request",
    "unauthorized": "Unauthorized",
    "not_found": "Not found",
    "method_not_allowed": "Method not allowed",
    "not_acceptable": "Not acceptable",
    "key_exists": "Key already exists",
    "idempotency_in_progress": "Request with this Idempotency-Key is in progress",
    "version_mismatch": "Version mismatch",
    "payload_too_large": "Payload too large",
    "unsupported_media_type": "Unsupported media type",
    "validation_error": "Validation error",
    "idempotency_key_reused": "Idempotency-Key reused with a different request",
    "rate_limited": "Too many requests",
    "internal_error": "Internal server error",
    "service_unavailable": "Service unavailable",
}


class ProblemError(Exception):
    """Raised anywhere in the HTTP layer to answer with a problem document."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        headers: Mapping[str, str] | None = None,
        errors: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = dict(headers or {})
        self.errors = errors


def problem_body(
    status: int,
    code: str,
    detail: str,
    errors: Sequence[Mapping[str, Any]] | None = None,
    request_id: str | None = None,
) -> bytes:
    """The problem document, carrying the request id (this request's unless given)."""
    body: dict[str, Any] = {
        "type": f"urn:kvkit:problem:{code}",
        "title": TITLES.get(code, "Error"),
        "status": status,
        "detail": detail,
        "code": code,
        "request_id": request_id_var.get() if request_id is None else request_id,
    }
    if errors is not None:
        body["errors"] = list(errors)
    return orjson.dumps(body)


def problem_response(
    status: int,
    code: str,
    detail: str,
    *,
    headers: Mapping[str, str] | None = None,
    errors: Sequence[Mapping[str, Any]] | None = None,
    request_id: str | None = None,
) -> Response:
    """A problem+json response."""
    return Response(
        problem_body(status, code, detail, errors, request_id),
        status,
        headers=dict(headers or {}),
        media_type=PROBLEM_JSON,
    )


def internal_error_response() -> Response:
    """The 500 for an error nobody expected; the details go to the log, never to the client."""
    return problem_response(500, "internal_error", "an unexpected error occurred")


def unavailable_response(detail: str) -> Response:
    """A 503 that asks the client to retry after RETRY_AFTER_SECONDS."""
    return problem_response(503, "service_unavailable", detail, headers=RETRY_AFTER)


def store_detail(exc: StoreError) -> str:
    """What a store failure tells the client: all are 503, each says why."""
    if isinstance(exc, CommitUnconfirmed):
        return (
            "the database did not confirm the commit in time: the write may have been applied;"
            " retry with the same Idempotency-Key"
        )
    if isinstance(exc, DatabaseBusy):
        return "the service is busy; retry later"
    if isinstance(exc, TransactionConflict):
        return "the write conflicted with another one and was not applied; retry"
    if isinstance(exc, DatabaseUnavailable):
        return "the database is unavailable; retry later"
    raise TypeError(f"no problem mapping for {type(exc).__name__}") from exc


def install_problem_handlers(app: FastAPI) -> None:
    """Route every exception the app can raise to a problem document."""

    async def on_problem(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, ProblemError)
        return problem_response(
            exc.status, exc.code, exc.detail, headers=exc.headers, errors=exc.errors
        )

    async def on_http(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
        detail = exc.detail if isinstance(exc.detail, str) else TITLES[code]
        if exc.status_code == 404:
            detail = "no such resource"
        return problem_response(exc.status_code, code, detail, headers=exc.headers)

    async def on_validation(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return await on_problem(_, validation_error(exc.errors()))

    async def on_store_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, StoreError)
        if not isinstance(exc, DatabaseBusy):  # shed load is counted, not logged per request
            logger.warning("database unavailable: %s", exc)
        return unavailable_response(store_detail(exc))

    async def on_client_disconnect(_: Request, exc: Exception) -> Response:
        # The client hung up before its body was read: nobody receives this answer and the
        # service did nothing wrong. 499 (nginx's "client closed request") keeps client aborts
        # out of the 5xx error rate and the error log.
        logger.info("client disconnected before its request was read")
        return Response(status_code=499)

    async def on_unexpected(_: Request, exc: Exception) -> Response:
        logger.error("unhandled error", exc_info=exc)
        return internal_error_response()

    app.add_exception_handler(ProblemError, on_problem)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StoreError, on_store_error)
    app.add_exception_handler(ClientDisconnect, on_client_disconnect)
    app.add_exception_handler(Exception, on_unexpected)


def validation_error(errors: Sequence[Mapping[str, Any]]) -> ProblemError:
    """422 listing where and why, from pydantic-style errors; never echoes the rejected input."""
    cleaned = [
        {
            "loc": [str(part) for part in error.get("loc", ())],
            "msg": str(error.get("msg", "")),
            "type": str(error.get("type", "")),
        }
        for error in errors
    ]
    first = cleaned[0] if cleaned else {"loc": [], "msg": "invalid request"}
    where = ".".join(first["loc"][1:] if len(first["loc"]) > 1 else first["loc"])
    detail = f"{where}: {first['msg']}" if where else str(first["msg"])
    return ProblemError(422, "validation_error", detail, errors=cleaned)
