"""Drain at shutdown: leave the load balancer's rotation before the listener closes.

gunicorn's SIGTERM closes the listener and tells the workers to stop at once, and uvicorn then
closes every idle kept-alive connection. A balancer that learns about replicas from health checks
(HAProxy, cloud target groups) keeps sending requests until its next failed check: new ones are
refused, and one sent on a kept-alive connection as it closes is lost, which no balancer may
safely repeat. With KV_SHUTDOWN_DRAIN_SECONDS set, SIGTERM first starts a drain of that length:

* /readyz answers 503, so the balancer takes the replica out of rotation;
* the listener stays open and every request is served as usual, but each response closes its
  connection (`Connection: close`), so no connection stays open for a request that is not sent;
* then gunicorn's own graceful stop runs (GUNICORN_GRACEFUL_TIMEOUT for requests in progress).

A second SIGTERM, or SIGINT/SIGQUIT, ends the drain early. The master owns the drain; workers
read one shared byte, so every worker (one respawned during the drain too) sees it at once and a
worker's own restart (SIGHUP, max_requests) never drains the whole replica. Kubernetes' preStop
sleep does the same job before SIGTERM arrives: see the README.
"""

from __future__ import annotations

import mmap
import os
import signal
import threading
from typing import Any

# One byte of anonymous shared memory, mapped before gunicorn forks its workers (gunicorn.conf.py
# imports this module in the master): a write in the master is seen by every worker.
_STATE = mmap.mmap(-1, 1, flags=mmap.MAP_SHARED)


def draining() -> bool:
    """Whether this replica is draining: read per request, so it costs one memory read."""
    return _STATE[0] != 0


def start_draining() -> None:
    _STATE[0] = 1


def install(arbiter: Any, seconds: float) -> None:
    """Make the gunicorn master's SIGTERM drain for `seconds` before its graceful stop.

    gunicorn has no hook for a master signal, so the arbiter's SIGTERM handler is wrapped (the
    arbiter looks handlers up on itself for each signal). The master loop keeps running during
    the drain: it still reaps and replaces workers. The drain ends by the master sending itself
    SIGTERM again, which the wrapped handler then passes to gunicorn's own.
    """
    if seconds <= 0:
        return
    stop = arbiter.handle_term

    def handle_term() -> None:
        if draining():
            stop()  # the drain is over, or a second SIGTERM cut it short
            return
        start_draining()
        arbiter.log.info(
            "Draining for %g s: /readyz answers 503, connections close after their response",
            seconds,
        )
        timer = threading.Timer(seconds, os.kill, (os.getpid(), signal.SIGTERM))
        timer.daemon = True
        timer.start()

    arbiter.handle_term = handle_term
