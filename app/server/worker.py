"""kvkit's connection limits for a gunicorn worker running uvicorn, applied by gunicorn.conf.py.

uvicorn-worker passes gunicorn's `keepalive` to uvicorn but not `worker_connections`, and has no
setting for the request deadlines. `apply_connection_limits` runs in each worker after the fork
(gunicorn's post_fork hook), before uvicorn reads its config: a hook rather than a worker class,
so the limits hold under whichever uvicorn worker class the command line names (`-k` wins over
the config file's `worker_class`).
"""

from __future__ import annotations

import resource
from typing import Any

from uvicorn_worker import UvicornWorker

from app.server.protocol import BoundedHttpProtocol, request_deadlines

# Files a worker holds besides client connections: the listener, its heartbeat file, the event
# loop's, database and Redis connections, metric files, logs (25 measured on SQLite).
RESERVED_FILES = 128


def apply_connection_limits(worker: Any) -> None:
    """Serve a uvicorn worker with BoundedHttpProtocol, at most `worker_connections` at once.

    Also raises the worker's soft open-file limit to fit them, the listen backlog and the
    worker's own files. At 1,024 (a common default) a flood of idle connections made accept()
    fail, and the event loop then dropped the connections still queued, a real client's among
    them; 1,000 connections would also leave no file for a database connection. The backlog
    counts because asyncio's own loop accepts all of it before any protocol can reclaim room.
    """
    if not isinstance(worker, UvicornWorker):
        return
    request_deadlines()  # invalid settings stop the worker here, before it serves
    connections = int(worker.cfg.worker_connections)
    worker.config.http = BoundedHttpProtocol
    worker.config.limit_concurrency = connections
    needed = connections + int(worker.cfg.backlog) + RESERVED_FILES
    available = raise_open_file_limit(needed)
    if available < needed:
        worker.log.warning(
            "worker_connections=%d and backlog=%d need %d open files, the hard limit allows %d:"
            " a flood of connections can exhaust them",
            connections,
            worker.cfg.backlog,
            needed,
            available,
        )


def raise_open_file_limit(needed: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE to `needed`, within the hard limit.

    Returns the limit now in force (`needed` when unlimited).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return needed
    if soft >= needed:
        return soft
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target
