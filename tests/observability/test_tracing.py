"""Traces: one trace per request across the server, the database and Redis; off by default."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Databases, Server, free_port, service_env, wait_until_up

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN_ID = "00f067aa0ba902b7"
HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory, databases: Databases, redis_url: str) -> Any:
    """A uvicorn server on PostgreSQL and Redis whose spans land in a JSON-lines file."""
    workdir = tmp_path_factory.mktemp("traced")
    spans = workdir / "spans.jsonl"
    port = free_port()
    env = service_env(
        DATABASE_URL=databases.url("postgres"),
        REDIS_URL=redis_url,
        LOG_LEVEL="INFO",
        KV_RATE_LIMIT="1000000/minute",  # as the other test servers: limits are tested elsewhere
    )
    log_path = workdir / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, str(HERE / "span_server.py"), str(spans), str(port)],
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(f"http://127.0.0.1:{port}", process, log_path, env)
    wait_until_up(server)
    yield server, spans
    server.stop()


def read_spans(path: Path, trace_id: str) -> list[dict[str, Any]]:
    lines = path.read_text().splitlines() if path.exists() else []
    spans = [json.loads(line) for line in lines if line.strip()]
    return [span for span in spans if span["context"]["trace_id"] == "0x" + trace_id]


def wait_for_server_span(path: Path, trace_id: str) -> list[dict[str, Any]]:
    """The trace's spans once its server span has ended (it ends after the response is sent)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        spans = read_spans(path, trace_id)
        if any(span["kind"] == "SpanKind.SERVER" for span in spans):
            return spans
        time.sleep(0.05)
    return read_spans(path, trace_id)


def wait_for_log_lines(server: Server, marker: str) -> list[dict[str, Any]]:
    """JSON log lines containing `marker`, once there are any: a writer thread writes them."""
    deadline = time.monotonic() + 5
    while True:
        lines = [
            json.loads(line)
            for line in server.log().splitlines()
            if line.startswith("{") and marker in line
        ]
        if lines or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def test_request_continues_the_incoming_trace_through_database_and_redis(traced: Any) -> None:
    """A GET with traceparent yields a server span under it, with DB and Redis child spans."""
    server, spans_file = traced
    with server.client() as client:
        response = client.get(
            "/v1/items/missing-key",
            headers={"traceparent": f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01"},
        )
    assert response.status_code == 404
    spans = wait_for_server_span(spans_file, TRACE_ID)
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        by_kind.setdefault(span["kind"], []).append(span)
    servers = by_kind.get("SpanKind.SERVER", [])
    assert len(servers) == 1, spans
    server_span = servers[0]
    assert server_span["parent_id"] == "0x" + PARENT_SPAN_ID
    assert server_span["attributes"].get("http.route") == "/v1/items/{key}"
    clients = by_kind.get("SpanKind.CLIENT", [])
    db = [s for s in clients if s["attributes"].get("db.system") == "postgresql"]
    assert any("SELECT" in str(s["attributes"].get("db.statement", "")) for s in db), clients
    redis = [s for s in clients if s["attributes"].get("db.system") == "redis"]
    assert any("EVALSHA" in s["name"] for s in redis), clients
    server_id = server_span["context"]["span_id"]
    assert all(s["parent_id"] == server_id for s in db + redis)


def test_access_line_carries_the_trace_and_server_span_ids(traced: Any) -> None:
    """The access line of a traced request names its trace id and server span id."""
    server, spans_file = traced
    trace_id = "6" * 32
    with server.client() as client:
        client.get("/v1/items/k", headers={"traceparent": f"00-{trace_id}-{PARENT_SPAN_ID}-01"})
    [server_span] = [
        s for s in wait_for_server_span(spans_file, trace_id) if s["kind"] == "SpanKind.SERVER"
    ]
    access = wait_for_log_lines(server, f'"trace_id":"{trace_id}"')
    assert [entry["logger"] for entry in access] == ["kvkit.access"]
    assert "0x" + access[0]["span_id"] == server_span["context"]["span_id"]


def test_probes_and_metrics_are_not_traced(traced: Any) -> None:
    """/healthz, /readyz and /metrics produce no server spans."""
    server, spans_file = traced
    trace_id = "5" * 32
    with server.client() as client:
        for path in ("/healthz", "/readyz", "/metrics"):
            client.get(path, headers={"traceparent": f"00-{trace_id}-{PARENT_SPAN_ID}-01"})
        # A traced request afterwards: once its spans are out, any probe span would be too.
        client.get(
            "/v1/items/k", headers={"traceparent": f"00-{TRACE_ID[::-1]}-{PARENT_SPAN_ID}-01"}
        )
    wait_for_server_span(spans_file, TRACE_ID[::-1])
    assert read_spans(spans_file, trace_id) == []


CHECK_OFF = """
import json, sys
from opentelemetry import trace
from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
from opentelemetry.instrumentation.redis import RedisInstrumentor
from app.main import app
from app.observability import tracing
print(json.dumps({
    "enabled": tracing.tracing_enabled(),
    "proxy": type(trace.get_tracer_provider()).__name__,
    "psycopg": PsycopgInstrumentor().is_instrumented_by_opentelemetry,
    "redis": RedisInstrumentor().is_instrumented_by_opentelemetry,
    "app": getattr(app, "_is_instrumented_by_opentelemetry", False),
}))
"""


@pytest.mark.parametrize(
    "otel_env",
    [{}, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "OTEL_SDK_DISABLED": "true"}],
    ids=["no-endpoint", "sdk-disabled"],
)
def test_tracing_is_off_without_an_endpoint(
    tmp_path: Path, otel_env: dict[str, str], databases: Databases
) -> None:
    """Without an OTLP endpoint (or with the SDK disabled) no provider or instrumentation exists."""
    env = service_env(DATABASE_URL=databases.url("sqlite"), **otel_env)
    result = subprocess.run(
        [sys.executable, "-c", CHECK_OFF],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        timeout=60,
        check=True,
    )
    state = json.loads(result.stdout.decode().strip().splitlines()[-1])
    assert state == {
        "enabled": False,
        "proxy": "ProxyTracerProvider",
        "psycopg": False,
        "redis": False,
        "app": False,
    }


