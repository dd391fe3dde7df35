"""gunicorn launched the standard way, without -c: from the project root and the image's WORKDIR.

gunicorn reads ./gunicorn.conf.py by itself. Launched either way, with nothing else set by hand,
the workers must share one metrics directory and X-Forwarded-For from 127.0.0.1 must not be
believed (gunicorn's own default trusts it).
"""

from __future__ import annotations

import random
import shutil
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Databases, PrivateRedis, Server, free_port, service_env, start_server

REPO = Path(__file__).resolve().parents[2]
WORKERS = 4
ROUTE = "/v1/items"  # GET lists items: 200 on an empty database, and rate limited
# The launch from the project root, and the image's (docker/Dockerfile): a WORKDIR
# holding gunicorn.conf.py, settings from GUNICORN_* variables, CMD `gunicorn app.main:app`.
LAUNCHES = ("project-root", "image-workdir")

Launcher = Callable[[str], Server]


@pytest.fixture(params=LAUNCHES)
def launch(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    databases: Databases,
    private_redis: PrivateRedis,
) -> Iterator[Launcher]:
    """Start gunicorn one of the standard ways with a given KV_RATE_LIMIT; stopped afterwards."""
    started: list[Server] = []

    def start(rate_limit: str) -> Server:
        port = free_port()
        env = service_env(  # PROMETHEUS_MULTIPROC_DIR and FORWARDED_ALLOW_IPS are unset
            # Absolute: a relative SQLite path would land in the project root.
            DATABASE_URL=databases.url("sqlite"),
            REDIS_URL=private_redis.url,  # one limiter for all workers, and for this test alone
            KV_RATE_LIMIT=rate_limit,
            # Over any developer .env in the project root (the environment wins over it).
            KV_API_KEYS="",
            KV_TRUSTED_PROXIES="",
            TMPDIR=str(tmp_path),  # where the config makes its private metrics directory
        )
        gunicorn = [sys.executable, "-m", "gunicorn", "app.main:app"]
        if request.param == "project-root":
            cwd = REPO
            command = [*gunicorn, "-k", "uvicorn_worker.UvicornWorker", "-w", str(WORKERS)]
            command += ["-b", f"127.0.0.1:{port}"]
        else:
            cwd = tmp_path / "workdir"
            cwd.mkdir(exist_ok=True)
            shutil.copy(REPO / "gunicorn.conf.py", cwd)
            command = gunicorn
            # The image installs the package; here this checkout's `app` must be the one found.
            env.update(
                GUNICORN_BIND=f"127.0.0.1:{port}",
                GUNICORN_WORKERS=str(WORKERS),
                PYTHONPATH=str(REPO),
            )
        server = start_server(tmp_path, env, command=command, port=port, cwd=cwd)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def private_metrics_dir(tmp_path: Path) -> Path:
    """The multiprocess directory the config made under the server's TMPDIR."""
    made = list(tmp_path.glob("kvkit-metrics-*"))
    assert len(made) == 1, f"expected one private metrics directory, found {made}"
    return made[0]


def listed(families: Iterable[Metric]) -> float:
    """kvkit_http_requests_total of GET on the listing route, over every status class."""
    return sum(
        sample.value
        for family in families
        if family.name == "kvkit_http_requests"
        for sample in family.samples
        if sample.name == "kvkit_http_requests_total"
        and sample.labels["route"] == ROUTE
        and sample.labels["method"] == "GET"
    )


def test_every_scrape_counts_the_requests_of_all_workers(launch: Launcher, tmp_path: Path) -> None:
    """Each scrape of /metrics reports all 200 requests, though several workers served them."""
    server = launch("1000000/minute")
    # No keep-alive: every request is a new connection, which any worker may accept.
    client = server.client(limits=httpx.Limits(max_keepalive_connections=0))
    for _ in range(200):
        assert client.get(ROUTE).status_code == 200
    scrapes = [
        listed(list(text_string_to_metric_families(client.get("/metrics").text))) for _ in range(3)
    ]
    assert scrapes == [200, 200, 200]
    per_worker = [
        listed(MultiProcessCollector.merge([str(path)]))
        for path in private_metrics_dir(tmp_path).glob("counter_*.db")
    ]
    assert sum(per_worker) == 200
    assert len([count for count in per_worker if count]) > 1, per_worker


def test_spoofed_forwarded_for_does_not_escape_the_rate_limit(launch: Launcher) -> None:
    """80 requests from 127.0.0.1, each with another X-Forwarded-For, share one 60/min bucket."""
    server = launch("60/minute")
    client = server.client(limits=httpx.Limits(max_keepalive_connections=0))
    spoofed = [f"198.18.{i}.{random.randrange(1, 255)}" for i in range(80)]  # all different
    statuses = Counter(
        client.get(ROUTE, headers={"X-Forwarded-For": address}).status_code for address in spoofed
    )
    assert statuses == {200: 60, 429: 20}


def test_private_metrics_dir_is_removed_when_gunicorn_exits(
    launch: Launcher, tmp_path: Path
) -> None:
    """The directory the config made for the workers is gone once the master exits on SIGTERM."""
    server = launch("1000000/minute")
    metrics = private_metrics_dir(tmp_path)
    assert server.client().get(ROUTE).status_code == 200
    assert list(metrics.glob("counter_*.db"))
    assert server.stop() == 0
    assert not metrics.exists()
