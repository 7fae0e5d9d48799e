"""`make bench`: Podium's refund process against a bare Temporal workflow, in the same run.

    python -m bench.refund [--n 200] [--concurrency 20] [--warmup 3] [--json] [--out FILE]

One run starts its own Temporal dev server (loopback, file-backed SQLite) and its own
systems-of-record database, loads the embedded models, runs Podium's worker (`worker.py`, real
activities) next to a bare worker built from the same configuration, and measures four phases,
each with at most `--concurrency` cases in flight:

- refund/auto      clear refund requests under the automatic limit: outcome `auto_resolved`
- bare/auto        `bench_bare` with as many no-op activities as a refund/auto case runs
- refund/approval  requests over the limit, approved through the `decide` update: `approved`
- bare/approval    `bench_bare` shaped like an approval case, decided through the same update

Latency is per case, from the start call until the workflow result arrives (approval included);
throughput is cases over the phase's wall time. The activity counts of the bare phases come from
the histories of warm-up refund cases, so the baseline follows the process if it changes.
Progress goes to stderr; the table (or `--json`) to stdout. Exit code 1 when any outcome, refund
row or activity count did not verify.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

import temporalio
from sqlalchemy.engine import Engine
from temporalio.client import Client, WorkflowHandle, WorkflowHistory, WorkflowUpdateFailedError
from temporalio.worker import Worker

from activities.intelligence import EmbeddedModels
from bench.bare import BareWorkflow, noop
from bench.data import BenchCase, count_refunds, seed_cases
from bench.history import approval_shape, scheduled_activities, timeline
from bench.report import PhaseResult, Spread, ratios, render_table
from bench.server import TEMPORAL_CLI, dev_server
from bench.types import BareDecisionResult, BareInput, BareResult
from core.db import create_tables, make_engine
from core.logging import configure_logging
from core.settings import Settings
from worker import build_activities, build_worker
from workflows import search_attributes as sa
from workflows.refund import APPROVAL_REQUEST_ID, SYSTEM_TIMEOUT
from workflows.types import (
    ApprovalDecisionInput,
    ApprovalDecisionResult,
    RefundCaseInput,
    RefundCaseResult,
    RefundOutcome,
    RefundPolicy,
)

__all__ = ["Options", "main", "run_benchmark"]

DEFAULT_N = 200
DEFAULT_CONCURRENCY = 20
DEFAULT_WARMUP = 3
DEFAULT_TIMEOUT_S = 1_800.0
DEFAULT_SEED = 7

APPROVER = "bench@podium.test"
CHANNEL = "email"
# Nothing a run starts may outlive it on the server.
CASE_EXECUTION_TIMEOUT = timedelta(minutes=10)
# The decision is sent at once and retried while the case says no approval is pending yet.
NOT_PENDING = "no approval is pending"
UPDATE_RETRY_INTERVAL_S = 0.1
UPDATE_RETRY_LIMIT_S = 60.0
HISTORY_FETCH_CONCURRENCY = 10

# Order numbers of the generated data, one block per group of cases.
AUTO_ORDERS, APPROVAL_ORDERS, WARM_AUTO_ORDERS, WARM_APPROVAL_ORDERS = (
    600_000,
    700_000,
    800_000,
    900_000,
)


@dataclass(frozen=True)
class Options:
    n: int = DEFAULT_N
    concurrency: int = DEFAULT_CONCURRENCY
    warmup: int = DEFAULT_WARMUP
    timeout_s: float = DEFAULT_TIMEOUT_S
    seed: int = DEFAULT_SEED


@dataclass(frozen=True)
class CaseOutcome:
    case_id: str
    latency_ms: float
    ok: bool
    detail: str
    update_attempts: int = 0


class Progress:
    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._started = time.monotonic()

    def say(self, message: str) -> None:
        print(f"[{time.monotonic() - self._started:7.1f}s] {message}", file=self._out, flush=True)


# --- one case -----------------------------------------------------------------------------------


async def _decide(handle: WorkflowHandle[Any, Any], result_type: type) -> int:
    """Approve through the `decide` update; returns how many attempts it took."""
    decision = ApprovalDecisionInput(
        request_id=APPROVAL_REQUEST_ID, approve=True, approver=APPROVER
    )
    deadline = time.monotonic() + UPDATE_RETRY_LIMIT_S
    attempts = 0
    while True:
        attempts += 1
        try:
            await handle.execute_update("decide", decision, result_type=result_type)
            return attempts
        except WorkflowUpdateFailedError as err:
            reason = str(getattr(err.cause, "message", err.cause))
            if NOT_PENDING not in reason or time.monotonic() > deadline:
                raise
        await asyncio.sleep(UPDATE_RETRY_INTERVAL_S)


async def _refund_case(
    client: Client, task_queue: str, case: BenchCase, policy: RefundPolicy, *, approve: bool
) -> CaseOutcome:
    started = time.perf_counter()
    handle = await client.start_workflow(
        "refund",
        RefundCaseInput(
            channel=CHANNEL,
            customer_id=case.customer_id,
            order_id=case.order_id,
            message=case.message,
            policy=policy,
        ),
        id=case.case_id,
        task_queue=task_queue,
        result_type=RefundCaseResult,
        execution_timeout=CASE_EXECUTION_TIMEOUT,
    )
    attempts = await _decide(handle, ApprovalDecisionResult) if approve else 0
    result: RefundCaseResult = await handle.result()
    latency = (time.perf_counter() - started) * 1_000
    expected = RefundOutcome.APPROVED if approve else RefundOutcome.AUTO_RESOLVED
    ok = result.outcome == expected and result.refund_id is not None
    detail = f"outcome {result.outcome.value}, expected {expected.value}: " + "; ".join(
        result.reasons
    )
    return CaseOutcome(case.case_id, latency, ok, detail, attempts)


async def _bare_case(
    client: Client, task_queue: str, case_id: str, shape: BareInput
) -> CaseOutcome:
    started = time.perf_counter()
    handle = await client.start_workflow(
        "bench_bare",
        shape,
        id=case_id,
        task_queue=task_queue,
        result_type=BareResult,
        execution_timeout=CASE_EXECUTION_TIMEOUT,
    )
    attempts = await _decide(handle, BareDecisionResult) if shape.gate else 0
    result: BareResult = await handle.result()
    latency = (time.perf_counter() - started) * 1_000
    expected = shape.before + shape.during + shape.after
    ok = result.activities == expected and (result.approved is True) == shape.gate
    detail = f"ran {result.activities} activities (expected {expected}), approved={result.approved}"
    return CaseOutcome(case_id, latency, ok, detail, attempts)


# --- phases -------------------------------------------------------------------------------------

CaseRun = Callable[[], Awaitable[CaseOutcome]]


async def _run_cases(
    name: str, runs: Sequence[tuple[str, CaseRun]], concurrency: int, progress: Progress | None
) -> tuple[float, list[CaseOutcome], list[str]]:
    """Run the cases with at most `concurrency` in flight; wall time, outcomes and errors."""
    gate = asyncio.Semaphore(concurrency)
    outcomes: list[CaseOutcome] = []
    errors: list[str] = []
    step = max(1, len(runs) // 5)

    async def one(case_id: str, run: CaseRun) -> None:
        async with gate:
            try:
                outcomes.append(await run())
            except Exception as err:  # counted and printed, never hidden
                errors.append(f"{case_id}: {type(err).__name__}: {err}")
        done = len(outcomes) + len(errors)
        if progress and (done % step == 0 or done == len(runs)):
            progress.say(f"{name}: {done}/{len(runs)} done")

    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for case_id, run in runs:
            group.create_task(one(case_id, run))
    return time.perf_counter() - started, outcomes, errors


async def _histories(client: Client, case_ids: Sequence[str]) -> list[WorkflowHistory]:
    gate = asyncio.Semaphore(HISTORY_FETCH_CONCURRENCY)

    async def fetch(case_id: str) -> WorkflowHistory:
        async with gate:
            return await client.get_workflow_handle(case_id).fetch_history()

    return list(await asyncio.gather(*(fetch(case_id) for case_id in case_ids)))


async def _phase(
    name: str,
    runs: Sequence[tuple[str, CaseRun]],
    *,
    client: Client,
    opts: Options,
    progress: Progress,
    engine: Engine | None,
    expected_activities: int,
) -> PhaseResult:
    system, path = name.split("/")
    progress.say(f"{name}: {len(runs)} cases, {opts.concurrency} in flight")
    wall, outcomes, errors = await _run_cases(name, runs, opts.concurrency, progress)
    case_ids = [case_id for case_id, _ in runs]
    histories = await _histories(client, case_ids)
    result = PhaseResult(
        phase=name,
        system="podium" if system == "refund" else system,
        path=path,
        n=len(runs),
        wall_s=wall,
        latencies_ms=[o.latency_ms for o in outcomes],
        mismatches=[f"{o.case_id}: {o.detail}" for o in outcomes if not o.ok],
        errors=errors,
        timelines=[timeline(h) for h in histories],
        update_attempts=Spread.of([o.update_attempts for o in outcomes])
        if path == "approval"
        else None,
        refund_rows=count_refunds(engine, case_ids) if engine is not None else None,
        expected_activities=expected_activities,
    )
    progress.say(
        f"{name}: {result.throughput:.1f} cases/s, {len(result.mismatches)} mismatches, "
        f"{len(errors)} errors"
    )
    for line in [*result.mismatches, *errors]:
        progress.say(f"  {name} FAILED {line}")
    return result


async def _warm_up(
    name: str, runs: Sequence[tuple[str, CaseRun]], opts: Options, progress: Progress
) -> None:
    """Untimed cases first (sandbox imports, thread pool, SQLite); they must verify too."""
    _, outcomes, errors = await _run_cases(name, runs, opts.concurrency, None)
    failures = [f"{o.case_id}: {o.detail}" for o in outcomes if not o.ok] + errors
    if failures:
        raise RuntimeError(f"warm-up {name} failed:\n" + "\n".join(failures))
    progress.say(f"warm-up {name}: {len(runs)} cases ok")


def bare_worker(podium: Worker, task_queue: str) -> Worker:
    """A worker for the baseline with exactly the Podium worker's configuration."""
    config = podium.config()
    config["task_queue"] = task_queue
    config["workflows"] = [BareWorkflow]
    config["activities"] = [noop]
    return Worker(**config)


