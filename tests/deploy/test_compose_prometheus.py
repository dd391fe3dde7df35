"""Compose's Prometheus scrapes every replica of the api service, however many are running."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy import compose
from tests.deploy.tools import REPO, find_tool

CONFIG = REPO / "monitoring" / "prometheus" / "prometheus.yml"
PROBE = Path(__file__).resolve().parent / "dns_replicas.py"
REPLICAS = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]


def kvkit_job(config: dict[str, Any]) -> dict[str, Any]:
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "kvkit"]
    return job


def test_kvkit_job_discovers_the_api_replicas_by_dns() -> None:
    """The job asks DNS for the api service's A records (one per replica) on the metrics port,
    instead of one static target that reaches a single replica."""
    job = kvkit_job(yaml.safe_load(CONFIG.read_text()))
    assert "static_configs" not in job
    (discovery,) = job["dns_sd_configs"]
    api = compose.raw_services()["api"]
    assert discovery["names"] == ["api"]  # the compose service's name: Docker's DNS answers it
    assert discovery["type"] == "A"
    assert discovery["port"] == int(compose.environment(api)["KV_METRICS_PORT"])
    assert "prometheus" in compose.raw_services()
    assert job.get("metrics_path", "/metrics") == "/metrics"


def isolation_missing() -> str | None:
    """Why a private network and mount namespace cannot be made here, or None."""
    if os.geteuid() != 0:
        return "a private network namespace needs root"
    for tool in ("unshare", "ip", "mount"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


def test_prometheus_scrapes_every_address_the_service_name_resolves_to(tmp_path: Path) -> None:
    """A real Prometheus with the compose configuration's kvkit job, where `api` resolves to
    three addresses (as with --scale api=3), scrapes all three: one target, up, per replica.

    Everything runs in a network namespace of its own: its loopback holds the DNS server that
    /etc/resolv.conf (bind-mounted there, in a mount namespace of its own) points at, the three
    stub /metrics endpoints and Prometheus. Only the scrape interval is shortened.
    """
    prometheus = find_tool("prometheus")
    reason = isolation_missing()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI=true requires it")
        pytest.skip(reason)
    config = yaml.safe_load(CONFIG.read_text())
    config["global"]["scrape_interval"] = "1s"
    config.pop("rule_files", None)  # alerts are checked by promtool; they play no part here
    job = kvkit_job(config)
    (discovery,) = job["dns_sd_configs"]
    (name,) = discovery["names"]
    config_path = tmp_path / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    resolv_conf = tmp_path / "resolv.conf"
    resolv_conf.write_text("nameserver 127.0.0.1\n")
    script = 'ip link set lo up && mount --bind "$0" /etc/resolv.conf && exec "$@"'
    command = [
        *("unshare", "--net", "--mount", "--propagation", "private"),
        *("sh", "-c", script, str(resolv_conf)),
        *(sys.executable, str(PROBE), prometheus, name, str(discovery["port"]), job["job_name"]),
        *(str(config_path), str(tmp_path / "data"), *REPLICAS),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if result.returncode and "unshare" in result.stderr and os.environ.get("CI") != "true":
        pytest.skip(f"no private namespaces here: {result.stderr.strip()}")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    scraped = {target["scrapeUrl"]: target["health"] for target in report["targets"]}
    expected = {f"http://{address}:{discovery['port']}/metrics": "up" for address in REPLICAS}
    assert scraped == expected, report["log"]