def test_tracing_is_on_with_an_endpoint(tmp_path: Path, databases: Databases) -> None:
    """With OTEL_EXPORTER_OTLP_ENDPOINT set, the SDK provider and instrumentation are installed."""
    env = service_env(
        DATABASE_URL=databases.url("sqlite"), OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9"
    )
    result = subprocess.run(
        [sys.executable, "-c", CHECK_OFF],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        timeout=60,
        check=True,
    )
    state = json.loads(result.stdout.decode().strip().splitlines()[-1])
    assert state == {
        "enabled": True,
        "proxy": "TracerProvider",
        "psycopg": True,
        "redis": True,
        "app": True,
    }


def test_writes_sent_together_keep_their_statements_in_their_own_traces(
    tmp_path: Path, databases: Databases
) -> None:
    """PUTs and DELETEs of one loop pass share a transaction; each one's SQL stays in its own
    trace, not in the trace of the request whose job ran the transaction."""
    spans = tmp_path / "spans.jsonl"
    prefix = f"traced-{uuid.uuid4().hex[:8]}-"
    result = subprocess.run(
        [sys.executable, str(HERE / "shared_writes.py"), str(spans), prefix],
        cwd=tmp_path,
        env=service_env(DATABASE_URL=databases.url("postgres")),
        capture_output=True,
        timeout=60,
        check=True,
    )
    outcome = json.loads(result.stdout.decode().strip().splitlines()[-1])
    assert outcome["shared"] == len(outcome["traces"]) == 8  # one transaction held them all
    for n, trace_id in enumerate(outcome["traces"]):
        verb, other = ("UPDATE", "DELETE") if n % 2 == 0 else ("DELETE", "UPDATE")
        statements = [
            str(span["attributes"].get("db.statement", ""))
            for span in read_spans(spans, trace_id)
            if span["attributes"].get("db.system") == "postgresql"
        ]
        assert any(statement.startswith(verb) for statement in statements), statements
        assert not any(statement.startswith(other) for statement in statements), statements
