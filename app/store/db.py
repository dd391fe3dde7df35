"""The one path to the database: ORM work runs on a small, fixed set of database threads.

Django connections belong to the thread that opened them, and FastAPI never fires Django's
request signals, so each job does the request-start and request-finish housekeeping itself, in
the thread that owns the connection: a connection that failed is dropped and reopened by the next
job. Each thread keeps its connection between jobs (no reconnect per request) and closes it
itself after `idle_timeout` seconds without work. The number of threads bounds the number of
database connections per process.

A job's caller waits at most `timeout` + 1 s. When that passes, or the caller goes away, the job
is abandoned, and whether it may still act is decided under one lock with the thread's own steps:
a job abandoned while queued never starts, and a write abandoned while running never commits (it
asks `claim_commit()` first, and rolls back when refused). Only a COMMIT already sent cannot be
called back: its caller then waits as long again, and if the database still has not
answered is told the outcome is unknown. So a 503 means "not applied", except in that one case,
which says so. At most `queue_size` jobs wait for a thread; past that a caller is refused at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from django.db import DatabaseError, close_old_connections, connections

from app.config import get_settings
from app.observability.metrics import (
    DB_CONNECTIONS,
    DB_DURATION,
    DB_ERRORS,
    DB_THREADS,
    DB_THREADS_BUSY,
    labelled,
)
from app.store import dialects
from app.store.dialects import ErrorKind
from app.store.errors import (
    CommitUnconfirmed,
    DatabaseBusy,
    DatabaseUnavailable,
    TransactionConflict,
)

P = ParamSpec("P")
T = TypeVar("T")

# How often overdue jobs are looked for: a caller is answered between its deadline and this
# much later. One sweep per event loop costs less than a timer per job.
DEADLINE_SWEEP_SECONDS = 0.25
# Beyond the driver's own timeouts: waiting for a free thread counts too.
DEADLINE_MARGIN_SECONDS = 1.0

_QUEUED, _RUNNING, _COMMITTING, _DONE, _ABANDONED = range(5)


class JobAbandoned(Exception):
    """The job's caller was answered before the job could commit; it rolled back."""


class _Job:
    __slots__ = ("fn", "future", "loop", "state", "waited_for_commit")

    def __init__(self, fn: Callable[[], Any], loop: asyncio.AbstractEventLoop) -> None:
        self.fn = fn
        self.loop = loop
        self.future: asyncio.Future[Any] = loop.create_future()
        self.state = _QUEUED
        self.waited_for_commit = False


_running = threading.local()  # the job a database thread is running, for claim_commit()


