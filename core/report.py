"""The operations report: KPIs from closed cases (`case_outcomes`) and the ROI against a manual
baseline (`policies/roi.yaml`).

Pure, but for `read_outcomes` (the rows of a window) and `load_baseline` (the file): the same
rows and baseline always give the same report. Every KPI carries its N, and each rate names its
denominator:

- containment: cases no person was asked on (`automated`) / all cases;
- escalation: cases a person was asked on whose approval SLA passed (`sla_met` false) / all
  cases a person was asked on (what a breach does: the case escalates to the next level);
- SLA attainment: cases a person was asked on within the SLA / cases a person was asked on
  (none asked: no figure);
- time to resolution p50 / p95: start to close, nearest-rank percentiles (always a real case's
  time);
- cost per case: the model cost recorded on the case, plus, when a person was asked, the
  baseline's `review_minutes` of the process times the cost of a person's minute;
- ROI: (manual cost per case - Podium cost per case) x cases per month, per process with a
  baseline; cases per month extrapolated from the window (a month is 30 days).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import inspect
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from core.db import CaseOutcome
from core.policy import DEFAULT_POLICIES_DIR, load_policy_model

__all__ = [
    "DAYS_PER_MONTH",
    "DEFAULT_BASELINE_FILE",
    "Kpis",
    "ProcessBaseline",
    "Report",
    "RoiBaseline",
    "RoiLine",
    "RoiSummary",
    "build_report",
    "load_baseline",
    "parse_since",
    "percentile",
    "read_outcomes",
]

DEFAULT_BASELINE_FILE = DEFAULT_POLICIES_DIR / "roi.yaml"
DAYS_PER_MONTH = 30
NO_CHANNEL = "none"

_Minutes = Annotated[float, Field(ge=0)]
_Money = Annotated[float, Field(ge=0)]


class ProcessBaseline(BaseModel):
    """One process's manual baseline: what a case costs without Podium, and a person's time on
    a Podium case that asks them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    manual_minutes: _Minutes = Field(description="A person's minutes on a case without Podium")
    manual_cost: _Money | None = Field(
        default=None,
        description="Cost of a case without Podium; default manual_minutes x person_minute_cost",
    )
    review_minutes: _Minutes = Field(
        description="A person's minutes on a Podium case that asks them (reading, deciding)"
    )


