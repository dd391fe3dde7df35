"""Apply the limiter to every /v1 request and report it in headers."""

from __future__ import annotations

from typing import Protocol

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.problems import problem_response
from app.observability.metrics import RATELIMIT_DECISIONS
from app.ratelimit.decision import LimiterUnavailable, RateLimitDecision
from app.security.middleware import PROTECTED_PREFIX, identity_of


class Limiter(Protocol):
    async def hit(self, client: str) -> RateLimitDecision: ...


class RateLimitMiddleware:
    """429 over the limit; RateLimit headers on every /v1 response; health and metrics exempt."""

    def __init__(self, app: ASGIApp, limiter: Limiter) -> None:
        self.app = app
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PROTECTED_PREFIX):
            await self.app(scope, receive, send)
            return
        try:
            decision = await self.limiter.hit(identity_of(scope).id)
        except LimiterUnavailable:
            response = problem_response(
                503,
                "service_unavailable",
                "rate limiting is unavailable; retry later",
                headers={"Retry-After": "1"},
            )
            await response(scope, receive, send)
            return
        RATELIMIT_DECISIONS.labels(decision.outcome).inc()
        headers = decision.headers()
        if not decision.allowed:
            response = problem_response(
                429,
                "rate_limited",
                f"more than {decision.limit} requests in {decision.window} s; "
                f"retry in {decision.reset_seconds} s",
                headers=headers,
            )
            await response(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).update(headers)
            await send(message)

        await self.app(scope, receive, send_with_headers)
