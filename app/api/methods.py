"""HEAD wherever GET is served, and a 405 naming every allowed method everywhere else."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.routing import APIRoute
from starlette.types import Receive, Scope, Send

from app.api.problems import ProblemError


class _OtherMethods:
    """The last route of a path: any method no route above serves is a 405 naming all of them.

    Starlette's own 405 lists only the methods of the first route that matched the path.
    """

    def __init__(self, allow: str) -> None:
        self.allow = allow

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise ProblemError(
            405,
            "method_not_allowed",
            f"{scope['method']} is not allowed here; allowed: {self.allow}",
            headers={"Allow": self.allow},
        )


def complete_methods(router: APIRouter) -> None:
    """Add HEAD beside every GET (RFC 9110 9.3.2) and a full-Allow 405 to every path of `router`,
    once its own routes are defined; a router completed before is left as it is."""
    if any(isinstance(getattr(route, "endpoint", None), _OtherMethods) for route in router.routes):
        return
    methods: dict[str, set[str]] = {}
    for route in [r for r in router.routes if isinstance(r, APIRoute)]:
        route_methods = route.methods or set()
        allowed = methods.setdefault(route.path, set())
        allowed.update(route_methods)
        if "GET" in route_methods:
            # Out of the schema, which documents GET; the server sends no body for HEAD.
            router.add_api_route(
                route.path.removeprefix(router.prefix),
                route.endpoint,
                methods=["HEAD"],
                include_in_schema=False,
            )
            allowed.add("HEAD")
    for path, allowed in methods.items():
        # A Starlette route may be any ASGI app; the annotation names request handlers only.
        endpoint: Any = _OtherMethods(", ".join(sorted(allowed)))
        router.add_route(path, endpoint, include_in_schema=False)
