"""Fixtures: a fault-injecting kvkit stand-in on a real socket, a fake clock, fresh registries.

`FaultServer` answers like a tiny in-memory kvkit (`FakeKV`) unless a test has scripted faults:
each scripted action answers one request, in order, and `times=None` repeats an action forever.
Every request is recorded (method, path, headers, body) before it is answered.
"""

from __future__ import annotations

import json
import random
import socket
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from prometheus_client import CollectorRegistry

from kvclient import KVClient, RetryPolicy


@dataclass(frozen=True)
class Recorded:
    """One request as the server read it."""

    method: str
    path: str
    headers: Message
    body: bytes

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


@dataclass(frozen=True)
class Answer:
    """One response to write: status, extra headers and body bytes."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


def problem(status: int, code: str, request_id: str | None, detail: str = "") -> Answer:
    """A problem+json answer shaped like the real service's errors."""
    document = {
        "type": f"https://kvkit.dev/problems/{code}",
        "title": code.replace("_", " "),
        "status": status,
        "detail": detail or f"{code} from the test server",
        "code": code,
        "request_id": request_id,
    }
    return Answer(
        status, {"Content-Type": "application/problem+json"}, json.dumps(document).encode()
    )


class FakeKV:
    """An in-memory kvkit: items, versions, If-Match, listing and idempotent replays."""

    def __init__(self) -> None:
        self.items: dict[str, dict[str, Any]] = {}
        self.writes: list[tuple[str, str]] = []
        self.api_key: str | None = None
        self._replays: dict[str, tuple[tuple[str, str, bytes], Answer]] = {}
        self._lock = threading.Lock()

    def handle(self, request: Recorded) -> Answer:
        """Answer one request as the real service would, replaying repeated Idempotency-Keys."""
        request_id = request.headers.get("X-Request-ID")
        if self.api_key and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return problem(401, "unauthorized", request_id)
        key = request.headers.get("Idempotency-Key")
        with self._lock:
            if key is None or request.method == "GET":
                return self._apply(request, request_id)
            fingerprint = (request.method, request.path, request.body)
            if key in self._replays:
                seen, answer = self._replays[key]
                if seen != fingerprint:
                    return problem(422, "idempotency_key_reused", request_id)
                return Answer(
                    answer.status, {**answer.headers, "Idempotent-Replayed": "true"}, answer.body
                )
            answer = self._apply(request, request_id)
            self._replays[key] = (fingerprint, answer)
            return answer

    def _apply(self, request: Recorded, request_id: str | None) -> Answer:
        url = urlsplit(request.path)
        if url.path == "/v1/items" and request.method == "POST":
            body = request.json()
            if body["key"] in self.items:
                return problem(409, "key_exists", request_id)
            return self._store(body["key"], body["value"], request, created=True)
        if url.path == "/v1/items" and request.method == "GET":
            return self._list(parse_qs(url.query))
        key = unquote(url.path.removeprefix("/v1/items/"))
        item = self.items.get(key)
        if item is None:
            return problem(404, "not_found", request_id, f"no item with key {key!r}")
        if_match = request.headers.get("If-Match")
        if if_match is not None and if_match != f'"{item["version"]}"':
            return problem(412, "version_mismatch", request_id)
        if request.method == "GET":
            return _item_answer(200, item)
        if request.method == "PUT":
            return self._store(key, request.json()["value"], request, created=False)
        del self.items[key]
        self.writes.append((request.method, key))
        return Answer(204)

    def _store(self, key: str, value: Any, request: Recorded, *, created: bool) -> Answer:
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        previous = self.items.get(key)
        item = {
            "key": key,
            "value": value,
            "version": 1 if previous is None else previous["version"] + 1,
            "created_at": now if previous is None else previous["created_at"],
            "updated_at": now,
        }
        self.items[key] = item
        self.writes.append((request.method, key))
        return _item_answer(201 if created else 200, item)

    def _list(self, query: dict[str, list[str]]) -> Answer:
        limit = int(query.get("limit", ["50"])[0])
        cursor = query.get("cursor", [""])[0]
        prefix = query.get("prefix", [""])[0]
        keys = sorted(k for k in self.items if k.startswith(prefix) and k > cursor)
        page = keys[:limit]
        next_cursor = page[-1] if len(keys) > limit else None
        document = {"items": [self.items[k] for k in page], "next_cursor": next_cursor}
        return Answer(200, {"Content-Type": "application/json"}, json.dumps(document).encode())


def _item_answer(status: int, item: dict[str, Any]) -> Answer:
    headers = {"Content-Type": "application/json", "ETag": f'"{item["version"]}"'}
    if status == 201:
        headers["Location"] = f"/v1/items/{item['key']}"
    return Answer(status, headers, json.dumps(item).encode())


Action = Callable[["_Handler", Recorded], None]


