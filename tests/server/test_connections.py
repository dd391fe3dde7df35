"""Connection limits on a real socket: idle, slow and surplus connections are bounded.

Each server runs as production launches it (gunicorn with -c gunicorn.conf.py, one worker) and
as `make run` starts it (the uvicorn command line of its recipe, read from `make -n run`), with
short bounds from the same variables an operator sets. "Within the bound" allows MARGIN for a
busy two-core machine; a connection never cut stays open far longer than that.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import resource
import runpy
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import Databases, Server, free_port, service_env, start_server

REPO = Path(__file__).resolve().parents[2]
LAUNCHES = ("gunicorn", "make-run")
HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.5
KEEPALIVE = 3
MARGIN = 1.5
TRICKLE_EVERY = 0.2
# Load balancers commonly drop idle upstream connections after 60 s (AWS ALB, nginx).
BALANCER_IDLE_TIMEOUT = 60
PUT_HEAD = (
    b"PUT /v1/items/slow HTTP/1.1\r\nHost: kvkit\r\n"
    b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
)
GET_HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: kvkit\r\n\r\n"
# Starts gunicorn with a soft open-file limit of 1,024 (a common default), the hard one unchanged.
LOW_NOFILE_GUNICORN = (
    "import os, resource, sys\n"
    "_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
    "resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))\n"
    "os.execv(sys.executable, [sys.executable, '-m', 'gunicorn', *sys.argv[1:]])\n"
)

Launcher = Callable[..., Server]


# --------------------------------------------------------------------------- launching


def make_run_recipe(**variables: str) -> str:
    """The shell line `make run` would serve with: its uvicorn command, variables expanded."""
    overrides = [f"{name}={value}" for name, value in {"VENV": sys.prefix, **variables}.items()]
    printed = subprocess.run(
        ["make", "--no-print-directory", "-n", "-C", str(REPO), "run", *overrides],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    recipe = re.search(r"^.*uvicorn app\.main:app(?:.*\\\n)*.*$", printed, re.M)
    assert recipe, printed
    return recipe.group(0)


def uvicorn_arguments(recipe: str, env: dict[str, str]) -> list[str]:
    """The arguments the recipe gives uvicorn, as its shell expands them in `env`."""
    uvicorn = shlex.quote(str(Path(sys.prefix) / "bin" / "uvicorn"))
    printing = recipe.replace(uvicorn, "printf '%s\\n'", 1)
    assert printing != recipe, recipe
    output = subprocess.run(["sh", "-c", printing], env=env, capture_output=True, text=True)
    return output.stdout.splitlines()


@pytest.fixture(scope="module")
def launcher(tmp_path_factory: pytest.TempPathFactory, databases: Databases) -> Iterator[Launcher]:
    """Start the service one of LAUNCHES ways with these variables; stopped after the module."""
    workdir = tmp_path_factory.mktemp("connections")
    started: list[Server] = []

    def start(launch: str, **variables: str) -> Server:
        env = service_env(
            DATABASE_URL=databases.url("sqlite"), KV_RATE_LIMIT="1000000/minute", **variables
        )
        if launch == "gunicorn":
            server = start_server(workdir, env, workers=1)
        else:
            port = free_port()
            recipe = make_run_recipe(HOST="127.0.0.1", PORT=str(port))
            # `env` runs the recipe's variable assignments and execs uvicorn in this process.
            command = ["sh", "-c", f"exec env {recipe}"]
            server = start_server(workdir, env, command=command, port=port)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module", params=LAUNCHES)
def deadline_server(request: pytest.FixtureRequest, launcher: Launcher) -> Server:
    """The service with short request deadlines and keep-alive."""
    return launcher(
        request.param,
        KV_HEADER_TIMEOUT=str(HEADER_TIMEOUT),
        KV_BODY_TIMEOUT=str(BODY_TIMEOUT),
        GUNICORN_KEEPALIVE=str(KEEPALIVE),
    )


@pytest.fixture(scope="module", params=LAUNCHES)
def crowded_server(request: pytest.FixtureRequest, launcher: Launcher) -> Server:
    """The service allowing 4 connections per worker, with the default deadlines."""
    return launcher(request.param, GUNICORN_WORKER_CONNECTIONS="4")


# --------------------------------------------------------------------------- the wire


def address(server: Server) -> tuple[str, int]:
    host, port = server.url.removeprefix("http://").split(":")
    return host, int(port)


@dataclass
class Held:
    """How long a connection stayed open, and what the server sent on it."""

    seconds: float
    closed: bool
    received: bytes

    @property
    def status(self) -> int | None:
        """The status of the first response received, if any."""
        return int(self.received.split(b" ", 2)[1]) if self.received else None


def hold(
    sock: socket.socket, pieces: Iterable[bytes] = (), *, give_up: float, started: float
) -> Held:
    """Send one piece each TRICKLE_EVERY seconds (none: stay idle) until the server closes."""
    pending = iter(pieces)
    received = b""
    sock.settimeout(TRICKLE_EVERY)
    while time.monotonic() - started < give_up:
        piece = next(pending, None)
        try:
            if piece is not None:
                sock.sendall(piece)
            data = sock.recv(65536)
        except TimeoutError:
            continue
        except OSError:  # reset, or a send after the server closed
            with contextlib.suppress(OSError):
                received += sock.recv(65536)
            return Held(time.monotonic() - started, True, received)
        if not data:
            return Held(time.monotonic() - started, True, received)
        received += data
    return Held(time.monotonic() - started, False, received)


def connect(server: Server) -> tuple[socket.socket, float]:
    sock = socket.create_connection(address(server), timeout=10)
    return sock, time.monotonic()


def exchange(sock: socket.socket, request: bytes = GET_HEALTHZ) -> int:
    """Send a request on an open connection, read its response whole; its status."""
    sock.settimeout(10)
    sock.sendall(request)
    response = http.client.HTTPResponse(sock)
    response.begin()
    response.read()
    return response.status


def new_log(server: Server, offset: int) -> str:
    with server.log_path.open("rb") as log:
        log.seek(offset)
        return log.read().decode(errors="replace")


# --------------------------------------------------------------------------- deadlines


def test_idle_connection_is_closed_within_the_header_deadline(deadline_server: Server) -> None:
    """A connection that sends nothing is closed, unanswered, KV_HEADER_TIMEOUT after it opened."""
    sock, started = connect(deadline_server)
    with sock:
        held = hold(sock, give_up=HEADER_TIMEOUT + MARGIN + 1, started=started)
    assert held.closed, f"still open after {held.seconds:.1f} s"
    assert HEADER_TIMEOUT * 0.9 <= held.seconds <= HEADER_TIMEOUT + MARGIN, held
    assert held.received == b""


def test_trickled_headers_are_cut_within_the_header_deadline(deadline_server: Server) -> None:
    """Headers sent a line at a time are answered 408 and closed at KV_HEADER_TIMEOUT, never 200."""
    lines = [b"GET /healthz HTTP/1.1\r\n", b"Host: kvkit\r\n"]
    lines += [b"X-Slow-%d: 1\r\n" % i for i in range(1000)]
    sock, started = connect(deadline_server)
    with sock:
        held = hold(sock, lines, give_up=HEADER_TIMEOUT + MARGIN + 1, started=started)
    assert held.closed, f"still open after {held.seconds:.1f} s"
    assert HEADER_TIMEOUT * 0.9 <= held.seconds <= HEADER_TIMEOUT + MARGIN, held
    assert held.status == 408, held.received[:200]


def test_trickled_body_is_cut_within_the_body_deadline(deadline_server: Server) -> None:
    """A body sent a byte at a time after whole headers is answered 408 at KV_BODY_TIMEOUT."""
    offset = deadline_server.log_path.stat().st_size
    sock, started = connect(deadline_server)
    with sock:
        sock.sendall(PUT_HEAD)
        held = hold(sock, [b" "] * 1000, give_up=BODY_TIMEOUT + MARGIN + 1, started=started)
    assert held.closed, f"still open after {held.seconds:.1f} s"
    assert BODY_TIMEOUT * 0.9 <= held.seconds <= BODY_TIMEOUT + MARGIN, held
    assert held.status == 408, held.received[:200]
    assert "Traceback" not in new_log(deadline_server, offset)


def test_kept_alive_connection_outlives_the_header_deadline(deadline_server: Server) -> None:
    """A kept-alive connection idle past the header deadline still serves, until keep-alive."""
    sock, _ = connect(deadline_server)
    with sock:
        assert exchange(sock) == 200
        time.sleep(HEADER_TIMEOUT + 0.5)
        assert exchange(sock) == 200
        held = hold(sock, give_up=KEEPALIVE + MARGIN + 1, started=time.monotonic())
    assert held.closed, f"still open after {held.seconds:.1f} s"
    assert KEEPALIVE * 0.9 <= held.seconds <= KEEPALIVE + MARGIN, held


def test_busy_kept_alive_connection_is_never_cut(deadline_server: Server) -> None:
    """Requests one after another on one connection, for thrice the deadlines, are all served."""
    sock, started = connect(deadline_server)
    statuses = []
    with sock:
        while time.monotonic() - started < 3 * BODY_TIMEOUT:
            statuses.append(exchange(sock))
            time.sleep(TRICKLE_EVERY)
    assert set(statuses) == {200}, statuses


def test_default_keep_alive_outlasts_load_balancer_idle_timeouts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With nothing set, gunicorn and `make run` keep idle connections open longer than 60 s."""
    monkeypatch.delenv("GUNICORN_KEEPALIVE", raising=False)
    assert runpy.run_path(str(REPO / "gunicorn.conf.py"))["keepalive"] > BALANCER_IDLE_TIMEOUT
    arguments = uvicorn_arguments(make_run_recipe(), service_env())
    keep_alive = arguments[arguments.index("--timeout-keep-alive") + 1]
    assert int(keep_alive) > BALANCER_IDLE_TIMEOUT


