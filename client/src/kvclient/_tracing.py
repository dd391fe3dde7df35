"""OpenTelemetry spans for calls and attempts, silently off when opentelemetry-api is absent."""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

try:
    from opentelemetry import propagate, trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError:  # the "otel" extra is optional
    ENABLED = False
else:
    ENABLED = True

_TRACER_NAME = "kvclient"


class Span:
    """The two things the client does to a span, whether or not tracing is installed."""

    def __init__(self, span: Any = None) -> None:
        self._span = span

    def set(self, key: str, value: str | int) -> None:
        """Set one attribute."""
        if self._span is not None:
            self._span.set_attribute(key, value)

    def fail(self, error_type: str) -> None:
        """Mark the span failed with the semantic-conventions `error.type`."""
        if self._span is not None:
            self._span.set_attribute("error.type", error_type)
            self._span.set_status(Status(StatusCode.ERROR))


@contextmanager
def span(name: str, attributes: dict[str, str | int], *, client: bool) -> Iterator[Span]:
    """Open a span as a child of the current one; `client` marks a span that sends a request."""
    if not ENABLED:
        yield Span()
        return
    tracer = trace.get_tracer(_TRACER_NAME)
    kind = SpanKind.CLIENT if client else SpanKind.INTERNAL
    with tracer.start_as_current_span(name, kind=kind, attributes=attributes) as current:
        yield Span(current)


def inject(headers: MutableMapping[str, str]) -> None:
    """Add `traceparent` (and whatever else the global propagator carries) to `headers`."""
    if ENABLED:
        propagate.inject(headers)
