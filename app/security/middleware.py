"""Identify every /v1 caller (for limits and idempotency) and enforce API keys."""

from __future__ import annotations

from collections.abc import Sequence

from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.problems import problem_response
from app.security.identity import ApiKeys, ClientIdentity, Network, client_address, presented_key

PROTECTED_PREFIX = "/v1"


def identity_of(scope: Scope) -> ClientIdentity:
    """The identity ClientMiddleware attached to this request."""
    identity = scope.get("state", {}).get("client")
    assert isinstance(identity, ClientIdentity), "ClientMiddleware must run first"
    return identity


class ClientMiddleware:
    """Attach a ClientIdentity to /v1 requests: the valid API key, else the client address."""

    def __init__(self, app: ASGIApp, keys: ApiKeys, trusted: Sequence[Network]) -> None:
        self.app = app
        self.keys = keys
        self.trusted = tuple(trusted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(PROTECTED_PREFIX):
            key_id = self.keys.match(presented_key(scope))
            identity = (
                ClientIdentity(key_id, True)
                if key_id
                else ClientIdentity("ip:" + client_address(scope, self.trusted), False)
            )
            scope.setdefault("state", {})["client"] = identity
        await self.app(scope, receive, send)


class AuthMiddleware:
    """With KV_API_KEYS set, /v1 answers 401 unless a valid key came with the request."""

    def __init__(self, app: ASGIApp, keys: ApiKeys) -> None:
        self.app = app
        self.required = keys.required

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.required
            and scope["type"] == "http"
            and scope["path"].startswith(PROTECTED_PREFIX)
            and not identity_of(scope).authenticated
        ):
            response = problem_response(
                401,
                "unauthorized",
                "a valid API key is required (Authorization: Bearer <key> or X-API-Key)",
                headers={"WWW-Authenticate": 'Bearer realm="kvkit"'},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
