"""Python client for the kvkit key-value HTTP service, with safe retries."""

from __future__ import annotations

from ._client import KVClient
from ._exceptions import (
    APIError,
    KeyExists,
    KVError,
    NotFound,
    RateLimited,
    ServerError,
    ServiceUnavailable,
    TransportError,
    Unauthorized,
    ValidationError,
    VersionMismatch,
)
from ._models import Item, Page
from ._retry import RetryPolicy
from ._version import __version__

__all__ = [
    "APIError",
    "Item",
    "KVClient",
    "KVError",
    "KeyExists",
    "NotFound",
    "Page",
    "RateLimited",
    "RetryPolicy",
    "ServerError",
    "ServiceUnavailable",
    "TransportError",
    "Unauthorized",
    "ValidationError",
    "VersionMismatch",
    "__version__",
]

# Show the public path in reprs and tracebacks, not the private module (as httpx does).
for _name in __all__:
    if not _name.startswith("__"):
        globals()[_name].__module__ = "kvclient"
del _name
