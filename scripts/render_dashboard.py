"""Draw the Grafana dashboard from a live Prometheus into a PNG, since Grafana is not at hand.

Every panel of monitoring/grafana/dashboards/kvkit.json is queried through Prometheus'
/api/v1/query_range with the dashboard's variables resolved as Grafana resolves "All" (the label
values Prometheus holds), and drawn at its gridPos with its title, legend and unit:

    python scripts/render_dashboard.py --prometheus http://127.0.0.1:9090 \
        --output docs/dashboard.png --minutes 5

The live monitoring test (tests/monitoring/test_live_prometheus.py) calls `render` on its own
run when KV_RENDER_DASHBOARD names the output file.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import time
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DASHBOARD = REPO / "monitoring" / "grafana" / "dashboards" / "kvkit.json"

_LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.+),\s*(?P<label>\w+)\)$")
_LEGEND = re.compile(r"\{\{\s*(\w+)\s*\}\}")


class PrometheusAPI:
    """The few HTTP API calls a dashboard needs; raises on any non-success answer."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def get(self, path: str, **params: str | list[str]) -> Any:
        """GET an API path and return its `data`."""
        query = urllib.parse.urlencode(params, doseq=True)
        with urllib.request.urlopen(  # noqa: S310  # nosec B310  # an http(s) URL the caller gave
            f"{self.url}{path}?{query}", timeout=self.timeout
        ) as response:
            body = json.load(response)
        if body.get("status") != "success":
            raise RuntimeError(f"{path} {params}: {body}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant vector of `expr` now: [{"metric": {...}, "value": [t, "v"]}, ...]."""
        data = self.get("/api/v1/query", query=expr)
        if data["resultType"] != "vector":
            raise RuntimeError(f"{expr} is a {data['resultType']}, not a vector")
        result: list[dict[str, Any]] = data["result"]
        return result

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        """Range matrix of `expr`: [{"metric": {...}, "values": [[t, "v"], ...]}, ...]."""
        data = self.get(
            "/api/v1/query_range", query=expr, start=str(start), end=str(end), step=str(step)
        )
        result: list[dict[str, Any]] = data["result"]
        return result

    def label_values(self, selector: str, label: str) -> list[str]:
        """Values of `label` on the series `selector` matches, as Grafana's label_values()."""
        series = self.get("/api/v1/series", **{"match[]": [selector]})
        return sorted({entry[label] for entry in series if entry.get(label)})


@dataclass(frozen=True)
class Target:
    """One query of a panel, with the dashboard variables already substituted."""

    expr: str
    legend: str


@dataclass(frozen=True)
class Panel:
    """A panel (or a row header, without targets) where the dashboard puts it."""

    title: str
    kind: str
    unit: str
    grid: Mapping[str, int]
    targets: tuple[Target, ...]


def load_dashboard(path: Path = DASHBOARD) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def substitute(text: str, variables: Mapping[str, str]) -> str:
    """Replace `$name` and `${name}` as Grafana does, longest names first."""
    for name in sorted(variables, key=len, reverse=True):
        text = text.replace("${" + name + "}", variables[name]).replace("$" + name, variables[name])
    return text


def resolve_variables(
    api: PrometheusAPI, dashboard: Mapping[str, Any], overrides: Mapping[str, str]
) -> dict[str, str]:
    """Each query variable as Grafana's "All" makes it: `(v1|v2)` of the values Prometheus has.

    A variable with no values at all (no `namespace` label outside Kubernetes) becomes `.*`,
    which also matches a missing label; `overrides` win over both.
    """
    resolved: dict[str, str] = {}
    for variable in dashboard.get("templating", {}).get("list", []):
        name = variable["name"]
        if name in overrides:
            resolved[name] = overrides[name]
            continue
        if variable.get("type") != "query":
            continue
        definition = variable.get("definition") or variable["query"]["query"]
        match = _LABEL_VALUES.match(substitute(definition, resolved))
        if match is None:
            raise ValueError(f"variable {name}: unsupported query {definition!r}")
        values = api.label_values(match["selector"], match["label"])
        # Escaped for the regex, then again for PromQL's string literal, as Grafana does.
        alternatives = "|".join(re.escape(value).replace("\\", "\\\\") for value in values)
        resolved[name] = f"({alternatives})" if values else ".*"
    return {**resolved, **overrides}


def panels(dashboard: Mapping[str, Any], variables: Mapping[str, str]) -> list[Panel]:
    """Every panel and row header in dashboard order, targets substituted with `variables`."""
    found = []
    for raw in dashboard["panels"]:
        targets = tuple(
            Target(substitute(target["expr"], variables), target.get("legendFormat", ""))
            for target in raw.get("targets", [])
        )
        unit = raw.get("fieldConfig", {}).get("defaults", {}).get("unit", "short")
        found.append(Panel(raw["title"], raw["type"], unit, raw["gridPos"], targets))
    return found


def legend(template: str, labels: Mapping[str, str]) -> str:
    """A series' name from Grafana's legendFormat (`{{route}}`), or its labels."""
    if template:
        return _LEGEND.sub(lambda match: labels.get(match[1], ""), template).strip()
    return ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) or "value"


