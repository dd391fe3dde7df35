"""Python client for the kvkit key-value HTTP service, with safe, bounded retries."""

from __future__ import annotations

from ._async_client import AsyncKVClient
from ._client import KVClient
from ._core import RetryEvent
from ._exceptions import (
    APIError,
    ClientClosed,
    ConnectError,
    ConnectionLost,
    ConnectTimeout,
    InvalidArgument,
    KeyExists,
    KVError,
    NotFound,
    RateLimited,
    ReadTimeout,
    ServerError,
    ServiceUnavailable,
    TLSError,
    TransportError,
    Unauthorized,
    UnsupportedType,
    UsageError,
    ValidationError,
    VersionMismatch,
    WouldBeRateLimited,
)
from ._models import Headers, Item, Page, Response
from ._retry import RetryPolicy
from ._testing import Testing, is_testing, set_testing
from ._version import __version__

__all__ = [
    "APIError",
    "AsyncKVClient",
    "ClientClosed",
    "ConnectError",
    "ConnectTimeout",
    "ConnectionLost",
    "Headers",
    "InvalidArgument",
    "Item",
    "KVClient",
    "KVError",
    "KeyExists",
    "NotFound",
    "Page",
    "RateLimited",
    "ReadTimeout",
    "Response",
    "RetryEvent",
    "RetryPolicy",
    "ServerError",
    "ServiceUnavailable",
    "TLSError",
    "Testing",
    "TransportError",
    "Unauthorized",
    "UnsupportedType",
    "UsageError",
    "ValidationError",
    "VersionMismatch",
    "WouldBeRateLimited",
    "__version__",
    "is_testing",
    "set_testing",
]

# Show the public path in reprs and tracebacks, not the private module (as httpx does).
for _name in __all__:
    _member = globals()[_name]
    if isinstance(_member, type) or callable(_member):
        _member.__module__ = "kvclient"
del _name, _member
