"""Fixtures for the real services every integration test talks to.

PostgreSQL, MariaDB and Redis run on loopback on the development and CI machines. Without them the
tests that need them skip with the reason; with CI=true they fail instead, so CI never passes by
skipping. Each test session gets its own databases, and the service runs as a real process
(uvicorn or gunicorn) spoken to over HTTP. The servers a few packages need of their own run here
too, privately on free ports: PostgreSQL, PgBouncer, Redis with Sentinel, HAProxy, Patroni and etcd.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from loadtests.stack import pgbouncer_command

CI = os.environ.get("CI") == "true"
POSTGRES = ("127.0.0.1", 5432)
MARIADB = ("127.0.0.1", 3306)
REDIS = ("127.0.0.1", 6379)
BACKENDS = ("sqlite", "postgres", "mariadb")
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


def pytest_configure(config: pytest.Config) -> None:
    """Load Django's app registry before test modules import the store's models."""
    from app.store.setup import setup_django

    setup_django()


def port_open(address: tuple[str, int]) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(address, timeout=0.5):
        return True
    return False


def require(address: tuple[str, int], name: str) -> None:
    """Skip (or, with CI=true, fail) when a real service is not reachable."""
    if port_open(address):
        return
    reason = f"{name} is not reachable on {address[0]}:{address[1]}"
    if CI:
        pytest.fail(f"{reason}; CI=true requires it")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------- databases


class Databases:
    """Creates one throw-away database per backend for this test session."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.name = f"kvkit_test_{uuid.uuid4().hex[:10]}"
        self.urls: dict[str, str] = {}

    def url(self, backend: str) -> str:
        if backend not in self.urls:
            self.urls[backend] = getattr(self, f"_create_{backend}")()
            migrate(self.urls[backend], self.workdir)
        return self.urls[backend]

    def _create_sqlite(self) -> str:
        return f"sqlite:///{self.workdir / (self.name + '.sqlite3')}"

    def _create_postgres(self) -> str:
        require(POSTGRES, "PostgreSQL")
        import psycopg

        with psycopg.connect(
            "host=127.0.0.1 port=5432 user=postgres dbname=postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')
        return f"postgres://postgres@127.0.0.1:5432/{self.name}"

    def _create_mariadb(self) -> str:
        require(MARIADB, "MariaDB")
        with mariadb_connection() as conn, conn.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE `{self.name}` CHARACTER SET utf8mb4")
        return f"mysql://root@127.0.0.1:3306/{self.name}"

    def drop_all(self) -> None:
        if "postgres" in self.urls:
            import psycopg

            with psycopg.connect(
                "host=127.0.0.1 port=5432 user=postgres dbname=postgres", autocommit=True
            ) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        if "mariadb" in self.urls:
            with mariadb_connection() as conn, conn.cursor() as cursor:
                cursor.execute(f"DROP DATABASE IF EXISTS `{self.name}`")


def mariadb_connection(database: str | None = None):  # type: ignore[no-untyped-def]
    import pymysql

    return pymysql.connect(
        host="127.0.0.1", port=3306, user="root", password="", database=database, autocommit=True
    )


def service_env(**overrides: str) -> dict[str, str]:
    """The environment for a service process: the test's settings only."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SERVICE_ENV_PREFIXES)}
    env.update(LOG_FORMAT="json", LOG_LEVEL="WARNING")
    env.update(overrides)
    return env


def migrate(database_url: str, cwd: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app", "migrate"],
        cwd=cwd,
        timeout=120,
        env=service_env(DATABASE_URL=database_url),
        capture_output=True,
    )
    if result.returncode:
        raise RuntimeError(f"migrate failed:\n{result.stdout.decode()}{result.stderr.decode()}")


_PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"


@contextlib.contextmanager
def empty_database(backend: str) -> Iterator[tuple[str, Callable[[], Any]]]:
    """A new, empty database: its URL, and a function opening an autocommit connection to it."""
    import psycopg

    name = f"kvkit_mig_{uuid.uuid4().hex[:8]}"
    if backend == "postgres":
        require(POSTGRES, "PostgreSQL")
        with psycopg.connect(_PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = f"postgres://postgres@127.0.0.1:5432/{name}"

        def connect() -> Any:
            dsn = f"host=127.0.0.1 port=5432 user=postgres dbname={name}"
            return psycopg.connect(dsn, autocommit=True)
    else:
        require(MARIADB, "MariaDB")
        with mariadb_connection() as conn, conn.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        url = f"mysql://root@127.0.0.1:3306/{name}"

        def connect() -> Any:
            return mariadb_connection(name)

    try:
        yield url, connect
    finally:
        if backend == "postgres":
            with psycopg.connect(_PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        else:
            with mariadb_connection() as conn, conn.cursor() as cursor:
                cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")


def execute(conn: Any, sql: str) -> Any:
    """Run one statement on a psycopg or PyMySQL connection; the first row it returns."""
    import psycopg

    if isinstance(conn, psycopg.Connection):
        cursor = conn.execute(sql)
        return cursor.fetchone() if cursor.description else None
    with conn.cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetchone() if cursor.description else None


@pytest.fixture(scope="session")
def databases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Databases]:
    dbs = Databases(tmp_path_factory.mktemp("db"))
    yield dbs
    dbs.drop_all()


# --------------------------------------------------------------------------- the store in process


def use_database(url: str) -> None:
    """Point this process's Django default database at `url`, for tests of app/store itself.

    The store is then called directly (no HTTP, no server process); each test thread gets its
    own connection, as each database thread does in the service.
    """
    from app.store.setup import setup_django

    setup_django()
    from django.conf import settings
    from django.db import connections

    from app.store.databases import database_config

    connections.close_all()
    with contextlib.suppress(AttributeError):
        del connections["default"]
    settings.DATABASES = {"default": database_config(url)}
    connections._settings = None  # read DATABASES again on the next connection
    connections.__dict__.pop("settings", None)


@pytest.fixture(params=BACKENDS)
def store_backend(request: pytest.FixtureRequest, databases: Databases) -> Iterator[str]:
    """The store in this process on each backend's session database; the backend's name."""
    use_database(databases.url(request.param))
    yield str(request.param)
    from django.db import connections

    connections.close_all()


@pytest.fixture
def failing_key(store_backend: str) -> Iterator[str]:
    """A trigger of the test's own that makes the database refuse any key ending in "boom"."""
    sql = {
        "postgres": [
            "CREATE OR REPLACE FUNCTION kv_test_boom() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN IF NEW.key LIKE '%%boom' THEN RAISE EXCEPTION 'boom'; END IF;"
            " RETURN NEW; END $$",
            "CREATE TRIGGER kv_test_boom BEFORE INSERT OR UPDATE ON kv_item"
            " FOR EACH ROW EXECUTE FUNCTION kv_test_boom()",
        ],
        "mariadb": [
            "CREATE TRIGGER kv_test_boom BEFORE INSERT ON kv_item FOR EACH ROW"
            " BEGIN IF NEW.`key` LIKE '%%boom' THEN"
            " SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'boom'; END IF; END",
        ],
        "sqlite": [
            "CREATE TRIGGER kv_test_boom BEFORE INSERT ON kv_item WHEN NEW.key LIKE '%%boom'"
            " BEGIN SELECT RAISE(ABORT, 'boom'); END",
        ],
    }[store_backend]
    from django.db import connection

    with connection.cursor() as cursor:
        for statement in sql:
            cursor.execute(statement)
    yield "boom"
    with connection.cursor() as cursor:
        if store_backend == "postgres":
            cursor.execute("DROP TRIGGER kv_test_boom ON kv_item")
        else:
            cursor.execute("DROP TRIGGER kv_test_boom")


@pytest.fixture
def services(store_backend: str) -> Iterator[str]:
    """The services in this process on each backend, with database threads of their own."""
    from app.store.db import configure_db_threads, shutdown_db_threads

    configure_db_threads(4, timeout=5.0)
    yield store_backend
    shutdown_db_threads()


# --------------------------------------------------------------------------- servers


@dataclass
class Server:
    """A running kvkit process and an HTTP client for it."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str]
    clients: list[httpx.Client] = field(default_factory=list)

    def client(self, **kwargs: object) -> httpx.Client:
        client = httpx.Client(base_url=self.url, timeout=30, **kwargs)  # type: ignore[arg-type]
        self.clients.append(client)
        return client

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        for client in self.clients:
            client.close()
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_server(
    workdir: Path,
    env: dict[str, str],
    *,
    workers: int = 0,
    wait: bool = True,
    command: list[str] | None = None,
    port: int = 0,
    cwd: Path | None = None,
) -> Server:
    """Start uvicorn (workers=0) or gunicorn with uvicorn workers, and wait until it answers.

    A caller's own `command` replaces that command line and must listen on the `port` it passes;
    `cwd` replaces `workdir` as the working directory. The log goes to `workdir` either way.
    """
    port = port or free_port()
    if command is None and workers:
        repo = Path(__file__).resolve().parent.parent
        command = [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            str(repo / "gunicorn.conf.py"),
            "app.main:app",
        ]
        env = {**env, "GUNICORN_BIND": f"127.0.0.1:{port}", "GUNICORN_WORKERS": str(workers)}
    elif command is None:
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            "app.main:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
        ]
    log_path = workdir / f"server-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=cwd or workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(f"http://127.0.0.1:{port}", process, log_path, env)
    if wait:
        wait_until_up(server)
    return server


def wait_until_up(server: Server, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited with {server.process.returncode}:\n{server.log()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(server.url + "/healthz", timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"server did not come up:\n{server.log()}")


ServerFactory = Callable[..., Server]


@pytest.fixture(scope="session")
def server_factory(
    tmp_path_factory: pytest.TempPathFactory, databases: Databases
) -> Iterator[ServerFactory]:
    """Start servers on demand: `server_factory(backend, workers=0, **env)`; stopped at the end."""
    started: list[Server] = []
    workdir = tmp_path_factory.mktemp("srv")

    def factory(backend: str = "sqlite", *, workers: int = 0, **env: str) -> Server:
        # A limit no functional test reaches (the rate-limit tests set their own), and scrapes
        # that always collect, so a test reads the counts its own requests just made.
        env = {
            "DATABASE_URL": databases.url(backend),
            "KV_RATE_LIMIT": "1000000/minute",
            "KV_METRICS_MIN_INTERVAL": "0",
            **env,
        }
        server = start_server(workdir, service_env(**env), workers=workers)
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def api_server(backend: str, server_factory: ServerFactory) -> Server:
    """The service on each backend with default settings, shared by the tests of the session."""
    return server_factory(backend)


@pytest.fixture
def api(api_server: Server) -> Iterator[httpx.Client]:
    client = api_server.client()
    yield client
    client.close()


@pytest.fixture
def keyspace() -> str:
    """A unique key prefix, so tests sharing a database never see each other's items."""
    return f"t{uuid.uuid4().hex[:12]}."


@pytest.fixture(scope="session")
def redis_url() -> str:
    require(REDIS, "Redis")
    return "redis://127.0.0.1:6379/0"


# --------------------------------------------------------------------------- private instances


def stop_process(process: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM) -> None:
    """Stop a server the fixtures started: `sig`, then SIGKILL if it outlives 15 s."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


class PrivateRedis:
    """A Redis of the test's own on a free port, so outage tests never touch the shared one."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--enable-debug-command",  # DEBUG SLEEP stalls it on purpose (loopback only)
                "local",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not port_open(("127.0.0.1", self.port)):
            if time.monotonic() > deadline:
                raise RuntimeError("private redis-server did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None

    def client(self):  # type: ignore[no-untyped-def]
        import redis

        return redis.Redis(port=self.port, socket_timeout=2)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        if CI:
            pytest.fail("redis-server is not installed; CI=true requires it")
        pytest.skip("redis-server is not installed")
    instance = PrivateRedis(tmp_path)
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture
def api_keys() -> list[str]:
    """Fresh API keys, so every test has buckets and idempotency scopes of its own."""
    return [uuid.uuid4().hex for _ in range(2)]


# --------------------------------------------------------------------------- private PostgreSQL


def postgres_bindir() -> Path | None:
    """The directory holding initdb and pg_ctl: $PG_BINDIR, the Debian layout, or the PATH."""
    candidates = [Path(os.environ["PG_BINDIR"])] if os.environ.get("PG_BINDIR") else []
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda path: int(path.parent.name) if path.parent.name.isdigit() else 0,
        reverse=True,
    )
    candidates += versions
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).parent)
    for candidate in candidates:
        if (candidate / "initdb").is_file() and (candidate / "pg_ctl").is_file():
            return candidate
    return None


