"""uvicorn's httptools protocol with deadlines for receiving a request, and reclaimable connections.

uvicorn arms a timer only once a response is sent (keep-alive): a connection that sends nothing,
or trickles its headers or its body, is never timed out. Each holds a file descriptor, and counts
against `limit_concurrency`, which uvicorn applies to connections, idle ones included: a flood of
idle connections would have real clients answered 503. This protocol closes

* a connection whose request headers are not complete `header_timeout` seconds after the request's
  first byte (after the connection opened, for its first request), answering 408 to a request
  begun;
* a connection whose request body is not received whole `body_timeout` seconds after its headers,
  answering 408 unless the app has answered already;

and, when a new connection would reach `limit_concurrency`, first closes the connection that has
waited longest without a request in the app (idle, or still sending headers), as nginx reuses
idle keep-alive connections when it runs short. A request in the app is never closed to make
room: with `limit_concurrency` of them in progress, uvicorn answers further requests 503.

While the replica drains at shutdown (`drain.py`), every response closes its connection.

A request costs no timer of its own: it sets the time its headers or body are due, and the
connection's one timer, armed for the earliest such time, re-arms itself for a later one when it
fires early. A connection kept alive for many requests arms about one timer per header_timeout.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import weakref
from dataclasses import dataclass
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from app.config import get_settings
from app.server.drain import draining

# The 408's headers after uvicorn's default ones, and its body (RFC 9110 15.5.9: close after it).
_REQUEST_TIMEOUT_TAIL = (
    b"content-type: text/plain; charset=utf-8\r\ncontent-length: 15\r\n"
    b"connection: close\r\n\r\nRequest Timeout"
)


@dataclass(frozen=True)
class RequestDeadlines:
    """Seconds a client may take to send a request's headers, and then its body."""

    header_timeout: float
    body_timeout: float


@functools.cache
def request_deadlines() -> RequestDeadlines:
    """This process's deadlines: KV_HEADER_TIMEOUT and KV_BODY_TIMEOUT from the settings."""
    settings = get_settings()
    return RequestDeadlines(settings.header_timeout, settings.body_timeout)


class _Receiving(enum.Enum):
    """What the connection is receiving: which deadline, if any, applies."""

    NOTHING = enum.auto()  # no request begun: a new connection, or between requests
    HEADERS = enum.auto()
    BODY = enum.auto()


# Per server: its connections without a request in the app, longest waiting first.
_WAITING: weakref.WeakKeyDictionary[ServerState, dict[BoundedHttpProtocol, None]] = (
    weakref.WeakKeyDictionary()
)


class BoundedHttpProtocol(HttpToolsProtocol):
    """HttpToolsProtocol that times out slow requests and reclaims waiting connections."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        deadlines = request_deadlines()
        self._header_timeout = deadlines.header_timeout
        self._body_timeout = deadlines.body_timeout
        waiting = _WAITING.get(server_state)
        if waiting is None:
            waiting = _WAITING[server_state] = {}
        self._waiting = waiting
        self._receiving = _Receiving.NOTHING
        self._due: float | None = None  # loop time the headers or body must be in by
        self._deadline: asyncio.TimerHandle | None = None
        self._deadline_at = 0.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._make_room()
        self._waiting[self] = None
        self._expect_by(self.loop.time() + self._header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._waiting.pop(self, None)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._receiving is _Receiving.NOTHING:
            # A request begins. After a response its headers are due from now: uvicorn has just
            # dropped its keep-alive timer, for any byte, even the CRLFs a parser skips.
            self._receiving = _Receiving.HEADERS
            if self._due is None:
                self._expect_by(self.loop.time() + self._header_timeout)
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._waiting.pop(self, None)
        self._receiving = _Receiving.BODY
        self._expect_by(self.loop.time() + self._body_timeout)
        super().on_headers_complete()
        if draining() and self.cycle is not None:
            # Answer with Connection: close and close after it: the client opens its next
            # connection elsewhere, while an idle connection closed later could race a request.
            self.cycle.keep_alive = False

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._receiving = _Receiving.NOTHING
        self._due = None

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # uvicorn armed its keep-alive timer: the connection now waits for its next request.
        if self.timeout_keep_alive_task is not None and not self.transport.is_closing():
            self._waiting[self] = None

    def handle_websocket_upgrade(self) -> None:
        self._due = None
        self._waiting.pop(self, None)
        super().handle_websocket_upgrade()

    def _make_room(self) -> None:
        """Close the longest-waiting connections while this one would reach the limit.

        uvicorn refuses a request while `len(connections) >= limit_concurrency`, so room means
        fewer connections than the limit, this one included. A closed connection leaves that
        count at once: its connection_lost, which would take it out, runs only once the close
        completes, and until then requests would be refused for it.
        """
        limit = self.limit_concurrency
        waiting = self._waiting
        if limit is None:
            return
        while waiting and len(self.connections) >= limit:
            next(iter(waiting))._close()

    def _close(self) -> None:
        """Close the connection, and take it out of uvicorn's count at once (see _make_room)."""
        self._waiting.pop(self, None)
        self.connections.discard(self)
        self.transport.close()

    def _expect_by(self, due: float) -> None:
        """Time the connection out at `due` unless what it receives now is in by then."""
        self._due = due
        if self._deadline is None or self._deadline_at > due:
            if self._deadline is not None:
                self._deadline.cancel()
            self._deadline_at = due
            self._deadline = self.loop.call_at(due, self._on_deadline)

    def _on_deadline(self) -> None:
        self._deadline = None
        due = self._due
        if due is None:
            return  # nothing is due: the timer stays off until something is
        if due > self.loop.time():
            self._expect_by(due)  # armed for an earlier request, or for the headers
            return
        self._time_out()

    def _time_out(self) -> None:
        """Close the connection; a request begun and not yet answered is answered 408 first."""
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if self._receiving is _Receiving.HEADERS:
            # A pipelined request's headers may trickle while the one before is being answered.
            if cycle is None or cycle.response_complete:
                self._send_408()
        elif self._receiving is _Receiving.BODY and not cycle.response_started:
            # The app waits in receive(): it gets http.disconnect, and nothing it sends is written.
            cycle.disconnected = True
            cycle.message_event.set()
            self._send_408()
        self._close()

    def _send_408(self) -> None:
        content = [STATUS_LINE[408]]
        for name, value in self.server_state.default_headers:
            content += [name, b": ", value, b"\r\n"]
        content.append(_REQUEST_TIMEOUT_TAIL)
        self.transport.write(b"".join(content))
