"""OpenTelemetry tracing, started once per process after any fork (gunicorn's post_fork).

Tracing is off, and costs nothing, unless OTEL_EXPORTER_OTLP_ENDPOINT (or the traces-specific
endpoint) is set and OTEL_SDK_DISABLED is not true: then no provider and no instrumentation are
installed. The exporter itself reads the standard OTEL_* variables.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.sdk.environment_variables import (
    OTEL_EXPORTER_OTLP_ENDPOINT,
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
    OTEL_SDK_DISABLED,
)

if TYPE_CHECKING:
    from fastapi import FastAPI
    from opentelemetry.sdk.trace import SpanProcessor

# Probes and scrapes would drown the traces that matter.
EXCLUDED_URLS = "://[^/]*/(metrics|healthz|readyz)([?]|$)"

_initialised_pid: int | None = None
_enabled = False


def tracing_requested() -> bool:
    """Whether the environment asks for traces to be exported."""
    if os.environ.get(OTEL_SDK_DISABLED, "").strip().lower() == "true":
        return False
    return bool(
        os.environ.get(OTEL_EXPORTER_OTLP_ENDPOINT)
        or os.environ.get(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)
    )


def init_worker(span_processor: SpanProcessor | None = None) -> bool:
    """Install the tracer provider and library instrumentation once in this process.

    `span_processor` replaces the OTLP exporter and turns tracing on regardless of the
    environment; tests pass one that keeps spans where they can read them.
    """
    global _initialised_pid, _enabled
    if _initialised_pid == os.getpid():
        return _enabled
    _initialised_pid = os.getpid()
    _enabled = span_processor is not None or tracing_requested()
    if not _enabled:
        return False

    from opentelemetry.instrumentation.redis import RedisInstrumentor
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider

    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "kvkit"}))
    provider = TracerProvider(resource=resource)
    if span_processor is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        span_processor = BatchSpanProcessor(OTLPSpanExporter())
    provider.add_span_processor(span_processor)
    trace.set_tracer_provider(provider)
    RedisInstrumentor().instrument(tracer_provider=provider)
    _instrument_database(provider)
    return True


def tracing_enabled() -> bool:
    """Whether init_worker turned tracing on in this process."""
    return _enabled and _initialised_pid == os.getpid()


def instrument_app(app: FastAPI) -> None:
    """Trace every request of `app` (except probes and scrapes) when tracing is on."""
    if not tracing_enabled():
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(
        app, excluded_urls=EXCLUDED_URLS, exclude_spans=["receive", "send"]
    )


def _instrument_database(provider: trace.TracerProvider) -> None:
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor

    PsycopgInstrumentor().instrument(tracer_provider=provider)
