"""gunicorn.conf.py: settings from the environment and the server hooks."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
from gunicorn.config import Config
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from uvicorn_worker import UvicornWorker

from tests.deploy.tools import REPO

CONF = REPO / "gunicorn.conf.py"
ENV_NAMES = (
    "GUNICORN_BIND",
    "GUNICORN_WORKERS",
    "GUNICORN_TIMEOUT",
    "GUNICORN_GRACEFUL_TIMEOUT",
    "GUNICORN_KEEPALIVE",
    "GUNICORN_MAX_REQUESTS",
    "GUNICORN_MAX_REQUESTS_JITTER",
    "FORWARDED_ALLOW_IPS",
    "LOG_LEVEL",
    "PROMETHEUS_MULTIPROC_DIR",
)
# Writes real prometheus-client multiprocess files, as a worker would, and prints its pid.
WRITE_METRICS = """
import os
from prometheus_client import Counter, Gauge, Histogram
Counter("kvkit_test_requests", "test").inc()
Histogram("kvkit_test_seconds", "test", buckets=(1.0,)).observe(0.5)
Gauge("kvkit_test_in_flight", "test", multiprocess_mode="livesum").set(1)
print(os.getpid())
"""


def load_conf(monkeypatch: pytest.MonkeyPatch, **env: str) -> ModuleType:
    """Execute the config file as gunicorn does, with exactly the given variables set."""
    for name in ENV_NAMES:
        # Set first so monkeypatch records it: what a hook puts in os.environ is undone too.
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    spec = importlib.util.spec_from_file_location("gunicorn_conf_under_test", CONF)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def gunicorn_config(conf: ModuleType) -> Config:
    """A gunicorn Config holding the file's settings, validated by gunicorn itself."""
    cfg = Config()
    for name, value in vars(conf).items():
        if name in cfg.settings:
            cfg.set(name, value)
    return cfg


def write_metrics(directory: Path) -> int:
    """Have a separate process write multiprocess metric files; return its pid."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    result = subprocess.run(
        [sys.executable, "-c", WRITE_METRICS], env=env, capture_output=True, text=True, check=True
    )
    return int(result.stdout)


def test_defaults_apply_when_nothing_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without environment variables the documented defaults apply."""
    cfg = gunicorn_config(load_conf(monkeypatch))
    assert cfg.bind == ["0.0.0.0:8000"]
    assert cfg.workers == len(os.sched_getaffinity(0))
    assert cfg.worker_class_str == "uvicorn_worker.UvicornWorker"
    assert (cfg.timeout, cfg.graceful_timeout, cfg.keepalive) == (30, 20, 75)
    assert cfg.worker_connections == 1000
    assert (cfg.max_requests, cfg.max_requests_jitter) == (0, 0)
    assert cfg.preload_app is False
    assert cfg.accesslog is None


def test_settings_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every GUNICORN_* variable reaches the matching gunicorn setting."""
    conf = load_conf(
        monkeypatch,
        GUNICORN_BIND="127.0.0.1:9000",
        GUNICORN_WORKERS="3",
        GUNICORN_TIMEOUT="60",
        GUNICORN_GRACEFUL_TIMEOUT="25",
        GUNICORN_KEEPALIVE="7",
        GUNICORN_MAX_REQUESTS="1000",
        GUNICORN_MAX_REQUESTS_JITTER="100",
        FORWARDED_ALLOW_IPS="10.0.0.0/8",
        LOG_LEVEL="WARNING",
    )
    cfg = gunicorn_config(conf)
    assert cfg.bind == ["127.0.0.1:9000"]
    assert cfg.workers == 3
    assert (cfg.timeout, cfg.graceful_timeout, cfg.keepalive) == (60, 25, 7)
    assert (cfg.max_requests, cfg.max_requests_jitter) == (1000, 100)
    assert cfg.forwarded_allow_ips == ["10.0.0.0/8"]
    assert cfg.loglevel == "warning"


def test_control_socket_is_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    """gunicorn opens no runtime control socket (nothing written under $HOME)."""
    assert gunicorn_config(load_conf(monkeypatch)).control_socket_disable is True


def test_worker_heartbeat_files_live_on_tmpfs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Worker heartbeats use /dev/shm where it exists."""
    expected = "/dev/shm" if os.path.isdir("/dev/shm") else None
    assert load_conf(monkeypatch).worker_tmp_dir == expected


