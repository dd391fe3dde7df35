"""The synchronous client on requests: one method per kvkit operation, retried only where safe."""

from __future__ import annotations

import contextvars
import http.client
import io
import socket
import threading
from collections.abc import Iterator
from types import TracebackType
from typing import Any, Self

import requests
import requests.adapters
from prometheus_client import CollectorRegistry
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import NewConnectionError, ReadTimeoutError

from . import _testing
from ._core import (
    DEFAULT_POOL_SIZE,
    DEFAULT_TIMEOUT,
    Core,
    Failure,
    RetryHook,
    Send,
    Sleep,
    Timeout,
    check_pool_size,
    decode,
    list_params,
)
from ._models import Headers, Item, Page, Response
from ._retry import RetryPolicy

_ITEMS = "/v1/items"
_ITEM = "/v1/items/{key}"

# The deadline of the attempt this thread is sending; read by the response's socket reader.
_attempt_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "kvclient_attempt_deadline", default=None
)


class KVClient:
    """Thread-safe client of one kvkit service; close it (or use `with`) to release connections.

    Every write sends one `Idempotency-Key` on all its attempts, so a retry after a lost response
    never applies the write twice. Every call ends within its policy's `deadline`, response body
    included. Failures raise subclasses of `kvclient.KVError`; mistakes in the arguments raise
    before anything is sent. Each thread gets its own `requests.Session` (requests does not
    promise a shared one is safe) over one shared, thread-safe urllib3 connection pool.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: Timeout = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        registry: CollectorRegistry | None = None,
        name: str | None = None,
        pool_size: int = DEFAULT_POOL_SIZE,
        on_retry: RetryHook | None = None,
        pacing: bool = True,
    ) -> None:
        self._core = Core(
            base_url,
            api_key=api_key,
            timeout=timeout,
            retry=retry,
            registry=registry,
            name=name,
            on_retry=on_retry,
            pacing=pacing,
        )
        self._adapter = _DeadlineAdapter(
            pool_connections=4, pool_maxsize=check_pool_size(pool_size), max_retries=0
        )
        self._local = threading.local()

    @property
    def base_url(self) -> str:
        """The service's URL, without a trailing slash."""
        return self._core.base_url

    @property
    def retry(self) -> RetryPolicy:
        """The policy of calls that pass no `retry=` of their own."""
        return self._core.retry

    @property
    def name(self) -> str:
        """The `client` label of this client's metrics."""
        return self._core.name

    def create(
        self,
        key: str,
        value: Any,
        idempotency_key: str | None = None,
        *,
        timeout: Timeout | None = None,
        retry: RetryPolicy | None = None,
    ) -> Item:
        """Store a new item; raises `KeyExists` if the key is taken."""
        call = self._core.call(
            "POST", _ITEMS, document={"key": key, "value": value}, idempotency_key=idempotency_key
        )
        return decode(self._run(call, retry, timeout), Item.from_json, call.request_id)

    def get(
        self, key: str, *, timeout: Timeout | None = None, retry: RetryPolicy | None = None
    ) -> Item:
        """Fetch an item; raises `NotFound` if there is none."""
        call = self._core.call("GET", _ITEM, key=key)
        return decode(self._run(call, retry, timeout), Item.from_json, call.request_id)

    def update(
        self,
        key: str,
        value: Any,
        if_version: int | None = None,
        *,
        idempotency_key: str | None = None,
        timeout: Timeout | None = None,
        retry: RetryPolicy | None = None,
    ) -> Item:
        """Replace an item's value; with `if_version`, only if it is still at that version."""
        call = self._core.call(
            "PUT",
            _ITEM,
            key=key,
            document={"value": value},
            if_version=if_version,
            idempotency_key=idempotency_key,
        )
        return decode(self._run(call, retry, timeout), Item.from_json, call.request_id)

    def delete(
        self,
        key: str,
        if_version: int | None = None,
        *,
        idempotency_key: str | None = None,
        timeout: Timeout | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        """Remove an item; with `if_version`, only if it is still at that version."""
        call = self._core.call(
            "DELETE", _ITEM, key=key, if_version=if_version, idempotency_key=idempotency_key
        )
        self._run(call, retry, timeout)

    def list(
        self,
        limit: int = 50,
        cursor: str | None = None,
        prefix: str | None = None,
        *,
        timeout: Timeout | None = None,
        retry: RetryPolicy | None = None,
    ) -> Page:
        """Fetch one page of items ordered by key."""
        call = self._core.call("GET", _ITEMS, params=list_params(limit, cursor, prefix))
        return decode(self._run(call, retry, timeout), Page.from_json, call.request_id)

    def iter_items(
        self,
        prefix: str | None = None,
        page_size: int = 100,
        *,
        start_cursor: str | None = None,
        timeout: Timeout | None = None,
        retry: RetryPolicy | None = None,
    ) -> Iterator[Item]:
        """Yield every item (under `prefix`, after `start_cursor`), one page at a time."""
        cursor = start_cursor
        while True:
            page = self.list(page_size, cursor, prefix, timeout=timeout, retry=retry)
            yield from page.items
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def close(self) -> None:
        """Close every pooled connection; later calls raise `ClientClosed`."""
        self._core.closed = True
        self._adapter.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _run(self, call: Any, retry: RetryPolicy | None, timeout: Timeout | None) -> Response:
        steps = self._core.run(call, retry, timeout)
        try:
            step = next(steps)
            while True:
                if isinstance(step, Sleep):
                    _testing.sleep(step.seconds)
                    step = steps.send(None)
                else:
                    step = steps.send(self._send(call.method, call.target, call.body, step))
        except StopIteration as done:
            return done.value
        finally:
            steps.close()

    def _send(self, method: str, target: str, body: bytes | None, send: Send) -> Response | Failure:
        """One attempt on this thread's session; the deadline bounds every socket read."""
        token = _attempt_deadline.set(send.deadline)
        try:
            raw = self._session().request(
                method,
                self._core.base_url + target,
                data=body,
                headers=send.headers,
                timeout=(send.connect_timeout, send.read_timeout),
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            return _failure(exc, send.deadline)
        finally:
            _attempt_deadline.reset(token)
        headers = Headers((name, value) for name, value in raw.raw.headers.items())
        return Response(raw.status_code, headers, raw.content, raw.reason or "")

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.mount("http://", self._adapter)
            session.mount("https://", self._adapter)
            self._local.session = session
        return session


def _failure(exc: requests.RequestException, deadline: float) -> Failure:
    """Name a transport failure by whether the request can have reached the server."""
    cause = exc.args[0] if exc.args else None
    reason = getattr(cause, "reason", None)
    detail = str(reason or cause or exc)
    if isinstance(exc, requests.exceptions.SSLError):
        return Failure("tls_error", detail, exc)
    if isinstance(exc, requests.ConnectTimeout):
        return Failure("connect_timeout", detail, exc)
    timed_out = isinstance(exc, requests.ReadTimeout) or isinstance(
        cause if reason is None else reason, ReadTimeoutError
    )
    if timed_out:
        if _testing.monotonic() >= deadline:
            detail = "the call's deadline passed before the response was complete"
        return Failure("read_timeout", detail, exc)
    if isinstance(exc, requests.ConnectionError) and isinstance(reason, NewConnectionError):
        return Failure("connect_error", detail, exc)
    return Failure("connection_lost", detail, exc)


class _DeadlineReader(io.RawIOBase):
    """Reads a socket with each read's timeout cut to what is left of the deadline.

    A socket timeout applies to each read, so a server trickling a byte at a time would keep a
    plain read going forever; cutting every read to the time left makes the deadline hard.
    """

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        super().__init__()
        self._sock = sock
        self._raw = sock.makefile("rb", buffering=0)
        self._deadline = deadline
        self._timeout = sock.gettimeout()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        left = self._deadline - _testing.monotonic()
        if left <= 0:
            raise TimeoutError("the call's deadline passed")
        self._sock.settimeout(left if self._timeout is None else min(self._timeout, left))
        return self._raw.readinto(buffer)

    def close(self) -> None:
        self._raw.close()
        super().close()


class _DeadlineHTTPResponse(http.client.HTTPResponse):
    """http.client's response, reading through `_DeadlineReader` while an attempt is on."""

    def __init__(
        self,
        sock: socket.socket,
        debuglevel: int = 0,
        method: str | None = None,
        url: str | None = None,
    ) -> None:
        super().__init__(sock, debuglevel, method, url)
        deadline = _attempt_deadline.get()
        if deadline is not None:
            self.fp.close()
            self.fp = io.BufferedReader(_DeadlineReader(sock, deadline))


class _HTTPConnection(HTTPConnection):
    response_class = _DeadlineHTTPResponse


class _HTTPSConnection(HTTPSConnection):
    response_class = _DeadlineHTTPResponse


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class _DeadlineAdapter(requests.adapters.HTTPAdapter):
    """requests' adapter whose pools read responses under the attempt's deadline."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        # urllib3 keeps these per manager precisely so that one can be overridden.
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}
