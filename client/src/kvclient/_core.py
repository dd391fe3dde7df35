"""The decisions of both clients, free of I/O: what to send, whether to retry, how long to wait.

`Core.run` is a generator that yields the I/O it needs (`Send` one attempt, `Sleep`) and receives
what happened (a `Response` or a `Failure`). `KVClient` drives it with requests and `time.sleep`,
`AsyncKVClient` with httpx and `anyio.sleep`: retries, backoff, Retry-After, deadlines, the retry
budget, pacing, idempotency keys, metrics, logs and spans live here once, so the two cannot drift.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import uuid
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote, urlencode, urlsplit

from prometheus_client import REGISTRY, CollectorRegistry

from . import _testing, _tracing
from ._budget import RetryBudget
from ._exceptions import (
    APIError,
    ClientClosed,
    ConnectError,
    ConnectionLost,
    ConnectTimeout,
    InvalidArgument,
    KVError,
    ReadTimeout,
    TLSError,
    TransportError,
    UnsupportedType,
    WouldBeRateLimited,
    error_from_response,
)
from ._metrics import metrics_for
from ._models import Response
from ._pacing import Pacer
from ._retry import RetryPolicy
from ._version import __version__

logger = logging.getLogger("kvclient")
_T = TypeVar("_T")

Timeout = float | tuple[float, float]
"""Seconds per attempt: one number for connecting and reading, or `(connect, read)`."""

DEFAULT_TIMEOUT: tuple[float, float] = (3.05, 10.0)
DEFAULT_POOL_SIZE = 64
"""Connections kept per host: FastAPI runs sync routes on 40 threads, and idle sockets are cheap."""
# Failures where the request never reached the server, so any method may be sent again.
_NOT_SENT = frozenset({"connect_error", "connect_timeout"})
# Failures where the server may have acted on the request: safe to repeat only if idempotent.
_MAYBE_SENT = frozenset({"read_timeout", "connection_lost"})
_FAILURE_TYPES: dict[str, type[TransportError]] = {
    "connect_error": ConnectError,
    "connect_timeout": ConnectTimeout,
    "tls_error": TLSError,
    "read_timeout": ReadTimeout,
    "connection_lost": ConnectionLost,
}
# urllib3 and httpx refuse timeouts <= 0.
_SMALLEST_TIMEOUT = 0.001


@dataclass(frozen=True, slots=True)
class Call:
    """One logical call: everything that stays the same across its attempts."""

    method: str
    route: str
    target: str
    """Path and query, already percent-encoded, appended to the base URL."""
    headers: Mapping[str, str]
    request_id: str
    body: bytes | None = None

    def span_attributes(self) -> dict[str, str | int]:
        """OpenTelemetry HTTP attributes; the route template, never the raw key."""
        return {"http.request.method": self.method, "url.template": self.route}


@dataclass(frozen=True, slots=True)
class Send:
    """Step: send one attempt with these headers, bounded by these timeouts and the deadline."""

    headers: dict[str, str]
    connect_timeout: float
    read_timeout: float
    deadline: float
    """When the whole attempt, body included, must be over, on `_testing.monotonic()`."""


@dataclass(frozen=True, slots=True)
class Sleep:
    """Step: wait before the next attempt."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Failure:
    """What a driver reports when an attempt got no complete response."""

    kind: str
    """connect_error, connect_timeout, tls_error, read_timeout or connection_lost."""
    detail: str
    cause: BaseException | None = None


@dataclass(frozen=True, slots=True)
class RetryEvent:
    """What the `on_retry` hook receives before the client sleeps and retries."""

    attempt: int
    """The attempt that failed, 1 for the first."""
    reason: str
    """Why it is retried: status_503, read_timeout, in_progress, ..."""
    delay: float
    """Seconds the client sleeps before the next attempt."""
    method: str
    route: str
    request_id: str
    error: KVError


Step = Send | Sleep
Outcome = Response | Failure
Steps = Generator[Step, Outcome | None, Response]
RetryHook = Callable[[RetryEvent], None]