# --------------------------------------------------------------------------- connection counts


def test_requests_beyond_worker_connections_are_answered_503(crowded_server: Server) -> None:
    """With GUNICORN_WORKER_CONNECTIONS requests in progress, another is 503 at once."""
    busy = []
    try:
        for _ in range(4):  # each in the app, waiting for a body that does not come
            sock, _ = connect(crowded_server)
            sock.sendall(PUT_HEAD)
            busy.append(sock)
        time.sleep(0.3)
        started = time.monotonic()
        refused = httpx.get(crowded_server.url + "/healthz", timeout=5)
        assert refused.status_code == 503, refused.text
        assert time.monotonic() - started < 1
    finally:
        for sock in busy:
            sock.close()
    deadline = time.monotonic() + 5
    while (status := httpx.get(crowded_server.url + "/healthz", timeout=5).status_code) != 200:
        assert time.monotonic() < deadline, status
        time.sleep(0.1)


FLOOD = 2000
WORKER_CONNECTIONS = 1000  # the default: the flood is twice the limit
BACKLOG = 2048  # gunicorn's default


@pytest.fixture(scope="module")
def flooded_server(
    tmp_path_factory: pytest.TempPathFactory, databases: Databases
) -> Iterator[Server]:
    """gunicorn (one worker) with default limits, started with 1,024 open files as in the issue."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = FLOOD + 512
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"the hard open-file limit {hard} leaves no room for a flood of {FLOOD}")
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    port = free_port()
    env = service_env(
        DATABASE_URL=databases.url("sqlite"),
        KV_RATE_LIMIT="1000000/minute",
        GUNICORN_BIND=f"127.0.0.1:{port}",
        GUNICORN_WORKERS="1",
    )
    conf = str(REPO / "gunicorn.conf.py")
    command = [sys.executable, "-c", LOW_NOFILE_GUNICORN, "-c", conf, "app.main:app"]
    server = start_server(tmp_path_factory.mktemp("flood"), env, command=command, port=port)
    try:
        yield server
    finally:
        server.stop()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def worker_pid(server: Server) -> int:
    """The pid of the server's one gunicorn worker."""
    master = server.process.pid
    (worker,) = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return int(worker)


