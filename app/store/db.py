"""The one path to the database: ORM work runs on a small, fixed set of database threads.

Django connections belong to the thread that opened them, and FastAPI never fires Django's
request signals, so each job does the request-start and request-finish housekeeping itself, in
the thread that owns the connection: a connection that failed is dropped and reopened by the next
job. Each thread keeps its connection between jobs (no reconnect per request) and closes it
itself after `idle_timeout` seconds without work. The number of threads bounds the number of
database connections per process.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from django.db import (
    DatabaseError,
    InterfaceError,
    OperationalError,
    close_old_connections,
    connections,
)

from app.config import get_settings
from app.observability.metrics import DB_DURATION, DB_ERRORS, labelled
from app.store.errors import DatabaseUnavailable

P = ParamSpec("P")
T = TypeVar("T")

_Job = tuple[Callable[[], Any], asyncio.AbstractEventLoop, "asyncio.Future[Any]"]

# How often overdue jobs are looked for: a job fails between its deadline and this much later.
DEADLINE_SWEEP_SECONDS = 0.25


class JobExpired(Exception):
    """A database job passed its deadline before a thread finished it."""


class Deadlines:
    """Fails futures still pending after their deadline, from one timer per event loop.

    `asyncio.timeout` around every job schedules and cancels a timer per request, which cost
    about 4% of the event loop's time on the GET path; here a request costs a dict entry and
    one periodic sweep serves them all (loadtests/PERFORMANCE.md).
    """

    def __init__(self, sweep: float) -> None:
        self._sweep = sweep
        self._pending: dict[asyncio.AbstractEventLoop, dict[asyncio.Future[Any], float]] = {}

    def watch(
        self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], deadline: float
    ) -> None:
        pending = self._pending.get(loop)
        if pending is None:  # no sweep is scheduled on this loop: start one
            pending = self._pending[loop] = {}
            loop.call_later(self._sweep, self._expire, loop)
        pending[future] = deadline

    def forget(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any]) -> None:
        pending = self._pending.get(loop)
        if pending is not None:
            pending.pop(future, None)

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        pending = self._pending[loop]
        now = loop.time()
        for future, deadline in list(pending.items()):
            if deadline <= now:
                del pending[future]
                if not future.done():
                    future.set_exception(JobExpired())
        if pending:
            loop.call_later(self._sweep, self._expire, loop)
        else:
            del self._pending[loop]  # the next watch() starts a new sweep


class DatabaseThreads:
    """A fixed set of threads, each owning at most one connection per database alias."""

    def __init__(self, threads: int, timeout: float, idle_timeout: float) -> None:
        self.timeout = timeout
        self.idle_timeout = idle_timeout
        self._deadlines = Deadlines(sweep=DEADLINE_SWEEP_SECONDS)
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, name=f"kvkit-db-{n}", daemon=True)
            for n in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    async def run(self, job: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((job, loop, future))
        # A backstop above the driver's own timeouts: waiting for a free thread counts too.
        self._deadlines.watch(loop, future, loop.time() + self.timeout + 1.0)
        try:
            return await future
        except JobExpired as exc:
            DB_ERRORS.labels("timeout").inc()
            raise DatabaseUnavailable("database did not answer in time") from exc
        finally:
            self._deadlines.forget(loop, future)

    def shutdown(self) -> None:
        """Stop the threads once their current jobs are done; each closes its connection."""
        for _ in self._threads:
            self._jobs.put(None)
        for thread in self._threads:
            thread.join(timeout=self.timeout + 1.0)

    def _work(self) -> None:
        seen_failures = _failures.value
        while True:
            try:
                job = self._jobs.get(timeout=self.idle_timeout)
            except queue.Empty:
                connections.close_all()  # idle: give the connection back to the server
                job = self._jobs.get()
            if job is None:
                connections.close_all()
                return
            fn, loop, future = job
            if seen_failures != _failures.value:  # a thread lost its connection: ours may be stale
                connections.close_all()
                seen_failures = _failures.value
            try:
                result = _run_job(fn)
            except BaseException as exc:  # handed to the awaiting request
                loop.call_soon_threadsafe(_settle, future, None, exc)
            else:
                loop.call_soon_threadsafe(_settle, future, result, None)


def _settle(future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if future.done():  # the request gave up waiting (timeout or disconnect)
        return
    if exc is None:
        future.set_result(result)
    else:
        future.set_exception(exc)


class _FailureCount:
    """Connection failures seen by any thread of this process.

    After an outage every thread still holding a connection opened before it would fail its next
    job once; a thread that sees the count change drops its connection before the job instead.
    """

    value = 0


_failures = _FailureCount()
_threads: DatabaseThreads | None = None


def configure_db_threads(threads: int, timeout: float, idle_timeout: float = 60.0) -> None:
    """Start this process's database threads (called by the app factory, after any fork)."""
    global _threads
    if _threads is not None:
        _threads.shutdown()
    _threads = DatabaseThreads(threads, timeout, idle_timeout)


def shutdown_db_threads() -> None:
    global _threads
    threads, _threads = _threads, None
    if threads is not None:
        threads.shutdown()


async def run_db(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run `fn` in a database thread and return its result; DatabaseUnavailable on outage."""
    if _threads is None:  # outside the app's lifespan, e.g. a script calling services directly
        settings = get_settings()
        configure_db_threads(settings.db_threads, settings.db_timeout, settings.db_idle_timeout)
    assert _threads is not None
    context = contextvars.copy_context()  # keeps the request's trace and log context
    job = functools.partial(context.run, fn, *args, **kwargs)
    started = time.perf_counter()
    try:
        return await _threads.run(job)
    finally:
        operation = getattr(fn, "__name__", "unknown")
        labelled(DB_DURATION, operation).observe(time.perf_counter() - started)


def _run_job(fn: Callable[[], T]) -> T:
    close_old_connections()
    try:
        return fn()
    except (OperationalError, InterfaceError) as exc:
        _failures.value += 1
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


def _is_timeout(exc: Exception) -> bool:
    text = str(exc).lower()
    return "timeout" in text or "canceling statement" in text or "lock wait" in text