class Core:
    """The state one client shares across its threads or tasks, and the retry loop over it."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None,
        timeout: Timeout,
        retry: RetryPolicy | None,
        registry: CollectorRegistry | None,
        name: str | None,
        on_retry: RetryHook | None,
        pacing: bool,
    ) -> None:
        if not isinstance(base_url, str):
            raise UnsupportedType(f"base_url must be a str, got {type(base_url).__name__}")
        url = urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise InvalidArgument(
                f"base_url must be an absolute http:// or https:// URL, got {base_url!r}"
            )
        try:
            port = url.port
        except ValueError as exc:
            raise InvalidArgument(f"base_url has an invalid port: {base_url!r}") from exc
        self.base_url = base_url.rstrip("/")
        self.host = url.hostname
        self.port = port or (443 if url.scheme == "https" else 80)
        self.retry = retry if retry is not None else RetryPolicy()
        if not isinstance(self.retry, RetryPolicy):
            raise UnsupportedType(f"retry must be a RetryPolicy, got {type(retry).__name__}")
        self.timeout = timeouts(timeout)
        self.name = name if name is not None else f"{self.host}:{self.port}"
        self.closed = False
        self._api_key = api_key
        self._on_retry = on_retry
        self._pacer = Pacer() if pacing else None
        self._metrics = metrics_for(registry if registry is not None else REGISTRY)
        self._budget = RetryBudget(
            capacity=self.retry.budget_capacity,
            deposit=self.retry.budget_deposit,
            refill_per_second=self.retry.budget_refill_per_second,
        )
        self._budget_gauge = self._metrics.budget_tokens.labels(self.name)
        self._budget_gauge.set(self._budget.tokens)

    # ------------------------------------------------------------------ building calls

    def call(
        self,
        method: str,
        route: str,
        *,
        key: str | None = None,
        document: dict[str, Any] | None = None,
        params: Mapping[str, str | int | None] | None = None,
        if_version: int | None = None,
        idempotency_key: str | None = None,
    ) -> Call:
        """Check the caller's arguments and build the call, before anything is sent."""
        if self.closed:
            raise ClientClosed("the client is closed")
        target = route
        if key is not None:
            target = route.format(key=quote(_key(key), safe=""))
        if params:
            query = {name: value for name, value in params.items() if value is not None}
            if query:
                target += "?" + urlencode(query)
        request_id = uuid.uuid4().hex
        headers = {
            "Accept": "application/json, application/problem+json",
            "User-Agent": f"kvclient/{__version__}",
            "X-Request-ID": request_id,
        }
        if self._api_key is not None:
            headers["Authorization"] = f"Bearer {self._api_key}"
        if method != "GET":
            if idempotency_key is not None and (
                not isinstance(idempotency_key, str) or not idempotency_key
            ):
                raise InvalidArgument("idempotency_key must be a non-empty str")
            headers["Idempotency-Key"] = idempotency_key or uuid.uuid4().hex
        if if_version is not None:
            if isinstance(if_version, bool) or not isinstance(if_version, int):
                raise UnsupportedType(f"if_version must be an int, got {if_version!r}")
            headers["If-Match"] = f'"{if_version}"'
        body = None
        if document is not None:
            body = _encode(document)
            headers["Content-Type"] = "application/json"
        return Call(method, route, target, headers, request_id, body)

    # ------------------------------------------------------------------ running calls

    def run(self, call: Call, retry: RetryPolicy | None, timeout: Timeout | None) -> Steps:
        """Drive one logical call to its first 2xx response, or raise why it has none."""
        if self.closed:
            raise ClientClosed("the client is closed")
        policy = retry if retry is not None else self.retry
        connect, read = timeouts(timeout) if timeout is not None else self.timeout
        started = _testing.monotonic()
        self._budget_gauge.set(self._budget.record_call())
        outcome = "cancelled"
        try:
            name = f"kvclient {call.method} {call.route}"
            with _tracing.span(name, call.span_attributes(), client=False):
                response = yield from self._attempts(
                    call, policy, connect, read, started + policy.deadline
                )
            outcome = "success"
            return response
        except APIError:
            outcome = "http_error"
            raise
        except TransportError:
            outcome = "transport_error"
            raise
        except WouldBeRateLimited:
            outcome = "not_sent"
            raise
        finally:
            elapsed = _testing.monotonic() - started
            self._metrics.requests.labels(self.name, call.method, outcome).inc()
            self._metrics.duration.labels(self.name, call.method, outcome).observe(elapsed)

    def _attempts(
        self, call: Call, policy: RetryPolicy, connect: float, read: float, deadline: float
    ) -> Steps:
        error: KVError | None = None
        for attempt in itertools.count(1):
            yield from self._pace(call, policy, deadline, attempt, error)
            left = deadline - _testing.monotonic()
            if error is not None and left < policy.min_attempt_time:
                raise self._give_up(call, error, attempt - 1, "deadline")
            left = max(_SMALLEST_TIMEOUT, left)
            result = yield from self._attempt(
                call, attempt, Send({}, min(connect, left), min(read, left), deadline)
            )
            if isinstance(result, Response):
                if self._pacer is not None:
                    self._pacer.observe(result.headers, _testing.monotonic())
                if 200 <= result.status < 300:
                    return result
                error = error_from_response(result, call.request_id)
                reason = _status_reason(error, policy)
            else:
                error = self._transport_error(call, result)
                reason = result.kind if _resendable(result.kind, call, policy) else None
            if reason is None:
                raise error
            delay = self._retry_delay(call, policy, attempt, deadline, error)
            self._metrics.retries.labels(self.name, call.method, reason).inc()
            self._metrics.backoff.labels(self.name).observe(delay)
            logger.info(
                "retrying %s %s in %.3fs: attempt %d failed with %s [request_id=%s]",
                call.method,
                call.route,
                delay,
                attempt,
                reason,
                call.request_id,
                extra={
                    "method": call.method,
                    "route": call.route,
                    "attempt": attempt,
                    "reason": reason,
                    "delay": delay,
                    "request_id": call.request_id,
                },
            )
            if self._on_retry is not None:
                self._on_retry(
                    RetryEvent(
                        attempt, reason, delay, call.method, call.route, call.request_id, error
                    )
                )
            yield Sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _attempt(self, call: Call, attempt: int, send: Send) -> Generator[Step, Any, Outcome]:
        attributes = call.span_attributes()
        attributes["server.address"] = self.host
        attributes["server.port"] = self.port
        if attempt > 1:
            attributes["http.request.resend_count"] = attempt - 1
        with _tracing.span(f"{call.method} {call.route}", attributes, client=True) as span:
            headers = dict(call.headers)
            _tracing.inject(headers)
            started = _testing.monotonic()
            result = yield Send(headers, send.connect_timeout, send.read_timeout, send.deadline)
            if isinstance(result, Response):
                span.set("http.response.status_code", result.status)
                if result.status >= 400:
                    span.fail(str(result.status))
                answer = str(result.status)
            else:
                span.fail(result.kind)
                answer = result.kind
        logger.debug(
            "%s %s -> %s in %.3fs (attempt %d) [request_id=%s]",
            call.method,
            call.route,
            answer,
            _testing.monotonic() - started,
            attempt,
            call.request_id,
            extra={
                "method": call.method,
                "route": call.route,
                "attempt": attempt,
                "outcome": answer,
                "request_id": call.request_id,
            },
        )
        return result

    def _pace(
        self, call: Call, policy: RetryPolicy, deadline: float, attempt: int, error: KVError | None
    ) -> Generator[Step, Any, None]:
        """Wait until the service's rate limit lets a request pass, or give up if it will not."""
        if self._pacer is None:
            return
        now = _testing.monotonic()
        wait = self._pacer.wait(now)
        if wait <= 0:
            return
        reason = None
        if wait > policy.max_retry_after:
            reason = "rate_limit_exceeds_cap"
        elif wait + policy.min_attempt_time > deadline - now:
            reason = "rate_limit_exceeds_deadline"
        if reason is not None:
            if error is None:
                error = WouldBeRateLimited(
                    f"{call.method} {call.route}: not sent: the service accepts no request"
                    f" for another {wait:.3f}s",
                    request_id=call.request_id,
                    retry_after=wait,
                )
            raise self._give_up(call, error, attempt - 1, reason)
        self._metrics.backoff.labels(self.name).observe(wait)
        logger.info(
            "pacing %s %s: waiting %.3fs for the service's rate limit to reset [request_id=%s]",
            call.method,
            call.route,
            wait,
            call.request_id,
            extra={
                "method": call.method,
                "route": call.route,
                "delay": wait,
                "request_id": call.request_id,
            },
        )
        yield Sleep(wait)

    def _retry_delay(
        self, call: Call, policy: RetryPolicy, attempt: int, deadline: float, error: KVError
    ) -> float:
        """Seconds to sleep before the next attempt, or raise `error` saying why there is none."""
        retry_after = error.retry_after if policy.respect_retry_after else None
        left = deadline - _testing.monotonic() - policy.min_attempt_time
        delay = policy.backoff(attempt - 1, retry_after=retry_after)
        reason = None
        if attempt >= policy.max_attempts:
            reason = "max_attempts"
        elif retry_after is not None and retry_after > policy.max_retry_after:
            reason = "retry_after_exceeds_cap"
        elif retry_after is not None and retry_after > left:
            reason = "retry_after_exceeds_deadline"
        elif delay > left and retry_after is None:
            reason = "deadline"
        # Checked last so that a call which stops for another reason keeps its token.
        elif not self._budget.try_spend():
            reason = "budget"
        self._budget_gauge.set(self._budget.tokens)
        if reason is not None:
            raise self._give_up(call, error, attempt, reason)
        # Jitter on top of a Retry-After that fits must not push the retry past the deadline.
        return min(delay, left)

    def _give_up(self, call: Call, error: KVError, attempts: int, reason: str) -> KVError:
        error.gave_up_reason = reason
        error.attempts = attempts
        self._metrics.giveups.labels(self.name, call.method, reason).inc()
        logger.warning(
            "giving up on %s %s after %d attempt(s): %s: %s",
            call.method,
            call.route,
            attempts,
            reason,
            error.message,
            extra={
                "method": call.method,
                "route": call.route,
                "attempt": attempts,
                "reason": reason,
                "request_id": call.request_id,
            },
        )
        return error

    def _transport_error(self, call: Call, failure: Failure) -> TransportError:
        error = _FAILURE_TYPES[failure.kind](
            f"{call.method} {call.route}: {failure.kind.replace('_', ' ')}: {failure.detail}",
            request_id=call.request_id,
        )
        error.__cause__ = failure.cause
        return error


