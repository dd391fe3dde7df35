"""`make bench`: throughput and latency of the production configuration, next to the framework's.

Starts gunicorn with gunicorn.conf.py (uvicorn workers) on PostgreSQL and Redis, with a
limit no client reaches (the limiter still runs on every request), seeds items with one SQL
statement and drives each workload with wrk at fixed concurrency; then the same wrk run against
loadtests/ceiling_app.py, a FastAPI app answering a constant item. Also records the peak number
of the server's PostgreSQL connections, each worker's memory and a worker's startup time.
`--scale` adds a check on 1,000,000 items: a page deep in the keyspace against the first page,
and GET by key against the 10,000-item table, at concurrency 1 so query cost, not queueing, shows.
Where `pgbouncer` is installed (or with `--pgbouncer on`), GET and PUT also run through a private
PgBouncer in transaction pooling (KV_DB_PREPARED_STATEMENTS=false), taking turns with a server
connected directly, so the two are measured under the same load of the machine.

Writes loadtests/reports/bench.json and bench.md and prints the table. This is a benchmark, not
a test: the numbers are the machine's, and only comparable to runs on the same machine.

    python loadtests/bench.py --duration 10
    python loadtests/bench.py --duration 10 --scale
    python loadtests/bench.py --only get put --pgbouncer on
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadtests import stack

WRK_DIR = Path(__file__).resolve().parent / "wrk"
KEY_PREFIX = "item."  # seeded keys are item.0000000, item.0000001, ... (see wrk/get.lua)
MAX_ITEMS = 9_999_999  # seven digits keep key order equal to number order
REPORT_MARKER = "WRK_REPORT "
# Far above anything wrk sends in a second: every request is checked, none is refused.
UNREACHED_RATE_LIMIT = f"{10**9}/second"
DEEP_PAGE_TOLERANCE = 1.2
SCALE_ROUNDS = 5  # alternating first-page and deep-page runs in the scale check
CEILING_LABEL = "ceiling: FastAPI constant GET"
POOLER_WORKLOADS = ("get", "put")


class BenchError(RuntimeError):
    """The benchmark could not run; the message says why."""


@dataclass(frozen=True)
class WrkResult:
    """One wrk run, in the units of the report."""

    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    non_2xx: int
    socket_errors: int


@dataclass(frozen=True)
class Workload:
    """A wrk script and what it is given."""

    name: str
    label: str
    script: str
    path: str = "/"
    args: tuple[str, ...] = ()
    creates: bool = False  # args[0] is a key prefix that no earlier run may have used

    def warming(self) -> Workload:
        """The same workload for a warm-up run; one that creates keys gets prefixes of its own."""
        if not self.creates:
            return self
        return replace(self, args=("warm." + self.args[0], *self.args[1:]))


def parse_wrk_report(stdout: str) -> WrkResult:
    """Read the line wrk/workload.lua's done() prints."""
    line = next((x for x in stdout.splitlines() if x.startswith(REPORT_MARKER)), None)
    if line is None:
        raise BenchError(f"wrk printed no {REPORT_MARKER.strip()} line:\n{stdout}")
    data = json.loads(line.removeprefix(REPORT_MARKER))
    latency, errors = data["latency_us"], data["errors"]
    seconds = data["duration_us"] / 1e6
    return WrkResult(
        requests=data["requests"],
        seconds=round(seconds, 3),
        rps=round(data["requests"] / seconds, 1) if seconds else 0.0,
        p50_ms=latency["p50"] / 1000,
        p90_ms=latency["p90"] / 1000,
        p99_ms=latency["p99"] / 1000,
        max_ms=latency["max"] / 1000,
        non_2xx=errors["status"],
        socket_errors=errors["connect"] + errors["read"] + errors["write"] + errors["timeout"],
    )


def require_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise BenchError("wrk is not installed: apt-get install -y wrk (Debian/Ubuntu)")
    return path


