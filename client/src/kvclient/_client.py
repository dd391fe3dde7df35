"""The public client: one method per kvkit operation, each retried only where that is safe."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import quote

import requests
from prometheus_client import REGISTRY, CollectorRegistry

from ._exceptions import KVError
from ._metrics import metrics_for
from ._models import Item, Page
from ._retry import RetryPolicy
from ._transport import Call, RetryingTransport
from ._version import __version__

_T = TypeVar("_T")
_ITEMS = "/v1/items"
_ITEM = "/v1/items/{key}"
# requests' default pool keeps 10 connections per host; threads beyond that would reconnect.
_POOL_SIZE = 32


class KVClient:
    """Thread-safe client of one kvkit service; close it (or use `with`) to release connections.

    Every write sends one `Idempotency-Key` on all its attempts, so a retry after a lost response
    never applies the write twice. Failures raise subclasses of `kvclient.KVError`.

    The keyword-only `_sleep`, `_clock` and `_rng` arguments exist for tests: they replace
    `time.sleep`, `time.monotonic` (deadlines, the retry budget's refill and durations) and the
    `random.Random` that draws jitter, so retry tests run without real sleeps and reproducibly.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float | tuple[float, float] = (3.05, 10.0),
        retry: RetryPolicy | None = None,
        session: requests.Session | None = None,
        registry: CollectorRegistry | None = None,
        _sleep: Callable[[float], None] = time.sleep,
        _clock: Callable[[], float] = time.monotonic,
        _rng: random.Random | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retry = retry if retry is not None else RetryPolicy()
        self._api_key = api_key
        self._owns_session = session is None
        self._session = session if session is not None else _new_session()
        self._transport = RetryingTransport(
            session=self._session,
            policy=self.retry,
            timeout=timeout if isinstance(timeout, tuple) else (timeout, timeout),
            metrics=metrics_for(registry if registry is not None else REGISTRY),
            sleep=_sleep,
            clock=_clock,
            rng=_rng if _rng is not None else random.Random(),  # noqa: S311  # nosec B311  # jitter, not secrets
        )

    def create(self, key: str, value: Any, idempotency_key: str | None = None) -> Item:
        """Store a new item; raises `KeyExists` if the key is taken."""
        response = self._send(
            "POST", _ITEMS, json={"key": key, "value": value}, idempotency_key=idempotency_key
        )
        return _decode(response, Item.from_json)

    def get(self, key: str) -> Item:
        """Fetch an item; raises `NotFound` if there is none."""
        return _decode(self._send("GET", _ITEM, key=key), Item.from_json)

    def update(
        self,
        key: str,
        value: Any,
        if_version: int | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> Item:
        """Replace an item's value; with `if_version`, only if it is still at that version."""
        response = self._send(
            "PUT",
            _ITEM,
            key=key,
            json={"value": value},
            if_version=if_version,
            idempotency_key=idempotency_key,
        )
        return _decode(response, Item.from_json)

    def delete(
        self, key: str, if_version: int | None = None, *, idempotency_key: str | None = None
    ) -> None:
        """Remove an item; with `if_version`, only if it is still at that version."""
        self._send("DELETE", _ITEM, key=key, if_version=if_version, idempotency_key=idempotency_key)

    def list(self, limit: int = 50, cursor: str | None = None, prefix: str | None = None) -> Page:
        """Fetch one page of items ordered by key."""
        params: dict[str, str | int] = {"limit": limit}
        if cursor is not None:
            params["cursor"] = cursor
        if prefix is not None:
            params["prefix"] = prefix
        return _decode(self._send("GET", _ITEMS, params=params), Page.from_json)

    def iter_items(self, prefix: str | None = None, page_size: int = 100) -> Iterator[Item]:
        """Yield every item (under `prefix`), fetching pages lazily as iteration proceeds."""
        cursor: str | None = None
        while True:
            page = self.list(limit=page_size, cursor=cursor, prefix=prefix)
            yield from page.items
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def close(self) -> None:
        """Close the HTTP session if this client created it; a caller's session stays open."""
        if self._owns_session:
            self._session.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _send(
        self,
        method: str,
        route: str,
        *,
        key: str | None = None,
        json: Any = None,
        params: dict[str, str | int] | None = None,
        if_version: int | None = None,
        idempotency_key: str | None = None,
    ) -> requests.Response:
        path = route
        if key is not None:
            if not key:
                # An empty key would address the collection instead of an item.
                raise ValueError("key must not be empty")
            path = route.format(key=quote(key, safe=""))
        request_id = uuid.uuid4().hex
        headers = {
            "Accept": "application/json, application/problem+json",
            "User-Agent": f"kvclient/{__version__}",
            "X-Request-ID": request_id,
        }
        if self._api_key is not None:
            headers["Authorization"] = f"Bearer {self._api_key}"
        if method != "GET":
            headers["Idempotency-Key"] = idempotency_key or uuid.uuid4().hex
        if if_version is not None:
            headers["If-Match"] = f'"{if_version}"'
        call = Call(
            method=method,
            route=route,
            url=self.base_url + path,
            headers=headers,
            request_id=request_id,
            json=json,
            params=params,
        )
        return self._transport.send(call)


def _new_session() -> requests.Session:
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=_POOL_SIZE)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def _decode(response: requests.Response, parse: Callable[[Any], _T]) -> _T:
    """Parse a 2xx body, turning a body that is not what the API promises into a `KVError`."""
    try:
        return parse(response.json())
    except (ValueError, KeyError, TypeError) as exc:
        raise KVError(
            f"unexpected {response.status_code} response body: {exc}",
            status=response.status_code,
            request_id=response.headers.get("X-Request-ID"),
        ) from exc
