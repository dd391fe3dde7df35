"""Whether this database thread is running writes that share one transaction (app/store/batch.py).

Inside a shared transaction a write takes no savepoints: a failure that would need one fails the
whole transaction instead, and its writes run again one by one.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

_local = threading.local()


def in_shared_transaction() -> bool:
    return bool(getattr(_local, "shared", False))


@contextmanager
def sharing() -> Iterator[None]:
    _local.shared = True
    try:
        yield
    finally:
        _local.shared = False
