"""Priorities under overload: do urgent cases keep their latency when routine ones flood in?

    python -m bench.priority [--low 150] [--high 20] [--idle 8] [--rate 4] [--high-every 2]
                             [--rounds 1] [--out results/priority.json] [--json]

One run starts its own Temporal dev server and database (`bench.server`, `bench.data`) and, per
mode, one worker subprocess (`python -m worker`, the real entry point, role `all`: cases and
model calls) in production configuration: payload encryption on, the refund policy file, audit,
and the models' task queue rate limited to `--rate` model calls per second
(`PODIUM_MODEL_ACTIVITIES_PER_SECOND`): the provider quota the overload runs into. Cases are
opened by the starter itself (`PodiumClient.start`), which sets each case's priority key from the
mode's `policies/priority.yaml`. Every case is an automatic refund (standard-tier customer,
amount under the limit: triage, lookup, policy, refund, draft, reply, audits), so both classes do
the same work; only the channel differs:

- high: channel `chat` (the policy's `live_channel`: key 2);
- low: channel `batch` (`bulk`: key 5).

Two modes, same run, same load, alternating order per round:
- `priority`: the repository's `policies/priority.yaml`;
- `fifo`: the same file without rules (every case at the default key 3), the control.

Per mode: first `--idle` high cases one at a time on the idle system (the reference latency),
then the overload: `--low` low cases opened at once (2 model calls each: a backlog of
`2 * low / rate` seconds on the models' queue), and meanwhile `--high` high cases, one every
`--high-every` seconds. Latency is start -> result of each case. Reported per mode: p50/p95 of
each class, the high cases' p95 under overload over their idle p95 (the figure: near 1 means
they kept their latency), the models' queue backlog when the high cases started, and the model
calls' effective rate during the overload. A report, not an assertion; exit 1 when a case did
not end as an automatic refund.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import yaml
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

from bench.data import BenchCase, count_refunds, seed_cases
from bench.gate import (
    Progress,
    check_snapshot,
    podium_client,
    production_settings,
    report_header,
    snapshot_code,
    worker_env,
    worker_process,
)
from bench.report import percentile
from bench.server import dev_server
from core.db import create_tables, make_engine
from core.logging import configure_logging
from core.policy import DEFAULT_POLICIES_DIR, load_policy
from core.priority import PRIORITY_FILE_STEM
from core.scheduling import model_task_queue
from core.settings import Settings
from starter.client import PodiumClient
from starter.runtime import DEV_SERVER_TUNING
from workflows.contracts import search_attributes as sa
from workflows.refund.starting import RefundRequest

MODES = ("priority", "fifo")
HIGH_CHANNEL, LOW_CHANNEL = "chat", "batch"
CASE_TIMEOUT_S = 900.0
ORDERS = 700_000


@dataclass
class Options:
    low: int = 150
    high: int = 20
    idle: int = 8
    rate: float = 4.0
    high_every: float = 2.0
    rounds: int = 1
    partitions: int | None = None
    seed: int = 5
    timeout_s: float = 3_600.0


def _spread(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"n": 0, "p50_ms": None, "p95_ms": None, "max_ms": None}
    return {
        "n": len(values),
        "p50_ms": round(percentile(values, 50) * 1000, 1),
        "p95_ms": round(percentile(values, 95) * 1000, 1),
        "max_ms": round(max(values) * 1000, 1),
    }


async def _backlog(client: Client, queue: str) -> int | None:
    """The approximate activity backlog of `queue` (None when the server does not say)."""
    try:
        response = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=client.namespace,
                task_queue=TaskQueue(name=queue),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
                report_stats=True,
            )
        )
    except Exception:  # a figure for the report, never a reason to stop
        return None
    if response.HasField("stats"):
        return int(response.stats.approximate_backlog_count)
    return None


class Mode:
    """One mode's starter (its policies folder) and the cases it opens."""

    def __init__(self, name: str, client: Client, settings: Settings, rng: random.Random) -> None:
        self.name = name
        self.podium = PodiumClient(client, settings)
        self.client = client
        self.settings = settings
        self.outcomes: dict[str, str] = {}
        self.rng = rng

    async def case(self, case: BenchCase, channel: str) -> float:
        """Open the case through the starter, wait for its result: seconds start -> result."""
        request = RefundRequest(
            channel=channel,
            customer_id=case.customer_id,
            order_id=case.order_id,
            message=case.message,
        )
        started = time.perf_counter()
        ref = await self.podium.start("refund", request, f"{case.case_id}-{uuid.uuid4().hex[:6]}")
        result = await self.client.get_workflow_handle(ref.case_id).result()
        elapsed = time.perf_counter() - started
        self.outcomes[ref.case_id] = str(result.get("outcome") if isinstance(result, dict) else "")
        return elapsed


