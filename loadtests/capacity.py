"""Capacity figures for docs/SCALING.md: what a request costs each tier, and each backend's ceiling.

Three measurements, on this machine, in one run:

1. kvkit under wrk (GET by key, PUT by key), gunicorn as the image runs it: the CPU seconds its
   workers, PostgreSQL (all its processes) and Redis each spent per request (from /proc and
   Redis' INFO). 1 / that is the requests per second one fully used core of each tier carries.
   Both servers must run on this machine, and nothing else should use them meanwhile.
2. PostgreSQL's ceiling for kvkit's own statements: the SQL the store sends for a GET by key and
   an unconditional PUT, captured from app/store itself, run by pgbench with prepared statements
   (as kvkit runs them) on as many connections as kvkit opens.
3. Redis' ceiling for the limiter: redis-benchmark running app/ratelimit/sliding_log.lua by
   EVALSHA, pipelined as the limiter pipelines the checks of one event-loop pass.

Writes loadtests/reports/capacity.json and capacity.md and prints the table. A measurement, not a
test: the figures are this machine's.

    python loadtests/capacity.py --duration 10
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadtests import stack
from loadtests.bench import (
    KEY_PREFIX,
    UNREACHED_RATE_LIMIT,
    BenchError,
    Workload,
    Wrk,
    require_wrk,
    seed_items,
    seeded_key,
)

REPO = Path(__file__).resolve().parent.parent
LIMITER_SCRIPT = REPO / "app" / "ratelimit" / "sliding_log.lua"
# The limiter's production limit (60/minute) over a keyspace of clients, so buckets hold a
# realistic few dozen members, and most checks take the ZADD path, the costlier one.
REDIS_CLIENTS = 10_000
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds `pid` has used (0 when it is gone)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def postgres_pids(database_url: str) -> list[int]:
    """Every process of the PostgreSQL server kvkit uses: the postmaster's children, so the WAL
    writer, checkpointer and others count too. The server must run on this machine."""
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
    assert row is not None
    backend = int(row[0])
    fields = Path(f"/proc/{backend}/stat").read_text().rsplit(")", 1)[1].split()
    return stack.children_of(int(fields[1]))  # fields[1]: the parent, the postmaster


def redis_cpu(url: str) -> float:
    import redis

    client = redis.Redis.from_url(url)
    try:
        info = client.info("cpu")
    finally:
        client.close()
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def per_request_cost(
    args: argparse.Namespace, wrk: Wrk, settings: dict[str, str], database_url: str
) -> dict[str, Any]:
    """CPU per request of each tier, GET and PUT, one wrk run each after a warm-up."""
    plan = [
        Workload("get", "GET /v1/items/{key}", "get.lua", args=(str(args.items), KEY_PREFIX)),
        Workload("put", "PUT /v1/items/{key}", "put.lua", args=(str(args.items), KEY_PREFIX)),
    ]
    results: dict[str, Any] = {}
    with stack.running_gunicorn(
        "app.main:app",
        settings,
        workers=args.workers,
        log_path=args.reports / "capacity-server.log",
    ) as server:
        for workload in plan:
            wrk.run(server.url, workload, max(1, args.warmup))  # connections open, plans cached
            workers = server.worker_pids()
            backends = postgres_pids(database_url)
            before = {pid: cpu_seconds(pid) for pid in [*workers, *backends]}
            redis_before = redis_cpu(args.redis_url)
            result = wrk.run(server.url, workload, args.duration)
            redis_spent = redis_cpu(args.redis_url) - redis_before
            backends = sorted({*backends, *postgres_pids(database_url)})
            after = {pid: cpu_seconds(pid) for pid in [*workers, *backends]}

            def spent(pids: Sequence[int]) -> float:
                return sum(after[pid] - before.get(pid, 0.0) for pid in pids)  # noqa: B023

            if result.non_2xx or result.socket_errors:
                raise BenchError(f"{workload.label}: error responses, figures not comparable")
            cpu = {"kvkit": spent(workers), "postgresql": spent(backends), "redis": redis_spent}
            results[workload.name] = {
                "label": workload.label,
                "requests": result.requests,
                "rps": result.rps,
                "p50_ms": result.p50_ms,
                "cpu_seconds": {tier: round(value, 3) for tier, value in cpu.items()},
                "cpu_ms_per_request": {
                    tier: round(1000 * value / result.requests, 4) for tier, value in cpu.items()
                },
                "rps_per_core": {
                    tier: round(result.requests / value) if value else None
                    for tier, value in cpu.items()
                },
            }
            print(
                f"{workload.label:<22} {result.rps:>8.0f} req/s; per core:"
                + "".join(f" {t} {v}" for t, v in results[workload.name]["rps_per_core"].items())
            )
    return results


def captured_statements(database_url: str) -> dict[str, str]:
    """The SQL the store sends for a GET by key and an unconditional PUT, with its values."""
    os.environ["DATABASE_URL"] = database_url
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from app.store.setup import setup_django

    setup_django()
    from datetime import UTC, datetime

    from app.store import items

    key = seeded_key(0)
    with CaptureQueriesContext(connection) as read:
        items.get_item(key)
    with CaptureQueriesContext(connection) as write:
        items.update_item(key, '{"n":0,"text":"capacity"}', None, datetime.now(UTC))
    connection.close()
    (get_sql,) = (q["sql"] for q in read.captured_queries)
    (put_sql,) = (q["sql"] for q in write.captured_queries)
    return {"get": get_sql, "put": put_sql}


def pgbench_script(sql: str, items: int) -> str:
    """`sql` with its seeded key replaced by a random one, as a pgbench script."""
    literal = f"'{seeded_key(0)}'"
    if sql.count(literal) != 1:
        raise BenchError(f"the captured statement does not name {literal} once: {sql}")
    key = f"'{KEY_PREFIX}' || lpad(:n::text, 7, '0')"
    return f"\\set n random(0, {items - 1})\n{sql.replace(literal, key)};\n"


def pgbench_ceiling(args: argparse.Namespace, database_url: str) -> dict[str, Any]:
    """Transactions per second of each captured statement, pgbench -M prepared."""
    executable = shutil.which("pgbench") or shutil.which(
        "pgbench", path="/usr/lib/postgresql/15/bin"
    )
    if executable is None:
        raise BenchError("pgbench is not installed: apt-get install -y postgresql-client")
    parts = urlsplit(database_url)
    connections = args.workers * args.db_threads
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="kvkit-pgbench-") as tmp:
        for name, sql in captured_statements(database_url).items():
            script = Path(tmp) / f"{name}.sql"
            script.write_text(pgbench_script(sql, args.items))
            command = [
                executable,
                "--no-vacuum",
                "--protocol=prepared",
                f"--client={connections}",
                f"--jobs={min(connections, os.cpu_count() or 1)}",
                f"--time={args.duration}",
                f"--file={script}",
                f"--host={parts.hostname}",
                f"--port={parts.port or 5432}",
                f"--username={parts.username or 'postgres'}",
                parts.path.lstrip("/"),
            ]
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=args.duration + 60
            )
            found = re.search(r"tps = ([\d.]+) \(without initial connection time\)", done.stdout)
            if done.returncode or found is None:
                raise BenchError(f"pgbench failed:\n{done.stdout}{done.stderr}")
            results[name] = {
                "statement": sql,
                "connections": connections,
                "tps": round(float(found.group(1))),
            }
            print(f"pgbench {name:<4} {results[name]['tps']:>8} statements/s")
    return results


def redis_ceiling(args: argparse.Namespace) -> dict[str, Any]:
    """Limiter checks per second: redis-benchmark EVALSHA of the limiter's script."""
    import redis

    executable = shutil.which("redis-benchmark")
    if executable is None:
        raise BenchError("redis-benchmark is not installed: apt-get install -y redis-tools")
    client = redis.Redis.from_url(args.redis_url)
    try:
        sha = client.script_load(LIMITER_SCRIPT.read_text())
    finally:
        client.close()
    parts = urlsplit(args.redis_url)
    prefix = f"kvkit-capacity:{secrets.token_hex(4)}:"
    results: dict[str, Any] = {}
    for pipeline in (1, 16):
        command = [
            executable,
            "-h",
            parts.hostname or "127.0.0.1",
            "-p",
            str(parts.port or 6379),
            "-n",
            str(args.redis_requests),
            "-c",
            "50",
            "-P",
            str(pipeline),
            "-r",
            str(REDIS_CLIENTS),
            "--csv",
            "EVALSHA",
            sha,
            "1",
            f"{prefix}__rand_int__",
            "60",
            "60",
            "__rand_int__",
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
        rows = [line for line in done.stdout.splitlines() if line.startswith('"EVALSHA')]
        if done.returncode or not rows:
            raise BenchError(f"redis-benchmark failed:\n{done.stdout}{done.stderr}")
        checks = float(rows[-1].split(",")[1].strip('"'))
        results[f"pipeline_{pipeline}"] = {"pipeline": pipeline, "checks_per_s": round(checks)}
        print(f"redis limiter, pipeline {pipeline:>2}: {checks:>9.0f} checks/s")
    return results


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# kvkit capacity, {report['when']}",
        "",
        f"{report['machine']}; gunicorn {report['workers']} workers x KV_DB_THREADS"
        f" {report['db_threads']}; wrk -t{report['wrk_threads']} -c{report['wrk_connections']}"
        f" for {report['duration_s']} s; {report['items']:,} items.",
        "",
        "## CPU per request, and requests per second one core of each tier carries",
        "",
        "| workload | req/s (all on this machine) | kvkit ms | PostgreSQL ms | Redis ms"
        " | kvkit req/s/core | PostgreSQL req/s/core | Redis req/s/core |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report["per_request"].values():
        ms, core = row["cpu_ms_per_request"], row["rps_per_core"]
        lines.append(
            f"| {row['label']} | {row['rps']:,.0f} | {ms['kvkit']:.3f} | {ms['postgresql']:.3f}"
            f" | {ms['redis']:.3f} | {core['kvkit'] or 0:,} | {core['postgresql'] or 0:,}"
            f" | {core['redis'] or 0:,} |"
        )
    lines += [
        "",
        "## PostgreSQL: kvkit's statements under pgbench (-M prepared)",
        "",
        "| statement | connections | statements/s |",
        "|---|---:|---:|",
    ]
    for name, row in report["pgbench"].items():
        lines.append(f"| {name} | {row['connections']} | {row['tps']:,} |")
    lines += [
        "",
        "## Redis: the limiter's script under redis-benchmark (EVALSHA, 50 clients)",
        "",
        "| pipeline | checks/s |",
        "|---:|---:|",
    ]
    for row in report["redis"].values():
        lines.append(f"| {row['pipeline']} | {row['checks_per_s']:,} |")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> dict[str, Any]:
    api_key = secrets.token_hex(16)
    wrk = Wrk(require_wrk(), args.threads, args.connections, (f"X-API-Key: {api_key}",))
    args.reports.mkdir(parents=True, exist_ok=True)
    database_url = stack.ensure_database(args.postgres_url, args.database)
    stack.require_redis(args.redis_url)
    settings = {
        "DATABASE_URL": database_url,
        "REDIS_URL": args.redis_url,
        "KV_API_KEYS": api_key,
        "KV_RATE_LIMIT": UNREACHED_RATE_LIMIT,
        "KV_DB_THREADS": str(args.db_threads),
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "WARNING",
    }
    seed_items(database_url, args.items)
    per_request = per_request_cost(args, wrk, settings, database_url)
    pgbench = pgbench_ceiling(args, database_url)
    redis = redis_ceiling(args)
    return {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the end",
        "workers": args.workers,
        "db_threads": args.db_threads,
        "wrk_threads": args.threads,
        "wrk_connections": args.connections,
        "duration_s": args.duration,
        "items": args.items,
        "per_request": per_request,
        "pgbench": pgbench,
        "redis": redis,
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--db-threads", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections")
    parser.add_argument("--redis-requests", type=int, default=200_000)
    parser.add_argument("--postgres-url", default=stack.DEFAULT_POSTGRES_URL)
    parser.add_argument("--redis-url", default=stack.DEFAULT_REDIS_URL)
    parser.add_argument("--database", default="kvkit_capacity")
    parser.add_argument("--reports", type=Path, default=stack.REPORTS_DIR)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    stack.install_cleanup()
    try:
        report = run(args)
    except (BenchError, stack.StackError) as exc:
        print(f"capacity: {exc}", file=sys.stderr)
        return 1
    (args.reports / "capacity.json").write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(report)
    (args.reports / "capacity.md").write_text(table)
    print("\n" + table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
