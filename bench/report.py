"""Phase measurements and the report: percentiles, ratios, the printed tables and the JSON."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from bench.history import CaseTimeline

__all__ = ["PhaseResult", "Spread", "percentile", "ratios", "render_table"]


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), linear between closest ranks; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


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
    timelines: list[CaseTimeline] = field(default_factory=list)
    update_attempts: Spread | None = None
    refund_rows: int | None = None
    expected_activities: int | None = None
    # CPU seconds used during the phase: this process (client, worker, activities) and server.
    cpu_s: dict[str, float | None] = field(default_factory=dict)

    @property
    def completed(self) -> int:
        return len(self.latencies_ms)

    @property
    def throughput(self) -> float:
        return self.completed / self.wall_s if self.wall_s > 0 else math.nan

    @property
    def activities(self) -> Spread:
        return Spread.of([t.activities for t in self.timelines])

    @property
    def history_events(self) -> Spread:
        return Spread.of([t.events for t in self.timelines])

    @property
    def verified(self) -> bool:
        acts = self.activities
        return (
            not self.mismatches
            and not self.errors
            and self.completed == self.n
            and (self.refund_rows is None or self.refund_rows == self.n)
            and (
                self.expected_activities is None or acts.min == acts.max == self.expected_activities
            )
        )

    def time_split(self) -> dict[str, float]:
        """Mean ms per case, from the server's event times."""
        tl = self.timelines
        return {
            "activity_queue": round(_mean([t.activity_wait_ms for t in tl]), 1),
            "activity_run": round(_mean([t.activity_run_ms for t in tl]), 1),
            "workflow_task_queue": round(_mean([t.task_wait_ms for t in tl]), 1),
            "workflow_task_run": round(_mean([t.task_run_ms for t in tl]), 1),
            "first_workflow_task_run": round(_mean([t.first_task_run_ms for t in tl]), 1),
        }

    def cpu_ms_per_case(self) -> dict[str, float | None]:
        per_case = {
            k: (round(v * 1_000 / self.n, 2) if v is not None else None)
            for k, v in self.cpu_s.items()
        }
        known = [v for v in per_case.values() if v is not None]
        per_case["total"] = round(sum(known), 2) if len(known) == len(per_case) else None
        return per_case

    def activity_types(self) -> dict[str, dict[str, float]]:
        """Per activity type: calls per case and mean run time per call (ms)."""
        calls: dict[str, int] = {}
        run: dict[str, float] = {}
        for t in self.timelines:
            for name, count in t.calls_by_type.items():
                calls[name] = calls.get(name, 0) + count
                run[name] = run.get(name, 0.0) + t.run_ms_by_type[name]
        cases = max(1, len(self.timelines))
        return {
            name: {
                "calls_per_case": round(calls[name] / cases, 2),
                "run_ms_mean": round(run[name] / calls[name], 2),
            }
            for name in sorted(calls)
        }

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
                "mean": round(_mean(lat), 1),
            },
            "history_events_per_case": self.history_events.as_dict(),
            "activities_per_case": self.activities.as_dict(),
            "expected_activities_per_case": self.expected_activities,
            "update_attempts_per_case": self.update_attempts.as_dict()
            if self.update_attempts
            else None,
            "time_split_ms_per_case": self.time_split(),
            "activity_types": self.activity_types(),
            "cpu_ms_per_case": self.cpu_ms_per_case(),
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

    podium_cpu, bare_cpu = podium.cpu_ms_per_case()["total"], bare.cpu_ms_per_case()["total"]
    return {
        "throughput": div(podium.throughput, bare.throughput),
        "p50": div(percentile(podium.latencies_ms, 50), percentile(bare.latencies_ms, 50)),
        "p95": div(percentile(podium.latencies_ms, 95), percentile(bare.latencies_ms, 95)),
        "cpu_per_case": div(podium_cpu, bare_cpu) if podium_cpu and bare_cpu else math.nan,
    }