async def run_mode(
    mode: Mode,
    opts: Options,
    cases: dict[str, list[BenchCase]],
    progress: Progress,
) -> dict[str, Any]:
    queue = model_task_queue(mode.settings.task_queue)
    idle = []
    for case in cases["idle"]:
        idle.append(await asyncio.wait_for(mode.case(case, HIGH_CHANNEL), CASE_TIMEOUT_S))
    progress.say(f"{mode.name}: {len(idle)} high cases on the idle system")

    started = time.perf_counter()
    low_tasks = [
        asyncio.create_task(asyncio.wait_for(mode.case(case, LOW_CHANNEL), CASE_TIMEOUT_S))
        for case in cases["low"]
    ]
    backlogs: list[int] = []
    high_tasks = []
    await asyncio.sleep(opts.high_every)
    for case in cases["high"]:
        backlog = await _backlog(mode.client, queue)
        if backlog is not None:
            backlogs.append(backlog)
        high_tasks.append(
            asyncio.create_task(asyncio.wait_for(mode.case(case, HIGH_CHANNEL), CASE_TIMEOUT_S))
        )
        await asyncio.sleep(opts.high_every)
    high = list(await asyncio.gather(*high_tasks))
    low = list(await asyncio.gather(*low_tasks))
    overload_s = time.perf_counter() - started
    model_calls = 2 * (len(low) + len(high))  # triage and draft per automatic refund
    progress.say(
        f"{mode.name}: overload of {len(low)} low + {len(high)} high cases in {overload_s:.1f}s"
    )
    idle_p95 = percentile(idle, 95) if idle else None
    high_p95 = percentile(high, 95) if high else None
    return {
        "high_idle": _spread(idle),
        "high_overload": _spread(high),
        "low_overload": _spread(low),
        "high_p95_overload_over_idle": (
            round(high_p95 / idle_p95, 2) if high_p95 and idle_p95 else None
        ),
        "low_p95_over_high_p95": (
            round(percentile(low, 95) / high_p95, 2) if high_p95 and low else None
        ),
        "models_queue_backlog_when_high_started": _spread_ints(backlogs),
        "overload_s": round(overload_s, 1),
        "model_calls_per_s_during_overload": round(model_calls / overload_s, 2),
    }


