"""Who a request is attributed to."""

from __future__ import annotations

import ipaddress

import pytest

from app.security.identity import ApiKeys, client_address, presented_key

TRUSTED = [ipaddress.ip_network("10.0.0.0/8")]


def _scope(peer: str, *headers: tuple[str, str]) -> dict[str, object]:
    return {
        "client": (peer, 1234),
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers],
    }


def test_untrusted_peer_is_the_client_whatever_it_forwards() -> None:
    """A spoofed X-Forwarded-For from an untrusted peer is ignored."""
    scope = _scope("203.0.113.9", ("X-Forwarded-For", "1.2.3.4"))
    assert client_address(scope, TRUSTED) == "203.0.113.9"


def test_trusted_proxy_chain_is_read_right_to_left() -> None:
    """Hops added by trusted proxies are skipped; the first untrusted address is the client."""
    scope = _scope("10.0.0.1", ("X-Forwarded-For", "6.6.6.6, 198.51.100.7, 10.0.0.2"))
    assert client_address(scope, TRUSTED) == "198.51.100.7"


def test_split_forwarded_headers_are_joined_in_order() -> None:
    """Several X-Forwarded-For lines count as one list."""
    scope = _scope("10.0.0.1", ("X-Forwarded-For", "198.51.100.7"), ("X-Forwarded-For", "10.0.0.5"))
    assert client_address(scope, TRUSTED) == "198.51.100.7"


def test_garbage_hop_stops_at_the_last_vouched_address() -> None:
    """A non-address in the chain is not believed; the proxy that added it is the client."""
    scope = _scope("10.0.0.1", ("X-Forwarded-For", "not-an-ip, 10.0.0.9"))
    assert client_address(scope, TRUSTED) == "10.0.0.9"


def test_no_trusted_proxies_means_the_socket_peer() -> None:
    """With KV_TRUSTED_PROXIES empty the header is never read."""
    assert client_address(_scope("10.0.0.1", ("X-Forwarded-For", "1.1.1.1")), []) == "10.0.0.1"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ((("Authorization", "Bearer abc"),), "abc"),
        ((("Authorization", "bearer   abc "),), "abc"),
        ((("X-API-Key", "xyz"),), "xyz"),
        ((("Authorization", "Basic abc"),), None),
        ((), None),
    ],
)
def test_presented_key(headers: tuple[tuple[str, str], ...], expected: str | None) -> None:
    """Keys come from a Bearer token or X-API-Key; other schemes are not keys."""
    assert presented_key(_scope("1.1.1.1", *headers)) == expected


def test_key_ids_are_stable_and_reveal_nothing() -> None:
    """A valid key maps to a stable id that does not contain the key; wrong keys map to None."""
    keys = ApiKeys(["k" * 20, "m" * 20])
    ident = keys.match("m" * 20)
    assert ident is not None and ident == keys.match("m" * 20)
    assert "m" * 8 not in ident and ident != keys.match("k" * 20)
    assert keys.match("x" * 20) is None and keys.match(None) is None


@pytest.mark.parametrize(
    ("hop", "address"),
    [
        ("fe80::1%eth0", "fe80::1"),
        ("fe80::1%" + "z" * 80, "fe80::1"),
        ("FE80:0:0::1", "fe80::1"),
        ("::ffff:198.51.100.7", "198.51.100.7"),
    ],
)
def test_one_client_is_one_address_however_it_is_written(hop: str, address: str) -> None:
    """Zones are dropped, IPv6 is compressed and IPv4-mapped IPv6 is IPv4: one bucket each."""
    scope = _scope("10.0.0.1", ("X-Forwarded-For", hop))
    assert client_address(scope, TRUSTED) == address
