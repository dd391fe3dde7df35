"""Exceptions raised by kvclient.

The exception hierarchy:

* KVError                       anything this client raises about a call
  + UsageError                  the caller's own mistake, found before anything is sent
    - InvalidArgument           also a ValueError: bad base URL, empty key, NaN, bad option
    - UnsupportedType           also a TypeError: a value JSON cannot carry, a key not a str
  + ClientClosed                also a RuntimeError: the client was closed
  + WouldBeRateLimited          not sent: the service said no request passes before the deadline
  + TransportError              no usable HTTP response
    - ConnectError              not sent: refused, unreachable, name not resolved
      · ConnectTimeout          not sent: the connection was not set up in time
    - TLSError                  not sent: certificate or handshake refused; never retried
    - ReadTimeout               sent: no complete response in time; it may have been applied
    - ConnectionLost            sent: the connection broke before the response was complete
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
as `APIError` itself. When retries stop, the last error is raised with `gave_up_reason` set to why
(see `GIVE_UP_REASONS`) and `attempts` to the attempts made.
"""

from __future__ import annotations

from typing import Any

from ._headers import retry_after_of
from ._models import Headers, Response

GIVE_UP_REASONS = {
    "max_attempts": "max_attempts reached",
    "deadline": "the next attempt could not finish before the deadline",
    "budget": "the client's retry budget is exhausted",
    "retry_after_exceeds_deadline": "Retry-After is longer than what is left of the deadline",
    "retry_after_exceeds_cap": "Retry-After is longer than the policy's max_retry_after",
    "rate_limit_exceeds_deadline": "the service's rate limit resets after the deadline",
    "rate_limit_exceeds_cap": "the service's rate limit resets after max_retry_after",
}
"""Every `gave_up_reason`, with the text the error's message gives for it."""


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
        response: Response | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.detail = detail
        self.request_id = request_id
        self.retry_after = retry_after
        self.response = response
        self.gave_up_reason: str | None = None
        self.attempts = 1

    @property
    def headers(self) -> Headers:
        """The response's headers; empty when there was no response."""
        return self.response.headers if self.response is not None else Headers(())

    @property
    def body(self) -> bytes:
        """The response's body bytes; empty when there was no response."""
        return self.response.body if self.response is not None else b""

    def __str__(self) -> str:
        text = self.message
        if self.request_id:
            text += f" [request_id={self.request_id}]"
        if self.gave_up_reason:
            why = GIVE_UP_REASONS.get(self.gave_up_reason, self.gave_up_reason)
            plural = "" if self.attempts == 1 else "s"
            text += f" (gave up after {self.attempts} attempt{plural}: {why})"
        return text


class UsageError(KVError):
    """The call itself is wrong; nothing was sent and sending it again cannot help."""


class InvalidArgument(UsageError, ValueError):
    """An argument has an unusable value: a base URL without scheme, an empty key, NaN, ..."""


class UnsupportedType(UsageError, TypeError):
    """An argument has a type the client cannot send, such as a value JSON cannot represent."""


class ClientClosed(KVError, RuntimeError):
    """The client was closed; build a new one to make more calls."""


class WouldBeRateLimited(KVError):
    """Not sent: the service's last `RateLimit` said none remain until after the deadline.

    `retry_after` is how long until the service's window frees a request.
    """


class TransportError(KVError):
    """No usable response arrived; the subclass says whether the request can have been sent."""


class ConnectError(TransportError):
    """No connection was made, so the request was never sent."""


class ConnectTimeout(ConnectError):
    """The connection was not set up in time; the request was never sent."""


class TLSError(TransportError):
    """TLS failed (an untrusted certificate, say): never sent, and never retried."""


class ReadTimeout(TransportError):
    """The request was sent but no complete response arrived in time: it may have been applied."""


class ConnectionLost(TransportError):
    """The connection broke after sending, before a complete response: it may have been applied."""


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


def error_from_response(response: Response, request_id: str | None = None) -> APIError:
    """Map an error response to its exception, trusting the problem `code` over the status."""
    problem = _problem_body(response)
    status = response.status
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
        request_id=_str_or_none(problem.get("request_id"))
        or response.headers.get("X-Request-ID")
        or request_id,
        retry_after=retry_after_of(response.headers),
        errors=errors if isinstance(errors, list) else None,
        response=response,
    )


def _problem_body(response: Response) -> dict[str, Any]:
    if "json" not in response.headers.get("Content-Type", ""):
        return {}
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