@dataclass(frozen=True)
class Wrk:
    """wrk with fixed settings for a whole benchmark."""

    executable: str
    threads: int
    connections: int
    headers: tuple[str, ...] = ()

    def run(
        self,
        base_url: str,
        workload: Workload,
        seconds: int,
        *,
        threads: int | None = None,
        connections: int | None = None,
    ) -> WrkResult:
        command = [
            self.executable,
            "-t",
            str(threads or self.threads),
            "-c",
            str(connections or self.connections),
            "-d",
            f"{seconds}s",
            "--timeout",
            "10s",
            "-s",
            str(WRK_DIR / workload.script),
            *[part for header in self.headers for part in ("-H", header)],
            base_url + workload.path,
            "--",
            *workload.args,
        ]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
        except subprocess.TimeoutExpired as exc:
            raise BenchError(f"wrk did not finish: {' '.join(command)}") from exc
        if done.returncode:
            raise BenchError(f"wrk failed ({done.returncode}): {done.stderr}{done.stdout}")
        return parse_wrk_report(done.stdout)


# --------------------------------------------------------------------------- PostgreSQL


def seed_items(database_url: str, count: int) -> float:
    """Replace every item with `count` seeded ones in one statement; the seconds it took."""
    import psycopg

    started = time.monotonic()
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE kv_item, kv_idempotency")
        conn.execute(
            """
            INSERT INTO kv_item (key, value, version, created_at, updated_at)
            SELECT %(prefix)s || lpad(n::text, 7, '0'),
                   format('{"n":%%s,"text":"%%s"}', n, repeat('x', 64)),  -- the JSON text
                   1, now(), now()
            FROM generate_series(0, %(count)s - 1) AS n
            """,
            {"prefix": KEY_PREFIX, "count": count},
        )
        conn.execute("ANALYZE kv_item")
    return time.monotonic() - started


def seeded_key(n: int) -> str:
    return f"{KEY_PREFIX}{n:07d}"


class ConnectionSampler:
    """Samples the server's connections to the database (application_name kvkit) in a thread."""

    def __init__(self, database_url: str, interval: float = 0.2) -> None:
        self.database_url = database_url
        self.interval = interval
        self.peak = 0
        self.window_peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> ConnectionSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def reset_window(self) -> None:
        self.window_peak = 0

    def _sample(self) -> None:
        import psycopg

        with psycopg.connect(self.database_url, autocommit=True) as conn:
            while not self._stop.is_set():
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND application_name = 'kvkit'"
                ).fetchone()
                count = int(row[0]) if row else 0
                self.peak = max(self.peak, count)
                self.window_peak = max(self.window_peak, count)
                self._stop.wait(self.interval)


# --------------------------------------------------------------------------- the runs


def measure_startup(settings: dict[str, str], samples: int, log_path: Path) -> dict[str, Any]:
    """Median seconds from a worker's process start to its first /healthz answer (one worker,
    so the answer is its own), and from starting gunicorn to that answer."""
    worker, total = [], []
    for _ in range(samples):
        started = time.monotonic()
        with stack.running_gunicorn(
            "app.main:app", settings, workers=1, log_path=log_path, ready_path="/healthz"
        ) as server:
            answered = time.monotonic()
            ages = [stack.process_age(pid) for pid in server.worker_pids()]
            worker_age = max((age for age in ages if age is not None), default=None)
            if worker_age is not None:
                worker.append(worker_age - (time.monotonic() - answered))
            total.append(answered - started)
    return {
        "samples": samples,
        "worker_start_to_healthz_s": round(statistics.median(worker), 3) if worker else None,
        "gunicorn_start_to_healthz_s": round(statistics.median(total), 3),
    }


