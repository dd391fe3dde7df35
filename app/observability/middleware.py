"""RED metrics and the access line of every request, from one pure ASGI middleware."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.observability.metrics import HTTP_DURATION, HTTP_IN_FLIGHT, HTTP_REQUESTS, labelled
from app.security.identity import identity_of

access_logger = logging.getLogger("kvkit.access")

UNMATCHED = "unmatched"
# Any other method token becomes "OTHER", so clients cannot mint label values.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})


class ObservabilityMiddleware:
    """Count, time and log every response, including those outer middleware short-circuit.

    Labels use the route template (`/v1/items/{key}`), never the raw path, so keys stay out of
    metrics and their cardinality stays bounded.
    """

    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.routes = tuple(routes)  # the app's own routes, prefixes included

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets when an exception escapes before a response

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        HTTP_IN_FLIGHT.inc()
        try:
            await self.app(scope, receive, send_and_record)
        finally:
            HTTP_IN_FLIGHT.dec()
            duration = time.perf_counter() - started
            method = scope["method"] if scope["method"] in _METHODS else "OTHER"
            route = self.route_of(scope)
            labelled(HTTP_REQUESTS, method, route, f"{status // 100}xx").inc()
            labelled(HTTP_DURATION, method, route).observe(duration)
            access_logger.info(
                "%s %s %s",
                method,
                route,
                status,
                extra={
                    "method": method,
                    "route": route,
                    "status": status,
                    "duration_ms": round(duration * 1000, 3),
                    "client": client_of(scope),
                },
            )

    def route_of(self, scope: Scope) -> str:
        """The template of the route that served (or would have served) this request."""
        route = scope.get("route")
        if route is None:  # answered before routing, e.g. 401, 413 or 429
            for candidate in self.routes:
                match, _ = candidate.matches(scope)
                if match is not Match.NONE:
                    route = candidate
                    break
        path = getattr(route, "path", None)
        return path if isinstance(path, str) else UNMATCHED


def client_of(scope: Scope) -> str:
    """The identity the rate limiter used (`ip:...` or a hashed `key:...`), else the peer."""
    identity = identity_of(scope)
    if identity is not None:
        return identity.id
    peer = scope.get("client")
    return str(peer[0]) if peer else "unknown"
