"""Exceptions raised by kvclient.

The exception hierarchy:

* KVError                       anything this client raises about a call
  + TransportError              no usable HTTP response: refused, dropped or timed out
  + APIError                    the service answered with an error (problem+json)
    - ValidationError           400, 413, 422: validation_error, bad_request,
                                payload_too_large, idempotency_key_reused
    - Unauthorized              401 unauthorized
    - NotFound                  404 not_found
    - KeyExists                 409 key_exists
    - VersionMismatch           412 version_mismatch
    - RateLimited               429 rate_limited
    - ServerError               5xx
      · ServiceUnavailable      503 service_unavailable

An `APIError` whose code has no class of its own (409 idempotency_in_progress, 403, ...) is raised
as `APIError` itself. When retries stop, the last error is raised with `gave_up_reason` set to one
of `max_attempts`, `deadline`, `budget` or `retry_after_exceeds_deadline`.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import requests

from ._retry import parse_retry_after

_GIVE_UP_TEXT = {
    "max_attempts": "max_attempts reached",
    "deadline": "the next attempt would pass the deadline",
    "budget": "the client's retry budget is exhausted",
    "retry_after_exceeds_deadline": "Retry-After is longer than what is left of the deadline",
}


class KVError(Exception):
    """Base class of every error this client raises, so callers can catch one type."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        detail: str | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.detail = detail
        self.request_id = request_id
        self.retry_after = retry_after
        self.gave_up_reason: str | None = None
        self.attempts = 1

    def __str__(self) -> str:
        text = self.message
        if self.request_id:
            text += f" [request_id={self.request_id}]"
        if self.gave_up_reason:
            why = _GIVE_UP_TEXT.get(self.gave_up_reason, self.gave_up_reason)
            plural = "" if self.attempts == 1 else "s"
            text += f" (gave up after {self.attempts} attempt{plural}: {why})"
        return text


class TransportError(KVError):
    """No usable response arrived: the request may or may not have reached the service."""


class APIError(KVError):
    """The service answered with an HTTP error; `status`, `code` and `detail` say which."""

    def __init__(self, message: str, *, errors: list[Any] | None = None, **fields: Any) -> None:
        super().__init__(message, **fields)
        self.errors = errors


class ValidationError(APIError):
    """The request was malformed or too large; sending it again cannot succeed."""


class Unauthorized(APIError):
    """The API key is missing or wrong."""


class NotFound(APIError):
    """No item has this key."""


class KeyExists(APIError):
    """An item with this key already exists, so create refused to overwrite it."""


class VersionMismatch(APIError):
    """The item changed since the version given in `if_version`."""


class RateLimited(APIError):
    """The service is shedding this client's load; `retry_after` says when to come back."""


class ServerError(APIError):
    """The service failed on its side (5xx)."""


class ServiceUnavailable(ServerError):
    """The service is temporarily unable to serve; `retry_after` says when to come back."""


_BY_CODE: dict[str, type[APIError]] = {
    "validation_error": ValidationError,
    "bad_request": ValidationError,
    "payload_too_large": ValidationError,
    "idempotency_key_reused": ValidationError,
    "unauthorized": Unauthorized,
    "not_found": NotFound,
    "key_exists": KeyExists,
    "version_mismatch": VersionMismatch,
    "rate_limited": RateLimited,
    "service_unavailable": ServiceUnavailable,
}

_BY_STATUS: dict[int, type[APIError]] = {
    400: ValidationError,
    401: Unauthorized,
    404: NotFound,
    412: VersionMismatch,
    413: ValidationError,
    422: ValidationError,
    429: RateLimited,
    503: ServiceUnavailable,
}


def error_from_response(response: requests.Response) -> APIError:
    """Map an error response to its exception, trusting the problem `code` over the status."""
    problem = _problem_body(response)
    status = response.status_code
    code = _str_or_none(problem.get("code"))
    detail = _str_or_none(problem.get("detail")) or _str_or_none(problem.get("title"))
    if detail is None and not problem:
        detail = response.text[:200].strip() or response.reason
    fallback = ServerError if status >= 500 else APIError
    cls = _BY_CODE.get(code or "") or _BY_STATUS.get(status, fallback)
    errors = problem.get("errors")
    return cls(
        f"{status} {code or response.reason}: {detail}",
        status=status,
        code=code,
        detail=detail,
        request_id=_str_or_none(problem.get("request_id")) or response.headers.get("X-Request-ID"),
        retry_after=_retry_after(response),
        errors=errors if isinstance(errors, list) else None,
    )


def _problem_body(response: requests.Response) -> dict[str, Any]:
    if "json" not in response.headers.get("Content-Type", ""):
        return {}
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _retry_after(response: requests.Response) -> float | None:
    # An HTTP-date is measured against the server's own Date header when it sent one, so a
    # skewed local clock cannot stretch or shrink the wait.
    now = datetime.now(UTC)
    server_date = response.headers.get("Date")
    if server_date:
        with contextlib.suppress(TypeError, ValueError):
            now = parsedate_to_datetime(server_date)
    return parse_retry_after(response.headers.get("Retry-After"), now=now)


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
