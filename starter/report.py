"""`podium report`: the operations KPIs and the ROI of the cases closed in a window.

    podium report [--since 7d] [--process P] [--baseline FILE] [--json]

Like `podium audit`, it reads the database directly (`--database-url`, env
`PODIUM_DATABASE_URL`, default the local SQLite under `PODIUM_DATA_DIR`): the `case_outcomes`
rows the worker writes at each case's close. The manual baseline is `policies/roi.yaml`
(`--baseline`). The KPIs and their definitions are `core.report`'s; the API serves the same
report at `GET /reports` (a page with charts) and `GET /reports.json`.

Exit codes: 0 shown, 1 the baseline file does not load, 2 the database cannot be read.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

if TYPE_CHECKING:
    from core.report import Kpis, Report

__all__ = ["add_report_command", "format_duration", "format_rate", "render_text"]

EXIT_BAD_BASELINE = 1
EXIT_UNREADABLE = 2


def _fail(message: str, code: int) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def format_rate(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes}m {int(seconds % 60):02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h"


def _money(value: float | None, currency: str) -> str:
    return "-" if value is None else f"{value:,.2f} {currency}"


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
    lines = []
    for row in [headers, *rows]:
        cells = [
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


KPI_HEADERS = [
    "N",
    "CONTAINED",
    "ESCALATED",
    "SLA MET",
    "P50",
    "P95",
    "COST/CASE",
]


def kpi_cells(group: Kpis, currency: str) -> list[str]:
    return [
        str(group.cases),
        format_rate(group.containment_rate),
        format_rate(group.escalation_rate),
        format_rate(group.sla_attainment),
        format_duration(group.resolution_p50_s),
        format_duration(group.resolution_p95_s),
        _money(group.cost_per_case, currency),
    ]


def render_text(report: Report) -> str:
    """The report as plain tables for a terminal."""
    currency = report.currency
    scope = f", process {report.process}" if report.process else ""
    lines = [
        f"Cases closed {report.since:%Y-%m-%d %H:%M} to {report.until:%Y-%m-%d %H:%M} UTC "
        f"({report.days:g} days{scope}): {report.overall.cases}",
        "",
    ]
    groups = [("PROCESS", report.by_process), ("CHANNEL", report.by_channel)]
    for title, rows in groups:
        table = [[g.name, *kpi_cells(g, currency)] for g in rows]
        table.append([f"all ({title.lower()}s)", *kpi_cells(report.overall, currency)])
        lines += [*_table([title, *KPI_HEADERS], table), ""]
    lines.append(
        "CONTAINED: no person asked / N. ESCALATED: approval SLA passed / cases a person was "
        "asked on. SLA MET: within the SLA / cases a person was asked on. P50/P95: start to "
        "close. COST/CASE: model cost + review minutes x a person's minute."
    )
    roi = report.roi
    lines += ["", f"ROI against the manual baseline ({roi.baseline_version}):"]
    table = [
        [
            line.process,
            f"{line.cases_per_month:,.1f}",
            f"{line.manual_minutes_per_case:g} -> {line.podium_minutes_per_case:.1f}",
            f"{line.manual_cost_per_case:,.2f} -> {line.podium_cost_per_case:,.2f}",
            f"{line.savings_per_case:,.2f}",
            f"{line.savings_per_month:,.2f}",
        ]
        for line in roi.lines
    ]
    headers = [
        "PROCESS",
        "CASES/MONTH",
        "MINUTES/CASE",
        f"COST/CASE ({roi.currency})",
        "SAVED/CASE",
        "SAVED/MONTH",
    ]
    lines += _table(headers, table)
    lines += [
        "",
        f"Savings per month: {roi.savings_per_month:,.2f} {roi.currency}",
        "Assumptions:",
        *(f"  - {item}" for item in roi.assumptions),
    ]
    return "\n".join(lines)


DatabaseOption = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="PODIUM_DATABASE_URL",
        help="SQLAlchemy URL of the database (default: the local SQLite under PODIUM_DATA_DIR).",
        show_default=False,
    ),
]


def add_report_command(cli: typer.Typer) -> None:
    """Register `report` on the `podium` command."""

    @cli.command("report")
    def report_command(
        since: Annotated[
            str, typer.Option(help="How far back: 24h, 7d, 4w (cases closed since then).")
        ] = "30d",
        process: Annotated[
            str | None, typer.Option(help="Only this process's cases.", show_default=False)
        ] = None,
        baseline: Annotated[
            Path | None,
            typer.Option(
                help="The manual baseline (default: policies/roi.yaml).",
                dir_okay=False,
                show_default=False,
            ),
        ] = None,
        database_url: DatabaseOption = None,
        json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    ) -> None:
        """Containment, escalation, SLA attainment, time to resolution, cost per case (per
        process and channel) and the savings against the manual baseline.

        Reads the database directly, not through the HTTP API."""
        from sqlalchemy.exc import SQLAlchemyError

        from core.db import make_engine
        from core.policy import PolicyError
        from core.report import (
            DEFAULT_BASELINE_FILE,
            build_report,
            load_baseline,
            parse_since,
            read_outcomes,
        )
        from core.settings import Settings

        try:
            window = parse_since(since)
        except ValueError as err:
            raise typer.BadParameter(str(err), param_hint="--since") from None
        try:
            roi = load_baseline(baseline or DEFAULT_BASELINE_FILE)
        except PolicyError as err:
            _fail("; ".join(err.errors), EXIT_BAD_BASELINE)
        url = database_url or Settings().resolved_database_url
        if url.startswith("sqlite"):
            path = url.split("///", 1)[-1]
            if path and path != ":memory:" and not Path(path).is_file():
                _fail(f"no database at {path} (set --database-url or PODIUM_DATABASE_URL)", 2)
        until = datetime.now(UTC)
        engine = make_engine(url)
        try:
            rows = read_outcomes(engine, until - window, until, process)
        except SQLAlchemyError as err:
            orig = getattr(err, "orig", None)  # the driver's own message, without the SQL
            reason = (str(orig if orig is not None else err).splitlines() or ["?"])[0]
            _fail(f"cannot read the case outcomes: {reason}", EXIT_UNREADABLE)
        finally:
            engine.dispose()
        report = build_report(rows, roi, since=until - window, until=until, process=process)
        if json_output:
            typer.echo(json.dumps(report.model_dump(mode="json"), indent=2))
        else:
            typer.echo(render_text(report))