class PrivatePostgres:
    """A PostgreSQL cluster of the test's own on a free port, so outage tests may stop it.

    The cluster lives in a fresh temporary directory owned by `postgres` (PostgreSQL refuses to
    run as root, so under root every command goes through `runuser -u postgres --`). Trust auth:
    the superuser `postgres` connects without a password over TCP on 127.0.0.1 or the socket.
    """

    DATABASE = "kvkit"

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="kvkit-pg-"))
        self.data = self.root / "data"
        self.log_path = self.root / "postgres.log"
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/{self.DATABASE}"
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            import pwd

            try:
                account = pwd.getpwnam("postgres")
            except KeyError:
                shutil.rmtree(self.root, ignore_errors=True)
                raise RuntimeError("running as root needs a 'postgres' account") from None
            os.chown(self.root, account.pw_uid, account.pw_gid)

    def _run(self, tool: str, *args: str, timeout: float = 60) -> str:
        command = [str(self.bindir / tool), *args]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(
            command, cwd=self.root, capture_output=True, text=True, timeout=timeout, check=False
        )
        if result.returncode:
            log = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
            raise RuntimeError(
                f"{tool} failed ({result.returncode}):\n{result.stdout}{result.stderr}\n{log}"
            )
        return result.stdout

    def init(self) -> None:
        """Create the cluster: trust auth, superuser `postgres`, byte-order collation."""
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )

    def start(self) -> None:
        """Start (or restart) the server and wait until it accepts connections."""
        # No fsync: the OS keeps what a killed server wrote. Commits stay synchronous, so even
        # an `immediate` stop (a crash) keeps every acknowledged transaction.
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
            " -c fsync=off -c full_page_writes=off"
        )
        log = str(self.log_path)
        self._run("pg_ctl", "-D", str(self.data), "-l", log, "-o", options, "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: `fast` ends sessions cleanly, `immediate` is a crash."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop")

    @property
    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def connect(self, dbname: str | None = None):  # type: ignore[no-untyped-def]
        """A psycopg connection as the superuser (autocommit)."""
        import psycopg

        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user="postgres",
            dbname=dbname or self.DATABASE,
            autocommit=True,
            connect_timeout=5,
        )

    def psql(self, sql: str, dbname: str | None = None) -> str:
        """Run SQL through psql as the superuser; returns unaligned, tuples-only output."""
        server = ["-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"]
        command = [str(self.bindir / "psql"), *server, "-d", dbname or self.DATABASE, "-Atc", sql]
        result = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
        if result.returncode:
            raise RuntimeError(f"psql failed: {result.stderr}")
        return result.stdout.strip()

    def destroy(self) -> None:
        """Stop the server if it runs and delete the cluster."""
        try:
            if self.running:
                self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def private_postgres(tmp_path: Path) -> Iterator[PrivatePostgres]:
    """A migrated PostgreSQL of the test's own (`.url`, `.stop()`, `.start()`, `.connect()`)."""
    bindir = postgres_bindir()
    if bindir is None:
        reason = (
            "PostgreSQL server binaries (initdb, pg_ctl) were not found in $PG_BINDIR, "
            "/usr/lib/postgresql/*/bin or the PATH; install the postgresql package"
        )
        if CI:
            pytest.fail(f"{reason}; CI=true requires them")
        pytest.skip(reason)
    instance = PrivatePostgres(bindir)
    try:
        instance.init()
        instance.start()
        instance.psql(f'CREATE DATABASE "{instance.DATABASE}"', dbname="postgres")
        migrate(instance.url, tmp_path)
        yield instance
    finally:
        instance.destroy()


