"""Reading the response headers that steer retries: Retry-After and the IETF RateLimit field."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime


def retry_after_of(headers: Mapping[str, str]) -> float | None:
    """Seconds the response's `Retry-After` asks for, None when it has no usable one.

    An HTTP-date is measured against the server's own Date header when it sent one, so a skewed
    local clock cannot stretch or shrink the wait.
    """
    now = datetime.now(UTC)
    server_date = headers.get("Date")
    if server_date:
        with contextlib.suppress(TypeError, ValueError, IndexError):
            now = parsedate_to_datetime(server_date)
    return parse_retry_after(headers.get("Retry-After"), now=now)


def rate_limit_wait(headers: Mapping[str, str]) -> float | None:
    """Seconds until the next request can pass, when `RateLimit` says none remains (r=0).

    The field is a structured-field list (draft-ietf-httpapi-ratelimit-headers), for example
    `"default";r=0;t=42`; with several policies the longest wait of an exhausted one counts.
    None when the header is absent, malformed, or every policy still has requests left.
    """
    value = headers.get("RateLimit")
    if not value:
        return None
    wait: float | None = None
    for item in value.split(","):
        params: dict[str, str] = {}
        for part in item.split(";")[1:]:
            name, _, number = part.strip().partition("=")
            params[name.strip()] = number.strip()
        remaining, reset = params.get("r", ""), params.get("t", "")
        if remaining == "0" and reset.isascii() and reset.isdigit():
            wait = max(wait or 0.0, float(reset))
    return wait


def parse_retry_after(value: str | None, *, now: datetime) -> float | None:
    """Seconds a `Retry-After` header asks for (delay-seconds or HTTP-date), None if unusable.

    RFC 9110 section 10.2.3 allows both forms; the date is accepted in any zone that
    `email.utils` understands, and a date in the past means "retry now".
    """
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, (_aware(when) - _aware(now)).total_seconds())


def _aware(moment: datetime) -> datetime:
    # email.utils returns a naive datetime for "-0000", which RFC 5322 defines as UTC.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