def test_default_forwarded_allow_ips_trusts_no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Even from 127.0.0.1, X-Forwarded-For is left for the app's KV_TRUSTED_PROXIES to judge."""
    cfg = gunicorn_config(load_conf(monkeypatch))
    log = SimpleNamespace(error_log=logging.getLogger("t.error"), access_log=logging.getLogger("t"))
    worker = UvicornWorker(0, os.getpid(), [], None, 30, cfg, log)
    worker.tmp.close()  # the heartbeat file a real worker would keep open
    seen: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.update(scope)

    middleware = ProxyHeadersMiddleware(app, trusted_hosts=worker.config.forwarded_allow_ips)
    scope: Any = {
        "type": "http",
        "client": ("127.0.0.1", 40000),
        "scheme": "http",
        "headers": [(b"x-forwarded-for", b"203.0.113.7"), (b"x-forwarded-proto", b"https")],
    }
    asyncio.run(middleware(scope, None, None))  # type: ignore[arg-type]  # no body is read
    assert seen["client"] == ("127.0.0.1", 40000)
    assert seen["scheme"] == "http"


def test_on_starting_empties_a_populated_multiprocess_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Files left by an earlier run are removed, and the directory itself stays."""
    metrics = tmp_path / "metrics"
    (metrics / "leftover").mkdir(parents=True)
    write_metrics(metrics)
    assert list(metrics.glob("*.db"))
    load_conf(monkeypatch, PROMETHEUS_MULTIPROC_DIR=str(metrics)).on_starting(None)
    assert metrics.is_dir()
    assert list(metrics.iterdir()) == []


def test_on_starting_creates_a_missing_multiprocess_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A multiprocess directory that does not exist yet is created."""
    metrics = tmp_path / "missing" / "metrics"
    load_conf(monkeypatch, PROMETHEUS_MULTIPROC_DIR=str(metrics)).on_starting(None)
    assert metrics.is_dir()


def test_on_starting_provisions_a_private_dir_when_none_is_configured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Unset, PROMETHEUS_MULTIPROC_DIR is set to a new directory only this user can enter."""
    load_conf(monkeypatch).on_starting(None)
    metrics = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    try:
        assert metrics.is_dir()
        assert metrics.name.startswith("kvkit-metrics-")
        assert stat.S_IMODE(metrics.stat().st_mode) == 0o700
        assert list(metrics.iterdir()) == []
    finally:
        shutil.rmtree(metrics, ignore_errors=True)


def test_on_exit_removes_the_dir_it_provisioned(monkeypatch: pytest.MonkeyPatch) -> None:
    """on_exit deletes the directory on_starting made, even with worker files in it."""
    conf = load_conf(monkeypatch)
    conf.on_starting(None)
    metrics = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    write_metrics(metrics)
    conf.on_exit(None)
    assert not metrics.exists()


def test_on_exit_leaves_a_configured_dir_alone(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A PROMETHEUS_MULTIPROC_DIR the user set survives gunicorn's exit, files and all."""
    conf = load_conf(monkeypatch, PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    conf.on_starting(None)
    write_metrics(tmp_path)
    conf.on_exit(None)
    assert list(tmp_path.glob("counter_*.db"))


def _totals(directory: Path) -> dict[str, float]:
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))
    return {
        sample.name + str(sorted(sample.labels.items())): sample.value
        for metric in registry.collect()
        for sample in metric.samples
        if sample.name.startswith("kvkit_test_")
    }


def test_child_exit_keeps_totals_and_the_directory_bounded(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Dead workers' gauges go, their totals stay, and their files are folded into archives."""
    conf = load_conf(monkeypatch, PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    for generation in range(1, 4):
        pids = [write_metrics(tmp_path) for _ in range(2)]
        for pid in pids:
            conf.child_exit(None, SimpleNamespace(pid=pid))
        totals = _totals(tmp_path)
        assert totals["kvkit_test_requests_total[]"] == 2 * generation
        assert totals["kvkit_test_seconds_count[]"] == 2 * generation
        assert totals["kvkit_test_seconds_bucket[('le', '1.0')]"] == 2 * generation
        assert not any(name.startswith("kvkit_test_in_flight") for name in totals)
        assert sorted(p.name for p in tmp_path.iterdir()) == [
            "counter_archive.db",
            "histogram_archive.db",
        ]


def test_post_fork_starts_tracing_in_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """post_fork calls app.observability.tracing.init_worker() in each worker."""
    calls: list[str] = []
    tracing = ModuleType("app.observability.tracing")
    tracing.init_worker = lambda: calls.append("init")  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "app.observability.tracing", tracing)
    load_conf(monkeypatch).post_fork(None, None)
    assert calls == ["init"]
