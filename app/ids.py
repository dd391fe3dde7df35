"""Process-unique identifiers without a system call per id."""

from __future__ import annotations

import itertools
import os
import secrets


class UniqueIds:
    """A random per-process prefix and a counter: unique across processes and replicas.

    The prefix is drawn again in a forked child, so workers forked from one parent never share it.
    """

    def __init__(self) -> None:
        self._reseed()
        os.register_at_fork(after_in_child=self._reseed)

    def _reseed(self) -> None:
        self._prefix = secrets.token_hex(8)
        self._numbers = itertools.count()

    def next(self) -> str:
        return f"{self._prefix}{next(self._numbers):016x}"
