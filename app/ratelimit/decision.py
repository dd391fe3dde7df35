"""The outcome of one limiter check and the headers that report it."""

from __future__ import annotations

import math
from dataclasses import dataclass


class LimiterUnavailable(Exception):
    """Redis failed and the policy is `closed`: the request must not pass unchecked."""


@dataclass(frozen=True, slots=True)
class RateLimitDecision:
    """Whether a request may pass, and the state of its client's window afterwards."""

    allowed: bool
    limit: int
    window: int
    remaining: int
    reset_after: float  # seconds until the oldest counted request leaves the window
    degraded: bool = False  # decided by the per-process fallback because Redis failed

    @property
    def outcome(self) -> str:
        """How the decision is counted: allowed, limited, or degraded (by the fallback)."""
        if self.degraded:
            return "degraded"
        return "allowed" if self.allowed else "limited"

    @property
    def reset_seconds(self) -> int:
        """Whole seconds until a slot frees, never 0 (a client waiting 0 s would be refused)."""
        return max(1, math.ceil(self.reset_after))

    def headers(self) -> dict[str, str]:
        """IETF draft RateLimit fields plus the legacy trio; Reset is a delta, never an epoch."""
        reset = str(self.reset_seconds)
        remaining = str(self.remaining)
        headers = {
            "RateLimit-Policy": f'"default";q={self.limit};w={self.window}',
            "RateLimit": f'"default";r={remaining};t={reset}',
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": remaining,
            "RateLimit-Reset": reset,
        }
        if not self.allowed:
            headers["Retry-After"] = reset
        return headers