# --------------------------------------------------------------------------- private PgBouncer


class PrivatePgBouncer:
    """A PgBouncer of the test's own, in transaction pooling, in front of the shared PostgreSQL.

    The configuration `make bench` runs too (`loadtests/stack.py`): under root PgBouncer runs
    as `postgres` from a temporary directory owned by it; trust auth, like the server behind it;
    the admin console (database `pgbouncer`) answers `SHOW POOLS`. `ignore_startup_parameters`
    names client startup parameters PgBouncer drops instead of refusing the connection.
    """

    def __init__(
        self,
        executable: str,
        *,
        pool_size: int = 2,
        ignore_startup_parameters: tuple[str, ...] = (),
        server: tuple[str, int] = POSTGRES,
    ) -> None:
        self.port = free_port()
        self.pool_size = pool_size
        self.root = Path(tempfile.mkdtemp(prefix="kvkit-pgbouncer-"))
        self.log_path = self.root / "pgbouncer.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.command = pgbouncer_command(
            executable,
            self.root,
            listen_port=self.port,
            server=server,
            pool_size=pool_size,
            max_client_conn=500,
            ignore_startup_parameters=ignore_startup_parameters,
        )

    def url(self, direct_url: str) -> str:
        """`direct_url` (a postgres:// URL to the shared server) through this PgBouncer."""
        host, port = POSTGRES
        return direct_url.replace(f"@{host}:{port}/", f"@127.0.0.1:{self.port}/")

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.command,
            cwd=self.root,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while not port_open(("127.0.0.1", self.port)):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"pgbouncer did not start:\n{self.log()}")
            time.sleep(0.05)

    def pool(self, database: str) -> dict[str, Any]:
        """`database`'s row of SHOW POOLS (clients: cl_*, server connections: sv_*)."""
        import psycopg
        from psycopg.rows import dict_row

        with psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user="postgres",
            dbname="pgbouncer",
            autocommit=True,
            row_factory=dict_row,
        ) as conn:
            rows = conn.execute("SHOW POOLS").fetchall()
        return next(row for row in rows if row["database"] == database)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        """Stop the process group this instance started (runuser and PgBouncer), then clean up."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)


PgBouncerFactory = Callable[..., PrivatePgBouncer]


@pytest.fixture
def pgbouncer_factory() -> Iterator[PgBouncerFactory]:
    """Start private PgBouncers on demand (`pgbouncer_factory(pool_size=2, ...)`), in front of
    the shared PostgreSQL; each is stopped when the test ends. Without `pgbouncer` installed the
    test skips, and with CI=true fails: `apt-get install -y pgbouncer` (Debian's 1.18)."""
    require(POSTGRES, "PostgreSQL")
    executable = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin")
    if executable is None:
        reason = "pgbouncer is not installed (apt-get install -y pgbouncer)"
        if CI:
            pytest.fail(f"{reason}; CI=true requires it")
        pytest.skip(reason)
    started: list[PrivatePgBouncer] = []

    def factory(**options: Any) -> PrivatePgBouncer:
        instance = PrivatePgBouncer(executable, **options)
        started.append(instance)
        instance.start()
        return instance

    yield factory
    for instance in started:
        instance.stop()


# --------------------------------------------------------------------------- Redis with Sentinel


def sentinel_argv(config: Path) -> list[str] | None:
    """The command that runs a sentinel on `config`: redis-sentinel, or the same binary as
    `redis-server --sentinel`; None when neither is installed."""
    if shutil.which("redis-sentinel"):
        return ["redis-sentinel", str(config)]
    if shutil.which("redis-server"):
        return ["redis-server", str(config), "--sentinel"]
    return None


class SentinelGroup:
    """A master, its replica and one sentinel of the test's own, on free ports.

    Quorum 1 and short timeouts, so a failover takes about a second. With `password` both
    servers require it (requirepass, masterauth) and the sentinel logs in with it (auth-pass).
    The servers are PrivateRedis instances, made master and replica at run time.
    """

    SERVICE = "kvkit"
    DOWN_AFTER_MS = 500
    FAILOVER_TIMEOUT_MS = 3000

    def __init__(self, workdir: Path, password: str | None = None) -> None:
        workdir.mkdir()
        self.workdir = workdir
        self.password = password
        self.servers: list[PrivateRedis] = []
        for name in ("a", "b"):
            (workdir / name).mkdir()
            self.servers.append(PrivateRedis(workdir / name))
        self.port = free_port()
        self.log_path = workdir / "sentinel.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """This sentinel as KV_REDIS_SENTINELS lists it."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start both servers, replicate the first to the second, and wait until the sentinel
        knows the replica as a healthy candidate (a failover needs one)."""
        for server in self.servers:
            server.start()
            with server.client() as client:
                client.config_set("repl-diskless-sync-delay", "0")  # a replica syncs at once
                if self.password:
                    client.config_set("masterauth", self.password)
                    client.config_set("requirepass", self.password)
        master, replica = self.servers
        self.client(replica).replicaof("127.0.0.1", master.port)
        self._wait(lambda: self.client(replica).info("replication")["master_link_status"] == "up")
        config = self.workdir / "sentinel.conf"  # the sentinel rewrites it: a file of its own
        lines = [
            f"port {self.port}",
            "bind 127.0.0.1",
            f"dir {self.workdir}",
            f"logfile {self.log_path}",
            f"sentinel monitor {self.SERVICE} 127.0.0.1 {master.port} 1",
            f"sentinel down-after-milliseconds {self.SERVICE} {self.DOWN_AFTER_MS}",
            f"sentinel failover-timeout {self.SERVICE} {self.FAILOVER_TIMEOUT_MS}",
        ]
        if self.password:
            lines.append(f"sentinel auth-pass {self.SERVICE} {self.password}")
        config.write_text("\n".join(lines) + "\n")
        argv = sentinel_argv(config)
        assert argv is not None
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait(lambda: port_open(("127.0.0.1", self.port)))
        self._wait(self._replica_is_candidate)

    def _replica_is_candidate(self) -> bool:
        replicas = self.sentinel().sentinel_slaves(self.SERVICE)
        return any(
            not (r["is_sdown"] or r["is_odown"] or r["is_disconnected"])
            and r.get("master-link-status") == "ok"
            for r in replicas
        )

    def _wait(self, ready: Callable[[], bool], timeout: float = 15) -> None:
        import redis

        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(redis.RedisError, KeyError):
                if ready():
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"Sentinel group not ready:\n{self.log()}")
            time.sleep(0.05)

    def client(self, server: PrivateRedis, db: int = 0) -> Any:
        """A redis.Redis for one of the servers, logged in."""
        import redis

        return redis.Redis(port=server.port, db=db, password=self.password, socket_timeout=2)

    def sentinel(self) -> Any:
        """A redis.Redis for the sentinel itself (it needs no password)."""
        import redis

        return redis.Redis(port=self.port, socket_timeout=2)

    def master(self) -> PrivateRedis:
        """The server the sentinel names master now."""
        _, port = self.sentinel().sentinel_get_master_addr_by_name(self.SERVICE)
        return next(server for server in self.servers if server.port == int(port))

    def role(self, server: PrivateRedis) -> str:
        """`master` or `slave`, as the server itself reports it (ROLE)."""
        return self.client(server).execute_command("ROLE")[0].decode()

    def failover(self) -> None:
        """SENTINEL FAILOVER: promote the replica now, without agreement from other sentinels."""
        assert self.sentinel().execute_command("SENTINEL", "FAILOVER", self.SERVICE)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None
        for server in self.servers:
            server.stop()


@pytest.fixture
def sentinel_group(tmp_path: Path) -> Iterator[Callable[..., SentinelGroup]]:
    """Start Sentinel groups on demand: `sentinel_group(password=None)`; stopped at the end."""
    if sentinel_argv(tmp_path / "probe.conf") is None:
        reason = (
            "Redis Sentinel is not installed (neither redis-sentinel nor redis-server --sentinel);"
            " apt-get install -y redis-server redis-sentinel"
        )
        if CI:
            pytest.fail(f"{reason}; CI=true requires it")
        pytest.skip(reason)
    started: list[SentinelGroup] = []

    def start(password: str | None = None) -> SentinelGroup:
        group = SentinelGroup(tmp_path / f"sentinel{len(started)}", password)
        started.append(group)
        group.start()
        return group

    yield start
    for group in started:
        group.stop()


# --------------------------------------------------------------------------- HAProxy replicas
#
# Two kvkit replicas (gunicorn, two workers each) behind a private HAProxy running docs/haproxy.cfg
# itself, the documented configuration, with the replicas' ports given through the environment it
# reads; a second file only adds an admin socket, so tests can ask which replicas HAProxy has in
# rotation and what it counted (tests/replicas).

HAPROXY_CONFIG = Path(__file__).resolve().parent.parent / "docs" / "haproxy.cfg"
# The names docs/haproxy.cfg gives the replicas, in the order of its `server` lines.
SERVER_NAMES = ("api1", "api2")
REPLICA_WORKERS = 2
# HAProxy's address as the replicas see it: it connects from loopback.
TRUSTED_PROXIES = "127.0.0.1/32"
# Seconds a stopping replica stays in service with /readyz 503: inter 500ms x fall 1, plus the
# check itself and a busy machine's margin.
DRAIN_SECONDS = 2.0
_ADMIN_SOCKET = """\
global
    stats socket "${KVKIT_HAPROXY_SOCKET}" mode 600 level admin
"""


def haproxy_executable() -> str:
    """The haproxy binary; skip without it (fail with CI=true)."""
    found = shutil.which("haproxy")
    if found is None:
        reason = "haproxy is not installed (Debian: apt-get install -y haproxy)"
        if CI:
            pytest.fail(f"{reason}; CI=true requires it")
        pytest.skip(reason)
    return found


class Replica:
    """One kvkit instance on a fixed port, which may be stopped, killed and started again."""

    def __init__(self, name: str, workdir: Path, env: dict[str, str]) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir
        self.env = env
        self.server: Server | None = None
        self.starts = 0

    def start(self, wait: bool = True) -> None:
        """Start gunicorn on the replica's port; each start logs to a directory of its own."""
        self.starts += 1
        workdir = self.workdir / f"{self.name}-{self.starts}"
        workdir.mkdir(parents=True)
        self.server = start_server(
            workdir, self.env, workers=REPLICA_WORKERS, port=self.port, wait=wait
        )

    def wait_until_up(self) -> None:
        assert self.server is not None
        wait_until_up(self.server)

    def stop(self, timeout: float = 60) -> float:
        """SIGTERM the master, as an orchestrator does; the seconds until it exited."""
        assert self.server is not None
        started = time.monotonic()
        code = self.server.stop(signal.SIGTERM, timeout=timeout)
        assert code == 0, f"{self.name} exited with {code}:\n{self.server.log()}"
        return time.monotonic() - started

    def kill(self) -> None:
        """SIGKILL the master and its workers at once, as a crashed machine would stop them."""
        assert self.server is not None
        process = self.server.process
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # start_server gave it a session of its own
        process.wait(10)
        deadline = time.monotonic() + 10
        while _group_alive(process.pid) and time.monotonic() < deadline:
            time.sleep(0.05)

    def log(self) -> str:
        """Every start's server log, in order."""
        return "\n".join(
            path.read_text(errors="replace")
            for start in range(1, self.starts + 1)
            for path in sorted((self.workdir / f"{self.name}-{start}").glob("server-*.log"))
        )

    def close(self) -> None:
        """Stop without the drain: a second SIGTERM cuts it short (SIGQUIT would not be
        quicker: uvicorn's workers wait for gunicorn's SIGKILL after it)."""
        if self.server is not None and self.server.process.poll() is None:
            self.server.process.send_signal(signal.SIGTERM)
            time.sleep(0.1)
            if self.server.stop(signal.SIGTERM, timeout=15) != 0:
                with contextlib.suppress(ProcessLookupError):  # workers a killed master left
                    os.killpg(self.server.process.pid, signal.SIGKILL)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class ServerStats:
    """One row of HAProxy's `show stat` for a replica."""

    status: str
    requests: int  # HTTP requests HAProxy sent to it
    errors: int  # 5xx answers plus responses that failed (eresp)
    connection_errors: int  # econ: connections that could not be made
    retries: int  # wretr
    redispatches: int  # wredis


class ReplicaBalancer:
    """A private HAProxy running docs/haproxy.cfg in front of the replicas."""

    def __init__(self, executable: str, replicas: list[Replica]) -> None:
        self.executable = executable
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # A short directory: a unix socket's path must fit in 108 bytes.
        self.root = Path(tempfile.mkdtemp(prefix="kvkit-haproxy-"))
        self.socket_path = self.root / "admin.sock"
        self.log_path = self.root / "haproxy.log"
        (self.root / "admin.cfg").write_text(_ADMIN_SOCKET)
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "KVKIT_HAPROXY_BIND": f"127.0.0.1:{self.port}",
            "KVKIT_HAPROXY_SOCKET": str(self.socket_path),
            **{f"KVKIT_API_{n}": f"127.0.0.1:{r.port}" for n, r in enumerate(replicas, 1)},
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [self.executable, "-db", "-f", str(HAPROXY_CONFIG)]
        command += ["-f", str(self.root / "admin.cfg")]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=self.root
            )
        deadline = time.monotonic() + 10
        while not (port_open(("127.0.0.1", self.port)) and self.socket_path.exists()):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"haproxy did not start:\n{self.log()}")
            time.sleep(0.05)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def command(self, line: str) -> str:
        """One command on the admin socket; its answer."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(str(self.socket_path))
            sock.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def stats(self) -> dict[str, ServerStats]:
        """The replicas' rows of `show stat`, by server name."""
        text = self.command("show stat").lstrip("# ")
        rows = {}
        for row in csv.DictReader(io.StringIO(text)):
            if row["pxname"] == "kvkit" and row["svname"] in SERVER_NAMES:
                rows[row["svname"]] = ServerStats(
                    status=row["status"],
                    requests=int(row["req_tot"] or 0),
                    errors=int(row["hrsp_5xx"] or 0) + int(row["eresp"] or 0),
                    connection_errors=int(row["econ"] or 0),
                    retries=int(row["wretr"] or 0),
                    redispatches=int(row["wredis"] or 0),
                )
        return rows

    def wait_for(self, name: str, status: str, timeout: float = 20) -> float:
        """Wait until HAProxy reports replica `name` with `status` (UP, DOWN); seconds waited."""
        started = time.monotonic()
        while True:
            current = self.stats()[name].status
            if current == status:
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise AssertionError(f"{name} is {current}, not {status}, after {timeout} s")
            time.sleep(0.05)

    def stop(self) -> None:
        stop_process(self.process)
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class Cluster:
    """The replicas and the HAProxy in front of them; `url` is HAProxy's."""

    replicas: list[Replica]
    haproxy: ReplicaBalancer

    @property
    def url(self) -> str:
        return self.haproxy.url

    def restart(self, replica: Replica) -> dict[str, float]:
        """SIGTERM `replica`, start it again on its port and wait until HAProxy sends it
        requests again; how long each step took."""
        took = {"exit": replica.stop()}
        started = time.monotonic()
        replica.start()
        took["start"] = time.monotonic() - started
        took["back in rotation"] = self.haproxy.wait_for(replica.name, "UP")
        return took


