"""The operations report, for anyone who reads cases (`core.report`: the KPIs and their
definitions):

    GET /reports?since=30d&process=P        a page: tables and SVG charts rendered here (no
                                            script: it works offline and prints)
    GET /reports.json?since=30d&process=P   the same report as JSON

Both read `case_outcomes` from the settings' database and the manual baseline from
`<policies_dir>/roi.yaml`; `podium report` prints the same numbers.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from html import escape
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from core.db import make_engine
from core.policy import policy_path
from core.report import (
    DEFAULT_BASELINE_FILE,
    Kpis,
    Report,
    build_report,
    load_baseline,
    parse_since,
    read_outcomes,
)
from core.settings import Settings
from starter.api.deps import Reader
from starter.api.problems import PROBLEM_RESPONSES
from starter.charts import Series, bar_chart
from starter.report import KPI_HEADERS, format_duration, format_rate, kpi_cells

__all__ = ["REPORT_HEADERS", "render_page", "router"]

# Everything is in the page but its stylesheet: no script, no inline style.
REPORT_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
BEFORE, AFTER, P95 = "#9aa5b1", "#2f6fde", "#e8833a"

Since = Annotated[
    str,
    Query(pattern=r"^\d+(\.\d+)?[mhdwMHDW]$", description="How far back: 24h, 7d, 4w"),
]
ProcessFilter = Annotated[str | None, Query(max_length=64, description="Only this process")]


def _settings(request: Request) -> Settings:
    settings = getattr(request.app.state, "settings", None)
    return settings if isinstance(settings, Settings) else Settings()


def _compute(settings: Settings, since: str, process: str | None) -> Report:
    window = parse_since(since)
    path = policy_path(settings.policies_dir, DEFAULT_BASELINE_FILE.stem)
    baseline = load_baseline(path)  # a broken file is the operator's: a logged 500 problem
    until = datetime.now(UTC)
    engine = make_engine(settings.resolved_database_url)
    try:
        rows = read_outcomes(engine, until - window, until, process)
    finally:
        engine.dispose()
    return build_report(rows, baseline, since=until - window, until=until, process=process)


def router() -> APIRouter:
    routes = APIRouter(tags=["reports"])

    @routes.get("/reports.json", response_model=Report, responses=PROBLEM_RESPONSES)
    async def report_json(
        request: Request, _: Reader, since: Since = "30d", process: ProcessFilter = None
    ) -> Report:
        """The operations KPIs per process and channel, and the ROI against the baseline."""
        return await asyncio.to_thread(_compute, _settings(request), since, process)

    @routes.get(
        "/reports",
        response_class=HTMLResponse,
        responses={200: {"content": {"text/html": {}}}, **PROBLEM_RESPONSES},
    )
    async def report_page(
        request: Request, _: Reader, since: Since = "30d", process: ProcessFilter = None
    ) -> HTMLResponse:
        """The report as a page: tables and bar charts (SVG rendered on the server)."""
        report = await asyncio.to_thread(_compute, _settings(request), since, process)
        return HTMLResponse(render_page(report, since), headers=REPORT_HEADERS)

    return routes


# --- the page -----------------------------------------------------------------------------------


def _percent(value: float) -> str:
    return f"{value * 100:.0f}%"


def _kpi_table(title: str, groups: list[Kpis], overall: Kpis, currency: str) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in [title, *KPI_HEADERS])
    body = "".join(
        f"<tr{' class=total' if group is overall else ''}><th scope=row>{escape(group.name)}</th>"
        + "".join(f"<td>{escape(cell)}</td>" for cell in kpi_cells(group, currency))
        + "</tr>"
        for group in [*groups, overall]
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _charts(report: Report) -> list[str]:
    names = [group.name for group in report.by_process]
    roi = report.roi
    return [
        bar_chart(
            "Containment by process (no person asked)",
            names,
            [Series("contained", [g.containment_rate for g in report.by_process], AFTER)],
            _percent,
            scale_max=1.0,
        ),
        bar_chart(
            f"Cost per case, manual vs Podium ({roi.currency})",
            [line.process for line in roi.lines],
            [
                Series("manual (before)", [ln.manual_cost_per_case for ln in roi.lines], BEFORE),
                Series("Podium (after)", [ln.podium_cost_per_case for ln in roi.lines], AFTER),
            ],
            lambda value: f"{value:,.2f}",
        ),
        bar_chart(
            "Time to resolution by process",
            names,
            [
                Series("p50", [g.resolution_p50_s for g in report.by_process], AFTER),
                Series("p95", [g.resolution_p95_s for g in report.by_process], P95),
            ],
            format_duration,
        ),
        bar_chart(
            "SLA attainment by process (cases a person was asked on)",
            names,
            [Series("within SLA", [g.sla_attainment for g in report.by_process], AFTER)],
            _percent,
            scale_max=1.0,
        ),
        bar_chart(
            "Containment by channel",
            [group.name for group in report.by_channel],
            [Series("contained", [g.containment_rate for g in report.by_channel], AFTER)],
            _percent,
            scale_max=1.0,
        ),
    ]


def render_page(report: Report, since: str) -> str:
    """The report as one HTML page: headline, charts, tables, ROI and its assumptions."""
    roi = report.roi
    currency = report.currency
    overall = report.overall
    scope = f" &middot; process {escape(report.process)}" if report.process else ""
    roi_rows = "".join(
        "<tr>"
        f"<th scope=row>{escape(line.process)}</th>"
        f"<td>{line.cases}</td><td>{line.cases_per_month:,.1f}</td>"
        f"<td>{line.manual_minutes_per_case:g}</td><td>{line.podium_minutes_per_case:.1f}</td>"
        f"<td>{line.manual_cost_per_case:,.2f}</td><td>{line.podium_cost_per_case:,.2f}</td>"
        f"<td>{line.savings_per_case:,.2f}</td><td>{line.savings_per_month:,.2f}</td>"
        "</tr>"
        for line in roi.lines
    )
    windows = " ".join(
        f'<a href="/reports?since={w}"{" aria-current=page" if w == since else ""}>{w}</a>'
        for w in ("24h", "7d", "30d", "90d")
    )
    tiles = [
        ("cases closed", str(overall.cases)),
        ("containment", format_rate(overall.containment_rate)),
        ("escalation", format_rate(overall.escalation_rate)),
        ("SLA attainment", format_rate(overall.sla_attainment)),
        ("resolution p50", format_duration(overall.resolution_p50_s)),
        (
            "cost per case",
            "-" if overall.cost_per_case is None else f"{overall.cost_per_case:,.2f} {currency}",
        ),
        ("savings per month", f"{roi.savings_per_month:,.2f} {roi.currency}"),
    ]
    tile_html = "".join(
        f'<div class="tile"><span class="value">{escape(value)}</span>'
        f'<span class="label">{escape(label)}</span></div>'
        for label, value in tiles
    )
    charts = "".join(f'<figure class="chart-box">{svg}</figure>' for svg in _charts(report))
    assumptions = "".join(f"<li>{escape(item)}</li>" for item in roi.assumptions)
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Podium report</title>
<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/static/reports.css">
</head>
<body>
<header>
<h1>Operations report</h1>
<p class="window">Cases closed {report.since:%Y-%m-%d %H:%M} to {report.until:%Y-%m-%d %H:%M} UTC
({report.days:g} days){scope} &middot; window: {windows}</p>
</header>
<main>
<section class="tiles" aria-label="Headline">{tile_html}</section>
<section class="charts" aria-label="Charts">{charts}</section>
<section>
<h2>Per process</h2>
{_kpi_table("Process", report.by_process, overall, currency)}
<h2>Per channel</h2>
{_kpi_table("Channel", report.by_channel, overall, currency)}
<p class="note">Contained: no person asked, of all cases. Escalated: the approval SLA passed, of
the cases a person was asked on. SLA met: within the SLA, of the cases a person was asked on
with one. P50/P95: start to close (nearest rank). Cost per case: the model cost recorded on the
case plus the baseline's review minutes times the cost of a person's minute, for the cases a
person was asked on.</p>
</section>
<section>
<h2>Return on investment: manual baseline vs Podium</h2>
<p class="headline">Savings per month: <strong>{roi.savings_per_month:,.2f} {escape(roi.currency)}
</strong></p>
<table>
<thead><tr><th>Process</th><th>N</th><th>Cases/month</th><th>Manual min/case</th>
<th>Podium min/case</th><th>Manual cost/case</th><th>Podium cost/case</th>
<th>Saved/case</th><th>Saved/month</th></tr></thead>
<tbody>{roi_rows}</tbody>
</table>
<h3>Assumptions</h3>
<ul class="assumptions">{assumptions}</ul>
</section>
</main>
</body>
</html>
"""