class RoiBaseline(BaseModel):
    """`policies/roi.yaml`: the manual baseline the report compares against (unknown fields
    are refused). `digest` is the file's short sha256, never the file's to set."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str = Field(min_length=1)
    digest: str = ""
    currency: str = Field(default="USD", min_length=3, max_length=3)
    person_minute_cost: _Money = Field(description="Loaded cost of a person's minute")
    processes: dict[str, ProcessBaseline] = Field(default_factory=dict)

    def manual_cost(self, process: str) -> float | None:
        line = self.processes.get(process)
        if line is None:
            return None
        if line.manual_cost is not None:
            return line.manual_cost
        return line.manual_minutes * self.person_minute_cost


class Kpis(BaseModel):
    """The KPIs of one group of cases (all, a process, a channel)."""

    name: str
    cases: int
    automated: int
    person_asked: int
    escalated: int
    sla_met: int
    containment_rate: float | None
    escalation_rate: float | None
    sla_attainment: float | None
    resolution_p50_s: float | None
    resolution_p95_s: float | None
    model_cost: float
    person_minutes: float
    cost_per_case: float | None


class RoiLine(BaseModel):
    """Before (manual baseline) and after (Podium, as measured) for one process."""

    process: str
    cases: int
    cases_per_month: float
    manual_minutes_per_case: float
    podium_minutes_per_case: float
    manual_cost_per_case: float
    podium_cost_per_case: float
    savings_per_case: float
    savings_per_month: float


class RoiSummary(BaseModel):
    currency: str
    baseline_version: str
    baseline_digest: str
    lines: list[RoiLine]
    savings_per_month: float
    without_baseline: list[str] = Field(description="Processes in the window with no baseline")
    assumptions: list[str]


class Report(BaseModel):
    since: datetime
    until: datetime
    days: float
    process: str | None
    currency: str
    overall: Kpis
    by_process: list[Kpis]
    by_channel: list[Kpis]
    roi: RoiSummary


# --- reading ------------------------------------------------------------------------------------


def load_baseline(path: Path = DEFAULT_BASELINE_FILE) -> RoiBaseline:
    """The baseline file, validated; `PolicyError` ('file: field: message' lines) otherwise."""
    return load_policy_model(path, RoiBaseline, shape="version, processes, ...")


_UNITS = {"m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}


def parse_since(text: str) -> timedelta:
    """`30m`, `24h`, `7d`, `2w`: how far back the report looks."""
    value, unit = text.strip()[:-1], text.strip()[-1:].lower()
    try:
        amount = float(value)
    except ValueError:
        amount = -1.0
    if unit not in _UNITS or not amount > 0 or not math.isfinite(amount):
        raise ValueError(f"not a duration: {text!r} (a number and m, h, d or w: 7d, 24h)")
    return timedelta(seconds=amount * _UNITS[unit])


def read_outcomes(
    engine: Engine, since: datetime, until: datetime, process: str | None = None
) -> list[CaseOutcome]:
    """The cases closed in [since, until), oldest first; none when the table is not there yet
    (no worker has started on this database)."""
    if not inspect(engine).has_table(CaseOutcome.__tablename__):
        return []
    query = select(CaseOutcome).where(
        col(CaseOutcome.closed_at) >= since, col(CaseOutcome.closed_at) < until
    )
    if process is not None:
        query = query.where(col(CaseOutcome.process) == process)
    with Session(engine) as session:
        rows = list(session.exec(query.order_by(col(CaseOutcome.closed_at))))
        for row in rows:
            session.expunge(row)
    return rows


# --- KPIs ---------------------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest rank: the smallest value with at least p% of the values at or below it."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _person_minutes(row: CaseOutcome, baseline: RoiBaseline) -> float:
    line = baseline.processes.get(row.process)
    return line.review_minutes if line is not None and not row.automated else 0.0


def kpis(name: str, rows: Sequence[CaseOutcome], baseline: RoiBaseline) -> Kpis:
    asked = [row for row in rows if not row.automated]
    escalated = sum(1 for row in asked if row.sla_met is False)
    met = sum(1 for row in asked if row.sla_met is True)
    with_sla = sum(1 for row in asked if row.sla_met is not None)
    durations = [row.resolution_s for row in rows]
    model_cost = sum(row.model_cost_usd for row in rows)
    minutes = sum(_person_minutes(row, baseline) for row in rows)
    total_cost = model_cost + minutes * baseline.person_minute_cost
    return Kpis(
        name=name,
        cases=len(rows),
        automated=len(rows) - len(asked),
        person_asked=len(asked),
        escalated=escalated,
        sla_met=met,
        containment_rate=_ratio(len(rows) - len(asked), len(rows)),
        escalation_rate=_ratio(escalated, len(asked)),
        sla_attainment=_ratio(met, with_sla),
        resolution_p50_s=percentile(durations, 50),
        resolution_p95_s=percentile(durations, 95),
        model_cost=model_cost,
        person_minutes=minutes,
        cost_per_case=total_cost / len(rows) if rows else None,
    )


def _grouped(
    rows: Iterable[CaseOutcome], key: Callable[[CaseOutcome], str], baseline: RoiBaseline
) -> list[Kpis]:
    groups: dict[str, list[CaseOutcome]] = {}
    for row in rows:
        groups.setdefault(key(row), []).append(row)
    return [kpis(name, groups[name], baseline) for name in sorted(groups)]


def _roi(by_process: list[Kpis], baseline: RoiBaseline, days: float) -> RoiSummary:
    lines: list[RoiLine] = []
    missing: list[str] = []
    for group in by_process:
        spec = baseline.processes.get(group.name)
        manual_cost = baseline.manual_cost(group.name)
        if spec is None or manual_cost is None or group.cost_per_case is None:
            missing.append(group.name)
            continue
        per_month = group.cases * DAYS_PER_MONTH / days
        saving = manual_cost - group.cost_per_case
        lines.append(
            RoiLine(
                process=group.name,
                cases=group.cases,
                cases_per_month=per_month,
                manual_minutes_per_case=spec.manual_minutes,
                podium_minutes_per_case=group.person_minutes / group.cases,
                manual_cost_per_case=manual_cost,
                podium_cost_per_case=group.cost_per_case,
                savings_per_case=saving,
                savings_per_month=saving * per_month,
            )
        )
    currency = baseline.currency
    assumptions = [
        f"baseline {baseline.version} (policies/roi.yaml, digest {baseline.digest})",
        f"a person's minute costs {baseline.person_minute_cost:.2f} {currency}",
        f"cases per month = cases in the window x {DAYS_PER_MONTH} / {days:g} days",
        "Podium cost per case = model cost recorded on the case + review minutes x the cost of "
        "a person's minute, for the cases a person was asked on",
        "model costs are recorded in USD and added as they are",
    ]
    for name in sorted(baseline.processes):
        spec = baseline.processes[name]
        assumptions.append(
            f"{name}: manual {spec.manual_minutes:g} min, "
            f"{baseline.manual_cost(name) or 0:.2f} {currency} per case; "
            f"a person's review on Podium {spec.review_minutes:g} min"
        )
    if missing:
        assumptions.append(f"no baseline, no ROI: {', '.join(missing)}")
    return RoiSummary(
        currency=currency,
        baseline_version=baseline.version,
        baseline_digest=baseline.digest,
        lines=lines,
        savings_per_month=sum(line.savings_per_month for line in lines),
        without_baseline=missing,
        assumptions=assumptions,
    )


def build_report(
    rows: Sequence[CaseOutcome],
    baseline: RoiBaseline,
    *,
    since: datetime,
    until: datetime,
    process: str | None = None,
) -> Report:
    """The report of `rows` (the cases closed in [since, until))."""
    days = max((until - since).total_seconds() / 86_400, 1 / 1440)
    by_process = _grouped(rows, lambda row: row.process, baseline)
    return Report(
        since=since.astimezone(UTC) if since.tzinfo else since.replace(tzinfo=UTC),
        until=until.astimezone(UTC) if until.tzinfo else until.replace(tzinfo=UTC),
        days=days,
        process=process,
        currency=baseline.currency,
        overall=kpis("all", rows, baseline),
        by_process=by_process,
        by_channel=_grouped(rows, lambda row: row.channel or NO_CHANNEL, baseline),
        roi=_roi(by_process, baseline, days),
    )