ClusterFactory = Callable[..., Cluster]


@pytest.fixture(scope="module")
def cluster_factory(
    tmp_path_factory: pytest.TempPathFactory, databases: Databases
) -> Iterator[ClusterFactory]:
    """`cluster_factory(**env)`: two replicas on the session's PostgreSQL database, with
    HAProxy trusted for X-Forwarded-For, behind a running HAProxy; stopped after the module."""
    executable = haproxy_executable()
    made: list[Cluster] = []
    tmp_path = tmp_path_factory.mktemp("replicas")

    def factory(**env: str) -> Cluster:
        defaults = {
            "DATABASE_URL": databases.url("postgres"),
            "KV_TRUSTED_PROXIES": TRUSTED_PROXIES,
            "KV_SHUTDOWN_DRAIN_SECONDS": str(DRAIN_SECONDS),
            "KV_METRICS_MIN_INTERVAL": "0",
            "LOG_LEVEL": "INFO",  # access lines carry every status
        }
        settings = service_env(**{**defaults, **env})
        workdir = tmp_path / f"cluster-{len(made)}"
        replicas = [Replica(name, workdir, settings) for name in SERVER_NAMES]
        haproxy = ReplicaBalancer(executable, replicas)
        cluster = Cluster(replicas, haproxy)
        made.append(cluster)
        for replica in replicas:  # start together: each takes seconds to import the app
            replica.start(wait=False)
        for replica in replicas:
            replica.wait_until_up()
        haproxy.start()
        for replica in replicas:
            haproxy.wait_for(replica.name, "UP")
        return cluster

    yield factory
    for cluster in made:
        cluster.haproxy.stop()
        for replica in cluster.replicas:
            replica.close()


