"""The built image, run with podman as the Deployment runs it, against PostgreSQL and Redis.

The image is built from the working tree on a stand-in base (tests/deploy/containers.py) and
runs with the host network, a read-only root filesystem and host directories owned by UID 10001
mounted at /tmp and the metrics directory, as the Deployment's emptyDirs are.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import free_port
from tests.deploy import containers
from tests.deploy.containers import APP_UID, BuiltImage, Container, PrivateDatabase

METRICS_DIR = "/run/kvkit/metrics"
ITEM_ROUTE = "/v1/items/{key}"
GRACEFUL_TIMEOUT = 10


@pytest.fixture(scope="module")
def image() -> BuiltImage:
    """The image of the working tree (built once per session, layers cached across runs)."""
    return containers.kvkit_image()


@pytest.fixture(scope="module")
def database() -> Iterator[PrivateDatabase]:
    """An empty database of this module's own."""
    with containers.private_database() as database:
        yield database


@pytest.fixture(scope="module")
def api_key() -> str:
    return f"image-test-{uuid.uuid4().hex}"


def _mounts(parent: Path) -> dict[Path, str]:
    """/tmp and the metrics directory, the only places the read-only image writes."""
    return {
        containers.writable_dir(parent, "tmp"): "/tmp",
        containers.writable_dir(parent, "metrics"): METRICS_DIR,
    }


def _service_env(database: PrivateDatabase, api_key: str, **extra: str) -> dict[str, str]:
    return {
        "DATABASE_URL": database.url,
        "REDIS_URL": containers.redis_url(),
        "KV_API_KEYS": api_key,
        "KV_RATE_LIMIT": "1000000/minute",
        "KV_METRICS_MIN_INTERVAL": "0",
        "LOG_LEVEL": "WARNING",
        **extra,
    }


@pytest.fixture(scope="module")
def migration(
    image: BuiltImage,
    database: PrivateDatabase,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[int, str]:
    """The exit code and output of the image's `python -m app migrate` on the module's database."""
    result = containers.run_container(
        image.name,
        env=_service_env(database, "unused-but-long-enough"),
        volumes=_mounts(tmp_path_factory.mktemp("migrate")),
        command=("python", "-m", "app", "migrate"),
        detach=False,
    )
    assert not isinstance(result, Container)
    return result.returncode, result.stdout + result.stderr


class Service:
    """The image serving on free ports of the host network."""

    def __init__(self, container: Container, port: int, metrics_port: int, mounts: dict[Path, str]):
        self.container = container
        self.url = f"http://127.0.0.1:{port}"
        self.port = port
        self.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        self.metrics_dir = next(host for host, inside in mounts.items() if inside == METRICS_DIR)

    def client(self, api_key: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"X-API-Key": api_key}, timeout=30)


def start_service(
    image: BuiltImage, database: PrivateDatabase, api_key: str, workdir: Path, **env: str
) -> Service:
    """Run the image's own CMD (gunicorn, two workers) with GUNICORN_BIND on a free port."""
    port, metrics_port = free_port(), free_port()
    mounts = _mounts(workdir)
    container = containers.run_container(
        image.name,
        env=_service_env(
            database,
            api_key,
            GUNICORN_BIND=f"127.0.0.1:{port}",
            KV_METRICS_PORT=str(metrics_port),
            GUNICORN_WORKERS="2",
            GUNICORN_GRACEFUL_TIMEOUT=str(GRACEFUL_TIMEOUT),
            **env,
        ),
        volumes=mounts,
    )
    assert isinstance(container, Container)
    try:
        containers.wait_until_healthy(f"http://127.0.0.1:{port}/healthz", container)
    except BaseException:
        container.remove()
        raise
    return Service(container, port, metrics_port, mounts)


@pytest.fixture(scope="module")
def service(
    image: BuiltImage,
    database: PrivateDatabase,
    migration: tuple[int, str],
    api_key: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Service]:
    """The image serving the module's migrated database, shared by the tests that only read it."""
    assert migration[0] == 0, migration[1]
    running = start_service(image, database, api_key, tmp_path_factory.mktemp("service"))
    yield running
    running.container.remove()


# --------------------------------------------------------------------------- the tests


def test_migrate_from_the_image_creates_the_schema(
    migration: tuple[int, str], database: PrivateDatabase
) -> None:
    """`python -m app migrate` in the image exits 0 and leaves the items table and its history."""
    returncode, output = migration
    assert returncode == 0, output
    with database.connect() as conn:
        tables = {row[0] for row in conn.execute("SELECT tablename FROM pg_tables")}
        applied = conn.execute("SELECT count(*) FROM django_migrations").fetchone()
    assert "kv_item" in tables
    assert applied is not None and applied[0] > 0