class DatabaseThreads:
    """A fixed set of threads, each owning at most one connection per database alias."""

    def __init__(
        self, threads: int, timeout: float, idle_timeout: float, queue_size: int = 128
    ) -> None:
        self.timeout = timeout
        self.idle_timeout = idle_timeout
        self.queue_size = queue_size
        self._lock = threading.Lock()  # guards every job's state and the count of queued jobs
        self._queued = 0
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._deadlines: dict[asyncio.AbstractEventLoop, dict[_Job, float]] = {}
        self._threads = [
            threading.Thread(target=self._work, name=f"kvkit-db-{n}", daemon=True)
            for n in range(threads)
        ]
        for thread in self._threads:
            thread.start()
        DB_THREADS.inc(threads)

    async def run(self, fn: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        job = _Job(fn, loop)
        with self._lock:
            if self._queued >= self.queue_size:
                labelled(DB_ERRORS, "overloaded").inc()
                raise DatabaseBusy("every database thread is busy and the queue is full")
            self._queued += 1
        self._jobs.put(job)
        self._watch(job, loop.time() + self.timeout + DEADLINE_MARGIN_SECONDS)
        try:
            return await job.future
        except asyncio.CancelledError:  # the caller went away: the job must not act for it
            self._abandon(job)
            raise
        finally:
            pending = self._deadlines.get(loop)
            if pending is not None:
                pending.pop(job, None)

    def shutdown(self) -> None:
        """Stop the threads once their current jobs are done; each closes its connection."""
        for _ in self._threads:
            self._jobs.put(None)
        for thread in self._threads:
            thread.join(timeout=self.timeout + DEADLINE_MARGIN_SECONDS)
        DB_THREADS.dec(len(self._threads))

    def begin_commit(self, job: _Job) -> None:
        """Let `job` send its COMMIT, unless its caller was answered already."""
        with self._lock:
            if job.state != _RUNNING:
                raise JobAbandoned
            job.state = _COMMITTING

    # ------------------------------------------------------------------ deadlines (event loop)

    def _watch(self, job: _Job, deadline: float) -> None:
        pending = self._deadlines.get(job.loop)
        if pending is None:  # no sweep is scheduled on this loop: start one
            pending = self._deadlines[job.loop] = {}
            job.loop.call_later(DEADLINE_SWEEP_SECONDS, self._sweep, job.loop)
        pending[job] = deadline

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        pending = self._deadlines[loop]
        now = loop.time()
        for job, deadline in list(pending.items()):
            if deadline <= now:
                del pending[job]
                self._expire(job, now)
        if pending:
            loop.call_later(DEADLINE_SWEEP_SECONDS, self._sweep, loop)
        else:
            del self._deadlines[loop]  # the next job starts a new sweep

    def _expire(self, job: _Job, now: float) -> None:
        state = self._abandon(job)
        if state == _DONE or job.future.done():  # finished: its answer is on its way
            return
        if state == _COMMITTING:
            if not job.waited_for_commit:  # the COMMIT's answer is the truth: wait for it
                job.waited_for_commit = True
                self._watch(job, now + self.timeout + DEADLINE_MARGIN_SECONDS)
                return
            error: DatabaseUnavailable = CommitUnconfirmed(
                "the database did not confirm the commit in time; the write may have been applied"
            )
        else:
            error = DatabaseUnavailable("database did not answer in time")
        labelled(DB_ERRORS, "timeout").inc()
        job.future.set_exception(error)

    def _abandon(self, job: _Job) -> int:
        """Abandon a job that has not begun its COMMIT (it never starts, or never commits);
        the state it was in."""
        with self._lock:
            state = job.state
            if state == _QUEUED:
                self._queued -= 1
            if state in (_QUEUED, _RUNNING):
                job.state = _ABANDONED
        return state

    # ------------------------------------------------------------------ database threads

    def _take(self, job: _Job) -> bool:
        with self._lock:
            if job.state != _QUEUED:  # abandoned while it waited: it never starts
                return False
            job.state = _RUNNING
            self._queued -= 1
            return True

    def _finish(self, job: _Job) -> bool:
        with self._lock:
            if job.state == _ABANDONED:
                return False
            job.state = _DONE
            return True

    def _work(self) -> None:
        seen_failures = _failures.value
        held = _ConnectionGauge()
        while True:
            try:
                job = self._jobs.get(timeout=self.idle_timeout)
            except queue.Empty:
                connections.close_all()  # idle: give the connection back to the server
                held.update()
                job = self._jobs.get()
            if job is None:
                connections.close_all()
                held.update()
                return
            if not self._take(job):
                continue
            if seen_failures != _failures.value:  # a thread lost its connection: ours may be stale
                connections.close_all()
                seen_failures = _failures.value
            _running.job, _running.threads = job, self
            DB_THREADS_BUSY.inc()
            try:
                result = _run_job(job.fn)
            except BaseException as exc:  # handed to the awaiting caller
                outcome: tuple[Any, BaseException | None] = (None, exc)
            else:
                outcome = (result, None)
            finally:
                _running.job = None
                DB_THREADS_BUSY.dec()
                held.update()
            if self._finish(job):
                with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
                    job.loop.call_soon_threadsafe(_settle, job.future, *outcome)


class _ConnectionGauge:
    """One database thread's share of kvkit_db_connections_open: 1 while it holds one."""

    def __init__(self) -> None:
        self.held = False

    def update(self) -> None:
        held = connections["default"].connection is not None
        if held != self.held:
            DB_CONNECTIONS.inc(1 if held else -1)
            self.held = held


def _settle(future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if future.done():  # the caller was answered already (deadline, disconnect)
        return
    if exc is None:
        future.set_result(result)
    else:
        future.set_exception(exc)


def claim_commit() -> None:
    """Called by a write transaction just before its COMMIT: from here on its caller waits for
    the COMMIT's answer. Raises JobAbandoned when the caller has been answered already.

    Outside a database thread (a script, a store test) there is no caller to answer: a no-op.
    """
    job = getattr(_running, "job", None)
    if job is not None:
        _running.threads.begin_commit(job)


class _FailureCount:
    """Connection failures seen by any thread of this process.

    After an outage every thread still holding a connection opened before it would fail its next
    job once; a thread that sees the count change drops its connection before the job instead.
    """

    value = 0


_failures = _FailureCount()
_threads: DatabaseThreads | None = None


def configure_db_threads(
    threads: int, timeout: float, idle_timeout: float = 60.0, queue_size: int = 128
) -> None:
    """Start this process's database threads (called by the app factory, after any fork)."""
    global _threads
    if _threads is not None:
        _threads.shutdown()
    _threads = DatabaseThreads(threads, timeout, idle_timeout, queue_size)


def shutdown_db_threads() -> None:
    global _threads
    threads, _threads = _threads, None
    if threads is not None:
        threads.shutdown()


async def run_db(operation: str, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run `fn` in a database thread and return its result; DatabaseUnavailable on outage.

    `operation` labels the job's duration metric.
    """
    if _threads is None:  # outside the app's lifespan, e.g. a script calling services directly
        settings = get_settings()
        configure_db_threads(
            settings.db_threads,
            settings.db_timeout,
            settings.db_idle_timeout,
            settings.db_queue_size,
        )
    assert _threads is not None
    context = contextvars.copy_context()  # keeps the request's trace and log context
    job = functools.partial(context.run, fn, *args, **kwargs)
    started = time.perf_counter()
    try:
        return await _threads.run(job)
    finally:
        labelled(DB_DURATION, operation).observe(time.perf_counter() - started)


def _run_job(fn: Callable[[], T]) -> T:
    close_old_connections()
    try:
        return fn()
    except DatabaseError as exc:
        kind = dialects.current().classify(exc)
        labelled(DB_ERRORS, kind).inc()
        reason = str(exc).strip() or type(exc).__name__
        if kind is ErrorKind.UNAVAILABLE:
            _failures.value += 1
            raise DatabaseUnavailable(reason) from exc
        if kind is ErrorKind.TIMEOUT:
            raise DatabaseUnavailable(reason) from exc
        if kind is ErrorKind.CONFLICT:
            raise TransactionConflict(reason) from exc
        raise
    finally:
        close_old_connections()
