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
from functools import partial
from pathlib import Path
from typing import Any, TextIO

import temporalio
from sqlalchemy.engine import Engine
from temporalio.client import Client, WorkflowHandle, WorkflowHistory, WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode
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
    # Extra `--dynamic-config-value KEY=VALUE` settings for the dev server.
    dynamic_config: tuple[str, ...] = ()


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
        except RPCError as err:
            # The case finished without asking (a wrong path): its result tells the outcome.
            if err.status == RPCStatusCode.NOT_FOUND:
                return attempts
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


def bare_worker(podium: Worker, task_queue: str) -> Worker:
    """A worker for the baseline with exactly the Podium worker's configuration."""
    config = podium.config()
    config["task_queue"] = task_queue
    config["workflows"] = [BareWorkflow]
    config["activities"] = [noop]
    return Worker(**config)


@dataclass(frozen=True)
class CaseSets:
    """The generated refund cases: timed and warm-up, per path."""

    auto: list[BenchCase]
    approval: list[BenchCase]
    warm_auto: list[BenchCase]
    warm_approval: list[BenchCase]

    @classmethod
    def seed(cls, engine: Engine, opts: Options, run: str, policy: RefundPolicy) -> CaseSets:
        limit = policy.auto_refund_limit_cents
        # Under the limit: automatic. Over it (and under the high-risk multiple): approval.
        under, over = (limit // 20, limit - 100), (limit + 100, 4 * limit)
        rng = random.Random(opts.seed)
        groups = [
            ("auto", AUTO_ORDERS, opts.n, under),
            ("approval", APPROVAL_ORDERS, opts.n, over),
            ("warm-auto", WARM_AUTO_ORDERS, opts.warmup, under),
            ("warm-approval", WARM_APPROVAL_ORDERS, opts.warmup, over),
        ]
        return cls(
            *(
                seed_cases(
                    engine,
                    label=f"{run}-{label}",
                    first_number=first,
                    count=count,
                    min_cents=low,
                    max_cents=high,
                    rng=rng,
                )
                for label, first, count, (low, high) in groups
            )
        )


class Bench:
    """One run's client, task queues and cases: builds case runs and measures phases."""

    def __init__(
        self,
        client: Client,
        engine: Engine,
        opts: Options,
        progress: Progress,
        *,
        run: str,
        policy: RefundPolicy,
        podium_queue: str,
        bare_queue: str,
    ) -> None:
        self.client = client
        self.engine = engine
        self.opts = opts
        self.progress = progress
        self.run = run
        self.policy = policy
        self.podium_queue = podium_queue
        self.bare_queue = bare_queue

    def refund_runs(self, cases: list[BenchCase], *, approve: bool) -> list[tuple[str, CaseRun]]:
        return [
            (
                case.case_id,
                partial(
                    _refund_case, self.client, self.podium_queue, case, self.policy, approve=approve
                ),
            )
            for case in cases
        ]

    def bare_runs(self, label: str, count: int, shape: BareInput) -> list[tuple[str, CaseRun]]:
        ids = [f"bench-{self.run}-{label}-{i:05d}" for i in range(count)]
        return [
            (case_id, partial(_bare_case, self.client, self.bare_queue, case_id, shape))
            for case_id in ids
        ]

    async def warm_up(self, name: str, runs: Sequence[tuple[str, CaseRun]]) -> None:
        """Untimed cases first (sandbox imports, thread pool, SQLite); they must verify too."""
        _, outcomes, errors = await _run_cases(name, runs, self.opts.concurrency, None)
        failures = [f"{o.case_id}: {o.detail}" for o in outcomes if not o.ok] + errors
        if failures:
            raise RuntimeError(f"warm-up {name} failed:\n" + "\n".join(failures))
        self.progress.say(f"warm-up {name}: {len(runs)} cases ok")

    async def phase(
        self, name: str, runs: Sequence[tuple[str, CaseRun]], *, expected_activities: int
    ) -> PhaseResult:
        system, path = name.split("/")
        say = self.progress.say
        say(f"{name}: {len(runs)} cases, {self.opts.concurrency} in flight")
        wall, outcomes, errors = await _run_cases(name, runs, self.opts.concurrency, self.progress)
        # Everything below happens after the clock stopped.
        case_ids = [case_id for case_id, _ in runs]
        histories = await _histories(self.client, case_ids)
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
            update_attempts=(
                Spread.of([o.update_attempts for o in outcomes]) if path == "approval" else None
            ),
            refund_rows=count_refunds(self.engine, case_ids) if system == "refund" else None,
            expected_activities=expected_activities,
        )
        say(
            f"{name}: {result.throughput:.1f} cases/s, {len(result.mismatches)} mismatches, "
            f"{len(errors)} errors"
        )
        for line in [*result.mismatches, *errors]:
            say(f"  {name} FAILED {line}")
        return result

    async def run_phases(self, cases: CaseSets) -> dict[str, Any]:
        await self.warm_up("refund/auto", self.refund_runs(cases.warm_auto, approve=False))
        await self.warm_up("refund/approval", self.refund_runs(cases.warm_approval, approve=True))
        # The baseline's shape comes from the refund cases' own histories.
        auto_history, approval_history = await _histories(
            self.client, [cases.warm_auto[0].case_id, cases.warm_approval[0].case_id]
        )
        auto_count = scheduled_activities(auto_history)
        gate = approval_shape(approval_history)
        self.progress.say(
            f"a refund/auto case runs {auto_count} activities; a refund/approval case "
            f"{gate.total}: {gate.before} before the gate opens, {gate.during} more "
            f"before it waits, {gate.after} after the decision"
        )
        bare_auto = BareInput(before=auto_count, start_to_close=SYSTEM_TIMEOUT)
        bare_approval = BareInput(
            before=gate.before,
            during=gate.during,
            after=gate.after,
            gate=True,
            start_to_close=SYSTEM_TIMEOUT,
        )
        await self.warm_up(
            "bare/auto", self.bare_runs("warm-bare-auto", self.opts.warmup, bare_auto)
        )
        await self.warm_up(
            "bare/approval", self.bare_runs("warm-bare-approval", self.opts.warmup, bare_approval)
        )

        n = self.opts.n
        phases = [
            await self.phase(
                "refund/auto",
                self.refund_runs(cases.auto, approve=False),
                expected_activities=auto_count,
            ),
            await self.phase(
                "bare/auto",
                self.bare_runs("bare-auto", n, bare_auto),
                expected_activities=auto_count,
            ),
            await self.phase(
                "refund/approval",
                self.refund_runs(cases.approval, approve=True),
                expected_activities=gate.total,
            ),
            await self.phase(
                "bare/approval",
                self.bare_runs("bare-approval", n, bare_approval),
                expected_activities=gate.total,
            ),
        ]
        by_name = {p.phase: p for p in phases}
        return {
            "shapes": {
                "auto": {"activities": auto_count},
                "approval": {
                    "activities": gate.total,
                    "before_gate": gate.before,
                    "gate_open_before_wait": gate.during,
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
    report: dict[str, Any] = {
        "benchmark": "refund",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": _machine(),
    }
    run = uuid.uuid4().hex[:8]
    policy = RefundPolicy()
    with tempfile.TemporaryDirectory(prefix="podium-bench-") as tmp:
        workdir = Path(tmp)
        settings = Settings(
            data_dir=workdir,
            database_url=f"sqlite:///{workdir / 'podium.db'}",
            task_queue=f"bench-refund-{run}",
        )
        report["config"] = {
            "n": opts.n,
            "concurrency": opts.concurrency,
            "warmup": opts.warmup,
            "seed": opts.seed,
            "auto_refund_limit_cents": policy.auto_refund_limit_cents,
            "max_cached_workflows": settings.max_cached_workflows,
            "max_concurrent_activities": settings.max_concurrent_activities,
            "activity_threads": settings.activity_threads,
            "activity_start_to_close_s": SYSTEM_TIMEOUT.total_seconds(),
            "update_retry_interval_s": UPDATE_RETRY_INTERVAL_S,
            "server_dynamic_config": list(opts.dynamic_config),
        }
        engine = make_engine(settings.resolved_database_url)
        try:
            create_tables(engine)
            cases = CaseSets.seed(engine, opts, run, policy)
            progress.say(f"seeded {2 * (opts.n + opts.warmup)} customers and orders in {workdir}")
            started = time.perf_counter()
            models = EmbeddedModels.load()
            progress.say(f"embedded models loaded in {time.perf_counter() - started:.1f}s")
            async with asyncio.timeout(opts.timeout_s):
                progress.say("starting the Temporal dev server")
                extra = [a for kv in opts.dynamic_config for a in ("--dynamic-config-value", kv)]
                async with dev_server(workdir, sa.ALL, extra) as server:
                    progress.say(f"Temporal dev server ready on {server.address}")
                    bench = Bench(
                        server.client,
                        engine,
                        opts,
                        progress,
                        run=run,
                        policy=policy,
                        podium_queue=settings.task_queue,
                        bare_queue=f"bench-bare-{run}",
                    )
                    with ThreadPoolExecutor(max_workers=settings.activity_threads) as executor:
                        podium = build_worker(
                            server.client,
                            settings,
                            activities=build_activities(engine, models),
                            executor=executor,
                            task_queue=bench.podium_queue,
                        )
                        async with podium, bare_worker(podium, bench.bare_queue):
                            report |= await bench.run_phases(cases)
                    progress.say("stopping the Temporal dev server")
        finally:
            engine.dispose()
    return report


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
    parser.add_argument(
        "--dynamic-config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dev server dynamic config (repeatable), e.g. history.transferProcessorMaxPollRPS=1000",
    )
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    parser.add_argument("--out", type=Path, help="also write the JSON report to this file")
    args = parser.parse_args(argv)
    opts = Options(
        n=args.n,
        concurrency=args.concurrency,
        warmup=args.warmup,
        timeout_s=args.timeout,
        seed=args.seed,
        dynamic_config=tuple(args.dynamic_config),
    )
    return opts, args.json, args.out


def main(argv: Sequence[str] | None = None) -> int:
    opts, as_json, out = parse_args(argv)
    # Workers and activities log through structlog; keep their chatter out of the figures.
    configure_logging("WARNING")
    try:
        report = asyncio.run(run_benchmark(opts))
    except KeyboardInterrupt:
        print("interrupted: the Temporal dev server is stopped", file=sys.stderr)
        return 130
    except TimeoutError:
        print(f"gave up after --timeout {opts.timeout_s:.0f} s", file=sys.stderr)
        return 2
    text = json.dumps(report, indent=2, allow_nan=True)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    print(text if as_json else render_table(report))
    return 0 if report["verified"] else 1


if __name__ == "__main__":
    sys.exit(main())