def timeouts(timeout: Timeout) -> tuple[float, float]:
    """`(connect, read)` seconds from one number or a pair, refusing what no socket accepts."""
    pair = timeout if isinstance(timeout, tuple) else (timeout, timeout)
    if len(pair) != 2:
        raise InvalidArgument(f"timeout must be a number or (connect, read), got {timeout!r}")
    for value in pair:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise UnsupportedType(f"timeout must be a number or (connect, read), got {timeout!r}")
        if not (value > 0 and math.isfinite(value)):
            raise InvalidArgument(f"timeouts must be finite and > 0, got {timeout!r}")
    return float(pair[0]), float(pair[1])


def list_params(limit: int, cursor: str | None, prefix: str | None) -> dict[str, Any]:
    """Query parameters of one listing page, checked before sending."""
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise UnsupportedType(f"limit must be an int, got {limit!r}")
    if limit < 1:
        raise InvalidArgument(f"limit must be >= 1, got {limit}")
    for name, value in (("cursor", cursor), ("prefix", prefix)):
        if value is not None and not isinstance(value, str):
            raise UnsupportedType(f"{name} must be a str, got {type(value).__name__}")
    return {"limit": limit, "cursor": cursor, "prefix": prefix}


def check_pool_size(size: int) -> int:
    """The connection pool size, refused unless it is a positive int."""
    if isinstance(size, bool) or not isinstance(size, int):
        raise UnsupportedType(f"pool_size must be an int, got {size!r}")
    if size < 1:
        raise InvalidArgument(f"pool_size must be >= 1, got {size}")
    return size


