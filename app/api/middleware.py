"""Pure ASGI middleware (no BaseHTTPMiddleware: its escaping exceptions become text 500s)."""

from __future__ import annotations

import logging
import re

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.problems import ProblemError, internal_error_response, problem_response
from app.ids import UniqueIds
from app.observability.context import request_id_var

_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:@-]{1,128}$")

logger = logging.getLogger("kvkit.errors")
_request_ids = UniqueIds()


class RequestIdMiddleware:
    """Echo a sane client X-Request-ID or mint one; every response carries it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        supplied = Headers(scope=scope).get("x-request-id")
        request_id = (
            supplied if supplied and _SAFE_REQUEST_ID.match(supplied) else _request_ids.next()
        )
        token = request_id_var.set(request_id)

        started = False

        id_header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":  # no route sets it: append
                started = True
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            # Starlette answers unhandled errors outside every middleware, where the request id
            # is gone: answer here so the 500 carries it in its header, body and log line.
            if started:
                raise
            logger.exception("unhandled error")
            await internal_error_response()(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)


class BodyLimitMiddleware:
    """Hold every request body to the hard cap, on every route, read or not.

    A declared Content-Length over the cap is refused before a byte of the body is read. A body
    is counted as the app reads it. And when a response starts before the body was read to its
    end (a route that never reads it, a 401 or 429 answered first), the response closes the
    connection: otherwise the server would read the rest of the body, however large, only to
    discard it and keep the connection for the next request.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body_bytes):
            response = problem_response(
                413, "payload_too_large", f"request body exceeds {self.max_body_bytes} bytes"
            )
            if not declared.isdigit():
                response = problem_response(400, "bad_request", "invalid Content-Length")
            await response(scope, receive, send)
            return
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        if not chunked and declared in (None, "0"):  # no body: nothing to count or drain
            await self.app(scope, receive, send)
            return
        received = 0
        finished = False

        async def limited_receive() -> Message:
            nonlocal received, finished
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                finished = not message.get("more_body", False)
                if received > self.max_body_bytes:
                    raise ProblemError(
                        413,
                        "payload_too_large",
                        f"request body exceeds {self.max_body_bytes} bytes",
                    )
            return message

        async def send_closing_if_unread(message: Message) -> None:
            if message["type"] == "http.response.start" and not finished:
                message["headers"] = [*message.get("headers", ()), (b"connection", b"close")]
            await send(message)

        await self.app(scope, limited_receive, send_closing_if_unread)
