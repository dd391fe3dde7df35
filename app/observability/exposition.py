"""The metrics text a scrape gets: every worker's samples, collected at most once per interval.

Kept apart from the metric definitions (app/observability/metrics.py): the gunicorn master
serves this without defining, and so without writing, any metric of its own.
"""

from __future__ import annotations

import functools
import math
import os
import threading
import time

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client import multiprocess as prometheus_multiprocess

from app.config import get_settings
from app.observability.processes import ServerProcessCollector

# The process whose tree the process_* metrics sum: the gunicorn master (gunicorn.conf.py sets
# it in the master and in each worker); unset, this process.
_server_root: int | None = None


def set_server_root(pid: int) -> None:
    global _server_root
    _server_root = pid


def collect() -> bytes:
    """The text exposition of this process, or of every worker in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()  # a fresh one per scrape, as prometheus-client requires
        prometheus_multiprocess.MultiProcessCollector(registry)
        registry.register(ServerProcessCollector(_server_root or os.getpid()))
        return generate_latest(registry)
    return generate_latest(REGISTRY)


class Exposition:
    """The exposition, collected at most once per `min_interval` seconds.

    A collection reads every worker's files; fifty scrapers collecting at once took the CPU from
    the requests. Scrapes that arrive while one collects wait for its answer and share it.
    """

    def __init__(self, min_interval: float) -> None:
        self.min_interval = min_interval
        self._lock = threading.Lock()
        self._text = b""
        self._collected_at = -math.inf

    def __call__(self) -> bytes:
        with self._lock:
            now = time.monotonic()
            if now - self._collected_at >= self.min_interval:
                self._text = collect()
                self._collected_at = now
            return self._text


@functools.cache
def exposition() -> Exposition:
    """This process's exposition, with KV_METRICS_MIN_INTERVAL from the settings."""
    return Exposition(get_settings().metrics_min_interval)
