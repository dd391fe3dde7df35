"""Fixtures: a fault-injecting kvkit stand-in on a real socket, kvclient's testing mode, fresh
registries, both clients behind one interface, and the real kvkit service.

`FaultServer` answers like a tiny in-memory kvkit (`FakeKV`) unless a test has scripted faults:
each scripted action answers one request, in order, and `times=None` repeats an action forever.
Every request is recorded (method, path, headers, body) before it is answered.

`make_client` is parametrized over `KVClient` and `AsyncKVClient` (driven through `AsyncAsSync`),
so every behavioural test that uses it runs against both clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from prometheus_client import CollectorRegistry

import kvclient
from kvclient import AsyncKVClient, KVClient, RetryPolicy

CI = os.environ.get("CI") == "true"


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


def free_port() -> int:
    """A loopback port nobody listens on (connections to it are refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


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


@pytest.fixture
def server() -> Iterator[FaultServer]:
    """A running fault server, stopped after the test."""
    fault = FaultServer()
    fault.start()
    yield fault
    fault.stop()


@pytest.fixture
def refused_url() -> str:
    """The URL of a loopback port nobody listens on."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture
def clock() -> Iterator[kvclient.Testing]:
    """kvclient's testing mode: sleeps are recorded and skipped, jitter is seeded."""
    with kvclient.set_testing(True, seed=1234) as testing:
        assert testing is not None
        yield testing


@pytest.fixture
def registry() -> CollectorRegistry:
    """A fresh Prometheus registry, so metric values belong to this test alone."""
    return CollectorRegistry()


class AsyncAsSync:
    """An `AsyncKVClient` driven from synchronous test code on an event loop of its own.

    It has `KVClient`'s methods (iter_items collects the async iterator), so one behavioural
    test runs unchanged against both clients.
    """

    def __init__(self, client: AsyncKVClient) -> None:
        self.client = client
        self._runner = asyncio.Runner()

    def __getattr__(self, name: str) -> Any:
        member = getattr(self.client, name)
        if name == "iter_items":
            return lambda *args, **kwargs: iter(self._runner.run(_collect(member(*args, **kwargs))))
        if inspect.iscoroutinefunction(member):
            return lambda *args, **kwargs: self._runner.run(member(*args, **kwargs))
        return member

    def close(self) -> None:
        """Close the client (`aclose`); its event loop stays for calls that must then fail."""
        self._runner.run(self.client.aclose())

    def dispose(self) -> None:
        """Close the client and its event loop, at the end of the test."""
        self.close()
        self._runner.close()


async def _collect(items: AsyncIterator[Any]) -> list[Any]:
    return [item async for item in items]


MakeClient = Callable[..., Any]


@pytest.fixture(params=["sync", "async"])
def flavour(request: pytest.FixtureRequest) -> str:
    """Which client a behavioural test runs against."""
    return str(request.param)


@pytest.fixture
def make_client(
    server: FaultServer, clock: kvclient.Testing, registry: CollectorRegistry, flavour: str
) -> Iterator[MakeClient]:
    """Build clients of `server` (sync or async) in testing mode on `registry`."""
    clients: list[Any] = []

    def make(**overrides: Any) -> Any:
        options: dict[str, Any] = {
            "retry": RetryPolicy(),
            "timeout": (1.0, 2.0),
            "registry": registry,
            "name": "test",
        }
        options.update(overrides)
        base_url = options.pop("base_url", server.url)
        client: Any
        if flavour == "sync":
            client = KVClient(base_url, **options)
        else:
            client = AsyncAsSync(AsyncKVClient(base_url, **options))
        clients.append(client)
        return client

    yield make
    for client in clients:
        if isinstance(client, AsyncAsSync):
            client.dispose()
        else:
            client.close()


@pytest.fixture
def client(make_client: MakeClient) -> Any:
    """A client of the fault server with the default retry policy."""
    return make_client()


Metric = Callable[..., float]


@pytest.fixture
def metric(registry: CollectorRegistry) -> Metric:
    """Read one sample of `registry` by name and labels; 0.0 when it was never recorded."""

    def read(name: str, **labels: str) -> float:
        labels.setdefault("client", "test")
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


# --------------------------------------------------------------------------- raw sockets


class TrickleServer:
    """Answers every request with a 200 whose bytes it sends one at a time, `interval` apart.

    requests' read timeout applies to each socket read, so this server kept a call with a short
    deadline alive for as long as it had bytes to send. `headers=True` trickles the status line
    and headers too; otherwise only the body.
    """

    def __init__(self, interval: float, body_bytes: int, *, headers: bool = False) -> None:
        self.interval = interval
        self.body = b'"' + b"x" * (body_bytes - 2) + b'"'
        self.trickle_headers = headers
        self.connections = 0
        self.stopped = threading.Event()
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.05)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            received = b""
            while b"\r\n\r\n" not in received:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                received += chunk
            head = (
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(self.body)}\r\n\r\n"
            ).encode()
            if not self.trickle_headers:
                conn.sendall(head)
                head = b""
            for byte in head + self.body:
                if self.stopped.wait(self.interval):
                    return
                conn.sendall(bytes([byte]))

    def stop(self) -> None:
        """Stop accepting and stop every trickle."""
        self.stopped.set()
        self._thread.join()
        self._sock.close()


