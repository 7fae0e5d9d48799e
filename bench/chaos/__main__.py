"""`make chaos`: the chaos battery against a `podium up` of its own, on loopback only.

    python -m bench.chaos [--quick] [--only R4,R1,...] [--out results/chaos.json] [--keep DIR]

Starts `podium up` on free 127.0.0.1 ports with a throwaway data folder, runs the scenarios of
`bench.chaos.scenarios` one after another (most valuable first), writes every figure to `--out`
and exits 1 when any scenario lost or duplicated something, got a 5xx it should not have, or
failed one of its own checks (2 when the stack did not come up). `--quick` is the CI profile:
the same scenarios with far fewer cases and kills, and says so in the JSON. A scenario that
cannot run on this machine (R9P without a PostgreSQL server) is reported as skipped, with its
reason, and neither passes nor fails the run; a run where nothing but skips ran has not passed.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.chaos.scenarios import PROFILES, SCENARIOS, Context
from bench.chaos.stack import ChaosStack

ORDER = ["R4", "R1", "R2", "R5", "R8", "R7", "R9", "R9M", "R9P"]
NOT_BUILT: dict[str, str] = {}


def _say(message: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


async def _run(args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    profile = PROFILES["quick" if args.quick else "full"]
    if args.set:
        sizes = {k: type(getattr(profile, k))(v) for k, v in (kv.split("=", 1) for kv in args.set)}
        profile = dataclasses.replace(profile, name=f"{profile.name}-adjusted", **sizes)
    wanted = [s.strip().upper() for s in args.only.split(",")] if args.only else ORDER
    stack = ChaosStack(data_dir)
    report: dict[str, Any] = {
        "benchmark": "chaos",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "profile": profile.name,
        "profile_note": (
            "quick: the CI profile, far smaller than the issue's full sizes"
            if args.quick
            else "full: the issue's sizes where the scenario reaches them (see each figure)"
        ),
        "sizes": profile.__dict__,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "loadavg_at_start": list(os.getloadavg()),
        },
        "git_head": _git_head(),
        "code": args.code,
        "loopback_only": True,
        "scenarios": {},
        "ran": [],
        "not_run": {},
    }
    started = time.monotonic()
    _say("starting podium up")
    try:
        await asyncio.to_thread(stack.start)
    except RuntimeError as err:  # a busy machine missed podium up's start-up deadline: again
        _say(f"podium up did not come up, trying once more: {str(err)[-300:]}")
        stack = ChaosStack(data_dir / "again")
        await asyncio.to_thread(stack.start)
    report["stack_start_s"] = round(time.monotonic() - started, 1)
    # Three workers on the task queue for every scenario (R2 kills some of them).
    stack.start_extra_worker()
    stack.start_extra_worker()
    try:
        ctx = Context(stack, profile, seed=args.seed)
        for name in ORDER:
            if name not in wanted:
                report["not_run"][name] = "not selected (--only)"
                continue
            _say(f"{name} ...")
            t0 = time.monotonic()
            try:
                figures = await SCENARIOS[name](ctx)
            except Exception as err:  # a scenario that crashed failed, the others still run
                figures = {
                    "passed": False,
                    "error": f"{type(err).__name__}: {err}",
                    "traceback": traceback.format_exc()[-3000:],
                }
            figures["wall_s"] = round(time.monotonic() - t0, 1)
            report["scenarios"][name] = figures
            report["ran"].append(name)
            _write(args.out, {**report, "partial": True})  # what ran so far survives a stop
            if figures.get("skipped"):
                _say(f"{name}: skipped: {figures['skipped']}")
                continue
            _say(
                f"{name}: passed={figures.get('passed')} tried={figures.get('tried')} "
                f"lost={figures.get('lost')} duplicated={figures.get('duplicated')} "
                f"5xx={figures.get('5xx')} ({figures['wall_s']} s)"
            )
    finally:
        await asyncio.to_thread(stack.close)
    report["not_run"].update(NOT_BUILT)
    _finish(report)
    report["wall_s"] = round(time.monotonic() - started, 1)
    report["machine"]["loadavg_at_end"] = list(os.getloadavg())
    return report


def _finish(report: dict[str, Any]) -> None:
    """Totals and the verdict over the scenarios of `report`."""
    report["skipped"] = {
        name: s["skipped"] for name, s in report["scenarios"].items() if s.get("skipped")
    }
    scenarios = [s for s in report["scenarios"].values() if not s.get("skipped")]
    report["totals"] = {
        "tried": sum(int(s.get("tried", 0)) for s in scenarios),
        "lost": sum(int(s.get("lost", 0)) for s in scenarios),
        "duplicated": sum(int(s.get("duplicated", 0)) for s in scenarios),
        "5xx": sum(int(s.get("5xx", 0)) for s in scenarios),
        "server_kills": sum(int(s.get("server_kills", 0)) for s in scenarios),
        "worker_kills": sum(int(s.get("worker_kills", 0)) for s in scenarios),
    }
    report["passed"] = bool(scenarios) and all(s.get("passed") for s in scenarios)


def merge(paths: list[Path]) -> dict[str, Any]:
    """One report of several runs (say, scenarios run side by side on one machine), each
    scenario from the last run that ran it; `merged_from` says which run was which."""
    reports = [json.loads(path.read_text()) for path in paths]
    merged: dict[str, Any] = {
        **{
            k: v
            for k, v in reports[0].items()
            if k not in ("scenarios", "ran", "not_run", "sizes", "profile_note", "code")
        },
        "profile": "merged: " + ", ".join(sorted({r["profile"] for r in reports})),
        "merged_from": [
            {
                "file": path.name,
                "date": r["date"],
                "ran": r["ran"],
                "wall_s": r.get("wall_s"),
                "code": r.get("code"),
                "profile": r["profile"],
                "sizes": r.get("sizes"),
                "machine": r.get("machine"),
                "partial": r.get("partial", False),
            }
            for path, r in zip(paths, reports, strict=True)
        ],
        "scenarios": {},
        "ran": [],
        "not_run": {},
    }
    for report in reports:  # a scenario run again in a later report: the later run counts
        for name in report["ran"]:
            merged["scenarios"][name] = report["scenarios"][name]
            if name not in merged["ran"]:
                merged["ran"].append(name)
    for name in ORDER:
        if name not in merged["ran"]:
            merged["not_run"][name] = "in none of the merged runs"
    merged.pop("partial", None)
    merged.pop("wall_s", None)
    _finish(merged)
    return merged


def _git_head() -> str | None:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def _write(out: Path, report: dict[str, Any]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="the small CI profile")
    parser.add_argument("--only", default="", help="comma-separated scenarios, e.g. R4,R1")
    parser.add_argument("--out", type=Path, default=Path("results/chaos.json"))
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--code", default=None, help="what code this run is (say, the commit of a snapshot)"
    )
    parser.add_argument(
        "--merge", type=Path, nargs="+", default=None, help="merge these reports into --out"
    )
    parser.add_argument(
        "--set", nargs="+", default=None, help="override profile sizes, e.g. r1_cases=600"
    )
    parser.add_argument("--keep", type=Path, default=None, help="keep the data folder here")
    args = parser.parse_args(argv)
    if args.merge:
        report = merge(args.merge)
        _write(args.out, report)
        return 0 if report["passed"] else 1
    data_dir = args.keep or Path(tempfile.mkdtemp(prefix="podium-chaos-"))
    try:
        report = asyncio.run(_run(args, data_dir))
    except RuntimeError as err:
        _say(f"the stack did not come up: {err}")
        return 2
    finally:
        if args.keep is None:
            shutil.rmtree(data_dir, ignore_errors=True)
    _write(args.out, report)
    totals = report["totals"]
    skipped = f" skipped={sorted(report['skipped'])}" if report["skipped"] else ""
    _say(
        f"{'PASSED' if report['passed'] else 'FAILED'}{skipped}: tried={totals['tried']} "
        f"lost={totals['lost']} duplicated={totals['duplicated']} 5xx={totals['5xx']} "
        f"server kills={totals['server_kills']} worker kills={totals['worker_kills']} "
        f"-> {args.out}"
    )
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
