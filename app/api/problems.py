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
    DatabaseUnavailable,
    IdempotencyInProgress,
    IdempotencyKeyReused,
    ItemNotFound,
    KeyExists,
    StoreError,
    VersionMismatch,
)

PROBLEM_JSON = "application/problem+json"
DB_RETRY_AFTER_SECONDS = 1

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
    status: int, code: str, detail: str, errors: Sequence[Mapping[str, Any]] | None = None
) -> bytes:
    """The problem document, carrying the request id."""
    body: dict[str, Any] = {
        "type": f"urn:kvkit:problem:{code}",
        "title": TITLES.get(code, "Error"),
        "status": status,
        "detail": detail,
        "code": code,
        "request_id": request_id_var.get(),
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
) -> Response:
    """A problem+json response."""
    return Response(
        problem_body(status, code, detail, errors),
        status,
        headers=dict(headers or {}),
        media_type=PROBLEM_JSON,
    )


def store_problem(exc: StoreError) -> ProblemError:
    """How each deliberate store outcome looks to a client."""
    if isinstance(exc, ItemNotFound):
        return ProblemError(404, "not_found", f"no item with key {exc}")
    if isinstance(exc, KeyExists):
        return ProblemError(409, "key_exists", f"an item with key {exc} exists already")
    if isinstance(exc, VersionMismatch):
        return ProblemError(
            412,
            "version_mismatch",
            f"If-Match does not match the current version {exc.current_version}",
            headers={"ETag": f'"{exc.current_version}"'},
        )
    if isinstance(exc, IdempotencyInProgress):
        return ProblemError(
            409,
            "idempotency_in_progress",
            "a request with this Idempotency-Key is still being processed; retry shortly",
            headers={"Retry-After": "1"},
        )
    if isinstance(exc, IdempotencyKeyReused):
        return ProblemError(
            422,
            "idempotency_key_reused",
            "this Idempotency-Key was used for a different request; use a new key",
        )
    if isinstance(exc, DatabaseUnavailable):
        return ProblemError(
            503,
            "service_unavailable",
            "the database is unavailable; retry later",
            headers={"Retry-After": str(DB_RETRY_AFTER_SECONDS)},
        )
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
        if isinstance(exc, DatabaseUnavailable):
            logger.warning("database unavailable: %s", exc)
        return await on_problem(_, store_problem(exc))

    async def on_client_disconnect(_: Request, exc: Exception) -> Response:
        # The client hung up before its body was read: nobody receives this answer and the
        # service did nothing wrong. 499 (nginx's "client closed request") keeps client aborts
        # out of the 5xx error rate and the error log.
        logger.info("client disconnected before its request was read")
        return Response(status_code=499)

    async def on_unexpected(_: Request, exc: Exception) -> Response:
        logger.error("unhandled error", exc_info=exc)
        return problem_response(500, "internal_error", "an unexpected error occurred")

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