# --- rendering ----------------------------------------------------------------------------------


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        first, *rest = cells
        return "  ".join(
            [first.ljust(widths[0]), *(c.rjust(w) for c, w in zip(rest, widths[1:], strict=True))]
        )

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def _spread(d: dict[str, Any] | None) -> str:
    if not d:
        return "-"
    if d["min"] == d["max"]:
        return str(d["min"])
    return f"{d['mean']:.1f} ({d['min']}-{d['max']})"


def render_table(report: dict[str, Any]) -> str:
    phases = report["phases"]
    main_headers = "phase|N|cases/s|p50 ms|p95 ms|max ms|events/case|activities/case|outcome ok"
    main = _table(
        [*main_headers.split("|"), "refund rows"],
        [
            [
                p["phase"],
                str(p["n"]),
                f"{p['cases_per_s']:.1f}",
                f"{p['latency_ms']['p50']:.0f}",
                f"{p['latency_ms']['p95']:.0f}",
                f"{p['latency_ms']['max']:.0f}",
                _spread(p["history_events_per_case"]),
                _spread(p["activities_per_case"]),
                f"{p['completed'] - p['mismatches']}/{p['n']}",
                "-" if p["refund_rows"] is None else str(p["refund_rows"]),
            ]
            for p in phases
        ],
    )
    ratio = _table(
        ["Podium / bare", "throughput", "p50 latency", "p95 latency", "CPU per case"],
        [
            [path, *(f"{r[k]:.2f}x" for k in ("throughput", "p50", "p95", "cpu_per_case"))]
            for path, r in report["ratios"].items()
        ],
    )
    cpu = _table(
        ["CPU ms per case", "bench process", "temporal server", "total"],
        [[p["phase"], *(_ms(v) for v in p["cpu_ms_per_case"].values())] for p in phases],
    )
    split_headers = "latency|activity queue|activity run|wf task queue|wf task run|1st wf task"
    split = _table(
        ["mean ms per case", *split_headers.split("|"), "decide tries"],
        [
            [
                p["phase"],
                f"{p['latency_ms']['mean']:.0f}",
                *(f"{v:.0f}" for v in p["time_split_ms_per_case"].values()),
                _spread(p["update_attempts_per_case"]),
            ]
            for p in phases
        ],
    )
    types: dict[str, dict[str, str]] = {}
    for p in phases:
        for name, t in p["activity_types"].items():
            types.setdefault(name, {})[p["phase"]] = (
                f"{t['run_ms_mean']:.1f} x{t['calls_per_case']:g}"
            )
    names = [p["phase"] for p in phases]
    per_type = _table(
        ["activity: ms per call x calls", *names],
        [[name, *(cells.get(n, "-") for n in names)] for name, cells in sorted(types.items())],
    )
    cfg, machine = report["config"], report["machine"]
    header = (
        f"Podium refund benchmark  {report['date']}  N={cfg['n']} "
        f"concurrency={cfg['concurrency']} warm-up={cfg['warmup']}\n"
        f"machine: {machine['cpus']} cores, {machine['platform']}, Python {machine['python']}, "
        f"temporalio {machine['temporalio']}, {machine['temporal_cli']}, "
        f"1-min load average {machine['loadavg_at_start'][0]:.2f} at start, "
        f"{machine['loadavg_at_end'][0]:.2f} at end"
    )
    verdict = "all outcomes verified" if report["verified"] else "VERIFICATION FAILED"
    notes = (
        "Latency: start call -> workflow result, approval included. Time split and per-activity\n"
        "times come from the server's event times in each case's history (queue = scheduled ->\n"
        "started, run = started -> completed). CPU: the phase's CPU time over N; the bench\n"
        "process holds the client, both workers and every activity."
    )
    return "\n\n".join([header, main, ratio, split, cpu, per_type, notes, verdict])


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"