class FaultServer:
    """A threaded HTTP server on 127.0.0.1 whose answers a test scripts one request at a time."""

    def __init__(self) -> None:
        self.kv = FakeKV()
        self.requests: list[Recorded] = []
        self.stopped = threading.Event()
        self._script: deque[Action] = deque()
        self._default: Action = _serve
        self._lock = threading.Lock()
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.fault = self
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.01,))

    def problem(
        self,
        status: int,
        code: str,
        *,
        headers: dict[str, str] | None = None,
        times: int | None = 1,
    ) -> None:
        """Answer with a problem+json error echoing the request's X-Request-ID in its body."""

        def act(handler: _Handler, request: Recorded) -> None:
            answer = problem(status, code, request.headers.get("X-Request-ID"))
            handler.write(Answer(status, {**answer.headers, **(headers or {})}, answer.body))

        self._add(act, times)

    def respond(
        self,
        status: int,
        *,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        times: int | None = 1,
    ) -> None:
        """Answer with exactly this status, headers and body."""
        self._add(lambda handler, _: handler.write(Answer(status, headers or {}, body)), times)

    def drop(self, *, times: int | None = 1) -> None:
        """Read the whole request, then close the connection without answering or applying it."""
        self._add(lambda handler, _: handler.drop(), times)

    def stall(self, seconds: float, *, times: int | None = 1) -> None:
        """Apply the request to the store, then wait `seconds` before answering."""

        def act(handler: _Handler, request: Recorded) -> None:
            answer = self.kv.handle(request)
            self.stopped.wait(seconds)
            handler.write(answer)

        self._add(act, times)

    def next_action(self, request: Recorded) -> Action:
        """Record `request` and return the action that answers it."""
        with self._lock:
            self.requests.append(request)
            return self._script.popleft() if self._script else self._default

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and release stalled handlers."""
        self.stopped.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def _add(self, action: Action, times: int | None) -> None:
        with self._lock:
            if times is None:
                self._default = action
            else:
                self._script.extend([action] * times)


def _serve(handler: _Handler, request: Recorded) -> None:
    handler.write(handler.server.fault.kv.handle(request))


class _Server(ThreadingHTTPServer):
    fault: FaultServer
    request_queue_size = 128  # the default of 5 drops connections when many threads connect

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet: clients hanging up mid-answer is what these tests provoke."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes
    server: _Server

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PUT = do_DELETE = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output clean."""

    def _handle(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        request = Recorded(self.command, self.path, self.headers, body)
        self.server.fault.next_action(request)(self, request)

    def write(self, answer: Answer) -> None:
        """Send `answer`, tolerating a client that already gave up on it."""
        headers = {
            "Date": self.date_time_string(),
            "X-Request-ID": self.headers.get("X-Request-ID") or uuid.uuid4().hex,
            **answer.headers,
        }
        if answer.status != 204:
            headers["Content-Length"] = str(len(answer.body))
        try:
            self.send_response_only(answer.status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            if answer.status != 204:
                self.wfile.write(answer.body)
        except OSError:
            self.close_connection = True

    def drop(self) -> None:
        """Hang up without a single byte of response."""
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)


class FakeClock:
    """A monotonic clock that only moves when the client sleeps on it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        """Record the delay and advance time by it, without waiting."""
        self.sleeps.append(seconds)
        self.now += seconds

    @property
    def elapsed(self) -> float:
        """Seconds slept in total."""
        return sum(self.sleeps)


@pytest.fixture
def server() -> Iterator[FaultServer]:
    """A running fault server, stopped after the test."""
    fault = FaultServer()
    fault.start()
    yield fault
    fault.stop()


@pytest.fixture
def clock() -> FakeClock:
    """A fake monotonic clock whose sleep returns at once."""
    return FakeClock()


@pytest.fixture
def registry() -> CollectorRegistry:
    """A fresh Prometheus registry, so metric values belong to this test alone."""
    return CollectorRegistry()


MakeClient = Callable[..., KVClient]


@pytest.fixture
def make_client(
    server: FaultServer, clock: FakeClock, registry: CollectorRegistry
) -> Iterator[MakeClient]:
    """Build clients of `server` on the fake clock, a seeded random source and `registry`."""
    clients: list[KVClient] = []

    def make(**overrides: Any) -> KVClient:
        options: dict[str, Any] = {
            "retry": RetryPolicy(),
            "timeout": (1.0, 2.0),
            "registry": registry,
            "_sleep": clock.sleep,
            "_clock": clock,
            "_rng": random.Random(1234),
        }
        options.update(overrides)
        client = KVClient(options.pop("base_url", server.url), **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def client(make_client: MakeClient) -> KVClient:
    """A client of the fault server with the default retry policy."""
    return make_client()


Metric = Callable[..., float]


@pytest.fixture
def metric(registry: CollectorRegistry) -> Metric:
    """Read one sample of `registry` by name and labels; 0.0 when it was never recorded."""

    def read(name: str, **labels: str) -> float:
        value = registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    return read


@pytest.fixture(scope="session")
def _span_exporter() -> Any:
    """One in-memory exporter attached to the global SDK tracer provider for the whole run."""
    pytest.importorskip("opentelemetry.sdk.trace", reason="opentelemetry-sdk is not installed")
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        # The global provider can be set once per process; reuse one another test already set.
        trace.set_tracer_provider(TracerProvider())
        provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        pytest.skip("the global tracer provider is not an SDK TracerProvider")
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


@pytest.fixture
def spans(_span_exporter: Any) -> Any:
    """The in-memory span exporter, emptied for this test."""
    _span_exporter.clear()
    return _span_exporter
