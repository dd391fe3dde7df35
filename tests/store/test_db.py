"""The database threads: a job that overstays its deadline fails the request, not the process."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from app.store.db import DatabaseThreads, Deadlines, JobExpired
from app.store.errors import DatabaseUnavailable
from app.store.setup import setup_django


def test_a_job_past_its_deadline_answers_database_unavailable() -> None:
    setup_django()  # each job does Django's connection housekeeping (the embedded default)
    threads = DatabaseThreads(threads=1, timeout=0.1, idle_timeout=60)
    release = threading.Event()

    async def run() -> int:
        stuck = asyncio.ensure_future(threads.run(release.wait))  # holds the only thread
        queued = asyncio.ensure_future(threads.run(lambda: 42))  # waits for a free thread
        outcomes = await asyncio.gather(stuck, queued, return_exceptions=True)
        release.set()
        after = await threads.run(lambda: 7)  # the thread is free again and still serves
        assert all(isinstance(o, DatabaseUnavailable) for o in outcomes), outcomes
        return after

    try:
        assert asyncio.run(asyncio.wait_for(run(), timeout=10)) == 7
    finally:
        release.set()
        threads.shutdown()


def test_finished_jobs_leave_nothing_behind_and_the_sweep_stops() -> None:
    deadlines = Deadlines(sweep=0.01)

    async def run() -> int:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[int] = loop.create_future()
        deadlines.watch(loop, done, loop.time() + 60)
        done.set_result(1)
        deadlines.forget(loop, done)
        late: asyncio.Future[int] = loop.create_future()
        deadlines.watch(loop, late, loop.time() + 0.05)
        with pytest.raises(JobExpired):
            await late
        await asyncio.sleep(0.05)  # one more sweep finds nothing pending and does not re-arm
        return len(deadlines._pending)

    assert asyncio.run(run()) == 0


def test_a_deadline_expires_no_sooner_than_set() -> None:
    deadlines = Deadlines(sweep=0.01)

    async def run() -> float:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        started = time.monotonic()
        deadlines.watch(loop, future, loop.time() + 0.2)
        with pytest.raises(JobExpired):
            await future
        return time.monotonic() - started

    assert asyncio.run(run()) >= 0.2
