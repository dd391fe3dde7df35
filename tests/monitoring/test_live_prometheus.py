"""The dashboard and the alerts proven on live data: a real Prometheus scraping a real kvkit.

gunicorn (2 workers) runs on a PostgreSQL of the test's own and the shared Redis (behind a TCP
proxy, so Redis can fail for kvkit without the shared instance ever stopping), under kvclient and
plain HTTP load with rate limiting, retries, Idempotency-Key replays and conflicts. Prometheus
runs the project's configuration with these adaptations, and no others:

- scrape config (monitoring/prometheus/prometheus.yml): every job keeps its name, labels and
  metrics_path, but its DNS discovery becomes a static target, the test's process playing that
  job (compose's `api` and `locust` names do not resolve here); scrape and evaluation every 1 s
  instead of 15 s, so a run of about a minute holds enough samples;
- rule files: the project's own, copied with every `for:`/`keep_firing_for:` and every range,
  subquery and offset in an expression divided by TIME_SCALE (5m becomes 10 s; ranges never under
  5 s, so rate() always sees several 1 s scrapes): an alert meant to wait 5 minutes fires, and
  resolves, within the test.

Every dashboard panel is then evaluated through /api/v1/query with the dashboard's variables
resolved as Grafana resolves "All", an outage of the test's PostgreSQL must fire the availability
alert and its recovery resolve it, and the dashboard is drawn from the run (scripts/
render_dashboard.py; KV_RENDER_DASHBOARD=docs/dashboard.png keeps the picture).
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import math
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import (
    CI,
    REDIS,
    PrivatePostgres,
    Server,
    free_port,
    migrate,
    postgres_bindir,
    require,
    service_env,
    start_server,
)
from tests.deploy.tools import REPO, find_tool
from tests.tcp_proxy import TcpProxy

PROMETHEUS_CONFIG = REPO / "monitoring" / "prometheus" / "prometheus.yml"
TIME_SCALE = 30
MIN_RANGE_MS = 5_000
# $__rate_interval in the instant queries: longer than the whole live run, so each panel's rate
# covers the load, the Redis cut and the database outage alike.
RATE_WINDOW = "3m"
# ... and in the rendered picture, short enough that the outage shows as a spike.
RENDER_RATE_WINDOW = "10s"
# kvkit's limit per API key: the load goes past it, so there are 429s with Retry-After.
RATE_LIMIT = "20/second"
CLIENT_TIMEOUT = (3.05, 10.0)  # kvclient's defaults: no latency may reach the read timeout
CLIENT_DEADLINE = 8.0
WARM_UP_SECONDS = 12.0
REDIS_CUT_SECONDS = 3.0
WAIT_SECONDS = 60.0
# Alerts that answer "is the service available": readiness first, else a 5xx or SLO alert.
AVAILABILITY_ALERTS = re.compile(r"Readiness|Availability|5xx|ErrorBudget|BurnRate", re.I)


def load_script(name: str) -> ModuleType:
    """Import scripts/<name>.py by path, as `python scripts/<name>.py` runs it."""
    spec = importlib.util.spec_from_file_location(f"kvkit_{name}", REPO / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


render_dashboard = load_script("render_dashboard")

# --------------------------------------------------------------------------- adapting the config

_DURATION = r"(?:\d+(?:ms|[smhdwy]))+"
_RANGE = re.compile(rf"\[({_DURATION})(?::({_DURATION})?)?\]")
_OFFSET = re.compile(rf"\boffset\s+({_DURATION})")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_UNIT_MS["y"] = 365 * _UNIT_MS["d"]


def milliseconds(duration: str) -> int:
    """A Prometheus duration (`1h30m`, `5m`, `500ms`) in milliseconds."""
    return sum(
        int(n) * _UNIT_MS[unit] for n, unit in re.findall(r"(\d+)(ms|[smhdwy])", str(duration))
    )


def shortened(duration: str, minimum_ms: int = 1000) -> str:
    return f"{max(milliseconds(duration) // TIME_SCALE, minimum_ms)}ms"


def shorten_expression(expr: str) -> str:
    """Divide every range, subquery step and offset of `expr` by TIME_SCALE."""

    def range_(match: re.Match[str]) -> str:
        window = shortened(match[1], MIN_RANGE_MS)
        if match[0].count(":") == 0:
            return f"[{window}]"
        return f"[{window}:{shortened(match[2]) if match[2] else ''}]"

    expr = _RANGE.sub(range_, expr)
    return _OFFSET.sub(lambda match: f"offset {shortened(match[1])}", expr)


def shorten_rules(rules: dict[str, Any]) -> dict[str, Any]:
    """A copy of a rule file's content on the test's time scale."""
    groups = []
    for group in rules.get("groups", []):
        adapted = {**group, "rules": []}
        if "interval" in group:
            adapted["interval"] = shortened(group["interval"])
        for rule in group["rules"]:
            rule = {**rule, "expr": shorten_expression(str(rule["expr"]))}
            for key in ("for", "keep_firing_for"):
                if key in rule:
                    rule[key] = shortened(rule[key])
            adapted["rules"].append(rule)
        groups.append(adapted)
    return {**rules, "groups": groups}


def adapted_config(targets: Mapping[str, str], workdir: Path) -> tuple[Path, list[dict[str, Any]]]:
    """Write the test's prometheus.yml and rule files into `workdir`; the config's path and
    the adapted rule groups. `targets` maps each job name to the address of its process here."""
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    config["global"] = {**config.get("global", {}), "scrape_interval": "1s"}
    config["global"]["evaluation_interval"] = "1s"
    config["global"].pop("scrape_timeout", None)
    missing = [
        job["job_name"] for job in config["scrape_configs"] if job["job_name"] not in targets
    ]
    assert not missing, f"scrape jobs without a process in this test: {missing}"
    for job in config["scrape_configs"]:
        labels: dict[str, str] = {}
        for static in job.pop("static_configs", []):
            labels.update(static.get("labels", {}))
        for key in [key for key in job if key.endswith("_sd_configs")]:
            del job[key]
        job.pop("scrape_interval", None)
        job.pop("scrape_timeout", None)
        static_config: dict[str, Any] = {"targets": [targets[job["job_name"]]]}
        if labels:
            static_config["labels"] = labels
        job["static_configs"] = [static_config]
    groups: list[dict[str, Any]] = []
    rule_paths = []
    for pattern in config.get("rule_files", []):
        for source in sorted(PROMETHEUS_CONFIG.parent.glob(pattern)):
            rules = shorten_rules(yaml.safe_load(source.read_text()))
            groups += rules["groups"]
            rule_paths.append(workdir / f"rules-{source.name}")
            rule_paths[-1].write_text(yaml.safe_dump(rules, sort_keys=False))
    config["rule_files"] = [str(path) for path in rule_paths]
    path = workdir / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path, groups


# --------------------------------------------------------------------------- the load


@dataclass
class Load:
    """kvclient calls, plain HTTP requests and readiness probes, on threads, until stopped."""

    url: str
    client_key: str
    http_key: str
    registry: Any
    tally: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for loop in (self._client_loop, self._http_loop, self._probe_loop):
            thread = threading.Thread(target=self._guarded, args=(loop,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(CLIENT_DEADLINE + 15)

    def _guarded(self, loop: Callable[[], None]) -> None:
        # An exception escaping a thread would only surface as a warning: keep it for the test.
        try:
            loop()
        except Exception as exc:
            self.errors.append(f"{loop.__name__}: {exc!r}")

    def _client_loop(self) -> None:
        """Every kvclient operation, with a replay, a conflict, a stale update and a miss."""
        import kvclient

        policy = kvclient.RetryPolicy(max_attempts=3, base_delay=0.05, deadline=CLIENT_DEADLINE)
        prefix = f"live.{uuid.uuid4().hex[:8]}."
        with kvclient.KVClient(
            self.url,
            api_key=self.client_key,
            retry=policy,
            timeout=CLIENT_TIMEOUT,
            registry=self.registry,
        ) as client:
            for n in itertools.count():
                if self._stop.is_set():
                    return
                for step in self._client_round(client, prefix, n):
                    try:
                        step()
                        self.tally["client ok"] += 1
                    except kvclient.KVError as exc:
                        self.tally[f"client {type(exc).__name__}"] += 1

    @staticmethod
    def _client_round(client: Any, prefix: str, n: int) -> list[Callable[[], object]]:
        key = f"{prefix}{n}"
        replay_key = uuid.uuid4().hex
        return [
            lambda: client.create(key, {"n": n}, idempotency_key=replay_key),
            lambda: client.create(key, {"n": n}, idempotency_key=replay_key),  # replayed
            lambda: client.create(key, {"n": -n}),  # the key is taken: 409
            lambda: client.get(key),
            lambda: client.update(key, {"n": n + 1}, if_version=1),
            lambda: client.update(key, {"n": n + 2}, if_version=1),  # stale: 412
            lambda: client.list(limit=5, prefix=prefix),
            lambda: client.delete(key) if n % 3 == 0 else None,
            lambda: client.get(f"{prefix}missing"),  # 404
        ]

    def _http_loop(self) -> None:
        """Bursts past the limit (429s), a miss, a reused Idempotency-Key and a bad key."""
        headers = {"X-API-Key": self.http_key}
        with httpx.Client(base_url=self.url, timeout=10, headers=headers) as http:
            while not self._stop.is_set():
                for _ in range(30):
                    self._count(http.get("/v1/items", params={"limit": 1}))
                self._count(http.get("/v1/items/live.none"))
                reused = {"Idempotency-Key": uuid.uuid4().hex}
                for value in (1, 2):  # same key, another body: key_reused
                    body = {"key": f"live.http.{uuid.uuid4().hex}", "value": value}
                    self._count(http.post("/v1/items", json=body, headers=reused))
                self._count(http.get("/v1/items", headers={"X-API-Key": "not-a-key"}))
                self._count(http.get("/healthz"))
                self._stop.wait(0.5)

    def _probe_loop(self) -> None:
        """/readyz twice a second, as a kubelet's readiness probe would."""
        with httpx.Client(base_url=self.url, timeout=5) as http:
            while not self._stop.wait(0.5):
                self._count(http.get("/readyz"), "probe")

    def _count(self, response: httpx.Response, source: str = "http") -> None:
        self.tally[f"{source} {response.status_code}"] += 1