# --------------------------------------------------------------------------- Patroni cluster
#
# A PostgreSQL primary and a synchronous standby managed by Patroni with etcd, and HAProxy routing
# to the primary (tests/failover). Everything runs as real processes on loopback, on free ports, in
# a temporary directory. The timings are short (ttl 6 s, loop_wait 1 s, retry_timeout 2 s:
# loop_wait + 2 * retry_timeout <= ttl, as Patroni requires) so a failover takes seconds instead of
# the production default's 30. `synchronous_mode: true` makes Patroni promote only a node that was
# synchronous, so a commit PostgreSQL acknowledged is on the promoted node;
# `synchronous_mode_strict: false`, because with two nodes the strict mode would stop all writes on
# the new primary until a second standby joins.

# Debian's packages providing these: patroni, etcd-server, haproxy.
HA_PACKAGES = {"patroni": "patroni", "etcd": "etcd-server", "haproxy": "haproxy"}
TTL, LOOP_WAIT, RETRY_TIMEOUT = 6, 1, 2
HA_DATABASE = "kvkit"


def require_programs(*names: str) -> None:
    """Skip (with CI=true: fail) when a server program is not installed, naming its package."""
    missing = [name for name in names if shutil.which(name) is None]
    if postgres_bindir() is None:
        missing.append("initdb/pg_ctl")
    if not missing:
        return
    packages = " ".join(HA_PACKAGES.get(name, "postgresql") for name in missing)
    reason = f"{', '.join(missing)} not installed (apt-get install -y {packages})"
    if CI:
        pytest.fail(f"{reason}; CI=true requires them")
    pytest.skip(reason)


