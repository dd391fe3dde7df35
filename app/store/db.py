"""The one path to the database: ORM work runs on a small bounded thread pool.

Django connections belong to the thread that opened them, and FastAPI never fires Django's
request signals, so each job does the request-start and request-finish housekeeping itself, in
the thread that owns the connection: broken connections are dropped after errors and, with the
PostgreSQL pool, every connection goes back to the pool when the job ends. The number of threads
bounds the number of database connections per process.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from django.db import DatabaseError, InterfaceError, OperationalError, close_old_connections

from app.observability.metrics import DB_DURATION, DB_ERRORS
from app.store.errors import DatabaseUnavailable

P = ParamSpec("P")
T = TypeVar("T")

_executor: ThreadPoolExecutor | None = None
_timeout: float = 5.0


def configure_db_threads(threads: int, timeout: float) -> None:
    """Create the worker pool of this process (called by the app factory, after any fork)."""
    global _executor, _timeout
    if _executor is not None:
        _executor.shutdown(wait=False)
    _executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="kvkit-db")
    _timeout = timeout


def shutdown_db_threads() -> None:
    """Close every thread's connection and stop the pool."""
    global _executor
    executor, _executor = _executor, None
    if executor is None:
        return
    for _ in range(executor._max_workers):
        executor.submit(_close_connections)
    executor.shutdown(wait=True)


async def run_db(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run `fn` in a database thread and return its result; DatabaseUnavailable on outage."""
    if _executor is None:
        configure_db_threads(4, _timeout)
    assert _executor is not None
    loop = asyncio.get_running_loop()
    context = contextvars.copy_context()  # keeps the request's trace and log context
    job = functools.partial(context.run, _run_job, functools.partial(fn, *args, **kwargs))
    future = loop.run_in_executor(_executor, job)
    started = time.perf_counter()
    try:
        # A backstop above the driver's own timeouts: waiting for a free thread counts too.
        return await asyncio.wait_for(future, timeout=_timeout + 1.0)
    except TimeoutError as exc:
        DB_ERRORS.labels("timeout").inc()
        raise DatabaseUnavailable("database did not answer in time") from exc
    finally:
        operation = getattr(fn, "__name__", "unknown")
        DB_DURATION.labels(operation).observe(time.perf_counter() - started)


def _run_job(fn: Callable[[], T]) -> T:
    close_old_connections()
    try:
        return fn()
    except (OperationalError, InterfaceError) as exc:
        DB_ERRORS.labels("timeout" if _is_timeout(exc) else "unavailable").inc()
        raise DatabaseUnavailable(str(exc).strip() or type(exc).__name__) from exc
    except DatabaseError as exc:
        # Statement timeouts and lock timeouts surface as generic DatabaseErrors on some drivers.
        if _is_timeout(exc):
            DB_ERRORS.labels("timeout").inc()
            raise DatabaseUnavailable(str(exc).strip()) from exc
        DB_ERRORS.labels("other").inc()
        raise
    finally:
        close_old_connections()


def _close_connections() -> None:
    from django.db import connections

    connections.close_all()


def _is_timeout(exc: Exception) -> bool:
    text = str(exc).lower()
    return "timeout" in text or "canceling statement" in text or "lock wait" in text
