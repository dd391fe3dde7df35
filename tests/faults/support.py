"""Helpers of the fault tests: gunicorn's workers, a stallable Redis and server-log checks."""

from __future__ import annotations

import collections
import json
import os
import re
import signal
import time
from pathlib import Path

# An access line's message ends with the status; 503 is the promised answer to an outage.
_SERVER_ERROR = re.compile(r"\s5(?!03)\d\d$")


def worker_pids(master: int) -> set[int]:
    """Live (non-zombie) children of a gunicorn master, found by scanning /proc."""
    pids: set[int] = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # the process ended while we looked
            continue
        # The command name is in parentheses and may contain spaces: split after the last ")".
        state, ppid = text[text.rindex(")") + 2 :].split()[:2]
        if int(ppid) == master and state != "Z":
            pids.add(int(stat.parent.name))
    return pids


def wait_for_workers(master: int, count: int, exclude: set[int], timeout: float = 30) -> set[int]:
    """Wait until the master has `count` live workers, none of them in `exclude`."""
    deadline = time.monotonic() + timeout
    while True:
        pids = worker_pids(master)
        if len(pids) == count and not pids & exclude:
            return pids
        if time.monotonic() > deadline:
            raise AssertionError(f"workers {sorted(pids)}: expected {count} without {exclude}")
        time.sleep(0.1)


def kill_one_worker(master: int) -> int:
    """SIGKILL one worker of a gunicorn master; returns its pid."""
    pids = sorted(worker_pids(master))
    assert pids, "gunicorn master has no workers"
    os.kill(pids[0], signal.SIGKILL)
    return pids[0]


def server_errors(log: str) -> list[str]:
    """Lines of a server log that show a crash: a traceback, or a 5xx other than 503."""
    bad = []
    for line in log.splitlines():
        if "Traceback" in line:
            bad.append(line)
        elif line.startswith("{"):
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            status = entry.get("status")
            message = str(entry.get("message", ""))
            if (isinstance(status, int) and status >= 500 and status != 503) or (
                _SERVER_ERROR.search(message)
            ):
                bad.append(line)
    return bad


def assert_clean_log(log: str) -> None:
    """Fail with a short summary when the server log shows a crash (see `server_errors`)."""
    bad = server_errors(log)
    kinds = collections.Counter(_describe(line) for line in bad)
    summary = "\n".join(f"{count} x {kind}" for kind, count in kinds.most_common(5))
    assert len(bad) == 0, f"{len(bad)} crash lines in the server log:\n{summary}"


def _describe(line: str) -> str:
    """A log line in short: logger, message, status and the exception's last line."""
    try:
        entry = json.loads(line)
    except ValueError:
        return line[:200]
    exception = str(entry.get("exc_info") or "").strip().splitlines()
    return " ".join(
        str(part)
        for part in (
            entry.get("logger"),
            repr(str(entry.get("message", "")).strip()),
            entry.get("status", ""),
            exception[-1] if exception else "",
        )
        if part != ""
    )
