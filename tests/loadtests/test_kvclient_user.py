"""The locustfile's KvClientUser, run by real Locust against a real kvkit, exports kvclient's
metrics on KV_LOAD_CLIENT_METRICS_PORT while it runs."""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import CI, ServerFactory, free_port, service_env
from tests.deploy.tools import REPO

RUN_SECONDS = 6
# Paced by the locustfile under the server's own limit, as compose runs it; high enough that a
# few seconds hold a few dozen calls.
RATE_LIMIT = "600/minute"

if importlib.util.find_spec("locust") is None or importlib.util.find_spec("kvclient") is None:
    if CI:
        raise RuntimeError("locust and kvclient are in the dev setup; CI=true needs them")
    pytest.skip("locust or kvclient is not installed", allow_module_level=True)


def requests_total(text: str) -> dict[tuple[str, str], float]:
    """kvclient_requests_total by (method, outcome) from an exposition."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "kvclient_requests_total":
                found[sample.labels["method"], sample.labels["outcome"]] = sample.value
    return found


def test_kvclient_user_runs_without_failures_and_exports_its_metrics(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    """Headless Locust with only KvClientUser makes every call succeed, and its metrics port
    shows those calls in kvclient_requests_total."""
    keys = [uuid.uuid4().hex for _ in range(2)]
    server = server_factory("sqlite", KV_API_KEYS=",".join(keys), KV_RATE_LIMIT=RATE_LIMIT)
    port = free_port()
    env = service_env(
        KV_LOAD_API_KEYS=",".join(keys),
        KV_LOAD_RATE_LIMIT=RATE_LIMIT,
        KV_LOAD_KVCLIENT_WEIGHT="1",
        KV_LOAD_CLIENT_METRICS_PORT=str(port),
    )
    prefix = tmp_path / "load"
    command = [
        *(sys.executable, "-m", "locust", "-f", str(REPO / "loadtests" / "locustfile.py")),
        *("--headless", "--host", server.url, "--users", "2", "--spawn-rate", "2"),
        *("--run-time", f"{RUN_SECONDS}s", "--csv", str(prefix), "KvClientUser"),
    ]
    log_path = tmp_path / "locust.log"
    scraped = ""
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + RUN_SECONDS + 60
            while process.poll() is None and time.monotonic() < deadline:
                with contextlib.suppress(httpx.HTTPError):
                    scraped = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
                time.sleep(0.5)
        finally:
            if process.poll() is None:
                process.kill()
            process.wait()
    log_text = log_path.read_text(errors="replace")[-3000:]
    with Path(f"{prefix}_stats.csv").open(newline="") as file:
        total = next(row for row in csv.DictReader(file) if row["Name"] == "Aggregated")
    assert int(total["Request Count"]) > 0, log_text
    assert int(total["Failure Count"]) == 0, Path(f"{prefix}_failures.csv").read_text()
    assert process.returncode == 0, log_text
    counted = requests_total(scraped)
    assert sum(v for (_, outcome), v in counted.items() if outcome == "success") > 0, scraped
    # "cancelled": a call Locust interrupted when the run time ended, the only other outcome
    # allowed; an error answer, a transport error or a refused send would be a failure.
    failed = {k: v for k, v in counted.items() if k[1] not in ("success", "cancelled") and v}
    assert not failed, counted
