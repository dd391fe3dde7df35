"""The clock, sleeps and jitter of every client, and the public switch that fakes them in tests.

Like stamina's `set_testing()`, `kvclient.set_testing(True)` makes every sleep return at once
(recorded, and added to a virtual offset of the clock, so deadlines and the retry budget's refill
see the time as spent) and seeds the jitter, so retry tests run in milliseconds and reproducibly.
Real time still passes underneath, so a deadline still bounds real I/O.
"""

from __future__ import annotations

import random
import threading
import time
from types import TracebackType

import anyio

# Jitter need not be unpredictable, only spread out.
_RNG = random.Random()  # noqa: S311  # nosec B311


class Testing:
    """The state of testing mode: the sleeps skipped so far and the clock's virtual offset."""

    __test__ = False  # not a test case, whatever its name tells pytest

    def __init__(self, seed: int, previous: Testing | None) -> None:
        self.sleeps: list[float] = []
        self.offset = 0.0
        self.rng = random.Random(seed)  # noqa: S311  # nosec B311
        self._previous = previous
        self._lock = threading.Lock()

    @property
    def elapsed(self) -> float:
        """Seconds the clients would have slept."""
        return sum(self.sleeps)

    def advance(self, seconds: float) -> None:
        """Move the clients' clock forward, as if `seconds` of quiet time had passed."""
        with self._lock:
            self.offset += seconds

    def record(self, seconds: float) -> None:
        """Note one skipped sleep and move the clock past it."""
        with self._lock:
            self.sleeps.append(seconds)
            self.offset += seconds

    def __enter__(self) -> Testing:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        global _state
        _state = self._previous


_state: Testing | None = None


def set_testing(testing: bool = True, *, seed: int = 0) -> Testing | None:
    """Turn testing mode on (sleeps skipped, jitter seeded with `seed`) or off, process-wide.

    Returns the new state, also a context manager that restores the previous mode on exit;
    `set_testing(False)` returns None.
    """
    global _state
    _state = Testing(seed, _state) if testing else None
    return _state


def is_testing() -> bool:
    """Whether testing mode is on."""
    return _state is not None


def monotonic() -> float:
    """The clients' clock: `time.monotonic()`, plus the skipped sleeps in testing mode."""
    state = _state
    return time.monotonic() + (state.offset if state is not None else 0.0)


def sleep(seconds: float) -> None:
    """Block for `seconds`, or only record them in testing mode."""
    state = _state
    if state is not None:
        state.record(seconds)
    elif seconds > 0:
        time.sleep(seconds)


async def async_sleep(seconds: float) -> None:
    """Await `seconds`, or only record them in testing mode (still yielding to the loop)."""
    state = _state
    if state is not None:
        state.record(seconds)
        seconds = 0.0
    await anyio.sleep(seconds)


def rng() -> random.Random:
    """The random source of jitter: seeded in testing mode."""
    state = _state
    return state.rng if state is not None else _RNG
