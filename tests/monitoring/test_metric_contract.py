"""monitoring/metrics.txt (what dashboards and alerts use) is what the service and client export."""

from __future__ import annotations

from pathlib import Path

import httpx
from kvclient import KVClient
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ServerFactory

CONTRACT = Path(__file__).resolve().parents[2] / "monitoring" / "metrics.txt"


def _contract(prefix: str) -> dict[str, str]:
    pairs = (line.split() for line in CONTRACT.read_text().splitlines() if line.strip())
    return {name: kind for name, kind in pairs if name.startswith(prefix)}


def _family_name(name: str, kind: str) -> str:
    # The text format names a counter family without its _total suffix.
    return name.removesuffix("_total") if kind == "counter" else name


def test_service_exports_every_contract_metric_with_its_type(
    server_factory: ServerFactory, redis_url: str
) -> None:
    """Each kvkit_* name in the contract is served by /metrics with the same type."""
    server = server_factory(REDIS_URL=redis_url)
    httpx.get(server.url + "/v1/items/absent")
    text = httpx.get(server.url + "/metrics").text
    families = {family.name: family.type for family in text_string_to_metric_families(text)}
    for name, kind in _contract("kvkit_").items():
        assert families.get(_family_name(name, kind)) == kind, name


def test_client_exports_every_contract_metric_with_its_type() -> None:
    """Each kvclient_* name in the contract is registered by KVClient with the same type."""
    registry = CollectorRegistry()
    with KVClient("http://127.0.0.1:9", registry=registry):
        families = {metric.name: metric.type for metric in registry.collect()}
    for name, kind in _contract("kvclient_").items():
        assert families.get(_family_name(name, kind)) == kind, name