def _wait(predicate: Any, timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def _children(pid: int) -> list[int]:
    """Live children of `pid`, found in /proc (a postmaster's backends and helpers)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError):
            text = stat.read_text()
            if int(text[text.rindex(")") + 2 :].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found


class Workspace:
    """A temporary directory PostgreSQL may own: as root, the servers run as `postgres`."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="kvkit-ha-"))
        self.account: tuple[int, int] | None = None
        if os.geteuid() == 0:
            import pwd

            entry = pwd.getpwnam("postgres")
            self.account = (entry.pw_uid, entry.pw_gid)
            os.chown(self.root, *self.account)

    def directory(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(mode=0o700)
        if self.account:
            os.chown(path, *self.account)
        return path

    def spawn(self, command: list[str], log: Path, *, as_postgres: bool) -> subprocess.Popen[bytes]:
        """Start `command` with its output in `log`; as `postgres` when we are root."""
        uid: int | None = None
        gid: int | None = None
        groups: list[int] | None = None
        if as_postgres and self.account:
            (uid, gid), groups = self.account, []
        env = {**os.environ, "HOME": str(self.root)}
        with log.open("ab") as out:
            return subprocess.Popen(
                command,
                cwd=self.root,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                user=uid,
                group=gid,
                extra_groups=groups,
            )

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


class Etcd:
    """A single-member etcd 3.4, the DCS holding Patroni's leader key."""

    def __init__(self, space: Workspace) -> None:
        self.space = space
        self.client_port, self.peer_port = free_port(), free_port()
        self.log = space.root / "etcd.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        peer, client = f"http://127.0.0.1:{self.peer_port}", f"http://127.0.0.1:{self.client_port}"
        command = [
            "etcd",
            "--name=dcs",
            f"--data-dir={self.space.root / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=dcs={peer}",
            f"--initial-cluster-token=kvkit-{uuid.uuid4().hex[:8]}",
            "--log-level=warn",
        ]
        self.process = self.space.spawn(command, self.log, as_postgres=False)
        _wait(self._healthy, 20, "etcd")

    def _healthy(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"etcd exited:\n{self.log.read_text(errors='replace')}")
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(f"http://127.0.0.1:{self.client_port}/health", timeout=1).is_success
        return False

    def stop(self) -> None:
        stop_process(self.process)


class PatroniNode:
    """One Patroni process and the PostgreSQL it runs; `crash()` kills both with SIGKILL."""

    def __init__(self, space: Workspace, name: str, scope: str, etcd: Etcd) -> None:
        self.space = space
        self.name = name
        self.port, self.api_port = free_port(), free_port()
        self.home = space.directory(name)
        self.data = self.home / "data"
        self.log = self.home / "patroni.log"
        self.config_path = self.home / "patroni.yml"
        self.process: subprocess.Popen[bytes] | None = None
        self.config_path.write_text(json.dumps(self._config(scope, etcd), indent=2))

    def _config(self, scope: str, etcd: Etcd) -> dict[str, Any]:
        """Patroni's YAML configuration (JSON is YAML)."""
        bindir = postgres_bindir()
        return {
            "scope": scope,
            "name": self.name,
            "log": {"level": "WARNING"},
            "restapi": {
                "listen": f"127.0.0.1:{self.api_port}",
                "connect_address": f"127.0.0.1:{self.api_port}",
            },
            "etcd3": {"hosts": [f"127.0.0.1:{etcd.client_port}"]},
            "bootstrap": {
                "dcs": {
                    "ttl": TTL,
                    "loop_wait": LOOP_WAIT,
                    "retry_timeout": RETRY_TIMEOUT,
                    "maximum_lag_on_failover": 1048576,
                    "synchronous_mode": True,
                    "synchronous_mode_strict": False,
                    "postgresql": {
                        "use_pg_rewind": True,
                        "use_slots": True,
                        "parameters": {
                            "wal_log_hints": "on",
                            "max_connections": 50,
                            "shared_buffers": "32MB",
                            # The OS keeps what a killed server wrote; the machine never crashes
                            # here. Commits still wait for the synchronous standby.
                            "fsync": "off",
                            "full_page_writes": "off",
                        },
                    },
                },
                "initdb": [{"encoding": "UTF8"}, {"locale": "C"}, {"auth": "trust"}],
            },
            "postgresql": {
                "listen": f"127.0.0.1:{self.port}",
                "connect_address": f"127.0.0.1:{self.port}",
                "data_dir": str(self.data),
                "bin_dir": str(bindir),
                "pgpass": str(self.home / "pgpass"),
                "authentication": {
                    "superuser": {"username": "postgres"},
                    "replication": {"username": "postgres"},
                    "rewind": {"username": "postgres"},
                },
                "parameters": {"unix_socket_directories": str(self.home)},
                "basebackup": [{"checkpoint": "fast"}],
                "pg_hba": [
                    "local all all trust",
                    "host all all 127.0.0.1/32 trust",
                    "host replication all 127.0.0.1/32 trust",
                ],
            },
        }

    def start(self) -> None:
        self.process = self.space.spawn(
            ["patroni", str(self.config_path)], self.log, as_postgres=True
        )

    def _check_running(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"patroni {self.name} exited with {self.process.returncode}")

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def is_primary(self) -> bool:
        """Whether Patroni's REST API says this node is the primary (HAProxy's check)."""
        self._check_running()
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(f"{self.api}/primary", timeout=1).status_code == 200
        return False

    def postmaster_pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int((self.data / "postmaster.pid").read_text().splitlines()[0])
        return None

    def crash(self) -> None:
        """The node dies: SIGKILL Patroni, then its postmaster and every backend at once."""
        postmaster = self.postmaster_pid()
        if self.process is not None:
            self.process.kill()
            self.process.wait(5)
            self.process = None
        if postmaster is not None:
            victims = [postmaster, *_children(postmaster)]
            for pid in victims:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def stop(self) -> None:
        """Patroni's own shutdown (it stops its PostgreSQL); SIGKILL if it takes too long."""
        stop_process(self.process)
        postmaster = self.postmaster_pid()
        if postmaster is not None and Path(f"/proc/{postmaster}").exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(postmaster, signal.SIGQUIT)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class PatroniCluster:
    """etcd and two Patroni nodes: `primary()`, `standby()`, URLs for kvkit and for audits."""

    def __init__(self, space: Workspace) -> None:
        self.space = space
        self.scope = f"kvkit-{uuid.uuid4().hex[:8]}"
        self.etcd = Etcd(space)
        self.nodes = [PatroniNode(space, f"node{n}", self.scope, self.etcd) for n in (1, 2)]

    def start(self) -> None:
        self.etcd.start()
        first, second = self.nodes
        first.start()  # bootstraps (initdb) and takes the leader key
        _wait(first.is_primary, 60, "the first node to become primary", 0.2)
        self._create_database(first)
        second.start()  # base backup from the primary, then streams from it
        self.wait_synchronous(second, 90)

    def _create_database(self, node: PatroniNode) -> None:
        import psycopg

        dsn = f"host=127.0.0.1 port={node.port} user=postgres dbname=postgres"
        with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{HA_DATABASE}"')

    def wait_synchronous(self, node: PatroniNode, timeout: float) -> None:
        """Wait until `node` streams from the primary as its synchronous standby."""

        def synchronous() -> bool:
            node._check_running()
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"{node.api}/sync", timeout=1).status_code == 200
            return False

        _wait(synchronous, timeout, f"{node.name} to become the synchronous standby", 0.2)

    def primary(self) -> PatroniNode:
        (node,) = [node for node in self.nodes if node.is_primary()]
        return node

    def other(self, node: PatroniNode) -> PatroniNode:
        return next(other for other in self.nodes if other is not node)

    def multihost_url(self, **params: str) -> str:
        """libpq's multi-host URL over both nodes, for whichever of them accepts writes."""
        hosts = ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)
        query = "&".join(
            f"{k}={v}" for k, v in {"target_session_attrs": "read-write", **params}.items()
        )
        return f"postgres://postgres@{hosts}/{HA_DATABASE}?{query}"

    def node_url(self, node: PatroniNode) -> str:
        return f"postgres://postgres@127.0.0.1:{node.port}/{HA_DATABASE}"

    def migrate(self, workdir: Path) -> None:
        migrate(self.multihost_url(), workdir)

    def stop(self) -> None:
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.stop()
        self.etcd.stop()

    def logs(self) -> str:
        return "\n".join(f"--- {node.name}\n{node.log_text()[-4000:]}" for node in self.nodes)