def test_crud_through_the_containers_port(service: Service, api_key: str) -> None:
    """Create, read, conditional update, list and delete all work through the container."""
    key = f"img-{uuid.uuid4().hex[:8]}"
    with service.client(api_key) as client:
        assert client.post("/v1/items", json={"key": key, "value": {"n": 1}}).status_code == 201
        read = client.get(f"/v1/items/{key}")
        assert read.status_code == 200 and read.json()["value"] == {"n": 1}
        etag = read.headers["ETag"]
        updated = client.put(f"/v1/items/{key}", json={"value": 2}, headers={"If-Match": etag})
        assert updated.status_code == 200 and updated.json()["version"] == 2
        stale = client.put(f"/v1/items/{key}", json={"value": 3}, headers={"If-Match": etag})
        assert stale.status_code == 412
        listed = client.get("/v1/items", params={"prefix": key})
        assert [item["key"] for item in listed.json()["items"]] == [key]
        assert client.delete(f"/v1/items/{key}").status_code == 204
        assert client.get(f"/v1/items/{key}").status_code == 404
        assert httpx.get(f"{service.url}/v1/items/{key}").status_code == 401  # no key, no entry


def _uid_of(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    return int(line.split()[1])


def test_runs_as_uid_10001_on_a_read_only_root(service: Service) -> None:
    """gunicorn and its workers run as 10001; only the mounted directories can be written."""
    master = service.container.host_pid()
    children = Path(f"/proc/{master}/task/{master}/children").read_text()
    workers = [int(pid) for pid in children.split()]
    assert len(workers) == 2
    assert {_uid_of(pid) for pid in (master, *workers)} == {APP_UID}
    host_config = service.container.inspect()["HostConfig"]
    assert isinstance(host_config, dict) and host_config["ReadonlyRootfs"] is True

    write = "import sys; open(sys.argv[1], 'w').write('x')"
    for path in ("/srv/kvkit/probe", "/opt/venv/probe", "/etc/probe", "/run/probe"):
        refused = service.container.exec("python", "-c", write, path)
        assert refused.returncode != 0 and "Read-only file system" in refused.stderr, path
    for path in ("/tmp/probe", f"{METRICS_DIR}/probe"):
        assert service.container.exec("python", "-c", write, path).returncode == 0, path
        service.container.exec("python", "-c", f"import os; os.remove({path!r})")


def test_image_healthcheck_follows_gunicorn_bind(image: BuiltImage, service: Service) -> None:
    """The image's HEALTHCHECK passes with the server on a non-default port, and probes that
    port: pointed at an address nothing serves, the same command fails."""
    assert service.port != 8000
    healthcheck = containers.inspect_image(image.name)["Healthcheck"]
    assert isinstance(healthcheck, dict)
    assert healthcheck["Test"] == ["CMD", "python", "-m", "app", "healthcheck"]
    result = containers.podman("healthcheck", "run", service.container.name, check=False)
    assert result.returncode == 0, result.stdout + result.stderr + service.container.logs()
    elsewhere = containers.podman(
        "exec",
        "--env",
        f"GUNICORN_BIND=127.0.0.1:{free_port()}",
        service.container.name,
        *healthcheck["Test"][1:],
        check=False,
    )
    assert elsewhere.returncode == 1


def _worker_counts(metrics_dir: Path) -> dict[str, float]:
    """GET /v1/items/{key} answers per worker, from each worker's own multiprocess file."""
    counts: dict[str, float] = {}
    for path in metrics_dir.glob("counter_*.db"):
        worker = path.stem.removeprefix("counter_")
        for key, value, _timestamp, _pos in MmapedDict.read_all_values_from_file(str(path)):
            _metric, sample, labels, _help = json.loads(key)
            if (
                sample == "kvkit_http_requests_total"
                and labels.get("route") == ITEM_ROUTE
                and labels.get("method") == "GET"
            ):
                counts[worker] = counts.get(worker, 0.0) + value
    return counts


def _scraped_count(service: Service) -> float:
    """GET /v1/items/{key} answers in one scrape of KV_METRICS_PORT."""
    body = httpx.get(service.metrics_url, timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
        if sample.name == "kvkit_http_requests_total"
        and sample.labels.get("route") == ITEM_ROUTE
        and sample.labels.get("method") == "GET"
    )


def test_metrics_port_counts_requests_of_both_workers(service: Service, api_key: str) -> None:
    """One scrape of KV_METRICS_PORT counts exactly the requests sent, which both workers served
    (many concurrent requests, each on a connection of its own)."""
    key = f"img-{uuid.uuid4().hex[:8]}"
    with service.client(api_key) as client:
        assert client.post("/v1/items", json={"key": key, "value": 1}).status_code == 201
    before_scrape, before_workers = _scraped_count(service), _worker_counts(service.metrics_dir)
    sent = 300

    def fetch(_: int) -> int:
        headers = {"X-API-Key": api_key, "Connection": "close"}
        return httpx.get(f"{service.url}/v1/items/{key}", headers=headers, timeout=30).status_code

    with ThreadPoolExecutor(max_workers=12) as pool:
        statuses = list(pool.map(fetch, range(sent)))
    assert statuses == [200] * sent

    after_workers = _worker_counts(service.metrics_dir)
    served = {w: n - before_workers.get(w, 0.0) for w, n in after_workers.items()}
    assert len(served) == 2 and all(n > 0 for n in served.values()), served
    assert sum(served.values()) == sent
    assert _scraped_count(service) - before_scrape == sent


def _waiting_on_locks(database: PrivateDatabase) -> int:
    with database.connect() as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ).fetchone()
    return int(row[0]) if row else 0


