"""The gate in front of /v1: who is calling, whether they are within their limit, and whether
they may come in. One middleware, so the three checks cost one pass per request."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from starlette._utils import get_route_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.problems import problem_response, unavailable_response
from app.observability.metrics import RATELIMIT_DECISIONS, labelled
from app.ratelimit.decision import LimiterUnavailable, RateLimitDecision
from app.security.identity import ApiKeys, Network, attach_identity, resolve_identity

PROTECTED_PREFIX = "/v1"


def is_protected(scope: Scope) -> bool:
    """Whether the request is for a /v1 route, judged on the path the router matches: the
    request path with any root_path (uvicorn --root-path, a prefix an ingress strips) removed.
    A raw prefix test on scope["path"] would let every request behind a root path through."""
    path = get_route_path(scope)  # the router's own function, so the two can never disagree
    return path == PROTECTED_PREFIX or path.startswith(PROTECTED_PREFIX + "/")


class Limiter(Protocol):
    async def hit(self, client: str) -> RateLimitDecision: ...


class GuardMiddleware:
    """Identify the caller (valid API key, else client address), apply its rate limit (429,
    RateLimit headers on every /v1 response), then require a key when keys are configured (401).

    Limits come before auth, so guessing keys is rate limited per address too. /healthz,
    /readyz and /metrics are outside /v1: never limited, never authenticated.
    """

    def __init__(
        self, app: ASGIApp, keys: ApiKeys, trusted: Sequence[Network], limiter: Limiter
    ) -> None:
        self.app = app
        self.keys = keys
        self.trusted = tuple(trusted)
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_protected(scope):
            await self.app(scope, receive, send)
            return
        identity = resolve_identity(scope, self.keys, self.trusted)
        attach_identity(scope, identity)
        try:
            decision = await self.limiter.hit(identity.id)
        except LimiterUnavailable:
            response = unavailable_response("rate limiting is unavailable; retry later")
            await response(scope, receive, send)
            return
        labelled(RATELIMIT_DECISIONS, decision.outcome).inc()
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

        raw_headers = [(k.lower().encode(), v.encode()) for k, v in headers.items()]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":  # no route sets these: append
                message["headers"] = [*message.get("headers", ()), *raw_headers]
            await send(message)

        if self.keys.required and not identity.authenticated:
            response = problem_response(
                401,
                "unauthorized",
                "one valid API key is required (Authorization: Bearer <key> or X-API-Key)",
                headers={"WWW-Authenticate": 'Bearer realm="kvkit"'},
            )
            await response(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)
