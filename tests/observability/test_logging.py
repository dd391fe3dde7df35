"""Logs: one JSON access line per request, with ids and route template, and no secrets."""

from __future__ import annotations

import io
import json
import logging
import queue
import sys
import threading
import time
import uuid
from typing import Any

import pytest

from app.observability.logging import LineWriter
from tests.conftest import Server, ServerFactory

ACCESS_FIELDS = {
    "ts",
    "level",
    "logger",
    "message",
    "request_id",
    "trace_id",
    "span_id",
    "method",
    "route",
    "status",
    "duration_ms",
    "client",
}


def access_lines(server: Server, request_id: str) -> list[dict[str, Any]]:
    """The access lines of one request; written after the response, so poll a little."""
    deadline = time.monotonic() + 5
    found: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        found = [
            entry
            for entry in map(json.loads, _json_lines(server.log()))
            if entry.get("logger") == "kvkit.access" and entry.get("request_id") == request_id
        ]
        if found:
            return found
        time.sleep(0.05)
    return found


def _json_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("{")]


def test_access_line_is_json_with_ids_and_route_template(
    server_factory: ServerFactory, api_keys: list[str], keyspace: str
) -> None:
    """A request yields exactly one JSON access line with its ids, route template and client."""
    server = server_factory(
        "sqlite", LOG_FORMAT="json", LOG_LEVEL="INFO", KV_API_KEYS=",".join(api_keys)
    )
    request_id = f"req-{uuid.uuid4().hex}"
    key = f"{keyspace}logged"
    client = server.client(headers={"Authorization": f"Bearer {api_keys[0]}"})
    response = client.get(f"/v1/items/{key}", headers={"X-Request-ID": request_id})
    assert response.status_code == 404
    lines = access_lines(server, request_id)
    assert len(lines) == 1
    entry = lines[0]
    assert set(entry) >= ACCESS_FIELDS
    assert entry["level"] == "INFO"
    assert entry["method"] == "GET"
    assert entry["route"] == "/v1/items/{key}"
    assert entry["status"] == 404
    assert isinstance(entry["duration_ms"], float)
    assert entry["client"].startswith("key:")
    assert key not in json.dumps(entry)
    # Every line the server wrote is JSON, and no line carries an API key.
    log = server.log()
    assert all(json.loads(line) for line in _json_lines(log))
    assert not [k for k in api_keys if k in log]


def test_rejected_requests_are_logged_without_their_key(
    server_factory: ServerFactory, api_keys: list[str]
) -> None:
    """A 401 is logged with the peer address as client, and the wrong key never appears."""
    server = server_factory(
        "sqlite", LOG_FORMAT="json", LOG_LEVEL="INFO", KV_API_KEYS=",".join(api_keys)
    )
    wrong_key = uuid.uuid4().hex
    request_id = f"req-{uuid.uuid4().hex}"
    response = server.client().get(
        "/v1/items", headers={"X-API-Key": wrong_key, "X-Request-ID": request_id}
    )
    assert response.status_code == 401
    [entry] = access_lines(server, request_id)
    assert entry["route"] == "/v1/items"
    assert entry["status"] == 401
    assert entry["client"] == "ip:127.0.0.1"
    assert wrong_key not in server.log()


# --------------------------------------------------------------------------- the writer thread


def test_line_writer_writes_every_record_of_a_burst_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Records from several threads all arrive, each thread's in its own order; stop() flushes."""
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    writer = LineWriter(records, logging.Formatter("%(name)s %(message)s"), linger=0.01)
    writer.start()

    def emit(thread: int) -> None:
        for n in range(500):
            records.put(logging.makeLogRecord({"name": f"t{thread}", "msg": str(n)}))

    threads = [threading.Thread(target=emit, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    writer.stop()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2000
    for thread in range(4):
        numbers = [int(line.split()[1]) for line in lines if line.startswith(f"t{thread} ")]
        assert numbers == list(range(500))


def test_line_writer_survives_a_record_it_cannot_format(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    writer = LineWriter(records, logging.Formatter("%(message)s"))
    writer.start()
    records.put(logging.makeLogRecord({"name": "bad", "msg": "%d", "args": ("x",)}))
    records.put(logging.makeLogRecord({"name": "good", "msg": "after"}))
    writer.stop()
    assert stream.getvalue().splitlines() == ["unformattable log record from bad", "after"]