def test_sigterm_lets_requests_in_flight_finish(
    image: BuiltImage,
    database: PrivateDatabase,
    migration: tuple[int, str],
    api_key: str,
    tmp_path: Path,
) -> None:
    """SIGTERM while requests wait on the database: they all answer 200, and the container
    exits 0 within GUNICORN_GRACEFUL_TIMEOUT."""
    assert migration[0] == 0, migration[1]
    running = start_service(image, database, api_key, tmp_path)
    try:
        keys = [f"img-{uuid.uuid4().hex[:8]}" for _ in range(4)]
        with running.client(api_key) as client:
            for key in keys:
                assert client.post("/v1/items", json={"key": key, "value": 0}).status_code == 201

        def call(index: int) -> httpx.Response:
            with running.client(api_key) as client:
                if index % 2:
                    return client.put(f"/v1/items/{keys[index]}", json={"value": index})
                return client.get(f"/v1/items/{keys[index]}")

        locker = database.connect(autocommit=False)
        released = threading.Event()
        try:
            locker.execute("LOCK TABLE kv_item IN ACCESS EXCLUSIVE MODE")
            pool = ThreadPoolExecutor(max_workers=len(keys))
            calls: list[Future[httpx.Response]] = [pool.submit(call, i) for i in range(len(keys))]
            deadline = time.monotonic() + 10
            while _waiting_on_locks(database) < len(keys):
                assert time.monotonic() < deadline, "the requests never reached the database"
                time.sleep(0.05)
            running.container.signal("TERM")
            signalled = time.monotonic()
            time.sleep(1)
        finally:
            locker.rollback()  # releases the lock
            locker.close()
            released.set()
        responses = [future.result(timeout=30) for future in calls]
        pool.shutdown()
        assert [response.status_code for response in responses] == [200] * len(keys)
        exit_code = running.container.wait(timeout=GRACEFUL_TIMEOUT + 5)
        took = time.monotonic() - signalled
        assert exit_code == 0, running.container.logs()
        assert took < GRACEFUL_TIMEOUT, f"exited after {took:.1f} s"
    finally:
        running.container.remove()


def _files(root: Path) -> Iterator[Path]:
    for directory, subdirs, names in os.walk(root):
        base = Path(directory)
        if base == root:  # mount points, empty in an image
            subdirs[:] = [name for name in subdirs if name not in {"proc", "sys", "dev"}]
        for name in (*subdirs, *names):
            yield (base / name).relative_to(root)


COMPILER = re.compile(r"(x86_64-linux-gnu-)?(gcc|g\+\+|cc|c\+\+|clang|cpp)(-[0-9.]+)?")
LOCK_TOOLS = {"uv", "uvx", "pip-compile", "pip-sync", "piptools", "pip_tools", "uv-build"}


def _is_compiler(path: Path) -> bool:
    """A C compiler driver in a bin directory, or gcc's own program directory."""
    in_bin = path.parent.name == "bin" and COMPILER.fullmatch(path.name) is not None
    return in_bin or path.parts[:3] in {("usr", "lib", "gcc"), ("usr", "libexec", "gcc")}


def _is_test_or_dev_file(path: Path) -> bool:
    """Anything in the WORKDIR but the gunicorn config, a top-level tests package or
    conftest.py in site-packages, or the dev lock and lock tooling."""
    in_workdir = path.parts[:2] == ("srv", "kvkit") and path.parts[2:] not in {
        (),
        ("gunicorn.conf.py",),
    }
    in_site_packages = path.parent.name == "site-packages" and path.name in {"tests", "conftest.py"}
    return in_workdir or in_site_packages or path.name in {"dev.txt", "dev.in", "lock.sh"}


def test_image_holds_no_build_tools_tests_or_local_state(
    image: BuiltImage, capsys: pytest.CaptureFixture[str]
) -> None:
    """No compiler, project tests, .git, .env or lock tooling in the final image; its size is
    reported."""
    with containers.mounted_image(image.name) as root:
        paths = list(_files(root))
        found = {
            "compiler": [p for p in paths if _is_compiler(p)],
            "lock tool": [p for p in paths if p.name in LOCK_TOOLS],
            "git": [p for p in paths if p.name == ".git"],
            "env": [p for p in paths if p.name == ".env" or p.name.startswith(".env.")],
            "tests or dev files": [p for p in paths if _is_test_or_dev_file(p)],
        }
        assert (root / "opt/venv/bin/gunicorn").exists()  # the listing did see the image
    assert found == {kind: [] for kind in found}
    labels = containers.inspect_image(image.name)["Labels"]
    assert isinstance(labels, dict)
    assert labels["org.opencontainers.image.version"] == containers.project_version()
    assert labels["org.opencontainers.image.revision"] == "test"
    size = containers.image_size(image.name)
    with capsys.disabled():
        print(f"\n{image.name}: {size / 1e6:.0f} MB, built in {image.build_seconds:.0f} s")