def _format(value: float, unit: str) -> str:
    if unit == "percentunit":
        return f"{value:.0%}" if abs(value) >= 0.1 or value == 0 else f"{value:.1%}"
    if unit == "s":
        return f"{value * 1000:.0f} ms" if 0 < abs(value) < 1 else f"{value:.3g} s"
    if unit == "bytes":
        return f"{value / 2**20:.0f} MiB"
    suffix = {"reqps": " req/s", "ops": "/s"}.get(unit, "")
    return f"{value:.3g}{suffix}"


# Grafana's dark theme, so the picture reads like the dashboard it stands for.
_BACKGROUND = "#111217"
_PANEL = "#181b1f"
_TEXT = "#ccccdc"
_GRID = "#2c3235"
_COLORS = ["#73bf69", "#f2cc0c", "#8ab8ff", "#ff780a", "#f2495c", "#5794f2", "#b877d9", "#fade2a"]


def render(
    api: PrometheusAPI,
    output: Path,
    *,
    start: float,
    end: float,
    step: float = 2.0,
    variables: Mapping[str, str] | None = None,
    dashboard: Mapping[str, Any] | None = None,
) -> dict[str, int]:
    """Draw every panel over [start, end] into `output`; the number of series per panel title."""
    import matplotlib

    matplotlib.use("Agg")  # no display: write the file only
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    dashboard = dashboard or load_dashboard()
    resolved = resolve_variables(api, dashboard, variables or {})
    layout = panels(dashboard, resolved)
    rows = max(p.grid["y"] + p.grid["h"] for p in layout)
    unit_in = 0.28  # inches per grid unit of height; a width unit is 1/24 of the figure
    figure = plt.figure(figsize=(24 * 0.85, rows * unit_in), facecolor=_BACKGROUND)
    counts: dict[str, int] = {}
    for panel in layout:
        x, y, w, h = (panel.grid[k] for k in ("x", "y", "w", "h"))
        if panel.kind == "row":
            figure.text(
                x / 24 + 0.005,
                1 - (y + 0.7) / rows,
                panel.title,
                color=_TEXT,
                fontsize=15,
                fontweight="bold",
            )
            continue
        # The plot area inside the panel's cell: room left for the y ticks, below for the time
        # axis and above for the title.
        left, right, below, above = 0.04, 0.008, 1.0 / rows, 0.9 / rows
        box = (x / 24 + left, 1 - (y + h) / rows + below, w / 24 - left - right, h / rows)
        axes = figure.add_axes((box[0], box[1], box[2], box[3] - below - above))
        axes.set_facecolor(_PANEL)
        axes.set_title(panel.title, color=_TEXT, fontsize=11, loc="left")
        count = 0
        for target in panel.targets:
            for series in api.query_range(target.expr, start, end, step):
                times = [mdates.date2num(_utc(float(t))) for t, _ in series["values"]]
                values = [_number(v) for _, v in series["values"]]
                axes.plot(
                    times,
                    values,
                    linewidth=1.4,
                    color=_COLORS[count % len(_COLORS)],
                    label=legend(target.legend, series["metric"]),
                )
                count += 1
        counts[panel.title] = count
        axes.set_xlim(mdates.date2num(_utc(start)), mdates.date2num(_utc(end)))
        axes.set_ylim(bottom=0)
        axes.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
        axes.yaxis.set_major_formatter(FuncFormatter(lambda v, _, u=panel.unit: _format(v, u)))
        axes.tick_params(colors=_TEXT, labelsize=8)
        axes.grid(color=_GRID, linewidth=0.6)
        for spine in axes.spines.values():
            spine.set_color(_GRID)
        if count:
            axes.legend(
                loc="upper left",
                fontsize=7,
                ncol=2 if count > 6 else 1,
                facecolor=_PANEL,
                edgecolor=_GRID,
                labelcolor=_TEXT,
                framealpha=0.8,
            )
        else:
            axes.text(
                0.5, 0.5, "No data", color=_TEXT, ha="center", va="center", transform=axes.transAxes
            )
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=72, facecolor=_BACKGROUND)
    plt.close(figure)
    return counts


def _utc(timestamp: float) -> Any:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(timestamp, UTC)


def _number(value: str) -> float:
    number = float(value)
    return number if math.isfinite(number) else math.nan


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prometheus", default="http://127.0.0.1:9090")
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "dashboard.png")
    parser.add_argument("--minutes", type=float, default=15.0, help="time range ending now")
    parser.add_argument("--step", type=float, default=0.0, help="seconds; 0: range / 300")
    parser.add_argument(
        "--rate-interval", default="1m", help="what $__rate_interval stands for (default 1m)"
    )
    parser.add_argument(
        "--var",
        action="append",
        default=[],
        metavar="NAME=REGEX",
        help="fix a dashboard variable instead of resolving it from Prometheus",
    )
    args = parser.parse_args(argv)
    end = time.time()
    start = end - args.minutes * 60
    overrides = dict(item.split("=", 1) for item in args.var)
    overrides["__rate_interval"] = args.rate_interval
    counts = render(
        PrometheusAPI(args.prometheus),
        args.output,
        start=start,
        end=end,
        step=args.step or max((end - start) / 300, 1.0),
        variables=overrides,
    )
    for title, count in counts.items():
        print(f"{count:3d} series  {title}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
