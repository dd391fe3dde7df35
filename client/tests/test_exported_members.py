"""The public surface of kvclient, pinned so that changing it is a deliberate act."""

from __future__ import annotations

import tomllib
from pathlib import Path

import kvclient

PUBLIC_NAMES = [
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


def test_all_lists_exactly_the_public_names() -> None:
    """`__all__` names the pinned public API, no more and no less."""
    assert sorted(kvclient.__all__) == sorted(PUBLIC_NAMES)


def test_public_classes_claim_the_package_as_their_module() -> None:
    """Every exported class reports `kvclient`, not a private module, as its home."""
    for name in PUBLIC_NAMES:
        member = getattr(kvclient, name)
        if isinstance(member, type) or callable(member):
            assert member.__module__ == "kvclient", name


def test_no_other_public_module_attributes() -> None:
    """Nothing public leaks from the package namespace beyond `__all__`."""
    leaked = {
        name
        for name, value in vars(kvclient).items()
        if not name.startswith("_")
        and not isinstance(value, type(kvclient))
        and name != "annotations"  # bound by `from __future__ import annotations`
    }
    assert leaked <= set(PUBLIC_NAMES)


def test_version_matches_the_distribution_metadata() -> None:
    """`kvclient.__version__` equals the version in pyproject.toml."""
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert kvclient.__version__ == pyproject["project"]["version"]