# --------------------------------------------------------------------------- the live stack


@dataclass
class LiveStack:
    """Everything the module started, and what its tests found."""

    api: Any
    postgres: PrivatePostgres
    redis: TcpProxy
    server: Server
    load: Load
    rule_groups: list[dict[str, Any]]
    started: float
    load_started: float
    outage_seen: bool = False

    def alerts(self, state: str = "firing") -> set[str]:
        data = self.api.get("/api/v1/alerts")
        return {a["labels"]["alertname"] for a in data["alerts"] if a["state"] == state}

    def availability_alert(self) -> str:
        """The alert that must fire when the database is gone."""
        names = [
            rule["alert"]
            for group in self.rule_groups
            for rule in group["rules"]
            if "alert" in rule
        ]
        if "KvkitReadinessFailing" in names:
            return "KvkitReadinessFailing"
        candidates = [name for name in names if AVAILABILITY_ALERTS.search(name)]
        assert candidates, f"no readiness, 5xx or SLO alert among {names}"
        return candidates[0]

    def database_outage(self, seconds: float) -> None:
        """Stop the test's PostgreSQL for `seconds`, then start it again."""
        self.postgres.stop()
        try:
            time.sleep(seconds)
        finally:
            self.postgres.start()
        self.outage_seen = True


def wait_for(condition: Callable[[], bool], timeout: float = WAIT_SECONDS) -> float:
    """Seconds until `condition()` held; fails after `timeout`."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            pytest.fail(f"not reached within {timeout:.0f} s")
        time.sleep(0.5)
    return time.monotonic() - started


def private_postgres_or_skip() -> PrivatePostgres:
    bindir = postgres_bindir()
    if bindir is None:
        reason = "PostgreSQL server binaries (initdb, pg_ctl) were not found"
        if CI:
            pytest.fail(f"{reason}; CI=true requires them")
        pytest.skip(reason)
    return PrivatePostgres(bindir)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveStack]:
    """Prometheus, kvkit on its own PostgreSQL, a kvclient exporter and the load, warmed up."""
    prometheus = find_tool("prometheus")
    require(REDIS, "Redis")
    from prometheus_client import CollectorRegistry, start_http_server

    workdir = tmp_path_factory.mktemp("live")
    started = time.time()
    with contextlib.ExitStack() as cleanup:
        postgres = private_postgres_or_skip()
        cleanup.callback(postgres.destroy)
        postgres.init()
        postgres.start()
        postgres.psql(f'CREATE DATABASE "{postgres.DATABASE}"', dbname="postgres")
        migrate(postgres.url, workdir)
        redis = TcpProxy(REDIS)
        cleanup.callback(redis.close)

        client_key, http_key = (uuid.uuid4().hex for _ in range(2))
        metrics_port = free_port()
        env = service_env(
            DATABASE_URL=postgres.url,
            REDIS_URL=f"redis://127.0.0.1:{redis.port}/0",
            KV_API_KEYS=f"{client_key},{http_key}",
            KV_RATE_LIMIT=RATE_LIMIT,
            KV_METRICS_PORT=str(metrics_port),
            KV_METRICS_MIN_INTERVAL="0",
        )
        server = start_server(workdir, env, workers=2)
        cleanup.callback(server.stop)

        # kvclient's metrics on a port of their own, as an application without /metrics does.
        registry = CollectorRegistry()
        client_port = free_port()
        exporter, _ = start_http_server(client_port, addr="127.0.0.1", registry=registry)
        cleanup.callback(exporter.server_close)
        cleanup.callback(exporter.shutdown)

        prometheus_port = free_port()
        targets = {
            "kvkit": f"127.0.0.1:{metrics_port}",
            "kvclient": f"127.0.0.1:{client_port}",
            "prometheus": f"127.0.0.1:{prometheus_port}",
        }
        config, groups = adapted_config(targets, workdir)
        log = (workdir / "prometheus.log").open("wb")
        cleanup.callback(log.close)
        process = subprocess.Popen(
            [
                prometheus,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prometheus_port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        cleanup.callback(stop_process, process)
        api = render_dashboard.PrometheusAPI(f"http://127.0.0.1:{prometheus_port}")
        wait_until_ready(api.url, process, workdir / "prometheus.log")

        load = Load(server.url, client_key, http_key, registry)
        load_started = time.time()
        load.start()
        cleanup.callback(load.stop)
        live = LiveStack(api, postgres, redis, server, load, groups, started, load_started)
        time.sleep(WARM_UP_SECONDS / 2)
        redis.set_mode("refuse")  # the limiter falls back (degraded) and counts Redis errors
        time.sleep(REDIS_CUT_SECONDS)
        redis.set_mode("forward")
        time.sleep(WARM_UP_SECONDS / 2)
        up = api.query("up")
        assert {s["metric"]["job"] for s in up if s["value"][1] == "1"} == set(targets), up
        yield live
        load.stop()
        assert not load.errors, load.errors


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_until_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"prometheus exited:\n{log.read_text(errors='replace')}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"prometheus did not become ready:\n{log.read_text(errors='replace')}")


# --------------------------------------------------------------------------- the tests


def test_database_outage_fires_the_availability_alert_and_recovery_resolves_it(
    stack: LiveStack,
) -> None:
    """With the test's PostgreSQL stopped the availability alert reaches `firing`, and once it
    runs again the alert leaves the firing set."""
    alert = stack.availability_alert()
    assert alert not in stack.alerts("firing")
    seen: set[str] = set()
    stack.postgres.stop()
    try:

        def fired() -> bool:
            seen.update(stack.alerts("firing"))
            return alert in seen

        to_fire = wait_for(fired)
    finally:
        stack.postgres.start()
        stack.outage_seen = True
    to_resolve = wait_for(lambda: alert not in stack.alerts("firing"))
    print(
        f"\n{alert}: firing {to_fire:.1f} s after PostgreSQL stopped, resolved {to_resolve:.1f} s"
        f" after it started again; firing meanwhile: {sorted(seen)}"
    )


@dataclass(frozen=True)
class Finding:
    series: int
    problems: list[str]


def denominator(expr: str) -> str | None:
    """The query whose zero makes `expr` NaN: a ratio's divisor, a quantile's observation rate."""
    quantile = re.match(r"\s*histogram_quantile\(\s*[\d.]+\s*,\s*(.*)\)\s*$", expr, re.S)
    if quantile:
        inner = quantile[1].replace("_bucket{", "_count{")
        inner = re.sub(r"by \(le,\s*", "by (", inner)
        return re.sub(r"by \(le\)\s*", "", inner)
    depth, quoted = 0, False
    for index, char in enumerate(expr):
        quoted = quoted != (char == '"')
        if not quoted:
            depth += {"(": 1, ")": -1}.get(char, 0)
            if char == "/" and depth == 0:
                return expr[index + 1 :]
    return None


def check_panel(api: Any, panel: Any, started: float) -> Finding:
    """Whether every target of `panel` returns series whose values fit the panel's unit."""
    problems: list[str] = []
    count = 0
    positive = False
    finite = False
    is_rate = all(
        "rate(" in t.expr and denominator(t.expr) is None and "quantile" not in t.expr
        for t in panel.targets
    )
    for target in panel.targets:
        result = api.query(target.expr)
        count += len(result)
        if not result:
            problems.append(f"no series: {target.expr}")
        zero_divisors: list[dict[str, str]] | None = None
        for series in result:
            value = float(series["value"][1])
            labels = series["metric"]
            if math.isnan(value):
                divisor = denominator(target.expr)
                if zero_divisors is None:
                    zero_divisors = (
                        [s["metric"] for s in api.query(divisor) if float(s["value"][1]) != 0]
                        if divisor
                        else []
                    )
                nonzero = [m for m in zero_divisors if m.items() <= labels.items()]
                if divisor is None or nonzero:
                    problems.append(f"NaN with a non-zero denominator: {labels} in {target.expr}")
                continue
            finite = True
            positive = positive or value > 0
            low, high = plausible_range(panel, target.expr, started)
            if not low <= value <= high:
                problems.append(f"{value} outside [{low}, {high}] for {labels}: {target.expr}")
    if not finite:
        problems.append("no finite value at all")
    if is_rate and not positive:
        problems.append("a rate panel whose every series is 0")
    return Finding(count, problems)