def scale_check(
    wrk: Wrk, url: str, database_url: str, items: int, scale_items: int, seconds: int
) -> dict[str, Any]:
    """p50 of the first page against a page near the end, and GET by key against `items` rows."""
    from app.api.pagination import encode_cursor

    def probe(workload: Workload) -> WrkResult:
        wrk.run(url, workload, 1, threads=1, connections=1)  # warm the caches
        return wrk.run(url, workload, seconds, threads=1, connections=1)

    seed_items(database_url, items)
    get_small = probe(Workload("get", "GET by key", "get.lua", args=(str(items), KEY_PREFIX)))
    seed_seconds = seed_items(database_url, scale_items)
    print(f"seeded {scale_items:,} items in {seed_seconds:.1f}s")
    cursor = encode_cursor(seeded_key(scale_items - 100))
    first_page = Workload("first", "first page", "list.lua", "/v1/items?limit=50")
    deep_page = Workload("deep", "deep page", "list.lua", f"/v1/items?limit=50&cursor={cursor}")
    # The two pages take turns in short runs, so drift of a shared machine hits both alike;
    # each page's p50 is the median of its runs' p50s.
    for workload in (first_page, deep_page):
        wrk.run(url, workload, 1, threads=1, connections=1)  # warm the caches
    runs: dict[str, list[WrkResult]] = {"first": [], "deep": []}
    for _ in range(SCALE_ROUNDS):
        for workload in (first_page, deep_page):
            result = wrk.run(url, workload, max(1, seconds // 2), threads=1, connections=1)
            runs[workload.name].append(result)
    first, deep = (median_run(runs[name]) for name in ("first", "deep"))
    get_large = probe(Workload("get", "GET by key", "get.lua", args=(str(scale_items), KEY_PREFIX)))
    seed_items(database_url, 0)  # leave no million rows behind
    ratio = deep.p50_ms / first.p50_ms if first.p50_ms else float("inf")
    return {
        "items": scale_items,
        "concurrency": 1,
        "seed_seconds": round(seed_seconds, 1),
        "rounds": SCALE_ROUNDS,
        "first_page": asdict(first),
        "deep_page": asdict(deep),
        "first_page_p50s_ms": [r.p50_ms for r in runs["first"]],
        "deep_page_p50s_ms": [r.p50_ms for r in runs["deep"]],
        "deep_to_first_p50": round(ratio, 3),
        "deep_page_within_tolerance": ratio <= DEEP_PAGE_TOLERANCE,
        f"get_by_key_{items}": asdict(get_small),
        f"get_by_key_{scale_items}": asdict(get_large),
    }


def median_run(runs: list[WrkResult]) -> WrkResult:
    """The run whose p50 is the median of the runs' p50s (the lower middle one for even counts)."""
    ordered = sorted(runs, key=lambda r: r.p50_ms)
    return ordered[(len(ordered) - 1) // 2]


def workloads(items: int) -> list[Workload]:
    run = secrets.token_hex(4)
    seeded = (str(items), KEY_PREFIX)
    return [
        Workload("get", "GET /v1/items/{key}", "get.lua", args=seeded),
        Workload("list", "GET /v1/items?limit=50", "list.lua", "/v1/items?limit=50"),
        Workload("put", "PUT /v1/items/{key}", "put.lua", args=seeded),
        Workload("post", "POST /v1/items", "post.lua", args=(f"post.{run}.",), creates=True),
        Workload(
            "post_idempotent",
            "POST /v1/items + Idempotency-Key",
            "post.lua",
            args=(f"idem.{run}.", "idempotency"),
            creates=True,
        ),
    ]


def bench_service(
    args: argparse.Namespace, wrk: Wrk, settings: dict[str, str], database_url: str
) -> dict[str, Any]:
    """Every workload against kvkit, with connection, memory and startup figures."""
    startup = measure_startup(settings, args.startup_samples, args.reports / "bench-startup.log")
    plan = [w for w in workloads(args.items) if not args.only or w.name in args.only]
    results: dict[str, dict[str, Any]] = {}
    started = time.monotonic()
    with (
        ConnectionSampler(database_url) as sampler,
        stack.running_gunicorn(
            "app.main:app",
            settings,
            workers=args.workers,
            log_path=args.reports / "bench-server.log",
        ) as server,
    ):
        startup["gunicorn_start_to_readyz_s"] = round(time.monotonic() - started, 3)
        api_key = settings["KV_API_KEYS"]
        item = stack.http_get(f"{server.url}/v1/items/{seeded_key(0)}", {"X-API-Key": api_key})
        for workload in plan:
            if args.warmup:  # each workload's statements get compiled and prepared unmeasured
                wrk.run(server.url, workload.warming(), args.warmup)
            sampler.reset_window()
            result = wrk.run(server.url, workload, args.duration)
            results[workload.name] = {
                "label": workload.label,
                **asdict(result),
                "pg_connections_peak": sampler.window_peak,
            }
            print(f"{workload.label:<34} {result.rps:>9.1f} req/s  p50 {result.p50_ms:.1f} ms")
        # Read after the load: resident now (VmRSS) and at its peak (VmHWM).
        memory = {str(pid): stack.memory_kib(pid) for pid in server.worker_pids()}
        scale = None
        if args.scale:
            scale = scale_check(
                wrk, server.url, database_url, args.items, args.scale_items, args.duration
            )
    return {
        "workloads": results,
        "item_body": item.decode(),
        "pg_connections_peak": sampler.peak,
        "pg_connections_bound": args.workers * args.db_threads,
        "worker_memory_kib": memory,
        "startup": startup,
        "scale": scale,
    }


def bench_ceiling(args: argparse.Namespace, wrk: Wrk, item_body: str) -> WrkResult:
    """The GET workload against the ceiling app, serving a real item's bytes."""
    get = workloads(args.items)[0]
    with stack.running_gunicorn(
        "loadtests.ceiling_app:app",
        {"KV_CEILING_ITEM": item_body, "LOG_LEVEL": args.log_level},
        workers=args.workers,
        log_path=args.reports / "bench-ceiling.log",
        ready_path="/healthz",
    ) as server:
        if args.warmup:
            wrk.run(server.url, get, args.warmup)
        result = wrk.run(server.url, get, args.duration)
    print(f"{CEILING_LABEL:<34} {result.rps:>9.1f} req/s  p50 {result.p50_ms:.1f} ms")
    return result


# --------------------------------------------------------------------------- PgBouncer


def pgbouncer_executable(mode: str) -> str | None:
    """The pgbouncer to run: None when `mode` is off, or auto and none is installed."""
    if mode == "off":
        return None
    found = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin")
    if found is None and mode == "on":
        raise BenchError("pgbouncer is not installed: apt-get install -y pgbouncer")
    return found


@contextlib.contextmanager
def running_pgbouncer(executable: str, database_url: str, pool_size: int) -> Iterator[str]:
    """A PgBouncer of the benchmark's own in transaction pooling, on a free port, in front of
    `database_url`'s server; yields the URL of that database through it."""
    parts = urlsplit(database_url)
    host, port = parts.hostname, parts.port or 5432
    root = Path(tempfile.mkdtemp(prefix="kvkit-bench-pgbouncer-"))
    listen = stack.free_port()
    command = stack.pgbouncer_command(
        executable,
        root,
        listen_port=listen,
        server=(host or "127.0.0.1", port),
        pool_size=pool_size,
    )
    process = stack.ManagedProcess(command, dict(os.environ))
    process.start()
    try:
        deadline = time.monotonic() + 10
        while not _accepts(listen):
            if not process.running() or time.monotonic() > deadline:
                log = (root / "pgbouncer.log").read_text(errors="replace")
                raise BenchError(f"pgbouncer did not start:\n{log}")
            time.sleep(0.05)
        credentials = parts.netloc.rpartition("@")[0]
        yield urlunsplit(parts._replace(netloc=f"{credentials}@127.0.0.1:{listen}"))
    finally:
        process.stop(grace=5)
        shutil.rmtree(root, ignore_errors=True)


def _accepts(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


def bench_pooler(
    args: argparse.Namespace, wrk: Wrk, settings: dict[str, str], database_url: str
) -> dict[str, Any] | None:
    """GET and PUT on a server behind PgBouncer and on one connected directly, in turns."""
    plan = [
        w
        for w in workloads(args.items)
        if w.name in POOLER_WORKLOADS and (not args.only or w.name in args.only)
    ]
    executable = pgbouncer_executable(args.pgbouncer) if plan else None
    if executable is None:
        if plan and args.pgbouncer == "auto":
            print("pgbouncer is not installed (apt-get install -y pgbouncer): not compared")
        return None
    pool_size = args.pgbouncer_pool_size or args.workers * args.db_threads
    runs: dict[str, dict[str, list[WrkResult]]] = {w.name: {} for w in plan}
    with contextlib.ExitStack() as running:
        pooled_url = running.enter_context(running_pgbouncer(executable, database_url, pool_size))
        pooled = {
            **settings,
            "DATABASE_URL": pooled_url,
            "KV_MIGRATE_DATABASE_URL": database_url,
            "KV_DB_PREPARED_STATEMENTS": "false",
        }
        servers = {
            name: running.enter_context(
                stack.running_gunicorn(
                    "app.main:app",
                    env,
                    workers=args.workers,
                    log_path=args.reports / f"bench-{name}-server.log",
                )
            )
            for name, env in (("direct", settings), ("pgbouncer", pooled))
        }
        for workload in plan:  # warm both, so the measured rounds take turns from the start
            for target in servers.values():
                wrk.run(target.url, workload.warming(), max(1, args.warmup))
        for _ in range(args.pgbouncer_rounds):
            for workload in plan:
                for name, target in servers.items():
                    result = wrk.run(target.url, workload, args.duration)
                    runs[workload.name].setdefault(name, []).append(result)
                    print(
                        f"{workload.label:<24} {name:<9} {result.rps:>9.1f} req/s"
                        f"  p50 {result.p50_ms:.1f} ms"
                    )
    table = {}
    for workload in plan:
        direct, through = (runs[workload.name][name] for name in servers)
        rps = {
            name: statistics.median(r.rps for r in runs[workload.name][name]) for name in servers
        }
        table[workload.name] = {
            "label": workload.label,
            "direct": [asdict(r) for r in direct],
            "pgbouncer": [asdict(r) for r in through],
            "direct_rps_median": rps["direct"],
            "pgbouncer_rps_median": rps["pgbouncer"],
            "ratio": round(rps["pgbouncer"] / rps["direct"], 3) if rps["direct"] else None,
        }
    return {"pool_size": pool_size, "rounds": args.pgbouncer_rounds, "workloads": table}


def run(args: argparse.Namespace) -> dict[str, Any]:
    wrk_path = require_wrk()
    args.reports.mkdir(parents=True, exist_ok=True)
    api_key = secrets.token_hex(16)
    wrk = Wrk(wrk_path, args.threads, args.connections, (f"X-API-Key: {api_key}",))
    database_url = stack.ensure_database(args.postgres_url, args.database)
    stack.require_redis(args.redis_url)
    settings = {
        "DATABASE_URL": database_url,
        "REDIS_URL": args.redis_url,
        "KV_API_KEYS": api_key,
        "KV_RATE_LIMIT": UNREACHED_RATE_LIMIT,
        "KV_DB_THREADS": str(args.db_threads),
        "LOG_FORMAT": "json",
        "LOG_LEVEL": args.log_level,
    }
    seed_seconds = seed_items(database_url, args.items)
    print(f"seeded {args.items:,} items in {seed_seconds:.2f}s")
    service = bench_service(args, wrk, settings, database_url)
    ceiling = bench_ceiling(args, wrk, service.pop("item_body"))
    pooler = bench_pooler(args, wrk, settings, database_url)
    for row in (pooler or {"workloads": {}})["workloads"].values():
        for side in ("direct", "pgbouncer"):
            row[f"{side}_ratio_to_ceiling"] = round(row[f"{side}_rps_median"] / ceiling.rps, 3)
    for row in service["workloads"].values():
        row["ratio_to_ceiling"] = round(row["rps"] / ceiling.rps, 3) if ceiling.rps else None
    return {
        "settings": {
            "duration_s": args.duration,
            "wrk_threads": args.threads,
            "wrk_connections": args.connections,
            "gunicorn_workers": args.workers,
            "db_threads": args.db_threads,
            "items": args.items,
            "log_level": args.log_level,
            "rate_limit": UNREACHED_RATE_LIMIT,
            "cpus": len(os.sched_getaffinity(0)),
            "load_average_at_start": [round(x, 2) for x in args.load_average],
        },
        **service,
        "ceiling": {"label": CEILING_LABEL, **asdict(ceiling), "ratio_to_ceiling": 1.0},
        "pgbouncer": pooler,
    }


# --------------------------------------------------------------------------- the report


def markdown(report: dict[str, Any]) -> str:
    settings = report["settings"]
    lines = [
        "# kvkit benchmark",
        "",
        f"wrk -t{settings['wrk_threads']} -c{settings['wrk_connections']}"
        f" -d{settings['duration_s']}s; gunicorn {settings['gunicorn_workers']} uvicorn workers;"
        f" PostgreSQL + Redis; {settings['items']:,} items; LOG_LEVEL={settings['log_level']};"
        f" {settings['cpus']} CPUs, load average at start {settings['load_average_at_start']}.",
        "",
        "| workload | req/s | p50 ms | p99 ms | ratio to ceiling | non-2xx | socket errors |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in [*report["workloads"].values(), report["ceiling"]]:
        lines.append(
            f"| {row['label']} | {row['rps']:.0f} | {row['p50_ms']:.1f} | {row['p99_ms']:.1f}"
            f" | {row['ratio_to_ceiling']:.2f} | {row['non_2xx']} | {row['socket_errors']} |"
        )
    startup = report["startup"]
    worker_start = startup["worker_start_to_healthz_s"]
    lines += [
        "",
        f"- PostgreSQL connections of the server, peak: {report['pg_connections_peak']}"
        f" (bound: workers x KV_DB_THREADS = {report['pg_connections_bound']}); per workload: "
        + ", ".join(f"{k} {v['pg_connections_peak']}" for k, v in report["workloads"].items()),
        "- Worker memory after the load (RSS / peak RSS): "
        + ", ".join(
            f"pid {pid} {m.get('VmRSS', 0) / 1024:.0f} / {m.get('VmHWM', 0) / 1024:.0f} MiB"
            for pid, m in report["worker_memory_kib"].items()
        ),
        f"- Startup (median of {startup['samples']}): worker process start to /healthz"
        f" {'n/a' if worker_start is None else f'{worker_start:.2f} s'};"
        f" gunicorn start to /healthz with one worker {startup['gunicorn_start_to_healthz_s']:.2f}"
        f" s; to /readyz with {settings['gunicorn_workers']} workers"
        f" {startup['gunicorn_start_to_readyz_s']:.2f} s",
    ]
    scale = report["scale"]
    if scale:
        items = settings["items"]
        verdict = "yes" if scale["deep_page_within_tolerance"] else "NO"
        lines += [
            "",
            f"## Scale: {scale['items']:,} items, concurrency 1",
            "",
            "| probe | p50 ms | p99 ms | req/s |",
            "|---|---:|---:|---:|",
        ]
        probes = {
            "GET /v1/items?limit=50, first page": scale["first_page"],
            "GET /v1/items?limit=50, page near the end": scale["deep_page"],
            f"GET by key, {items:,} items": scale[f"get_by_key_{items}"],
            f"GET by key, {scale['items']:,} items": scale[f"get_by_key_{scale['items']}"],
        }
        for label, row in probes.items():
            lines.append(
                f"| {label} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {row['rps']:.0f} |"
            )
        lines += [
            "",
            f"Deep page p50 / first page p50 = {scale['deep_to_first_p50']:.2f}:"
            f" within {DEEP_PAGE_TOLERANCE}x: {verdict}.",
        ]
    pooler = report.get("pgbouncer")
    if pooler:
        lines += [
            "",
            f"## Through PgBouncer (transaction pooling, {pooler['pool_size']} server"
            f" connections, KV_DB_PREPARED_STATEMENTS=false) and direct, {pooler['rounds']}"
            " rounds in turns",
            "",
            "| workload | direct req/s | PgBouncer req/s | PgBouncer / direct (medians)"
            " | ratio to ceiling, direct / PgBouncer | p50 ms, direct / PgBouncer |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for row in pooler["workloads"].values():
            direct = ", ".join(f"{r['rps']:.0f}" for r in row["direct"])
            through = ", ".join(f"{r['rps']:.0f}" for r in row["pgbouncer"])
            p50 = "{:.1f} / {:.1f}".format(
                statistics.median(r["p50_ms"] for r in row["direct"]),
                statistics.median(r["p50_ms"] for r in row["pgbouncer"]),
            )
            ceiling = (
                f"{row['direct_ratio_to_ceiling']:.2f} / {row['pgbouncer_ratio_to_ceiling']:.2f}"
            )
            lines.append(
                f"| {row['label']} | {direct} | {through} | {row['ratio']:.2f} | {ceiling}"
                f" | {p50} |"
            )
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument(
        "--warmup", type=int, default=2, help="seconds of unmeasured warm-up before each workload"
    )
    parser.add_argument("--threads", type=int, default=2, help="wrk -t")
    parser.add_argument("--connections", type=int, default=64, help="wrk -c")
    parser.add_argument("--workers", type=int, default=2, help="GUNICORN_WORKERS")
    parser.add_argument("--db-threads", type=int, default=4, help="KV_DB_THREADS")
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--scale", action="store_true", help="also run the 1M-item check")
    parser.add_argument(
        "--only", nargs="+", metavar="NAME", help="run only these workloads (get, list, put, ...)"
    )
    parser.add_argument("--scale-items", type=int, default=1_000_000)
    parser.add_argument(
        "--pgbouncer",
        choices=("auto", "on", "off"),
        default="auto",
        help="GET and PUT through a private PgBouncer too, in turns with direct runs"
        " (auto: when pgbouncer is installed)",
    )
    parser.add_argument(
        "--pgbouncer-pool-size",
        type=int,
        default=0,
        help="PgBouncer's server connections (default: workers x KV_DB_THREADS)",
    )
    parser.add_argument("--pgbouncer-rounds", type=int, default=2)
    parser.add_argument("--startup-samples", type=int, default=3)
    parser.add_argument("--log-level", default="INFO", help="LOG_LEVEL of the servers")
    parser.add_argument("--postgres-url", default=stack.DEFAULT_POSTGRES_URL)
    parser.add_argument("--database", default=stack.DEFAULT_DATABASE)
    parser.add_argument("--redis-url", default=stack.DEFAULT_REDIS_URL)
    parser.add_argument("--reports", type=Path, default=stack.REPORTS_DIR)
    args = parser.parse_args(argv)
    sizes = (args.items, args.scale_items)
    if args.duration < 1 or min(sizes) < 100 or max(sizes) > MAX_ITEMS:
        parser.error(f"--duration must be >= 1 and --items/--scale-items in 100..{MAX_ITEMS:,}")
    if args.connections < args.threads:
        parser.error("--connections must be >= --threads (wrk's rule)")
    args.load_average = os.getloadavg()
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    stack.install_cleanup()
    try:
        report = run(args)
    except (BenchError, stack.StackError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    (args.reports / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(report)
    (args.reports / "bench.md").write_text(table)
    print("\n" + table)
    print(f"written: {args.reports / 'bench.json'}, {args.reports / 'bench.md'}")
    rows = [*report["workloads"].items(), ("ceiling", report["ceiling"])]
    for name, row in (report["pgbouncer"] or {"workloads": {}})["workloads"].items():
        rows += [(f"{name} ({side})", r) for side in ("direct", "pgbouncer") for r in row[side]]
    errors = [name for name, row in rows if row["non_2xx"] or row["socket_errors"]]
    if errors:
        print(f"error responses in: {', '.join(errors)}; their numbers are not comparable")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
