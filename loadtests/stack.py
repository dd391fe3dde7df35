"""The production configuration run locally: gunicorn with the image's config, PostgreSQL, Redis.

Shared by run_load.py and bench.py. Every process started here leads a process group of its own,
and the whole group is stopped on exit, on Ctrl-C and on SIGTERM.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

REPO_ROOT = Path(__file__).resolve().parent.parent
GUNICORN_CONF = REPO_ROOT / "gunicorn.conf.py"
REPORTS_DIR = REPO_ROOT / "loadtests" / "reports"

DEFAULT_POSTGRES_URL = "postgres://postgres@127.0.0.1:5432"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_DATABASE = "kvkit_bench"

# Settings of the service that must come from the harness, never from the caller's shell.
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
_DATABASE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class StackError(RuntimeError):
    """The stack could not be brought up; the message says what to fix."""


def service_env(**settings: str) -> dict[str, str]:
    """The caller's environment without any service setting, plus `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SERVICE_ENV_PREFIXES)}
    env.update(settings)
    return env


def ensure_database(postgres_url: str, name: str) -> str:
    """Create database `name` if missing (others are never touched), migrate it, return its URL."""
    if not _DATABASE_NAME.match(name):
        raise StackError(f"not a plain database name: {name!r}")
    import psycopg
    from psycopg import errors, sql

    try:
        with psycopg.connect(
            f"{postgres_url}/postgres", autocommit=True, connect_timeout=5
        ) as conn:
            found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if found is None:
                with contextlib.suppress(errors.DuplicateDatabase):  # created by a parallel run
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.OperationalError as exc:
        raise StackError(f"PostgreSQL is not reachable at {postgres_url}: {exc}") from exc
    url = f"{postgres_url}/{name}"
    result = subprocess.run(
        [sys.executable, "-m", "app", "migrate"],
        cwd=REPO_ROOT,
        env=service_env(DATABASE_URL=url, LOG_LEVEL="WARNING"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode:
        raise StackError(f"migrating {name} failed:\n{result.stdout}{result.stderr}")
    return url


def require_redis(url: str) -> None:
    """Fail early, with the address, when Redis does not answer."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise StackError(f"Redis is not reachable at {url}: {exc}") from exc
    finally:
        client.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------- processes

_running: list[ManagedProcess] = []


@dataclass
class ManagedProcess:
    """A child leading its own process group, so stopping it stops everything it started."""

    command: Sequence[str]
    env: dict[str, str]
    log_path: Path | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> None:
        output = self.log_path.open("wb") if self.log_path else subprocess.DEVNULL
        try:
            self.process = subprocess.Popen(
                list(self.command),
                cwd=REPO_ROOT,
                env=self.env,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            if self.log_path:
                output.close()  # type: ignore[union-attr]
        _running.append(self)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait(self, timeout: float) -> int:
        """The exit status; the whole group is killed when it outlives `timeout`."""
        assert self.process is not None
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop(grace=5)
            raise

    def stop(self, grace: float = 30) -> None:
        """SIGTERM to the process group, SIGKILL to it after `grace` seconds."""
        if self.process is None:
            return
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(grace)
        # Stragglers of the group (workers whose master died first) go too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        if self in _running:
            _running.remove(self)

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def _stop_all() -> None:
    for process in reversed(_running[:]):
        process.stop(grace=10)


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def install_cleanup() -> None:
    """Stop every started process at exit; SIGTERM exits through the same cleanup as Ctrl-C."""
    atexit.register(_stop_all)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)


# --------------------------------------------------------------------------- PgBouncer


def pgbouncer_command(
    executable: str,
    root: Path,
    *,
    listen_port: int,
    server: tuple[str, int],
    pool_size: int,
    max_client_conn: int = 1000,
    ignore_startup_parameters: Sequence[str] = (),
) -> list[str]:
    """Write a private PgBouncer's configuration into `root` (transaction pooling, trust auth
    for `postgres`, which may use the admin console, its log in `root`/pgbouncer.log) and return
    the command that runs it. PgBouncer refuses to run as root: then the command runs it as
    `postgres`, and `root` and its files are given to that user."""
    lines = [
        "[databases]",
        f"* = host={server[0]} port={server[1]}",
        "[pgbouncer]",
        "listen_addr = 127.0.0.1",
        f"listen_port = {listen_port}",
        "unix_socket_dir =",
        "auth_type = trust",
        f"auth_file = {root / 'userlist.txt'}",
        "admin_users = postgres",
        "pool_mode = transaction",
        f"default_pool_size = {pool_size}",
        "reserve_pool_size = 0",
        f"max_client_conn = {max_client_conn}",
        f"logfile = {root / 'pgbouncer.log'}",
    ]
    if ignore_startup_parameters:
        lines.append(f"ignore_startup_parameters = {', '.join(ignore_startup_parameters)}")
    (root / "pgbouncer.ini").write_text("\n".join(lines) + "\n")
    (root / "userlist.txt").write_text('"postgres" ""\n')
    command = [executable, str(root / "pgbouncer.ini")]
    if os.geteuid() != 0:
        return command
    import pwd

    account = pwd.getpwnam("postgres")
    for path in (root, *root.iterdir()):
        os.chown(path, account.pw_uid, account.pw_gid)
    return ["runuser", "-u", "postgres", "--", *command]


# --------------------------------------------------------------------------- gunicorn


@dataclass
class Gunicorn(ManagedProcess):
    """gunicorn with the project's gunicorn.conf.py serving `app` on a free loopback port."""

    url: str = ""

    def worker_pids(self) -> list[int]:
        """The master's live children, read from /proc."""
        return children_of(self.pid)


@contextlib.contextmanager
def running_gunicorn(
    app: str,
    settings: dict[str, str],
    *,
    workers: int,
    log_path: Path | None,
    ready_path: str = "/readyz",
    timeout: float = 60,
) -> Iterator[Gunicorn]:
    """gunicorn started as the image starts it, once `ready_path` answers 200; stopped after."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="kvkit-metrics-") as metrics_dir:
        env = service_env(
            GUNICORN_BIND=f"127.0.0.1:{port}",
            GUNICORN_WORKERS=str(workers),
            PROMETHEUS_MULTIPROC_DIR=metrics_dir,  # as in the image
            **settings,
        )
        command = [sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONF), app]
        server = Gunicorn(command, env, log_path, url=f"http://127.0.0.1:{port}")
        server.start()
        try:
            wait_until_ready(server, ready_path, timeout)
            yield server
        finally:
            server.stop()


def wait_until_ready(server: Gunicorn, path: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last_error = "no answer"
    while time.monotonic() < deadline:
        if not server.running():
            raise StackError(f"gunicorn exited during startup:\n{server.log_tail()}")
        status, last_error = http_status(server.url + path, timeout=5)
        if status == 200:
            return
        time.sleep(0.1)
    raise StackError(
        f"{server.url}{path} not ready after {timeout:.0f}s ({last_error}):\n{server.log_tail()}"
    )


def http_status(url: str, timeout: float) -> tuple[int, str]:
    """The status of a GET, or 0 and the reason when there is no HTTP answer."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), ""
    except urllib.error.HTTPError as exc:
        return exc.code, f"HTTP {exc.code}"
    except (OSError, urllib.error.URLError) as exc:
        return 0, str(exc)


def http_get(url: str, headers: dict[str, str] | None = None, timeout: float = 10) -> bytes:
    """The body of a 2xx answer; StackError for anything else."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return bytes(response.read())
    except (OSError, urllib.error.URLError) as exc:  # HTTPError is a URLError
        raise StackError(f"GET {url} failed: {exc}") from exc


# --------------------------------------------------------------------------- /proc


def children_of(pid: int) -> list[int]:
    """Live child processes of `pid`."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        stat = _read_stat(int(entry.name))
        if stat is not None and int(stat[1]) == pid:
            children.append(int(entry.name))
    return sorted(children)


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS (resident now) and VmHWM (peak resident) of a process, in KiB."""
    values = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                values[name] = int(rest.split()[0])
    return values


def process_age(pid: int) -> float | None:
    """Seconds since `pid` started, to the kernel's clock-tick resolution (usually 10 ms)."""
    stat = _read_stat(pid)
    if stat is None:
        return None
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return uptime - int(stat[19]) / os.sysconf("SC_CLK_TCK")


def _read_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name: [state, ppid, ...]."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()
