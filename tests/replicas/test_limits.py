"""One client's rate limit is exact across replicas, and a forged X-Forwarded-For escapes it not.

Requests carry no API key, so the bucket is the client's address: the one HAProxy appends to
X-Forwarded-For, believed because KV_TRUSTED_PROXIES names HAProxy. Each test's client connects
from an address of its own on loopback (127.0.0.0/8 is all local), so it starts with an empty
bucket; were it 127.0.0.1 (HAProxy's, trusted), kvkit would rightly read one hop further left,
into what the client wrote.
"""

from __future__ import annotations

import random
from collections import Counter

import httpx
import pytest

from tests.conftest import SERVER_NAMES, Cluster, ClusterFactory

LIMIT = 60
REQUESTS = 80


@pytest.fixture(scope="module")
def cluster(cluster_factory: ClusterFactory, redis_url: str) -> Cluster:
    """Both replicas at 60/minute, counting in one Redis."""
    return cluster_factory(REDIS_URL=redis_url, KV_RATE_LIMIT=f"{LIMIT}/minute")


@pytest.fixture
def client_address() -> str:
    """A loopback address no other test (or earlier run) has counted requests for."""
    return f"127.{random.randrange(1, 255)}.{random.randrange(256)}.{random.randrange(1, 255)}"


def send(
    cluster: Cluster, address: str, forged: bool
) -> tuple[Counter[int], list[httpx.Response], Counter[str]]:
    """REQUESTS list requests from `address` (each with another forged X-Forwarded-For if
    `forged`); the statuses, the 429s and the requests HAProxy sent each replica."""
    before = cluster.haproxy.stats()
    transport = httpx.HTTPTransport(local_address=address)
    statuses: Counter[int] = Counter()
    limited = []
    with httpx.Client(base_url=cluster.url, transport=transport, timeout=10) as client:
        for n in range(REQUESTS):
            headers = {"X-Forwarded-For": f"198.51.100.{n + 1}"} if forged else {}
            response = client.get("/v1/items", params={"limit": 1}, headers=headers)
            statuses[response.status_code] += 1
            if response.status_code == 429:
                limited.append(response)
    after = cluster.haproxy.stats()
    served = Counter({name: after[name].requests - before[name].requests for name in SERVER_NAMES})
    return statuses, limited, served


def assert_exact(statuses: Counter[int], limited: list[httpx.Response]) -> None:
    assert statuses == {200: LIMIT, 429: REQUESTS - LIMIT}
    for response in limited:
        assert 0 < int(response.headers["Retry-After"]) <= 60
        assert response.headers["content-type"].startswith("application/problem+json")


def test_limit_is_exact_across_replicas(cluster: Cluster, client_address: str) -> None:
    """80 requests at 60/minute, round-robin over both replicas: exactly 60 pass, 20 are 429."""
    statuses, limited, served = send(cluster, client_address, forged=False)
    print(f"\n{REQUESTS} requests: {dict(statuses)}, per replica {dict(served)}")
    assert served == {name: REQUESTS // 2 for name in SERVER_NAMES}  # round-robin
    assert_exact(statuses, limited)


def test_forged_forwarded_for_opens_no_new_bucket(cluster: Cluster, client_address: str) -> None:
    """A new forged X-Forwarded-For on every request still gets exactly 60 of 80 through."""
    statuses, limited, served = send(cluster, client_address, forged=True)
    print(f"\n{REQUESTS} forged: {dict(statuses)}, per replica {dict(served)}")
    assert all(served[name] > 0 for name in SERVER_NAMES)
    assert_exact(statuses, limited)