def plausible_range(panel: Any, expr: str, started: float) -> tuple[float, float]:
    if panel.unit == "percentunit":
        return 0.0, 1.0
    if panel.unit == "s" and expr.lstrip().startswith("time()"):
        return 0.0, time.time() - started + 60  # the schema's creation counts as a purge
    if panel.unit == "s":
        return 0.0, CLIENT_TIMEOUT[1]
    return 0.0, math.inf


def test_every_dashboard_panel_returns_plausible_series(stack: LiveStack) -> None:
    """Every target of every panel returns at least one series in its unit's range, each rate
    panel shows something non-zero, and NaN appears only where a denominator is 0."""
    if not stack.outage_seen:  # run alone: the database errors panel needs an outage too
        stack.database_outage(5)
        time.sleep(5)
    dashboard = render_dashboard.load_dashboard()
    variables = render_dashboard.resolve_variables(
        stack.api, dashboard, {"__rate_interval": RATE_WINDOW}
    )
    findings = {
        panel.title: check_panel(stack.api, panel, stack.started)
        for panel in render_dashboard.panels(dashboard, variables)
        if panel.kind != "row"
    }
    print("\nseries per panel:")
    for title, finding in findings.items():
        print(f"  {finding.series:3d}  {title}")
    print(f"load: {dict(sorted(stack.load.tally.items()))}")
    problems = {title: f.problems for title, f in findings.items() if f.problems}
    assert not problems, problems
    assert stack.load.tally["http 429"] > 0 and stack.load.tally["client ok"] > 0


def test_dashboard_renders_every_panel_from_live_data(stack: LiveStack, tmp_path: Path) -> None:
    """scripts/render_dashboard.py draws every panel of the run with at least one series."""
    if importlib.util.find_spec("matplotlib") is None:
        if CI:
            pytest.fail("matplotlib is not installed (it is in the dev extra); CI=true needs it")
        pytest.skip("matplotlib is not installed (it is in the dev extra)")
    output = Path(os.environ.get("KV_RENDER_DASHBOARD") or tmp_path / "dashboard.png")
    counts = render_dashboard.render(
        stack.api,
        output,
        start=stack.load_started - 5,
        end=time.time(),
        step=1.0,
        variables={"__rate_interval": RENDER_RATE_WINDOW},
    )
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert counts and all(counts.values()), counts