def _spread_ints(values: list[int]) -> dict[str, int | None]:
    if not values:
        return {"n": 0, "min": None, "median": None, "max": None}
    ordered = sorted(values)
    return {
        "n": len(values),
        "min": ordered[0],
        "median": ordered[len(ordered) // 2],
        "max": ordered[-1],
    }


def _policies(workdir: Path, mode: str) -> Path:
    """The mode's policies folder: the repository's; for `fifo`, its priority file's rules out."""
    target = workdir / f"policies-{mode}"
    shutil.copytree(DEFAULT_POLICIES_DIR, target)
    if mode == "fifo":
        path = target / f"{PRIORITY_FILE_STEM}.yaml"
        document = yaml.safe_load(path.read_text())
        document["rules"] = []
        document["version"] = f"{document['version']}-fifo"
        path.write_text(yaml.safe_dump(document))
    return target


async def run_benchmark(opts: Options, out: TextIO = sys.stderr) -> dict[str, Any]:
    if min(opts.low, opts.high, opts.idle, opts.rounds) < 1 or opts.rate <= 0:
        raise ValueError("--low, --high, --idle, --rounds and --rate must be positive")
    progress = Progress(out)
    run = uuid.uuid4().hex[:8]
    report: dict[str, Any] = report_header("priority")
    with tempfile.TemporaryDirectory(prefix="podium-bench-priority-") as tmp:
        workdir = Path(tmp)
        base = production_settings(workdir, run)
        database_url = base.resolved_database_url
        document = load_policy(DEFAULT_POLICIES_DIR / "refund.yaml")
        limit = round(float(document.limits.auto_refund_limit) * 100)
        report["config"] = {
            "low_cases": opts.low,
            "high_cases": opts.high,
            "idle_cases": opts.idle,
            "high_every_s": opts.high_every,
            "rounds": opts.rounds,
            "task_queue_partitions": opts.partitions or 1,
            "dev_server": "as podium up runs it (starter.runtime.DEV_SERVER_TUNING)"
            if not opts.partitions
            else f"{opts.partitions} partitions per task queue",
            "model_activities_per_second": opts.rate,
            "channels": {"high": HIGH_CHANNEL, "low": LOW_CHANNEL},
            "payload_encryption": "on",
            "policy_file": f"policies/refund.yaml ({document.digest})",
            "worker": "python -m worker (role all: cases and model calls), one per mode",
            "max_concurrent_activities": base.max_concurrent_activities,
            "max_concurrent_model_activities": base.max_concurrent_model_activities,
        }
        engine = make_engine(database_url)
        rng = random.Random(opts.seed)
        create_tables(engine)
        per_round = opts.low + opts.high + opts.idle
        all_cases: list[BenchCase] = []
        plans: list[dict[str, dict[str, list[BenchCase]]]] = []
        for r in range(opts.rounds):
            plan: dict[str, dict[str, list[BenchCase]]] = {}
            for m, mode in enumerate(MODES):
                first = ORDERS + (r * len(MODES) + m) * per_round
                seeded = seed_cases(
                    engine,
                    label=f"prio-{mode}-{r}-{run}",
                    first_number=first,
                    count=per_round,
                    min_cents=500,
                    max_cents=limit - 100,
                    rng=rng,
                    tiers=("standard",),
                )
                all_cases += seeded
                plan[mode] = {
                    "idle": seeded[: opts.idle],
                    "high": seeded[opts.idle : opts.idle + opts.high],
                    "low": seeded[opts.idle + opts.high :],
                }
            plans.append(plan)
        code = snapshot_code(workdir)
        progress.say(f"seeded {len(all_cases)} cases; the workers run a snapshot in {code}")
        modes: dict[str, Mode] = {}
        try:
            # As `podium up` runs its dev server (one partition per task queue), unless
            # `--partitions` says otherwise.
            tuning = list(DEV_SERVER_TUNING)
            if opts.partitions:
                tuning = [
                    arg
                    for name in ("Read", "Write")
                    for arg in (
                        "--dynamic-config-value",
                        f"matching.numTaskqueue{name}Partitions={opts.partitions}",
                    )
                ]
            async with (
                asyncio.timeout(opts.timeout_s),
                dev_server(workdir, sa.ALL, tuning) as server,
            ):
                client = podium_client(server, base)
                settings = {
                    mode: base.model_copy(
                        update={
                            "task_queue": f"bench-{mode}-{run}",
                            "policies_dir": _policies(workdir, mode),
                        }
                    )
                    for mode in MODES
                }
                envs = {}
                for mode in MODES:
                    env = worker_env(
                        settings[mode], server, database_url, settings[mode].task_queue, code
                    )
                    env["PODIUM_POLICIES_DIR"] = str(settings[mode].policies_dir)
                    env["PODIUM_MODEL_ACTIVITIES_PER_SECOND"] = str(opts.rate)
                    env["PODIUM_WORKER_METRICS_PORT"] = "0"
                    envs[mode] = env
                check_snapshot(envs["priority"], workdir, code)
                modes.update({m: Mode(m, client, settings[m], rng) for m in MODES})
                results: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
                async with (
                    worker_process("priority", "worker", envs["priority"], workdir) as w1,
                    worker_process("fifo", "worker", envs["fifo"], workdir) as w2,
                ):
                    workers = {"priority": w1, "fifo": w2}
                    for r, plan in enumerate(plans):
                        order = MODES if r % 2 == 0 else MODES[::-1]
                        for mode in order:
                            # Warm the mode's worker (its models, its sandbox) before timing.
                            warm = seed_cases(
                                engine,
                                label=f"warm-{mode}-{r}-{run}",
                                first_number=ORDERS + 500_000 + (r * 2 + MODES.index(mode)) * 10,
                                count=3,
                                min_cents=500,
                                max_cents=limit - 100,
                                rng=rng,
                                tiers=("standard",),
                            )
                            all_cases += warm
                            for case in warm:
                                await workers[mode].alive_while(
                                    modes[mode].case(case, HIGH_CHANNEL), CASE_TIMEOUT_S
                                )
                            progress.say(f"round {r + 1}: {mode}")
                            results[mode].append(
                                await workers[mode].alive_while(
                                    run_mode(modes[mode], opts, plan[mode], progress),
                                    opts.timeout_s,
                                )
                            )
                for starter in modes.values():
                    starter.podium.close()
        finally:
            opened = [case_id for m in modes.values() for case_id in m.outcomes]
            refunds = count_refunds(engine, opened)
            engine.dispose()
    outcomes = [o for m in modes.values() for o in m.outcomes.values()]
    report["results"] = {m: results[m] for m in MODES}
    report["summary"] = {
        m: {
            "high_p95_overload_over_idle": [r["high_p95_overload_over_idle"] for r in results[m]],
            "high_overload_p95_ms": [r["high_overload"]["p95_ms"] for r in results[m]],
            "low_overload_p95_ms": [r["low_overload"]["p95_ms"] for r in results[m]],
        }
        for m in MODES
    }
    report["cases"] = {
        "total": len(outcomes),
        "auto_resolved": sum(1 for o in outcomes if o == "auto_resolved"),
        "other_outcomes": sorted({o for o in outcomes if o != "auto_resolved"}),
        "refund_rows": refunds,
    }
    report["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return report


def render_table(report: dict[str, Any]) -> str:
    lines = [
        f"Priorities under overload ({report['config']['low_cases']} low + "
        f"{report['config']['high_cases']} high cases, models' queue at "
        f"{report['config']['model_activities_per_second']}/s)",
        f"{'mode':<9} {'round':>5} {'high idle p95':>14} {'high over p95':>14} "
        f"{'ratio':>6} {'low over p95':>13} {'backlog med':>12} {'calls/s':>8}",
    ]
    for mode, rounds in report["results"].items():
        for i, r in enumerate(rounds, 1):
            lines.append(
                f"{mode:<9} {i:>5} {r['high_idle']['p95_ms']:>12}ms "
                f"{r['high_overload']['p95_ms']:>12}ms {r['high_p95_overload_over_idle']:>6} "
                f"{r['low_overload']['p95_ms']:>11}ms "
                f"{r['models_queue_backlog_when_high_started']['median']!s:>12} "
                f"{r['model_calls_per_s_during_overload']:>8}"
            )
    cases = report["cases"]
    lines.append(
        f"cases: {cases['total']} ended, {cases['auto_resolved']} auto_resolved, "
        f"{cases['refund_rows']} refund rows"
    )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> tuple[Options, bool, Path | None]:
    parser = argparse.ArgumentParser(prog="python -m bench.priority", description=__doc__)
    defaults = Options()
    parser.add_argument("--low", type=int, default=defaults.low)
    parser.add_argument("--high", type=int, default=defaults.high)
    parser.add_argument("--idle", type=int, default=defaults.idle)
    parser.add_argument("--rate", type=float, default=defaults.rate)
    parser.add_argument("--high-every", type=float, default=defaults.high_every)
    parser.add_argument("--rounds", type=int, default=defaults.rounds)
    parser.add_argument(
        "--partitions",
        type=int,
        default=None,
        help="task queue partitions (default: 1, as `podium up` runs the dev server; "
        "Temporal's own default is 4)",
    )
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--timeout", type=float, default=defaults.timeout_s)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--json", action="store_true", help="print the JSON, not the table")
    args = parser.parse_args(argv)
    opts = Options(
        low=args.low,
        high=args.high,
        idle=args.idle,
        rate=args.rate,
        high_every=args.high_every,
        rounds=args.rounds,
        partitions=args.partitions,
        seed=args.seed,
        timeout_s=args.timeout,
    )
    return opts, args.json, args.out


def main(argv: Sequence[str] | None = None) -> int:
    opts, as_json, out_path = parse_args(argv)
    configure_logging("WARNING", True)  # the starter's own log lines stay out of the table
    report = asyncio.run(run_benchmark(opts))
    text = json.dumps(report, indent=2)
    if out_path is not None:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(text + "\n")
    print(text if as_json else render_table(report))
    cases = report["cases"]
    every = cases["auto_resolved"] == cases["total"] == cases["refund_rows"]
    return 0 if every else 1


if __name__ == "__main__":
    raise SystemExit(main())
