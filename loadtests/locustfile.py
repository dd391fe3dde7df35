"""Locust scenarios for kvkit, run by `make load` (loadtests/run_load.py) and the compose profile.

Each user sends one API key, so the server's per-client limit applies per user as in production.
Keys come from KV_LOAD_API_KEYS or KV_API_KEY (one key or a comma-separated list); user n takes
key n modulo their number, and users that share a key share its budget.

Environment:
  KV_LOAD_SCENARIO    crud (default): the production mix, paced under the limit, so any non-2xx
                      is a failure; ratelimit: faster than the limit, 2xx and 429 with
                      Retry-After pass (429s are tallied), 5xx and anything else fail
  KV_LOAD_SHAPE       ramp: step up to --users in four steps over the first half of --run-time
  KV_LOAD_RATE_LIMIT  the server's KV_RATE_LIMIT (default 60/minute), to pace the crud users
  KV_LOAD_BURST_RATE  requests per second of each ratelimit user (default 20)
  KV_LOAD_TALLY_FILE  where the ratelimit scenario writes its allowed/limited counts as JSON
  KV_LOAD_VALUE_BYTES size of the text in each written value (default 100)
  KV_LOAD_KVCLIENT_WEIGHT  weight of KvClientUser beside the scenario's user (default 0: off),
                      in the crud scenario: the same paced mix, sent through kvclient
  KV_LOAD_CLIENT_METRICS_PORT  where KvClientUser's process serves kvclient's metrics for
                      Prometheus (prometheus_client's default registry); unset: not served

At module level only locust, gevent (which locust runs on) and the standard library are imported,
so the HTTP users run in the stock locust image; KvClientUser imports kvclient and prometheus_client
when it runs (docker/locust.Dockerfile adds them for the compose profile).
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import random
import re
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from typing import Any

import gevent
from locust import (
    FastHttpUser,
    LoadTestShape,
    User,
    constant_pacing,
    constant_throughput,
    events,
    task,
)
from locust import stats as locust_stats

logger = logging.getLogger("kvkit.load")

SCENARIOS = ("crud", "ratelimit")
SCENARIO = os.environ.get("KV_LOAD_SCENARIO", "crud")
if SCENARIO not in SCENARIOS:
    raise ValueError(f"KV_LOAD_SCENARIO must be one of {', '.join(SCENARIOS)}, not {SCENARIO!r}")

# Stats rows per route, never per key: a key in a name would make one row per request.
ITEM_NAME = "/v1/items/[key]"
CREATE_NAME = "/v1/items"
LIST_NAME = "/v1/items?prefix=[prefix]"
PAGE_NAME = "/v1/items?limit=[n]"

# Each key's budget is used up to this fraction, so clock jitter never tips a paced user over.
HEADROOM = 0.8

_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*(second|minute|hour|day)s?\s*$")
_PERIOD_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


def parse_rate(value: str) -> tuple[int, int]:
    """`60/minute` or `100/10second` (the server's KV_RATE_LIMIT format) as (requests, seconds)."""
    match = _RATE.match(value)
    if match is None:
        raise ValueError(f"expected '<count>/<period>', e.g. '60/minute', not {value!r}")
    count, multiple, unit = match.groups()
    return int(count), int(multiple or 1) * _PERIOD_SECONDS[unit]


def load_api_keys(environ: Mapping[str, str]) -> tuple[str, ...]:
    """The keys to spread over users: KV_LOAD_API_KEYS, else KV_API_KEY (the compose variable)."""
    raw = environ.get("KV_LOAD_API_KEYS") or environ.get("KV_API_KEY") or ""
    return tuple(key.strip() for key in raw.split(",") if key.strip())


def pacing_interval(limit: int, window: int, sharers: int) -> float:
    """Seconds between one user's requests so all `sharers` of a key stay under its limit."""
    return window * max(sharers, 1) / (limit * HEADROOM)


def classify_rate_limited(status: int, retry_after: str | None) -> str | None:
    """Why a response fails the ratelimit scenario, or None: 2xx and 429 with Retry-After pass."""
    if 200 <= status < 300:
        return None
    if status == 429:
        if retry_after is None or not retry_after.strip().isdigit() or int(retry_after) < 1:
            return f"429 without a valid Retry-After (got {retry_after!r})"
        return None
    if status == 0:
        return "no response (connection failed)"
    if status >= 500:
        return f"server error {status}"
    return f"unexpected status {status}"


API_KEYS = load_api_keys(os.environ)
RATE_LIMIT = parse_rate(os.environ.get("KV_LOAD_RATE_LIMIT", "60/minute"))
BURST_RATE = float(os.environ.get("KV_LOAD_BURST_RATE", "20"))
VALUE_TEXT = "x" * int(os.environ.get("KV_LOAD_VALUE_BYTES", "100"))
KVCLIENT_WEIGHT = int(os.environ.get("KV_LOAD_KVCLIENT_WEIGHT", "0"))
# Keys of this process's items start with it, so runs never collide in a shared database.
RUN_ID = uuid.uuid4().hex[:8]

# Outcomes of the ratelimit scenario: "allowed" (2xx) and "limited" (429).
RATE_LIMIT_TALLY: Counter[str] = Counter()

_user_numbers = itertools.count()
_key_holders: Counter[str] = Counter()


def claim_key() -> tuple[int, str]:
    """A new user's number and the API key it holds (none configured: "")."""
    number = next(_user_numbers)
    api_key = API_KEYS[number % len(API_KEYS)] if API_KEYS else ""
    _key_holders[api_key] += 1
    return number, api_key


def paced_wait(user: User, api_key: str) -> float:
    """The wait that keeps every holder of `api_key` together under the server's limit."""
    interval = pacing_interval(*RATE_LIMIT, sharers=_key_holders[api_key])
    return float(constant_pacing(interval)(user))


class KeyedUser(FastHttpUser):
    """A user holding one API key for its whole life."""

    abstract = True
    bearer = False  # send the key as `Authorization: Bearer` instead of `X-API-Key`

    def on_start(self) -> None:
        self.number, self.api_key = claim_key()

    def on_stop(self) -> None:
        _key_holders[self.api_key] -= 1

    @property
    def auth(self) -> dict[str, str]:
        """The key as the header this user sends it in; none when no key is configured."""
        if not self.api_key:
            return {}
        if self.bearer:
            return {"Authorization": f"Bearer {self.api_key}"}
        return {"X-API-Key": self.api_key}


class KvCrudUser(KeyedUser):
    """The production mix on the user's own items, paced under its key's limit."""

    abstract = SCENARIO != "crud"

    def on_start(self) -> None:
        super().on_start()
        self.prefix = f"load.{RUN_ID}.{self.number}."
        self.keys: list[str] = []
        self.written = 0

    def wait_time(self) -> float:
        return paced_wait(self, self.api_key)

    def _value(self) -> dict[str, Any]:
        self.written += 1
        return {"user": self.number, "n": self.written, "text": VALUE_TEXT}

    @task(50)
    def read_item(self) -> None:
        if not self.keys:
            self.create_item()
            return
        key = random.choice(self.keys)
        self.client.get(f"/v1/items/{key}", name=ITEM_NAME, headers=self.auth)

    @task(20)
    def update_item(self) -> None:
        if not self.keys:
            self.create_item()
            return
        key = random.choice(self.keys)
        body = {"value": self._value()}
        self.client.put(f"/v1/items/{key}", json=body, name=ITEM_NAME, headers=self.auth)

    @task(15)
    def create_item(self) -> None:
        key = f"{self.prefix}{self.written}"
        headers = {**self.auth, "Idempotency-Key": uuid.uuid4().hex}
        body = {"key": key, "value": self._value()}
        response = self.client.post("/v1/items", json=body, name=CREATE_NAME, headers=headers)
        if response.status_code == 201:
            self.keys.append(key)

    @task(5)
    def delete_item(self) -> None:
        if not self.keys:
            self.create_item()
            return
        key = self.keys.pop(random.randrange(len(self.keys)))
        self.client.delete(f"/v1/items/{key}", name=ITEM_NAME, headers=self.auth)

    @task(10)
    def list_items(self) -> None:
        path = f"/v1/items?limit=20&prefix={self.prefix}"
        self.client.get(path, name=LIST_NAME, headers=self.auth)


class RateLimitUser(KeyedUser):
    """Sends faster than its key's limit: 429 with Retry-After passes and is tallied, 5xx fails.

    It authenticates with `Authorization: Bearer`, the other header the service accepts.
    """

    abstract = SCENARIO != "ratelimit"
    bearer = True
    wait_time = constant_throughput(BURST_RATE)

    @task
    def read_page(self) -> None:
        with self.client.get(
            "/v1/items?limit=1", name=PAGE_NAME, headers=self.auth, catch_response=True
        ) as response:
            status = response.status_code or 0
            failure = classify_rate_limited(status, response.headers.get("Retry-After"))
            if failure is not None:
                response.failure(failure)
                return
            response.success()
            RATE_LIMIT_TALLY["limited" if status == 429 else "allowed"] += 1


class KvClientUser(User):
    """The CRUD mix through kvclient, so its retries, give-ups and latency reach the dashboard.

    Every call is one Locust request named by its route; kvclient retries 429 and 503 itself,
    so only a call that still fails after its retries is a failure. Creates send an
    Idempotency-Key, and one in ten is sent twice with the same key (a replay, not a conflict).
    """

    abstract = SCENARIO != "crud" or KVCLIENT_WEIGHT <= 0
    weight = max(KVCLIENT_WEIGHT, 1)

    def on_start(self) -> None:
        import kvclient  # here, not at import: the HTTP users run without it

        self.number, self.api_key = claim_key()
        self.prefix = f"load.{RUN_ID}.kvclient.{self.number}."
        self.keys: dict[str, int] = {}  # key -> version last written
        self.written = 0
        self.errors: tuple[type[Exception], ...] = (kvclient.KVError,)
        self.kv = kvclient.KVClient(self.host or "", api_key=self.api_key or None)

    def on_stop(self) -> None:
        self.kv.close()
        _key_holders[self.api_key] -= 1

    def wait_time(self) -> float:
        return paced_wait(self, self.api_key)

    def _call(self, method: str, name: str, call: Any) -> Any:
        """Run one kvclient call and report it to Locust as a request."""
        started = time.perf_counter()
        exception: Exception | None = None
        result = None
        try:
            result = call()
        except self.errors as exc:
            exception = exc
        self.environment.events.request.fire(
            request_type=method,
            name=name,
            response_time=(time.perf_counter() - started) * 1000,
            response_length=0,
            exception=exception,
            context={},
        )
        return result

    def _value(self) -> dict[str, Any]:
        self.written += 1
        return {"user": self.number, "n": self.written, "text": VALUE_TEXT}

    @task(50)
    def read_item(self) -> None:
        if not self.keys:
            self.create_item()
            return
        key = random.choice(list(self.keys))
        self._call("GET", ITEM_NAME, lambda: self.kv.get(key))

    @task(20)
    def update_item(self) -> None:
        if not self.keys:
            self.create_item()
            return
        key = random.choice(list(self.keys))
        value = self._value()
        item = self._call(
            "PUT", ITEM_NAME, lambda: self.kv.update(key, value, if_version=self.keys[key])
        )
        if item is not None:
            self.keys[key] = item.version

    @task(15)
    def create_item(self) -> None:
        key = f"{self.prefix}{self.written}"
        value, idempotency_key = self._value(), uuid.uuid4().hex
        item = self._call("POST", CREATE_NAME, lambda: self.kv.create(key, value, idempotency_key))
        if item is not None:
            self.keys[key] = item.version
            if self.written % 10 == 0:  # the same create again: answered from the record
                self._call("POST", CREATE_NAME, lambda: self.kv.create(key, value, idempotency_key))

    @task(5)
    def delete_item(self) -> None:
        if not self.keys:
            self.create_item()
            return
        key = random.choice(list(self.keys))
        version = self.keys.pop(key)
        self._call("DELETE", ITEM_NAME, lambda: self.kv.delete(key, if_version=version))

    @task(10)
    def list_items(self) -> None:
        self._call("GET", LIST_NAME, lambda: self.kv.list(limit=20, prefix=self.prefix))


@events.init.add_listener
def _serve_client_metrics(**_: Any) -> None:
    """Serve kvclient's metrics (the default registry) when KvClientUser may run here."""
    port = os.environ.get("KV_LOAD_CLIENT_METRICS_PORT")
    if not port or KvClientUser.abstract:
        return
    from prometheus_client import start_http_server

    try:
        start_http_server(int(port))
    except OSError as exc:  # a port in use costs the metrics, never the load run
        logger.warning("kvclient metrics not served on port %s: %s", port, exc)
        return
    logger.info("kvclient metrics on port %s", port)


class RampShape(LoadTestShape):
    """Step up to --users in four equal steps over the first half of --run-time, then hold.

    Without --run-time each step lasts 30 seconds and the last one holds until stopped.
    """

    abstract = os.environ.get("KV_LOAD_SHAPE", "") != "ramp"
    use_common_options = True
    steps = 4
    open_ended_step_seconds = 30.0

    def tick(self) -> tuple[int, float] | None:
        assert self.runner is not None
        options = self.runner.environment.parsed_options
        users = max(int(getattr(options, "num_users", None) or 1), 1)
        spawn_rate = float(getattr(options, "spawn_rate", None) or 1)
        run_time = getattr(options, "run_time", None)
        elapsed = self.get_run_time()
        if run_time and elapsed >= run_time:
            return None
        step_seconds = run_time / 2 / self.steps if run_time else self.open_ended_step_seconds
        step = min(int(elapsed // step_seconds) + 1, self.steps)
        return math.ceil(users * step / self.steps), spawn_rate


@events.test_start.add_listener
def _reset_tally(**_: Any) -> None:
    RATE_LIMIT_TALLY.clear()


@events.test_stop.add_listener
def _flush_csv(environment: Any, **_: Any) -> None:
    """Locust rewrites its CSV files once per CSV_STATS_INTERVAL_SEC and not again at exit:
    wait one more round, now that every user has stopped, so they hold the final numbers."""
    if getattr(environment.parsed_options, "csv_prefix", None):
        gevent.sleep(locust_stats.CSV_STATS_INTERVAL_SEC + 0.2)


@events.test_stop.add_listener
def _report_tally(**_: Any) -> None:
    if SCENARIO != "ratelimit":
        return
    tally = {"allowed": RATE_LIMIT_TALLY["allowed"], "limited": RATE_LIMIT_TALLY["limited"]}
    logger.info("ratelimit scenario: %(allowed)d allowed, %(limited)d limited (429)", tally)
    path = os.environ.get("KV_LOAD_TALLY_FILE")
    if path:
        with open(path, "w", encoding="utf-8") as file:
            json.dump(tally, file)
