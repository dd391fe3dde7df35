"""Client-side pacing: after the service said no requests remain, wait for its reset.

The service announces its budget on every response (`RateLimit: "default";r=<n>;t=<s>`). A
request sent while r=0 and the t seconds have not passed is bound to be refused with a 429, so
the next call waits them out instead, or fails at once when they end after its deadline.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

from ._headers import rate_limit_wait


class Pacer:
    """The last rate-limit announcement of one client's service, shared by all its calls."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._blocked_until = float("-inf")

    def observe(self, headers: Mapping[str, str], now: float) -> None:
        """Remember what a response said: exhausted until `now + t`, or requests left."""
        wait = rate_limit_wait(headers)
        with self._lock:
            if wait is not None:
                self._blocked_until = max(self._blocked_until, now + wait)
            elif "RateLimit" in headers:
                self._blocked_until = float("-inf")

    def wait(self, now: float) -> float:
        """Seconds the next request must wait before it can pass; 0 when it may go now."""
        with self._lock:
            return max(0.0, self._blocked_until - now)
