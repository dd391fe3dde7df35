"""The load-test tooling: the locustfile's mix, naming and response handling, driven by real
Locust users against a stub HTTP server, and how run_load.py and bench.py judge their results."""

from __future__ import annotations

import asyncio
import csv
import importlib.util
import json
import os
import shutil
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

# Locust patches the standard library for gevent when imported; this process only needs its
# classes, and a patched socket module would change every other test run alongside.
os.environ.setdefault("LOCUST_SKIP_MONKEY_PATCH", "1")
try:
    import locust  # noqa: F401
except ModuleNotFoundError:
    if os.environ.get("CI") == "true":
        raise
    pytest.skip("locust is not installed (it is in the dev extra)", allow_module_level=True)

from locust.env import Environment
from locust.event import Events
from locust.stats import PERCENTILES_TO_REPORT, StatsCSV

LOADTESTS = Path(__file__).resolve().parents[2] / "loadtests"


def load(name: str) -> ModuleType:
    """Import loadtests/<name>.py by path, as locust and the Makefile do."""
    spec = importlib.util.spec_from_file_location(
        f"kvkit_loadtests_{name}", LOADTESTS / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


locustfile = load("locustfile")
run_load = load("run_load")
bench = load("bench")


# --------------------------------------------------------------------------- a stub kvkit


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class StubServer:
    """Answers like kvkit (201/200/204, JSON bodies) unless `reply` forces a status and headers."""

    url: str = ""
    seen: list[Seen] = field(default_factory=list)
    reply: tuple[int, dict[str, str]] | None = None


def _handler(stub: StubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as wrk and locust expect

        def _answer(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            stub.seen.append(Seen(self.command, self.path, dict(self.headers), body))
            status, headers = stub.reply or self._kvkit_status()
            payload = b"" if status == 204 else b'{"key":"k","value":1,"version":1}'
            self.send_response(status)
            for name, value in {"Content-Type": "application/json", **headers}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _kvkit_status(self) -> tuple[int, dict[str, str]]:
            return {"POST": 201, "DELETE": 204}.get(self.command, 200), {}

        do_GET = do_PUT = do_POST = do_DELETE = _answer

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def stub() -> Iterator[StubServer]:
    state = StubServer()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


@dataclass
class Harness:
    """Real Locust users bound to the stub, and every request event they fire."""

    environment: Environment
    events: list[dict[str, Any]]
    users: list[Any]

    def user(self, user_class: type) -> Any:
        # A subclass per test carries the stub's address, as locust's runner would set `host`.
        bound = type(user_class.__name__, (user_class,), {"host": self.environment.host})
        user = bound(self.environment)
        user.on_start()
        self.users.append(user)
        return user


@pytest.fixture
def harness(stub: StubServer) -> Iterator[Harness]:
    environment = Environment(host=stub.url, events=Events())
    fired: list[dict[str, Any]] = []
    environment.events.request.add_listener(lambda **event: fired.append(event))
    state = Harness(environment, fired, [])
    yield state
    for user in state.users:
        user.on_stop()
        user.client.client.close()


# --------------------------------------------------------------------------- the locustfile


def test_crud_mix_has_the_production_weights() -> None:
    """The CRUD user picks get 50, put 20, post 15, delete 5 and list 10 times in 100."""
    weights: dict[str, int] = {}
    for task in locustfile.KvCrudUser.tasks:
        weights[task.__name__] = weights.get(task.__name__, 0) + 1
    assert weights == {
        "read_item": 50,
        "update_item": 20,
        "create_item": 15,
        "delete_item": 5,
        "list_items": 10,
    }


def test_crud_requests_are_grouped_by_route_not_by_key(harness: Harness, stub: StubServer) -> None:
    """Every CRUD request lands in one stats row per route, while the real paths carry keys."""
    user = harness.user(locustfile.KvCrudUser)
    for run in (
        user.create_item,
        user.create_item,
        user.read_item,
        user.update_item,
        user.delete_item,
        user.list_items,
    ):
        run()
    rows = {(event["request_type"], event["name"]) for event in harness.events}
    assert rows == {
        ("POST", "/v1/items"),
        ("GET", "/v1/items/[key]"),
        ("PUT", "/v1/items/[key]"),
        ("DELETE", "/v1/items/[key]"),
        ("GET", "/v1/items?prefix=[prefix]"),
    }
    assert all(event["exception"] is None for event in harness.events)
    item_paths = {seen.path for seen in stub.seen if seen.method in ("GET", "PUT", "DELETE")}
    assert any(path.startswith(f"/v1/items/{user.prefix}") for path in item_paths)


def test_crud_creates_send_a_fresh_idempotency_key(harness: Harness, stub: StubServer) -> None:
    """Each POST carries its own Idempotency-Key."""
    user = harness.user(locustfile.KvCrudUser)
    user.create_item()
    user.create_item()
    keys = [seen.headers.get("Idempotency-Key") for seen in stub.seen if seen.method == "POST"]
    assert len(keys) == 2 and None not in keys and keys[0] != keys[1]


def test_users_hold_different_api_keys(
    harness: Harness, stub: StubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two users spread over two configured keys send different X-API-Key values."""
    monkeypatch.setattr(locustfile, "API_KEYS", ("a" * 32, "b" * 32))
    for user in (harness.user(locustfile.KvCrudUser), harness.user(locustfile.KvCrudUser)):
        user.list_items()
    assert {seen.headers.get("X-API-Key") for seen in stub.seen} == {"a" * 32, "b" * 32}


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"KV_API_KEY": "single-key-0123456789"}, ("single-key-0123456789",)),
        (
            {"KV_API_KEY": "k1-0123456789abcdef, k2-0123456789abcdef"},
            ("k1-0123456789abcdef", "k2-0123456789abcdef"),
        ),
        ({"KV_LOAD_API_KEYS": "a,b", "KV_API_KEY": "c"}, ("a", "b")),
        ({}, ()),
    ],
)
def test_api_keys_come_from_the_list_or_the_compose_variable(
    environ: dict[str, str], expected: tuple[str, ...]
) -> None:
    """KV_LOAD_API_KEYS wins; KV_API_KEY (compose) may hold one key or a comma list."""
    assert locustfile.load_api_keys(environ) == expected


@pytest.mark.parametrize("sharers", [1, 3])
def test_pacing_keeps_each_key_under_its_limit(sharers: int) -> None:
    """All users sharing a key together send more than half of its limit and never all of it."""
    limit, window = 60, 60
    interval = locustfile.pacing_interval(limit, window, sharers)
    per_window = sharers * window / interval
    assert limit / 2 < per_window < limit


def test_crud_user_waits_its_pacing_interval(harness: Harness) -> None:
    """A CRUD user alone on its key waits the interval that keeps it under 60/minute."""
    user = harness.user(locustfile.KvCrudUser)
    expected = locustfile.pacing_interval(*locustfile.RATE_LIMIT, sharers=1)
    assert user.wait_time() == pytest.approx(expected, abs=0.2)


@pytest.mark.parametrize(
    ("status", "retry_after", "passes"),
    [
        (200, None, True),
        (204, None, True),
        (429, "3", True),
        (429, None, False),
        (429, "0", False),
        (500, None, False),
        (503, "1", False),
        (401, None, False),
        (0, None, False),
    ],
)
def test_ratelimit_classification_passes_only_2xx_and_429_with_retry_after(
    status: int, retry_after: str | None, passes: bool
) -> None:
    """Only 2xx and 429 with a Retry-After of at least one second pass the ratelimit scenario."""
    assert (locustfile.classify_rate_limited(status, retry_after) is None) is passes


def test_ratelimit_user_counts_429_as_success(harness: Harness, stub: StubServer) -> None:
    """A 429 with Retry-After is reported as a success and tallied as limited."""
    locustfile.RATE_LIMIT_TALLY.clear()
    user = harness.user(locustfile.RateLimitUser)
    stub.reply = (429, {"Retry-After": "12"})
    user.read_page()
    assert harness.events[-1]["exception"] is None
    assert harness.events[-1]["name"] == "/v1/items?limit=[n]"
    assert locustfile.RATE_LIMIT_TALLY == {"limited": 1}


def test_ratelimit_user_sends_a_bearer_token(
    harness: Harness, stub: StubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ratelimit user authenticates with Authorization: Bearer."""
    monkeypatch.setattr(locustfile, "API_KEYS", ("c" * 32,))
    harness.user(locustfile.RateLimitUser).read_page()
    assert stub.seen[-1].headers.get("Authorization") == "Bearer " + "c" * 32


@pytest.mark.parametrize(("status", "headers"), [(503, {"Retry-After": "1"}), (500, {}), (429, {})])
def test_ratelimit_user_fails_on_server_errors_and_bare_429(
    harness: Harness, stub: StubServer, status: int, headers: dict[str, str]
) -> None:
    """A 5xx, or a 429 without Retry-After, is a failure and is not tallied."""
    locustfile.RATE_LIMIT_TALLY.clear()
    user = harness.user(locustfile.RateLimitUser)
    stub.reply = (status, headers)
    user.read_page()
    assert harness.events[-1]["exception"] is not None
    assert str(status) in str(harness.events[-1]["exception"])
    assert sum(locustfile.RATE_LIMIT_TALLY.values()) == 0


def test_ramp_shape_steps_up_holds_and_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ramp reaches --users in four steps over half of --run-time, holds, then ends."""
    shape = locustfile.RampShape()
    options = SimpleNamespace(num_users=8, spawn_rate=4.0, run_time=40)
    shape.runner = SimpleNamespace(environment=SimpleNamespace(parsed_options=options))
    ticks = []
    for elapsed in (0, 5, 10, 15, 30, 39.9, 40):
        monkeypatch.setattr(shape, "get_run_time", lambda elapsed=elapsed: elapsed)
        ticks.append(shape.tick())
    assert ticks == [(2, 4.0), (4, 4.0), (6, 4.0), (8, 4.0), (8, 4.0), (8, 4.0), None]


# --------------------------------------------------------------------------- run_load.py

STATS_HEADER = ["Type", "Name", "Request Count", "Failure Count", "50%", "95%"]


def write_stats(path: Path, requests: int, failures: int, p95: str) -> Path:
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(STATS_HEADER)
        writer.writerow(["GET", "/v1/items/[key]", requests, failures, "20", p95])
        writer.writerow(["", "Aggregated", requests, failures, "20", p95])
    return path


def judge(path: Path) -> Any:
    return run_load.evaluate(run_load.read_stats(path), max_error_ratio=0.01, max_p95_ms=500)


def test_thresholds_pass_a_healthy_run(tmp_path: Path) -> None:
    """Few failures and a fast p95 pass."""
    verdict = judge(write_stats(tmp_path / "s.csv", requests=1000, failures=5, p95="120"))
    assert verdict.passed, verdict.violations


def test_thresholds_fail_a_high_error_ratio(tmp_path: Path) -> None:
    """An error ratio above --max-error-ratio fails the run."""
    verdict = judge(write_stats(tmp_path / "s.csv", requests=1000, failures=50, p95="120"))
    assert not verdict.passed
    assert any("error ratio" in violation for violation in verdict.violations)


def test_thresholds_fail_a_slow_p95(tmp_path: Path) -> None:
    """A p95 above --max-p95-ms fails the run."""
    verdict = judge(write_stats(tmp_path / "s.csv", requests=1000, failures=0, p95="800"))
    assert not verdict.passed
    assert any("p95" in violation for violation in verdict.violations)


def test_thresholds_fail_a_run_without_requests(tmp_path: Path) -> None:
    """A run that made no request fails instead of passing vacuously."""
    verdict = judge(write_stats(tmp_path / "s.csv", requests=0, failures=0, p95="N/A"))
    assert not verdict.passed


def test_thresholds_read_locusts_own_csv(tmp_path: Path) -> None:
    """The evaluator reads the stats CSV exactly as this Locust version writes it."""
    environment = Environment(events=Events())
    for millis in range(1, 101):
        environment.stats.log_request("GET", "/v1/items/[key]", millis, 10)
    for _ in range(4):
        environment.stats.log_error("GET", "/v1/items/[key]", "boom")
    path = tmp_path / "load_stats.csv"
    with path.open("w", newline="") as file:
        StatsCSV(environment, PERCENTILES_TO_REPORT).requests_csv(csv.writer(file))
    verdict = judge(path)
    assert (verdict.requests, verdict.failures) == (100, 4)
    assert verdict.p95_ms == pytest.approx(95, abs=1)
    assert not verdict.passed  # 4 % errors


def test_ratelimit_run_without_any_429_fails(tmp_path: Path) -> None:
    """The ratelimit scenario fails when the limiter never answered 429."""
    tally = tmp_path / "tally.json"
    tally.write_text(json.dumps({"allowed": 300, "limited": 0}))
    verdict = run_load.judge_tally(run_load.Verdict(300, 0, 10.0), tally)
    assert not verdict.passed


def test_api_keys_are_reproducible_distinct_and_accepted_by_the_server() -> None:
    """A seed gives the same distinct keys every time, each long enough for KV_API_KEYS."""
    keys = run_load.api_keys("seed", 5)
    assert keys == run_load.api_keys("seed", 5) != run_load.api_keys("other", 5)
    assert len(set(keys)) == 5 and min(len(key) for key in keys) >= 16


@pytest.mark.parametrize(
    ("timespan", "seconds"), [("45", 45), ("30s", 30), ("2m", 120), ("1h1m1s", 3661)]
)
def test_run_time_is_read_as_locust_reads_it(timespan: str, seconds: int) -> None:
    """--run-time accepts Locust's formats, so the harness bounds the run correctly."""
    assert run_load.seconds(timespan) == seconds


# --------------------------------------------------------------------------- bench.py


def test_wrk_report_line_is_parsed_into_report_units() -> None:
    """The WRK_REPORT line becomes req/s, milliseconds and error counts."""
    stdout = (
        "Running 1s test\n  2 threads and 4 connections\n"
        'WRK_REPORT {"requests":500,"duration_us":2000000,"bytes":1,"latency_us":'
        '{"p50":1500,"p90":2500,"p99":9000,"max":12000,"mean":1700.0},'
        '"errors":{"connect":1,"read":0,"write":0,"timeout":2,"status":7}}\n'
    )
    result = bench.parse_wrk_report(stdout)
    assert (result.rps, result.p50_ms, result.p99_ms) == (250.0, 1.5, 9.0)
    assert (result.non_2xx, result.socket_errors) == (7, 3)


@pytest.mark.skipif(
    shutil.which("wrk") is None, reason="wrk is not installed (apt-get install wrk)"
)
def test_wrk_post_script_sends_unique_keys_with_idempotency_and_api_key(stub: StubServer) -> None:
    """post.lua in idempotency mode sends a fresh key per request, as the Idempotency-Key too,
    keeps the -H API key, and its report counts what the server saw."""
    wrk = bench.Wrk(str(shutil.which("wrk")), threads=2, connections=2, headers=("X-API-Key: k",))
    workload = bench.Workload("p", "p", "post.lua", args=("t.", "idempotency"))
    result = wrk.run(stub.url, workload, 1)
    posts = [json.loads(seen.body) for seen in stub.seen]
    keys = [post["key"] for post in posts]
    assert result.requests > 0 and result.non_2xx == 0
    assert len(keys) == len(set(keys)) >= result.requests
    assert all(
        seen.headers["Idempotency-Key"] == key for seen, key in zip(stub.seen, keys, strict=True)
    )
    assert {seen.headers.get("X-API-Key") for seen in stub.seen} == {"k"}
    assert {key.split(".")[1] for key in keys} == {"1", "2"}  # both threads numbered


@pytest.mark.skipif(
    shutil.which("wrk") is None, reason="wrk is not installed (apt-get install wrk)"
)
def test_warm_up_before_a_create_workload_leaves_its_keys_unused(stub: StubServer) -> None:
    """Each workload is warmed before it is measured; a workload that creates items warms up on
    keys of its own, so the measured run's creates never meet a taken key (409)."""
    wrk = bench.Wrk(str(shutil.which("wrk")), threads=1, connections=1, headers=())
    for workload in bench.workloads(10):
        warming = workload.warming()
        assert (warming.name, warming.script, warming.path) == (
            workload.name,
            workload.script,
            workload.path,
        )
        if workload.script != "post.lua":
            assert warming == workload
            continue
        assert warming.args[1:] == workload.args[1:]
        wrk.run(stub.url, warming, 1)
        warm_keys = {json.loads(seen.body)["key"] for seen in stub.seen}
        stub.seen.clear()
        wrk.run(stub.url, workload, 1)
        measured_keys = {json.loads(seen.body)["key"] for seen in stub.seen}
        stub.seen.clear()
        assert warm_keys and measured_keys and not warm_keys & measured_keys


def test_bench_exits_with_a_clear_error_without_wrk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without wrk on PATH the benchmark stops before starting anything and says how to fix it."""
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(bench.stack, "install_cleanup", lambda: None)
    assert bench.main(["--duration", "1", "--reports", str(tmp_path)]) == 2
    assert "apt-get install" in capsys.readouterr().err


def test_ceiling_app_serves_a_constant_item_for_any_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ceiling app answers every key with the item it was given."""
    import httpx

    monkeypatch.setenv("KV_CEILING_ITEM", '{"key":"x","value":1}')
    app = load("ceiling_app").app

    async def fetch(*paths: str) -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ceiling") as client:
            return [await client.get(path) for path in paths]

    first, second = asyncio.run(fetch("/v1/items/a", "/v1/items/b"))
    assert first.status_code == second.status_code == 200
    assert first.content == second.content == b'{"key":"x","value":1}'
