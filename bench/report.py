"""Phase measurements and the report: percentiles, ratios, the printed table and the JSON."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

__all__ = ["PhaseResult", "Spread", "percentile", "ratios", "render_table"]


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), linear between closest ranks; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class Spread:
    """Mean, min and max of a per-case count (history events, activities, update attempts)."""

    mean: float
    min: int
    max: int

    @classmethod
    def of(cls, values: list[int]) -> Spread:
        if not values:
            return cls(math.nan, 0, 0)
        return cls(sum(values) / len(values), min(values), max(values))

    def as_dict(self) -> dict[str, float]:
        return {"mean": round(self.mean, 2), "min": self.min, "max": self.max}


@dataclass
class PhaseResult:
    phase: str  # "refund/auto", "bare/approval", ...
    system: str  # "podium" or "bare"
    path: str  # "auto" or "approval"
    n: int
    wall_s: float
    latencies_ms: list[float]
    mismatches: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    history_events: Spread | None = None
    activities: Spread | None = None
    update_attempts: Spread | None = None
    refund_rows: int | None = None
    expected_activities: int | None = None

    @property
    def completed(self) -> int:
        return len(self.latencies_ms)

    @property
    def throughput(self) -> float:
        return self.completed / self.wall_s if self.wall_s > 0 else math.nan

    @property
    def verified(self) -> bool:
        return (
            not self.mismatches
            and not self.errors
            and self.completed == self.n
            and (self.refund_rows is None or self.refund_rows == self.n)
            and (
                self.expected_activities is None
                or self.activities is None
                or (self.activities.min == self.activities.max == self.expected_activities)
            )
        )

    def as_dict(self) -> dict[str, Any]:
        lat = self.latencies_ms
        return {
            "phase": self.phase,
            "system": self.system,
            "path": self.path,
            "n": self.n,
            "completed": self.completed,
            "wall_s": round(self.wall_s, 3),
            "cases_per_s": round(self.throughput, 2),
            "latency_ms": {
                "p50": round(percentile(lat, 50), 1),
                "p95": round(percentile(lat, 95), 1),
                "max": round(max(lat), 1) if lat else math.nan,
                "mean": round(sum(lat) / len(lat), 1) if lat else math.nan,
            },
            "history_events_per_case": self.history_events.as_dict()
            if self.history_events
            else None,
            "activities_per_case": self.activities.as_dict() if self.activities else None,
            "expected_activities_per_case": self.expected_activities,
            "update_attempts_per_case": self.update_attempts.as_dict()
            if self.update_attempts
            else None,
            "refund_rows": self.refund_rows,
            "mismatches": len(self.mismatches),
            "mismatch_details": self.mismatches,
            "errors": len(self.errors),
            "error_details": self.errors,
            "verified": self.verified,
        }


def ratios(podium: PhaseResult, bare: PhaseResult) -> dict[str, float]:
    """Podium / bare: below 1 for throughput and above 1 for latency means Podium costs more."""

    def div(a: float, b: float) -> float:
        return round(a / b, 2) if b and not math.isnan(a) and not math.isnan(b) else math.nan

    return {
        "throughput": div(podium.throughput, bare.throughput),
        "p50": div(percentile(podium.latencies_ms, 50), percentile(bare.latencies_ms, 50)),
        "p95": div(percentile(podium.latencies_ms, 95), percentile(bare.latencies_ms, 95)),
    }


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        first, *rest = cells
        return "  ".join(
            [first.ljust(widths[0]), *(c.rjust(w) for c, w in zip(rest, widths[1:], strict=True))]
        )

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def render_table(report: dict[str, Any]) -> str:
    phases = report["phases"]
    rows = []
    for p in phases:
        lat = p["latency_ms"]
        events = p["history_events_per_case"] or {}
        acts = p["activities_per_case"] or {}
        rows.append(
            [
                p["phase"],
                str(p["n"]),
                f"{p['cases_per_s']:.1f}",
                f"{lat['p50']:.0f}",
                f"{lat['p95']:.0f}",
                f"{lat['max']:.0f}",
                _spread(events),
                _spread(acts),
                f"{p['completed'] - p['mismatches']}/{p['n']}",
                "-" if p["refund_rows"] is None else str(p["refund_rows"]),
            ]
        )
    table = _table(
        [
            "phase",
            "N",
            "cases/s",
            "p50 ms",
            "p95 ms",
            "max ms",
            "events/case",
            "activities/case",
            "outcome ok",
            "refund rows",
        ],
        rows,
    )
    ratio_rows = [
        [path, f"{r['throughput']:.2f}x", f"{r['p50']:.2f}x", f"{r['p95']:.2f}x"]
        for path, r in report["ratios"].items()
    ]
    ratio_table = _table(
        ["Podium / bare", "throughput", "p50 latency", "p95 latency"], ratio_rows
    )
    cfg, machine = report["config"], report["machine"]
    header = (
        f"Podium refund benchmark  {report['date']}  N={cfg['n']} concurrency={cfg['concurrency']}"
        f" warm-up={cfg['warmup']}\n"
        f"machine: {machine['cpus']} cores, {machine['platform']}, Python {machine['python']},"
        f" temporalio {machine['temporalio']}, {machine['temporal_cli']}"
    )
    verdict = "all outcomes verified" if report["verified"] else "VERIFICATION FAILED"
    return f"{header}\n\n{table}\n\n{ratio_table}\n\n{verdict}"


def _spread(d: dict[str, Any]) -> str:
    if not d:
        return "-"
    if d["min"] == d["max"]:
        return str(d["min"])
    return f"{d['mean']:.1f} ({d['min']}-{d['max']})"