@pytest.fixture
def trickle_server() -> Iterator[Callable[..., TrickleServer]]:
    """Start trickling servers: `trickle_server(interval, body_bytes, headers=False)`."""
    started: list[TrickleServer] = []

    def start(interval: float, body_bytes: int, *, headers: bool = False) -> TrickleServer:
        server = TrickleServer(interval, body_bytes, headers=headers)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


class UntrustedTLSServer:
    """A TLS listener with a self-signed certificate that no client trusts; counts handshakes."""

    def __init__(self, certfile: Path, keyfile: Path) -> None:
        import ssl

        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(certfile, keyfile)
        self.handshakes = 0
        self.stopped = threading.Event()
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.05)
        self.url = f"https://127.0.0.1:{self._sock.getsockname()[1]}"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            self.handshakes += 1
            conn.settimeout(2.0)
            with contextlib.suppress(OSError), self.context.wrap_socket(conn, server_side=True):
                pass  # the client refuses the certificate during the handshake

    def stop(self) -> None:
        """Stop accepting."""
        self.stopped.set()
        self._thread.join()
        self._sock.close()


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[UntrustedTLSServer]:
    """A TLS server whose self-signed certificate (made with openssl) the client does not trust."""
    if not _have("openssl"):
        _unavailable("the openssl command is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    server = UntrustedTLSServer(cert, key)
    yield server
    server.stop()


def _have(command: str) -> bool:
    import shutil

    return shutil.which(command) is not None


def _unavailable(reason: str) -> None:
    """Skip, or with CI=true fail: CI never passes by skipping."""
    if CI:
        pytest.fail(f"{reason}; CI=true requires it")
    pytest.skip(reason)


# --------------------------------------------------------------------------- the real service

# Variables of the service that must come from the test, never from the developer's shell.
_SERVICE_ENV_PREFIXES = (
    "KV_",
    "DATABASE_URL",
    "REDIS_URL",
    "LOG_",
    "OTEL_",
    "GUNICORN_",
    "PROMETHEUS_MULTIPROC_DIR",
    "FORWARDED_ALLOW_IPS",
)


@dataclass
class Service:
    """A running kvkit process (uvicorn, SQLite, no Redis) on a loopback port."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def metric(self, name: str, **labels: str) -> float:
        """One sample of the service's own /metrics; 0.0 when it has none."""
        from prometheus_client.parser import text_string_to_metric_families

        with urllib_request(self.url + "/metrics") as response:
            text = response.read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return float(sample.value)
        return 0.0


def urllib_request(url: str) -> Any:
    """GET `url` with the standard library, so fixtures do not depend on the client under test."""
    import urllib.request

    return urllib.request.urlopen(url, timeout=5)  # nosec B310  # loopback only


@pytest.fixture(scope="module")
def kvkit_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Service]]:
    """Start the real kvkit service from this repository: `kvkit_service(**env)`."""
    repo = Path(__file__).resolve().parents[2]
    if not (repo / "app" / "main.py").is_file():
        _unavailable("the kvkit service's source (app/) is not beside the client")
    workdir = tmp_path_factory.mktemp("kvkit")
    started: list[Service] = []

    def start(**settings: str) -> Service:
        env = {k: v for k, v in os.environ.items() if not k.startswith(_SERVICE_ENV_PREFIXES)}
        env.update(
            DATABASE_URL=f"sqlite:///{workdir / f'kv-{uuid.uuid4().hex[:8]}.sqlite3'}",
            KV_METRICS_MIN_INTERVAL="0",
            LOG_LEVEL="WARNING",
            PYTHONPATH=str(repo),
            **settings,
        )
        migrate = subprocess.run(
            [sys.executable, "-m", "app", "migrate"],
            cwd=workdir,
            env=env,
            capture_output=True,
            timeout=120,
        )
        if migrate.returncode:
            if b"ModuleNotFoundError" in migrate.stderr:
                _unavailable("the kvkit service's dependencies are not installed")
            raise RuntimeError(f"migrate failed: {migrate.stderr.decode()}")
        port = free_port()
        log_path = workdir / f"server-{port}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [
                    *(sys.executable, "-m", "uvicorn", "app.main:app"),
                    *("--host", "127.0.0.1", "--port", str(port)),
                    *("--no-access-log", "--log-level", "warning"),
                ],
                cwd=workdir,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        service = Service(f"http://127.0.0.1:{port}", process, log_path)
        started.append(service)
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"kvkit exited: {log_path.read_text(errors='replace')}")
            with contextlib.suppress(OSError), urllib_request(service.url + "/healthz"):
                return service
            if time.monotonic() > deadline:
                raise RuntimeError(f"kvkit did not start: {log_path.read_text(errors='replace')}")
            time.sleep(0.1)

    yield start
    for service in started:
        service.process.terminate()
        try:
            service.process.wait(10)
        except subprocess.TimeoutExpired:
            service.process.kill()
            service.process.wait()
