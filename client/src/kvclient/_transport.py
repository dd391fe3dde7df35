"""The retry core: one logical call becomes one or more HTTP attempts, retried only when safe."""

from __future__ import annotations

import itertools
import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from urllib3.exceptions import NewConnectionError

from . import _tracing
from ._budget import RetryBudget
from ._exceptions import APIError, KVError, TransportError, error_from_response
from ._metrics import ClientMetrics
from ._retry import RetryPolicy

logger = logging.getLogger("kvclient")

# RFC 9110 section 9.2.2: repeating these has the same effect as sending them once.
_IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
_RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
# Failures where the request never reached the server, so any method may be sent again.
_NOT_SENT = frozenset({"connect_error", "connect_timeout"})
# Failures where the server may have acted on the request: safe to repeat only if idempotent.
_MAYBE_SENT = frozenset({"read_timeout", "connection_lost"})
# urllib3 refuses timeouts <= 0; an attempt started this close to the deadline still gets a try.
_MIN_TIMEOUT = 0.001


@dataclass(frozen=True, slots=True)
class Call:
    """One logical call: everything that stays the same across its attempts."""

    method: str
    route: str
    url: str
    headers: Mapping[str, str]
    request_id: str
    json: Any = None
    params: Mapping[str, str | int] | None = None

    @property
    def idempotent(self) -> bool:
        """Whether repeating the call cannot apply it twice."""
        return self.method in _IDEMPOTENT_METHODS or "Idempotency-Key" in self.headers

    def span_attributes(self) -> dict[str, str | int]:
        """OpenTelemetry HTTP attributes; the route template, never the raw key."""
        return {"http.request.method": self.method, "url.template": self.route}


class RetryingTransport:
    """Sends calls through a `requests.Session` with backoff, a deadline and a retry budget."""

    def __init__(
        self,
        *,
        session: requests.Session,
        policy: RetryPolicy,
        timeout: tuple[float, float],
        metrics: ClientMetrics,
        sleep: Callable[[float], None],
        clock: Callable[[], float],
        rng: random.Random,
    ) -> None:
        self._session = session
        self._policy = policy
        self._timeout = timeout
        self._metrics = metrics
        self._sleep = sleep
        self._clock = clock
        self._rng = rng
        self._budget = RetryBudget(clock=clock)
        metrics.budget_tokens.set(self._budget.tokens)

    def send(self, call: Call) -> requests.Response:
        """Return the first 2xx response of `call`, or raise the last error once retries stop."""
        started = self._clock()
        self._metrics.budget_tokens.set(self._budget.record_call())
        outcome = "error"
        name = f"kvclient {call.method} {call.route}"
        try:
            with _tracing.span(name, call.span_attributes(), client=False):
                response = self._send_with_retries(call, started)
            outcome = "success"
            return response
        except APIError:
            outcome = "http_error"
            raise
        except TransportError:
            outcome = "transport_error"
            raise
        finally:
            self._metrics.requests.labels(call.method, outcome).inc()
            self._metrics.duration.labels(call.method).observe(self._clock() - started)

    def _send_with_retries(self, call: Call, started: float) -> requests.Response:
        deadline = None if self._policy.deadline is None else started + self._policy.deadline
        for attempt in itertools.count(1):
            try:
                response = self._attempt(call, attempt, deadline)
            except requests.RequestException as exc:
                failure = _transport_failure(exc)
                error: KVError = TransportError(
                    f"{call.method} {call.route}: {failure.replace('_', ' ')}: {_describe(exc)}",
                    request_id=call.request_id,
                )
                error.__cause__ = exc
                safe = failure in _NOT_SENT or (failure in _MAYBE_SENT and call.idempotent)
                reason = failure if safe else None
            else:
                if 200 <= response.status_code < 300:
                    return response
                error = error_from_response(response)
                reason = _status_reason(error)
            if reason is None:
                raise error
            self._wait_or_give_up(call, attempt, deadline, error, reason)
        raise AssertionError("unreachable")  # pragma: no cover

    def _attempt(self, call: Call, attempt: int, deadline: float | None) -> requests.Response:
        connect, read = self._timeout
        if deadline is not None:
            # The whole call shares one deadline, so each attempt may only wait for what is left.
            left = max(_MIN_TIMEOUT, deadline - self._clock())
            connect, read = min(connect, left), min(read, left)
        headers = dict(call.headers)
        url = urlsplit(call.url)
        attributes = call.span_attributes()
        attributes["server.address"] = url.hostname or ""
        attributes["server.port"] = url.port or (443 if url.scheme == "https" else 80)
        if attempt > 1:
            attributes["http.request.resend_count"] = attempt - 1
        with _tracing.span(f"{call.method} {call.route}", attributes, client=True) as span:
            _tracing.inject(headers)
            try:
                response = self._session.request(
                    call.method,
                    call.url,
                    headers=headers,
                    json=call.json,
                    params=call.params,
                    timeout=(connect, read),
                    allow_redirects=False,
                )
            except requests.RequestException as exc:
                span.fail(_transport_failure(exc))
                raise
            span.set("http.response.status_code", response.status_code)
            if response.status_code >= 400:
                span.fail(str(response.status_code))
            return response

    def _wait_or_give_up(
        self, call: Call, attempt: int, deadline: float | None, error: KVError, reason: str
    ) -> None:
        """Sleep before the next attempt, or raise `error` saying why there will be none."""
        retry_after = error.retry_after if self._policy.respect_retry_after else None
        delay = self._policy.backoff(attempt - 1, retry_after=retry_after, rng=self._rng)
        give_up = self._give_up_reason(attempt, deadline, retry_after, delay)
        self._metrics.budget_tokens.set(self._budget.tokens)
        if give_up is not None:
            error.gave_up_reason = give_up
            error.attempts = attempt
            self._metrics.giveups.labels(call.method, give_up).inc()
            raise error
        self._metrics.retries.labels(call.method, reason).inc()
        self._metrics.backoff.observe(delay)
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
        self._sleep(delay)

    def _give_up_reason(
        self, attempt: int, deadline: float | None, retry_after: float | None, delay: float
    ) -> str | None:
        if attempt >= self._policy.max_attempts:
            return "max_attempts"
        if deadline is not None:
            left = deadline - self._clock()
            if retry_after is not None and retry_after >= left:
                return "retry_after_exceeds_deadline"
            if delay >= left:
                return "deadline"
        # Checked last so that a call which stops for another reason keeps its token.
        if not self._budget.try_spend():
            return "budget"
        return None


def _transport_failure(exc: requests.RequestException) -> str:
    """Name a transport failure by whether the request can have reached the server."""
    if isinstance(exc, requests.ConnectTimeout):
        return "connect_timeout"
    if isinstance(exc, requests.ReadTimeout):
        return "read_timeout"
    if isinstance(exc, requests.ConnectionError):
        cause = exc.args[0] if exc.args else None
        if isinstance(getattr(cause, "reason", None), NewConnectionError):
            return "connect_error"
        return "connection_lost"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return "connection_lost"
    return "request_error"


def _describe(exc: requests.RequestException) -> str:
    """The underlying cause, without urllib3's "Max retries exceeded" (its retries are off)."""
    cause = exc.args[0] if exc.args else None
    return str(getattr(cause, "reason", None) or exc)


def _status_reason(error: APIError) -> str | None:
    """The retry reason for a retryable error response, None for one that must not be retried."""
    if error.status == 409 and error.code == "idempotency_in_progress":
        return "in_progress"
    if error.status in _RETRYABLE_STATUSES:
        return f"status_{error.status}"
    return None