class PrimaryRouter:
    """HAProxy in TCP mode, sending connections to the node whose Patroni answers GET /primary.

    `on-marked-down shutdown-sessions` cuts the connections to a node once its check fails, so
    kvkit's connections to a dead or demoted primary end at once instead of at a TCP timeout.
    """

    def __init__(self, space: Workspace, cluster: PatroniCluster) -> None:
        self.space = space
        self.port = free_port()
        self.config = space.root / "haproxy.cfg"
        self.log = space.root / "haproxy.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.config.write_text(haproxy_config(self.port, cluster.nodes))

    def start(self) -> None:
        self.process = self.space.spawn(
            ["haproxy", "-db", "-f", str(self.config)], self.log, as_postgres=False
        )
        _wait(lambda: port_open(("127.0.0.1", self.port)), 10, "haproxy")

    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{HA_DATABASE}"

    def stop(self) -> None:
        stop_process(self.process)


def haproxy_config(port: int, nodes: list[PatroniNode]) -> str:
    """The configuration documented in docs/FAILOVER.md, with this test's ports and fast checks."""
    servers = "\n".join(
        f"    server {node.name} 127.0.0.1:{node.port} check port {node.api_port}" for node in nodes
    )
    return f"""\
global
    maxconn 200

defaults
    mode tcp
    timeout connect 2s
    timeout client 30m
    timeout server 30m
    timeout check 1s

listen postgres_primary
    bind 127.0.0.1:{port}
    option httpchk GET /primary
    http-check expect status 200
    default-server inter 500ms fall 2 rise 1 on-marked-down shutdown-sessions
{servers}
"""


@pytest.fixture
def patroni_cluster(tmp_path: Path) -> Iterator[PatroniCluster]:
    """A migrated two-node Patroni cluster with a synchronous standby."""
    require_programs("patroni", "etcd")
    space = Workspace()
    cluster = PatroniCluster(space)
    try:
        try:
            cluster.start()
            cluster.migrate(tmp_path)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\n{cluster.logs()}") from exc
        yield cluster
    finally:
        cluster.stop()
        space.remove()


@pytest.fixture
def haproxy(patroni_cluster: PatroniCluster) -> Iterator[PrimaryRouter]:
    """HAProxy in front of `patroni_cluster`, routing by Patroni's GET /primary."""
    require_programs("haproxy")
    proxy = PrimaryRouter(patroni_cluster.space, patroni_cluster)
    proxy.start()
    yield proxy
    proxy.stop()
