"""OpenTelemetry: a span per logical call, a child per attempt, traceparent on every request."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import kvclient

if TYPE_CHECKING:
    from conftest import FaultServer


def test_one_call_span_parents_one_span_per_attempt(
    client: Any, server: FaultServer, spans: Any
) -> None:
    """A call retried once yields a call span with two attempt children, the second a resend."""
    client.create("k", 1)
    server.problem(503, "service_unavailable")
    client.get("k")
    finished = [s for s in spans.get_finished_spans() if "/v1/items/{key}" in s.name]
    call = next(s for s in finished if s.name == "kvclient GET /v1/items/{key}")
    attempts = [s for s in finished if s.name == "GET /v1/items/{key}"]
    assert len(finished) == 3 and len(attempts) == 2
    assert all(s.parent.span_id == call.context.span_id for s in attempts)
    assert "http.request.resend_count" not in attempts[0].attributes
    assert attempts[1].attributes["http.request.resend_count"] == 1
    statuses = [s.attributes["http.response.status_code"] for s in attempts]
    assert statuses == [503, 200]
    assert attempts[0].attributes["url.template"] == "/v1/items/{key}"


def test_traceparent_names_each_attempt_span(client: Any, server: FaultServer, spans: Any) -> None:
    """Each request carries a traceparent whose parent id is that attempt's own span."""
    server.problem(503, "service_unavailable")
    client.create("k", 1)
    attempts = [s for s in spans.get_finished_spans() if s.name == "POST /v1/items"]
    expected = [
        f"00-{s.context.trace_id:032x}-{s.context.span_id:016x}-{s.context.trace_flags:02x}"
        for s in attempts
    ]
    assert [r.headers.get("traceparent") for r in server.requests] == expected


def test_failed_call_span_is_marked_as_an_error(
    client: Any, server: FaultServer, spans: Any
) -> None:
    """A call that ends in an error leaves its call span with an ERROR status."""
    from opentelemetry.trace import StatusCode

    server.problem(404, "not_found")
    with pytest.raises(kvclient.NotFound):
        client.get("missing")
    (call,) = [s for s in spans.get_finished_spans() if s.name.startswith("kvclient ")]
    assert call.status.status_code is StatusCode.ERROR


def test_client_works_without_opentelemetry(server: FaultServer) -> None:
    """With opentelemetry unimportable the package still imports and calls succeed."""
    script = (
        "import sys; sys.modules['opentelemetry'] = None\n"
        "import kvclient\n"
        "from kvclient import _tracing\n"
        "assert not _tracing.ENABLED\n"
        f"with kvclient.KVClient({server.url!r}) as kv:\n"
        "    print(kv.create('plain', 1).version)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(kvclient.__file__).parents[1])}
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1"
    assert "traceparent" not in server.requests[0].headers
