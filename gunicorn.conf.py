"""gunicorn settings for kvkit; every knob comes from an environment variable.

gunicorn reads ./gunicorn.conf.py from its working directory on its own, so this file sits at the
project root, and the image copies it into its WORKDIR: a plain `gunicorn app.main:app` from
either place runs with these settings, without `-c`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
workers = _env_int("GUNICORN_WORKERS", len(os.sched_getaffinity(0)))
worker_class = "uvicorn_worker.UvicornWorker"
timeout = _env_int("GUNICORN_TIMEOUT", 30)
# Seconds requests in progress get to finish once the workers are told to stop. With
# KV_SHUTDOWN_DRAIN_SECONDS, SIGTERM first drains for that long, and this counts from its end.
graceful_timeout = _env_int("GUNICORN_GRACEFUL_TIMEOUT", 20)
# Seconds an idle kept-alive connection stays open (uvicorn's timeout_keep_alive). Longer than the
# idle timeout of the load balancers in front (AWS ALB and nginx upstreams: 60 s): were we first
# to close, a request the balancer sends on that connection as we close it gets a 502. 75 s is
# nginx's own client keep-alive; set more behind a balancer that idles longer (Traefik 90 s,
# Google Cloud's 600 s). Idle connections cost little: worker_connections bounds them.
keepalive = _env_int("GUNICORN_KEEPALIVE", 75)
# Connections per worker (gunicorn's default), given to uvicorn as limit_concurrency: past it,
# a new connection first closes the longest-idle one, and with that many requests in progress
# further requests are answered 503 at once. The worker's open-file limit is raised to fit
# these plus the listen backlog (2048). The app's own bound on work is lower: KV_DB_QUEUE_SIZE.
worker_connections = _env_int("GUNICORN_WORKER_CONNECTIONS", 1000)
# Request deadlines have no gunicorn or uvicorn setting: app/server/protocol.py enforces them,
# from KV_HEADER_TIMEOUT (10 s) and KV_BODY_TIMEOUT (30 s), under gunicorn and `make run` alike.
max_requests = _env_int("GUNICORN_MAX_REQUESTS", 0)
max_requests_jitter = _env_int("GUNICORN_MAX_REQUESTS_JITTER", 0)
# gunicorn parses "" into an empty list, which uvicorn-worker hands to uvicorn's proxy-headers
# middleware: no peer is trusted, so X-Forwarded-For reaches the app untouched and only the
# app's KV_TRUSTED_PROXIES decides whom to believe (gunicorn's own default trusts 127.0.0.1).
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "")
# Workers import the app after fork, so nothing (DB pools, OpenTelemetry) is shared with the master.
preload_app = False
# The app writes its own access lines.
accesslog = None
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
# No runtime control socket: it would be an extra management surface, written under $HOME.
control_socket_disable = True
# Heartbeat files on tmpfs, as gunicorn advises: a disk-backed /tmp can stall workers into timeouts.
_SHM = "/dev/shm"  # noqa: S108 - gunicorn creates its own private files there
worker_tmp_dir = _SHM if os.path.isdir(_SHM) else None


# The multiprocess directory this config made itself (and so may delete), if it made one. A SIGHUP
# reload re-reads this file and forgets it: the directory is then left behind, never deleted in use.
_private_metrics_dir: str | None = None


def on_starting(server: Any) -> None:
    """Give the workers one multiprocess directory, empty, so /metrics sums them all.

    Runs in the master before any worker forks. Workers import the app after the fork and
    prometheus-client picks its multiprocess mode from the environment at import, so setting
    PROMETHEUS_MULTIPROC_DIR here reaches every worker; without it each worker would report
    only its own requests.
    """
    global _private_metrics_dir
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not path:
        _private_metrics_dir = tempfile.mkdtemp(prefix="kvkit-metrics-")  # mode 0700
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = _private_metrics_dir
        return
    # A configured directory may hold files of an earlier run: empty it so they never count.
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    # Empty it rather than delete it: it is usually a mount point (emptyDir, tmpfs).
    for entry in directory.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def when_ready(server: Any) -> None:
    """Make SIGTERM drain first (KV_SHUTDOWN_DRAIN_SECONDS, app/server/drain.py), and with
    KV_METRICS_PORT set, serve /metrics from the master, for every worker at once
    (app/observability/exporter.py); the workers then serve none.

    Runs in the master before the first worker forks, so the drain's shared flag is mapped
    before any worker exists.
    """
    from app.config import get_settings
    from app.observability.exposition import set_server_root
    from app.server import drain

    settings = get_settings()
    drain.install(server, settings.shutdown_drain_seconds)
    set_server_root(os.getpid())
    port = settings.metrics_port
    if port is not None:
        from app.observability.exporter import serve

        serve(port)


def on_exit(server: Any) -> None:
    """Delete the directory on_starting made; one the user configured is left alone."""
    if _private_metrics_dir:
        shutil.rmtree(_private_metrics_dir, ignore_errors=True)


def child_exit(server: Any, worker: Any) -> None:
    """Drop a dead worker's live gauges and fold its totals, keeping the metrics dir bounded."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from app.observability.multiprocess import worker_exited

        worker_exited(worker.pid)


def post_fork(server: Any, worker: Any) -> None:
    """Apply the connection limits and start tracing inside each worker, and leave /metrics to
    the master.

    The limits go on the worker's uvicorn config before uvicorn reads it (app/server/worker.py);
    tracing starts here because exporter threads do not survive a fork.
    """
    from app.observability import exporter
    from app.observability.exposition import set_server_root
    from app.observability.tracing import init_worker
    from app.server.worker import apply_connection_limits

    set_server_root(os.getppid())  # a worker answering /metrics sums the master's tree
    exporter.leave_to_master()
    apply_connection_limits(worker)
    init_worker()
