"""`make load`: run a Locust scenario against the production configuration and judge the result.

Starts gunicorn with gunicorn.conf.py on PostgreSQL and Redis, with one API key per user,
runs Locust headless for a bounded time, stops the server, and exits non-zero when the error
ratio or the 95th percentile exceed the thresholds given. Reports (CSV, HTML, server log) go to
loadtests/reports/.

    python loadtests/run_load.py --run-time 15s --users 5 --max-error-ratio 0.01 --max-p95-ms 500
    python loadtests/run_load.py --scenario ratelimit --run-time 10s --users 3
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import re
import secrets
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadtests import stack

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
EXIT_OK, EXIT_THRESHOLDS, EXIT_HARNESS = 0, 1, 2


@dataclass(frozen=True)
class Verdict:
    """The judged totals of one run; `violations` is empty when every threshold held."""

    requests: int
    failures: int
    p95_ms: float | None
    violations: list[str] = field(default_factory=list)

    @property
    def error_ratio(self) -> float:
        return self.failures / self.requests if self.requests else 0.0

    @property
    def passed(self) -> bool:
        return not self.violations


def read_stats(stats_csv: Path) -> list[dict[str, str]]:
    """The rows of Locust's `<prefix>_stats.csv`, the Aggregated row last."""
    with stats_csv.open(newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def evaluate(rows: list[dict[str, str]], max_error_ratio: float, max_p95_ms: float) -> Verdict:
    """Judge the Aggregated row of a Locust stats CSV against the thresholds."""
    total = next((row for row in rows if row["Name"] == "Aggregated"), None)
    if total is None:
        return Verdict(0, 0, None, ["the stats CSV has no Aggregated row"])
    requests, failures = int(total["Request Count"]), int(total["Failure Count"])
    p95 = None if total["95%"] in ("", "N/A") else float(total["95%"])
    violations = []
    if requests == 0:
        violations.append("no requests were made")
    elif failures / requests > max_error_ratio:
        violations.append(f"error ratio {failures / requests:.4f} > {max_error_ratio}")
    if p95 is not None and p95 > max_p95_ms:
        violations.append(f"p95 {p95:.0f} ms > {max_p95_ms:.0f} ms")
    return Verdict(requests, failures, p95, violations)


def api_keys(seed: str, count: int) -> list[str]:
    """`count` distinct keys derived from `seed`: the same seed gives the same keys."""
    return [hashlib.sha256(f"{seed}:{n}".encode()).hexdigest()[:32] for n in range(count)]


def seconds(timespan: str) -> int:
    """Locust's --run-time format (`30s`, `2m`, `1h30m`, `90`) in seconds."""
    if timespan.isdigit():
        return int(timespan)
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", timespan)
    if not timespan or parts is None:
        raise argparse.ArgumentTypeError(f"not a duration like 30s, 2m or 1h30m: {timespan!r}")
    hours, minutes, secs = (int(part or 0) for part in parts.groups())
    return hours * 3600 + minutes * 60 + secs


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", choices=("crud", "ratelimit"), default="crud")
    parser.add_argument("--users", type=int, default=10)
    parser.add_argument("--spawn-rate", type=float, default=5)
    parser.add_argument("--run-time", default="30s", help="Locust duration, e.g. 15s, 2m")
    parser.add_argument("--shape", choices=("steady", "ramp"), default="steady")
    parser.add_argument("--max-error-ratio", type=float, default=0.01)
    parser.add_argument("--max-p95-ms", type=float, default=500)
    parser.add_argument("--workers", type=int, default=2, help="GUNICORN_WORKERS")
    parser.add_argument("--rate-limit", default="60/minute", help="KV_RATE_LIMIT")
    parser.add_argument("--key-seed", default=None, help="API key seed (default: fresh per run)")
    parser.add_argument("--postgres-url", default=stack.DEFAULT_POSTGRES_URL)
    parser.add_argument("--database", default=stack.DEFAULT_DATABASE)
    parser.add_argument("--redis-url", default=stack.DEFAULT_REDIS_URL)
    parser.add_argument("--reports", type=Path, default=stack.REPORTS_DIR)
    args = parser.parse_args(argv)
    args.run_seconds = seconds(args.run_time)
    if args.users < 1 or args.run_seconds < 1:
        parser.error("--users and --run-time must be positive")
    return args


def run(args: argparse.Namespace) -> int:
    args.reports.mkdir(parents=True, exist_ok=True)
    prefix = args.reports / f"load-{args.scenario}"
    tally_path, stats_csv = Path(f"{prefix}-tally.json"), Path(f"{prefix}_stats.csv")
    for stale in (tally_path, stats_csv):
        stale.unlink(missing_ok=True)
    # A fresh seed by default: Redis keeps a key's bucket for a window, a rerun starts clean.
    # One key per user, and one more for the warm-up so no user's budget is spent on it.
    *keys, warmup_key = api_keys(args.key_seed or secrets.token_hex(8), args.users + 1)

    database_url = stack.ensure_database(args.postgres_url, args.database)
    stack.require_redis(args.redis_url)
    settings = {
        "DATABASE_URL": database_url,
        "REDIS_URL": args.redis_url,
        "KV_API_KEYS": ",".join([*keys, warmup_key]),
        "KV_RATE_LIMIT": args.rate_limit,
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
    }
    log_path = Path(f"{prefix}-server.log")
    with stack.running_gunicorn(
        "app.main:app", settings, workers=args.workers, log_path=log_path
    ) as server:
        print(f"kvkit on {server.url} ({args.workers} workers); server log: {log_path}")
        warm_up(server.url, warmup_key)
        locust = stack.ManagedProcess(
            locust_command(args, server.url, prefix),
            stack.service_env(
                KV_LOAD_API_KEYS=",".join(keys),
                KV_LOAD_SCENARIO=args.scenario,
                KV_LOAD_SHAPE="ramp" if args.shape == "ramp" else "",
                KV_LOAD_RATE_LIMIT=args.rate_limit,
                KV_LOAD_TALLY_FILE=str(tally_path),
            ),
            log_path=Path(f"{prefix}-locust.log"),
        )
        locust.start()
        try:
            status = locust.wait(timeout=args.run_seconds + 60)
        except subprocess.TimeoutExpired:
            print("locust did not stop in time; killed", file=sys.stderr)
            return EXIT_HARNESS

    # Locust exits 1 when any request failed, which the thresholds judge; anything else is a crash.
    if status not in (0, 1) or not stats_csv.exists():
        print(f"locust exited with {status}:\n{locust.log_tail()}", file=sys.stderr)
        return EXIT_HARNESS
    rows = read_stats(stats_csv)
    verdict = evaluate(rows, args.max_error_ratio, args.max_p95_ms)
    if args.scenario == "ratelimit":
        verdict = judge_tally(verdict, tally_path)
    print_summary(rows, verdict, args, prefix)
    return EXIT_OK if verdict.passed else EXIT_THRESHOLDS


def warm_up(url: str, api_key: str, requests: int = 20) -> None:
    """Open every worker's database and Redis connections before anything is measured."""
    for _ in range(requests):
        stack.http_get(f"{url}/v1/items?limit=1", {"X-API-Key": api_key})


def locust_command(args: argparse.Namespace, host: str, prefix: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--host",
        host,
        "--users",
        str(args.users),
        "--spawn-rate",
        str(args.spawn_rate),
        "--run-time",
        args.run_time,
        "--stop-timeout",
        "5",
        "--csv",
        str(prefix),
        "--html",
        f"{prefix}.html",
        "--only-summary",
        "--loglevel",
        "WARNING",
    ]


def judge_tally(verdict: Verdict, tally_path: Path) -> Verdict:
    """In the ratelimit scenario the limiter must have answered 429 at least once."""
    tally = json.loads(tally_path.read_text()) if tally_path.exists() else {}
    limited = int(tally.get("limited", 0))
    print(f"ratelimit: {tally.get('allowed', 0)} allowed, {limited} limited (429)")
    if limited:
        return verdict
    reason = "no 429 seen: the limiter never engaged (run longer or with a lower --rate-limit)"
    return Verdict(
        verdict.requests, verdict.failures, verdict.p95_ms, [*verdict.violations, reason]
    )


def print_summary(
    rows: list[dict[str, str]], verdict: Verdict, args: argparse.Namespace, prefix: Path
) -> None:
    print(
        f"\n{'method':<8} {'name':<28} {'requests':>9} {'failures':>9} {'p50 ms':>7} {'p95 ms':>7}"
    )
    for row in rows:
        print(
            f"{row['Type']:<8} {row['Name']:<28} {row['Request Count']:>9} "
            f"{row['Failure Count']:>9} {row['50%']:>7} {row['95%']:>7}"
        )
    p95 = "n/a" if verdict.p95_ms is None else f"{verdict.p95_ms:.0f} ms"
    print(
        f"\n{args.scenario}: {verdict.requests} requests, error ratio {verdict.error_ratio:.4f}"
        f" (max {args.max_error_ratio}), p95 {p95} (max {args.max_p95_ms:.0f} ms)"
    )
    print(f"reports: {prefix}_stats.csv, {prefix}.html, {prefix}-locust.log")
    if verdict.passed:
        print("PASS")
    else:
        print("FAIL: " + "; ".join(verdict.violations))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stack.install_cleanup()
    try:
        return run(args)
    except stack.StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_HARNESS


if __name__ == "__main__":
    sys.exit(main())