def _key(key: object) -> str:
    if not isinstance(key, str):
        raise UnsupportedType(f"key must be a str, got {type(key).__name__}")
    if not key:
        # An empty key would address the collection instead of an item.
        raise InvalidArgument("key must not be empty")
    return key


def _encode(document: dict[str, Any]) -> bytes:
    """JSON bytes of a request body; NaN, Infinity and non-JSON types are the caller's mistake."""
    try:
        text = json.dumps(document, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    except TypeError as exc:
        raise UnsupportedType(f"value cannot be sent as JSON: {exc}") from exc
    except (ValueError, RecursionError) as exc:
        raise InvalidArgument(f"value cannot be sent as JSON: {exc}") from exc
    return text.encode()


def _resendable(kind: str, call: Call, policy: RetryPolicy) -> bool:
    """Whether a transport failure may be retried: never sent, or safe to repeat."""
    if kind in _NOT_SENT:
        return True
    repeatable = call.method in policy.retry_methods or "Idempotency-Key" in call.headers
    return kind in _MAYBE_SENT and repeatable


def _status_reason(error: APIError, policy: RetryPolicy) -> str | None:
    """The retry reason for a retryable error response, None for one that must not be retried."""
    if error.status == 409 and error.code == "idempotency_in_progress":
        return "in_progress"
    if error.status in policy.retry_statuses:
        return f"status_{error.status}"
    return None


def decode(response: Response, parse: Callable[[Any], _T], request_id: str) -> _T:
    """Parse a 2xx body, turning a body that is not what the API promises into a `KVError`."""
    try:
        return parse(response.json())
    except (ValueError, KeyError, TypeError) as exc:
        raise KVError(
            f"unexpected {response.status} response body: {exc}",
            status=response.status,
            request_id=response.headers.get("X-Request-ID") or request_id,
            response=response,
        ) from exc
