"""monitoring/otel/collector.yaml: the trace pipeline from the API to Jaeger."""

from __future__ import annotations

from typing import Any

import yaml

from tests.deploy.tools import REPO


def collector() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load((REPO / "monitoring/otel/collector.yaml").read_text())
    return config


def test_traces_pipeline_uses_only_defined_components() -> None:
    """Every receiver, processor and exporter the pipeline names is configured."""
    config = collector()
    pipeline = config["service"]["pipelines"]["traces"]
    for section in ("receivers", "processors", "exporters"):
        assert set(pipeline[section]) <= set(config[section]), section


def test_collector_receives_otlp_over_grpc_and_http() -> None:
    """The API may export with either OTLP protocol."""
    protocols = collector()["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"].endswith(":4317")
    assert protocols["http"]["endpoint"].endswith(":4318")


def test_traces_are_batched_under_a_memory_limit() -> None:
    """The memory limiter runs first and batching last, as the collector recommends."""
    processors = collector()["service"]["pipelines"]["traces"]["processors"]
    assert processors[0] == "memory_limiter"
    assert processors[-1] == "batch"


def test_traces_are_exported_to_the_jaeger_service_over_otlp() -> None:
    """Spans leave through OTLP to the compose jaeger service."""
    config = collector()
    (exporter,) = config["service"]["pipelines"]["traces"]["exporters"]
    assert exporter.split("/")[0] == "otlp"
    assert config["exporters"][exporter]["endpoint"] == "jaeger:4317"
    services = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    assert "jaeger" in services