# --- the run ------------------------------------------------------------------------------------


def _machine() -> dict[str, Any]:
    try:
        cli = subprocess.run(
            [str(TEMPORAL_CLI), "--version"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        cli = "temporal CLI (version unknown)"
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(terse=True),
        "python": platform.python_version(),
        "temporalio": temporalio.__version__,
        "temporal_cli": cli,
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


async def run_benchmark(opts: Options, out: TextIO = sys.stderr) -> dict[str, Any]:
    """Run every phase and return the report (see `bench/README.md`)."""
    if opts.n < 1 or opts.concurrency < 1 or opts.warmup < 1:
        raise ValueError("--n, --concurrency and --warmup must be at least 1")
    progress = Progress(out)
    machine = _machine()
    run = uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory(prefix="podium-bench-") as tmp:
        workdir = Path(tmp)
        settings = Settings(
            data_dir=workdir,
            database_url=f"sqlite:///{workdir / 'podium.db'}",
            task_queue=f"bench-refund-{run}",
        )
        engine = make_engine(settings.resolved_database_url)
        try:
            create_tables(engine)
            policy = RefundPolicy()
            limit = policy.auto_refund_limit_cents
            rng = random.Random(opts.seed)
            # Under the limit: automatic. Over it (but under the high-risk multiple): approval.
            under = {"min_cents": limit // 20, "max_cents": limit - 100}
            over = {"min_cents": limit + 100, "max_cents": 4 * limit}
            auto = seed_cases(
                engine,
                label=f"{run}-auto",
                first_number=AUTO_ORDERS,
                count=opts.n,
                rng=rng,
                **under,
            )
            approval = seed_cases(
                engine,
                label=f"{run}-approval",
                first_number=APPROVAL_ORDERS,
                count=opts.n,
                rng=rng,
                **over,
            )
            warm_auto = seed_cases(
                engine,
                label=f"{run}-warm-auto",
                first_number=WARM_AUTO_ORDERS,
                count=opts.warmup,
                rng=rng,
                **under,
            )
            warm_approval = seed_cases(
                engine,
                label=f"{run}-warm-approval",
                first_number=WARM_APPROVAL_ORDERS,
                count=opts.warmup,
                rng=rng,
                **over,
            )
            progress.say(f"seeded {2 * (opts.n + opts.warmup)} customers and orders in {workdir}")
            started = time.perf_counter()
            models = EmbeddedModels.load()
            progress.say(f"embedded models loaded in {time.perf_counter() - started:.1f}s")
            async with asyncio.timeout(opts.timeout_s):
                report = await _run_on_server(
                    opts,
                    settings,
                    engine,
                    models,
                    policy,
                    run,
                    progress,
                    auto=auto,
                    approval=approval,
                    warm_auto=warm_auto,
                    warm_approval=warm_approval,
                )
        finally:
            engine.dispose()
    report["machine"] = machine
    report["config"] = {
        "n": opts.n,
        "concurrency": opts.concurrency,
        "warmup": opts.warmup,
        "seed": opts.seed,
        "auto_refund_limit_cents": limit,
        "max_cached_workflows": settings.max_cached_workflows,
        "max_concurrent_activities": settings.max_concurrent_activities,
        "activity_threads": settings.activity_threads,
        "activity_start_to_close_s": SYSTEM_TIMEOUT.total_seconds(),
        "update_retry_interval_s": UPDATE_RETRY_INTERVAL_S,
    }
    return report


async def _run_on_server(
    opts: Options,
    settings: Settings,
    engine: Engine,
    models: EmbeddedModels,
    policy: RefundPolicy,
    run: str,
    progress: Progress,
    *,
    auto: list[BenchCase],
    approval: list[BenchCase],
    warm_auto: list[BenchCase],
    warm_approval: list[BenchCase],
) -> dict[str, Any]:
    progress.say("starting the Temporal dev server")
    async with dev_server(Path(settings.data_dir), sa.ALL) as server:
        client = server.client
        progress.say(f"Temporal dev server ready on {server.address}")
        podium_queue, bare_queue = settings.task_queue, f"bench-bare-{run}"
        with ThreadPoolExecutor(max_workers=settings.activity_threads) as executor:
            podium = build_worker(
                client,
                settings,
                activities=build_activities(engine, models),
                executor=executor,
                task_queue=podium_queue,
            )
            async with podium, bare_worker(podium, bare_queue):

                def refund_runs(cases: list[BenchCase], approve: bool) -> list[tuple[str, CaseRun]]:
                    return [
                        (
                            c.case_id,
                            lambda c=c: _refund_case(
                                client, podium_queue, c, policy, approve=approve
                            ),
                        )
                        for c in cases
                    ]

                def bare_runs(
                    label: str, count: int, shape: BareInput
                ) -> list[tuple[str, CaseRun]]:
                    ids = [f"bench-{run}-{label}-{i:05d}" for i in range(count)]
                    return [(i, lambda i=i: _bare_case(client, bare_queue, i, shape)) for i in ids]

                # Warm up the refund paths, then read the baseline's shape off their histories.
                await _warm_up("refund/auto", refund_runs(warm_auto, False), opts, progress)
                await _warm_up("refund/approval", refund_runs(warm_approval, True), opts, progress)
                auto_history, approval_history = await _histories(
                    client, [warm_auto[0].case_id, warm_approval[0].case_id]
                )
                auto_count = scheduled_activities(auto_history)
                gate = approval_shape(approval_history)
                progress.say(
                    f"a refund/auto case runs {auto_count} activities; a refund/approval case "
                    f"{gate.total}: {gate.before} before the gate opens, {gate.during} more "
                    f"before it waits, {gate.after} after the decision"
                )
                timeout = SYSTEM_TIMEOUT
                bare_auto = BareInput(before=auto_count, start_to_close=timeout)
                bare_approval = BareInput(
                    before=gate.before,
                    during=gate.during,
                    after=gate.after,
                    gate=True,
                    start_to_close=timeout,
                )
                await _warm_up(
                    "bare/auto", bare_runs("warm-bare-auto", opts.warmup, bare_auto), opts, progress
                )
                await _warm_up(
                    "bare/approval",
                    bare_runs("warm-bare-approval", opts.warmup, bare_approval),
                    opts,
                    progress,
                )

                common: dict[str, Any] = {"client": client, "opts": opts, "progress": progress}
                phases = [
                    await _phase(
                        "refund/auto",
                        refund_runs(auto, False),
                        engine=engine,
                        expected_activities=auto_count,
                        **common,
                    ),
                    await _phase(
                        "bare/auto",
                        bare_runs("bare-auto", opts.n, bare_auto),
                        engine=None,
                        expected_activities=auto_count,
                        **common,
                    ),
                    await _phase(
                        "refund/approval",
                        refund_runs(approval, True),
                        engine=engine,
                        expected_activities=gate.total,
                        **common,
                    ),
                    await _phase(
                        "bare/approval",
                        bare_runs("bare-approval", opts.n, bare_approval),
                        engine=None,
                        expected_activities=gate.total,
                        **common,
                    ),
                ]
            progress.say("stopping the workers and the Temporal dev server")
    by_name = {p.phase: p for p in phases}
    return {
        "benchmark": "refund",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "shapes": {
            "auto": {"activities": auto_count},
            "approval": {
                "activities": gate.total,
                "before_gate": gate.before,
                "while_gate_opens": gate.during,
                "after_decision": gate.after,
            },
        },
        "phases": [p.as_dict() for p in phases],
        "ratios": {
            path: ratios(by_name[f"refund/{path}"], by_name[f"bare/{path}"])
            for path in ("auto", "approval")
        },
        "verified": all(p.verified for p in phases),
    }


# --- command line -------------------------------------------------------------------------------


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def parse_args(argv: Sequence[str] | None = None) -> tuple[Options, bool, Path | None]:
    parser = argparse.ArgumentParser(
        prog="python -m bench.refund",
        description="Podium's refund process vs a bare Temporal workflow, in the same run.",
    )
    parser.add_argument("--n", type=_positive, default=DEFAULT_N, help="cases per phase")
    parser.add_argument(
        "--concurrency", type=_positive, default=DEFAULT_CONCURRENCY, help="cases in flight"
    )
    parser.add_argument(
        "--warmup", type=_positive, default=DEFAULT_WARMUP, help="untimed cases per phase first"
    )
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="give up after this many seconds"
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the generated data")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    parser.add_argument("--out", type=Path, help="also write the JSON report to this file")
    args = parser.parse_args(argv)
    opts = Options(
        n=args.n,
        concurrency=args.concurrency,
        warmup=args.warmup,
        timeout_s=args.timeout,
        seed=args.seed,
    )
    return opts, args.json, args.out


def main(argv: Sequence[str] | None = None) -> int:
    opts, as_json, out = parse_args(argv)
    # Workers and activities log through structlog; keep their chatter out of the figures.
    configure_logging("WARNING")
    try:
        report = asyncio.run(run_benchmark(opts))
    except KeyboardInterrupt:
        print("interrupted; the Temporal dev server was stopped", file=sys.stderr)
        return 130
    text = json.dumps(report, indent=2, allow_nan=True)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    print(text if as_json else render_table(report))
    return 0 if report["verified"] else 1


if __name__ == "__main__":
    sys.exit(main())
