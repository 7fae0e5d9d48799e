"""`make chaos`: the chaos battery against a `podium up` of its own, on loopback only.

    python -m bench.chaos [--quick] [--only R4,R1,...] [--out results/chaos.json] [--keep DIR]

Starts `podium up` on free 127.0.0.1 ports with a throwaway data folder, runs the scenarios of
`bench.chaos.scenarios` one after another (most valuable first), writes every figure to `--out`
and exits 1 when any scenario lost or duplicated something, got a 5xx it should not have, or
failed one of its own checks (2 when the stack did not come up). `--quick` is the CI profile:
the same scenarios with far fewer cases and kills, and says so in the JSON.
"""

from __future__ import annotations

import argparse
import asyncio
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

ORDER = ["R4", "R1", "R2", "R5", "R8", "R7", "R9", "R9M"]
NOT_BUILT: dict[str, str] = {}


def _say(message: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


async def _run(args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    profile = PROFILES["quick" if args.quick else "full"]
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
            _say(
                f"{name}: passed={figures.get('passed')} tried={figures.get('tried')} "
                f"lost={figures.get('lost')} duplicated={figures.get('duplicated')} "
                f"5xx={figures.get('5xx')} ({figures['wall_s']} s)"
            )
    finally:
        await asyncio.to_thread(stack.close)
    report["not_run"].update(NOT_BUILT)
    scenarios = report["scenarios"].values()
    report["totals"] = {
        "tried": sum(int(s.get("tried", 0)) for s in scenarios),
        "lost": sum(int(s.get("lost", 0)) for s in scenarios),
        "duplicated": sum(int(s.get("duplicated", 0)) for s in scenarios),
        "5xx": sum(int(s.get("5xx", 0)) for s in scenarios),
        "server_kills": sum(int(s.get("server_kills", 0)) for s in scenarios),
        "worker_kills": sum(int(s.get("worker_kills", 0)) for s in scenarios),
    }
    report["passed"] = bool(report["ran"]) and all(s.get("passed") for s in scenarios)
    report["wall_s"] = round(time.monotonic() - started, 1)
    report["machine"]["loadavg_at_end"] = list(os.getloadavg())
    return report


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
    parser.add_argument("--keep", type=Path, default=None, help="keep the data folder here")
    args = parser.parse_args(argv)
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
    _say(
        f"{'PASSED' if report['passed'] else 'FAILED'}: tried={totals['tried']} "
        f"lost={totals['lost']} duplicated={totals['duplicated']} 5xx={totals['5xx']} "
        f"server kills={totals['server_kills']} worker kills={totals['worker_kills']} "
        f"-> {args.out}"
    )
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