def sockets_held(pid: int) -> int:
    return sum(1 for fd in Path(f"/proc/{pid}/fd").iterdir() if "socket:" in os.readlink(fd))


def test_worker_raises_its_open_file_limit_to_fit_its_connections(flooded_server: Server) -> None:
    """A worker started with 1,024 open files allows worker_connections plus the backlog."""
    limits = Path(f"/proc/{worker_pid(flooded_server)}/limits").read_text()
    soft = re.search(r"^Max open files\s+(\d+)", limits, re.M)
    assert soft, limits
    assert int(soft.group(1)) >= WORKER_CONNECTIONS + BACKLOG, limits


def test_flood_of_idle_connections_does_not_stop_a_normal_client(flooded_server: Server) -> None:
    """A client queued behind 2,000 idle connections is served, and the worker keeps 1,000."""
    worker = worker_pid(flooded_server)
    flood: list[socket.socket] = []
    # Stopped, the worker lets the whole flood and the client queue up: it then meets them in
    # one burst, as a busy event loop meets connections that arrive while it works.
    os.kill(worker, signal.SIGSTOP)
    try:
        for _ in range(FLOOD):
            with contextlib.suppress(OSError):
                flood.append(socket.create_connection(address(flooded_server), timeout=2))
        client, _ = connect(flooded_server)
        client.sendall(GET_HEALTHZ)
        os.kill(worker, signal.SIGCONT)
        with client:
            client.settimeout(5)
            response = http.client.HTTPResponse(client)
            response.begin()
            assert response.status == 200, response.read()
        assert len(flood) > FLOOD * 0.9, len(flood)
        started = time.monotonic()
        again = httpx.get(flooded_server.url + "/healthz", timeout=5)  # the flood still open
        assert again.status_code == 200, again.text
        assert time.monotonic() - started < 2
        deadline = time.monotonic() + 5
        while (held := sockets_held(worker)) > WORKER_CONNECTIONS + 20:
            assert time.monotonic() < deadline, f"the worker holds {held} sockets"
            time.sleep(0.1)
    finally:
        os.kill(worker, signal.SIGCONT)
        for sock in flood:
            sock.close()
