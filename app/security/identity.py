"""Resolve the caller of a request: an API key when one is valid, else the client address."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from starlette.datastructures import Headers
from starlette.types import Scope

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class ClientIdentity:
    """The bucket and idempotency scope of a request; `id` never contains a secret."""

    id: str
    authenticated: bool


class ApiKeys:
    """The configured keys; comparison is constant-time over every key."""

    def __init__(self, keys: Sequence[str]) -> None:
        self._digests = [hashlib.sha256(key.encode()).digest() for key in keys]

    @property
    def required(self) -> bool:
        return bool(self._digests)

    def match(self, presented: str | None) -> str | None:
        """A stable, non-secret id for a valid key, else None."""
        if not presented or not self._digests:
            return None
        # Digests have one length, so the comparison time reveals not even the key's length.
        candidate = hashlib.sha256(presented.encode()).digest()
        found = False
        for digest in self._digests:  # no early exit: timing does not reveal which key matched
            found |= hmac.compare_digest(candidate, digest)
        return "key:" + candidate.hex()[:24] if found else None


def presented_key(scope: Scope) -> str | None:
    """The key from `Authorization: Bearer <key>` or `X-API-Key`; None without one, and None
    when the request presents two different ones (in any order or headers): which one counts
    must never depend on where it stands."""
    headers = Headers(scope=scope)
    presented = {value.strip() for value in headers.getlist("x-api-key") if value.strip()}
    for value in headers.getlist("authorization"):
        scheme, _, token = value.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            presented.add(token.strip())
    return presented.pop() if len(presented) == 1 else None


def client_address(scope: Scope, trusted: Sequence[Network]) -> str:
    """The socket peer, or the address a trusted proxy saw, reading X-Forwarded-For right to left.

    Only hops appended by trusted proxies are believed; the first untrusted address is the client,
    so a spoofed header from anyone else never selects another bucket. Addresses are normalised
    (see `_normal`), so one client is one bucket however its address is written, and an address
    is never longer than 39 characters.
    """
    peer = _normal(scope["client"][0]) if scope.get("client") else None
    current = peer or "unknown"
    if not trusted:
        return current
    forwarded = [
        part.strip()
        for value in Headers(scope=scope).getlist("x-forwarded-for")
        for part in value.split(",")
    ]
    for hop in reversed(forwarded):
        if not _is_trusted(current, trusted):
            break
        address = _normal(hop)
        if address is None:
            break  # garbage from further out: stop at the last address a trusted proxy vouched for
        current = address
    return current


def _normal(text: str) -> str | None:
    """`text` as one canonical address: compressed IPv6 without its zone (fe80::1%eth0 and
    fe80::1%anything are one host to us), IPv4-mapped IPv6 as IPv4; None if not an address."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        if address.scope_id is not None:
            address = ipaddress.IPv6Address(address.packed)
    return str(address)


def _is_trusted(address: str, trusted: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


def resolve_identity(scope: Scope, keys: ApiKeys, trusted: Sequence[Network]) -> ClientIdentity:
    """The valid API key's id, else the client's address."""
    key_id = keys.match(presented_key(scope))
    if key_id:
        return ClientIdentity(key_id, True)
    return ClientIdentity("ip:" + client_address(scope, trusted), False)


def attach_identity(scope: Scope, identity: ClientIdentity) -> None:
    """Record who is calling, once, where every later layer reads it (as Starlette's
    AuthenticationMiddleware does)."""
    scope["user"] = identity


def identity_of(scope: Scope) -> ClientIdentity | None:
    """Who is calling, as GuardMiddleware resolved it; None outside /v1."""
    identity = scope.get("user")
    return identity if isinstance(identity, ClientIdentity) else None
