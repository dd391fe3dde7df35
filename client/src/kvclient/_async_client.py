"""The asynchronous client on httpx: the same methods and decisions as `KVClient`, awaited."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any, Self

import anyio
import httpx
from prometheus_client import CollectorRegistry

from . import _testing
from ._core import (
    DEFAULT_POOL_SIZE,
    DEFAULT_TIMEOUT,
    Call,
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


class AsyncKVClient:
    """Client of one kvkit service for async code (asyncio or trio); `aclose()` it, or use
    `async with`.

    Every call makes the same decisions as `KVClient` (both drive one shared core): the same
    retries, backoff, Retry-After, deadline, retry budget, pacing, idempotency keys, metrics,
    logs and spans. One client may be shared by any number of tasks.
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
        size = check_pool_size(pool_size)
        self._http = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=size, max_keepalive_connections=size),
            follow_redirects=False,
        )

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

    async def create(
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
        response = await self._run(call, retry, timeout)
        return decode(response, Item.from_json, call.request_id)

    async def get(
        self, key: str, *, timeout: Timeout | None = None, retry: RetryPolicy | None = None
    ) -> Item:
        """Fetch an item; raises `NotFound` if there is none."""
        call = self._core.call("GET", _ITEM, key=key)
        response = await self._run(call, retry, timeout)
        return decode(response, Item.from_json, call.request_id)

    async def update(
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
        response = await self._run(call, retry, timeout)
        return decode(response, Item.from_json, call.request_id)

    async def delete(
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
        await self._run(call, retry, timeout)

    async def list(
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
        response = await self._run(call, retry, timeout)
        return decode(response, Page.from_json, call.request_id)

    async def iter_items(
        self,
        prefix: str | None = None,
        page_size: int = 100,
        *,
        start_cursor: str | None = None,
        timeout: Timeout | None = None,
        retry: RetryPolicy | None = None,
    ) -> AsyncIterator[Item]:
        """Yield every item (under `prefix`, after `start_cursor`), one page at a time."""
        cursor = start_cursor
        while True:
            page = await self.list(page_size, cursor, prefix, timeout=timeout, retry=retry)
            for item in page.items:
                yield item
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def aclose(self) -> None:
        """Close every pooled connection; later calls raise `ClientClosed`."""
        self._core.closed = True
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _run(
        self, call: Call, retry: RetryPolicy | None, timeout: Timeout | None
    ) -> Response:
        steps = self._core.run(call, retry, timeout)
        try:
            step = next(steps)
            while True:
                if isinstance(step, Sleep):
                    await _testing.async_sleep(step.seconds)
                    step = steps.send(None)
                else:
                    step = steps.send(await self._send(call, step))
        except StopIteration as done:
            return done.value
        finally:
            steps.close()

    async def _send(self, call: Call, send: Send) -> Response | Failure:
        """One attempt, headers and body, inside a cancel scope that ends at the deadline."""
        timeout = httpx.Timeout(
            connect=send.connect_timeout,
            read=send.read_timeout,
            write=send.read_timeout,
            pool=send.connect_timeout,
        )
        try:
            with anyio.fail_after(max(0.0, send.deadline - _testing.monotonic())):
                response = await self._http.request(
                    call.method,
                    self._core.base_url + call.target,
                    content=call.body,
                    headers=send.headers,
                    timeout=timeout,
                )
        except TimeoutError as exc:
            return Failure(
                "read_timeout", "the call's deadline passed before the response was complete", exc
            )
        except httpx.TransportError as exc:
            return _failure(exc)
        headers = Headers(response.headers.multi_items())
        return Response(response.status_code, headers, response.content, response.reason_phrase)


def _failure(exc: httpx.TransportError) -> Failure:
    """Name a transport failure by whether the request can have reached the server."""
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
        return Failure("connect_timeout", detail, exc)
    if isinstance(exc, httpx.ConnectError):
        if _caused_by_tls(exc):
            return Failure("tls_error", detail, exc)
        return Failure("connect_error", detail, exc)
    if isinstance(exc, httpx.TimeoutException):
        return Failure("read_timeout", detail, exc)
    return Failure("connection_lost", detail, exc)


def _caused_by_tls(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return True
        seen = seen.__cause__ or seen.__context__
    return "CERTIFICATE_VERIFY_FAILED" in str(exc)
