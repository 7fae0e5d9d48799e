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
throughput is cases over the phase's wall time. The bare phases' activity counts, and where the
approval baseline waits, are read off refund cases' own histories (a warm-up case and an approval
probe), so the baseline follows the process when it changes.
Progress goes to stderr; the table (or `--json`) to stdout. Exit code 1 when any outcome, refund
row or activity count did not verify.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
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
from bench.history import ApprovalShape, approval_shape, scheduled_activities, timeline
from bench.report import PhaseResult, Spread, ratios, render_table
from bench.server import TEMPORAL_CLI, DevServer, dev_server
from bench.types import BareDecisionResult, BareInput, BareResult
from core.db import create_tables, make_engine
from core.decision_tokens import DecisionKey
from core.logging import configure_logging
from core.settings import Settings
from worker import build_activities, build_worker
from workflows.contracts import search_attributes as sa
from workflows.contracts.approval import (
    ApprovalDecisionInput,
    ApprovalDecisionResult,
    decision_digest,
)
from workflows.refund.types import (
    CaseStatus,
    RefundCaseInput,
    RefundCaseResult,
    RefundCaseState,
    RefundOutcome,
    RefundPolicy,
)
from workflows.refund.workflow import APPROVAL_REQUEST_ID, SYSTEM_TIMEOUT

__all__ = ["Options", "main", "run_benchmark"]

DEFAULT_N = 200
DEFAULT_CONCURRENCY = 20
DEFAULT_WARMUP = 3
DEFAULT_TIMEOUT_S = 1_800.0
DEFAULT_SEED = 7

APPROVER = "bench@podium.test"
# The bench's approval cases are medium risk (over the automatic limit, under the high-risk
# multiple): one approval level, a team lead.
APPROVER_ROLES = ("team_lead",)
CHANNEL = "email"
# Nothing a run starts may outlive it on the server.
CASE_EXECUTION_TIMEOUT = timedelta(minutes=10)
# A case with no outcome after this (e.g. an automatic case that went to a person, or an
# activity failing and retrying) is a mismatch and is terminated: nothing hangs the run.
CASE_TIMEOUT_S = 60.0
# The decision is sent at once and retried while the case says no approval is pending yet.
NOT_PENDING = "no approval is pending"
UPDATE_RETRY_INTERVAL_S = 0.1
UPDATE_RETRY_LIMIT_S = 60.0
HISTORY_FETCH_CONCURRENCY = 10

# Order numbers of the generated data, one block per group of cases.
AUTO_ORDERS, APPROVAL_ORDERS, WARM_AUTO_ORDERS, WARM_APPROVAL_ORDERS, PROBE_ORDERS = (
    600_000,
    700_000,
    800_000,
    900_000,
    990_000,
)
PROBE_POLL_S = 0.05
PROBE_TIMEOUT_S = 60.0


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


@dataclass
class _Tries:
    n: int = 0


async def _decide(handle: WorkflowHandle[Any, Any], result_type: type, tries: _Tries) -> None:
    """Approve through the `decide` update, retrying while no approval is pending yet."""
    decision = ApprovalDecisionInput(
        request_id=APPROVAL_REQUEST_ID,
        approve=True,
        approver=APPROVER,
        approver_roles=list(APPROVER_ROLES),
    )
    # The token the API would mint; the worker's verifier has the same settings' key.
    credential = DecisionKey.from_settings(Settings()).mint(
        subject=APPROVER,
        roles=list(APPROVER_ROLES),
        digest=decision_digest(handle.id, decision),
    )
    decision = decision.model_copy(update={"credential": credential})
    deadline = time.monotonic() + UPDATE_RETRY_LIMIT_S
    while True:
        tries.n += 1
        try:
            await handle.execute_update("decide", decision, result_type=result_type)
            return
        except WorkflowUpdateFailedError as err:
            reason = str(getattr(err.cause, "message", err.cause))
            if NOT_PENDING not in reason or time.monotonic() > deadline:
                raise
        except RPCError as err:
            # The case finished without asking (a wrong path): its result tells the outcome.
            if err.status == RPCStatusCode.NOT_FOUND:
                return
            raise
        await asyncio.sleep(UPDATE_RETRY_INTERVAL_S)


async def _start_and_finish(
    client: Client,
    workflow: str,
    arg: Any,
    *,
    case_id: str,
    task_queue: str,
    result_type: type,
    decide_result_type: type | None,
) -> tuple[float, Any, int, str | None]:
    """Start a case, approve it when asked, wait for its result: (latency ms, result, decide
    tries, problem). A case with no result in time is queried, terminated and reported."""
    started = time.perf_counter()
    tries = _Tries()
    handle = await client.start_workflow(
        workflow,
        arg,
        id=case_id,
        task_queue=task_queue,
        result_type=result_type,
        execution_timeout=CASE_EXECUTION_TIMEOUT,
    )
    try:
        async with asyncio.timeout(CASE_TIMEOUT_S):
            if decide_result_type is not None:
                await _decide(handle, decide_result_type, tries)
            result = await handle.result()
    except TimeoutError:
        latency = (time.perf_counter() - started) * 1_000
        where = await _where_it_stands(handle)
        await handle.terminate("bench: no outcome in time")
        return latency, None, tries.n, f"no outcome after {CASE_TIMEOUT_S:.0f} s; {where}"
    return (time.perf_counter() - started) * 1_000, result, tries.n, None


async def _where_it_stands(handle: WorkflowHandle[Any, Any]) -> str:
    description = await handle.describe()
    pending = [a.activity_type.name for a in description.raw_description.pending_activities]
    text = f"pending activities {pending or 'none'}"
    if description.workflow_type == "refund":
        state = await handle.query("get_state", result_type=RefundCaseState)
        text += (
            f", case status {state.status.value}, intent {state.intent} ({state.intent_confidence})"
        )
    return text


def _case_input(case: BenchCase, policy: RefundPolicy) -> RefundCaseInput:
    return RefundCaseInput(
        channel=CHANNEL,
        customer_id=case.customer_id,
        order_id=case.order_id,
        message=case.message,
        policy=policy,
    )


async def _refund_case(
    client: Client, task_queue: str, case: BenchCase, policy: RefundPolicy, *, approve: bool
) -> CaseOutcome:
    expected = RefundOutcome.APPROVED if approve else RefundOutcome.AUTO_RESOLVED
    latency, result, tries, problem = await _start_and_finish(
        client,
        "refund",
        _case_input(case, policy),
        case_id=case.case_id,
        task_queue=task_queue,
        result_type=RefundCaseResult,
        decide_result_type=ApprovalDecisionResult if approve else None,
    )
    if result is None:
        return CaseOutcome(case.case_id, latency, False, f"{problem} (expected {expected})", tries)
    ok = result.outcome == expected and result.refund_id is not None
    detail = f"outcome {result.outcome.value}, expected {expected.value}: " + "; ".join(
        result.reasons
    )
    return CaseOutcome(case.case_id, latency, ok, detail, tries)


async def _bare_case(
    client: Client, task_queue: str, case_id: str, shape: BareInput
) -> CaseOutcome:
    expected = shape.before + shape.during + shape.after
    latency, result, tries, problem = await _start_and_finish(
        client,
        "bench_bare",
        shape,
        case_id=case_id,
        task_queue=task_queue,
        result_type=BareResult,
        decide_result_type=BareDecisionResult if shape.gate else None,
    )
    if result is None:
        return CaseOutcome(case_id, latency, False, str(problem), tries)
    ok = result.activities == expected and (result.approved is True) == shape.gate
    detail = f"ran {result.activities} activities (expected {expected}), approved={result.approved}"
    return CaseOutcome(case_id, latency, ok, detail, tries)


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
                errors.append(f"{case_id}: {_describe(err)}")
        done = len(outcomes) + len(errors)
        if progress and (done % step == 0 or done == len(runs)):
            progress.say(f"{name}: {done}/{len(runs)} done")

    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for case_id, run in runs:
            group.create_task(one(case_id, run))
    return time.perf_counter() - started, outcomes, errors


def _describe(err: BaseException) -> str:
    """The error and its causes: Temporal's errors carry the reason in `cause`."""
    parts = [f"{type(err).__name__}: {err}"]
    cause = getattr(err, "cause", None) or err.__cause__
    while cause is not None and len(parts) < 4:
        parts.append(f"{type(cause).__name__}: {cause}")
        cause = getattr(cause, "cause", None) or cause.__cause__
    return " <- ".join(parts)


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
    # Podium's interceptors (the count and the outcome record of each case's close) are
    # Podium's own work, measured on its side like its workflow code; the baseline runs none.
    config["interceptors"] = []
    return Worker(**config)


@dataclass(frozen=True)
class CaseSets:
    """The generated refund cases: timed and warm-up, per path."""

    auto: list[BenchCase]
    approval: list[BenchCase]
    warm_auto: list[BenchCase]
    warm_approval: list[BenchCase]
    probe: list[BenchCase]  # one approval case, decided only once it waits

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
            ("probe", PROBE_ORDERS, 1, over),
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
        server: DevServer,
        engine: Engine,
        opts: Options,
        progress: Progress,
        *,
        run: str,
        policy: RefundPolicy,
        podium_queue: str,
        bare_queue: str,
    ) -> None:
        self.server = server
        self.client = server.client
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
        cpu_before = time.process_time(), self.server.cpu_seconds()
        wall, outcomes, errors = await _run_cases(name, runs, self.opts.concurrency, self.progress)
        cpu_after = time.process_time(), self.server.cpu_seconds()
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
            cpu_s={
                "bench_process": cpu_after[0] - cpu_before[0],
                "temporal_server": (
                    cpu_after[1] - cpu_before[1]
                    if cpu_after[1] is not None and cpu_before[1] is not None
                    else None
                ),
            },
        )
        say(
            f"{name}: {result.throughput:.1f} cases/s, {len(result.mismatches)} mismatches, "
            f"{len(errors)} errors"
        )
        for line in [*result.mismatches, *errors]:
            say(f"  {name} FAILED {line}")
        return result

    async def probe_approval(self, case: BenchCase) -> ApprovalShape:
        """Run one approval case, deciding only once it sits idle waiting for the decision,
        and split its activities around the gate: the shape of the approval baseline."""
        handle = await self.client.start_workflow(
            "refund",
            _case_input(case, self.policy),
            id=case.case_id,
            task_queue=self.podium_queue,
            result_type=RefundCaseResult,
            execution_timeout=CASE_EXECUTION_TIMEOUT,
        )
        deadline = time.monotonic() + PROBE_TIMEOUT_S
        while True:
            state = await handle.query("get_state", result_type=RefundCaseState)
            if state.status == CaseStatus.AWAITING_APPROVAL:
                raw = (await handle.describe()).raw_description
                if not raw.pending_activities and not raw.HasField("pending_workflow_task"):
                    break
            if state.outcome is not None or time.monotonic() > deadline:
                raise RuntimeError(f"probe case {case.case_id} never waited for approval: {state}")
            await asyncio.sleep(PROBE_POLL_S)
        await _decide(handle, ApprovalDecisionResult, _Tries())
        result: RefundCaseResult = await handle.result()
        if result.outcome != RefundOutcome.APPROVED:
            raise RuntimeError(f"probe case {case.case_id} ended {result.outcome}: {result}")
        return approval_shape(await handle.fetch_history())

    async def run_phases(self, cases: CaseSets) -> dict[str, Any]:
        await self.warm_up("refund/auto", self.refund_runs(cases.warm_auto, approve=False))
        await self.warm_up("refund/approval", self.refund_runs(cases.warm_approval, approve=True))
        # The baseline's shape comes from refund cases' own histories.
        auto_count = scheduled_activities(
            await self.client.get_workflow_handle(cases.warm_auto[0].case_id).fetch_history()
        )
        gate = await self.probe_approval(cases.probe[0])
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
            progress.say(
                f"seeded {2 * (opts.n + opts.warmup) + 1} customers and orders in {workdir}"
            )
            started = time.perf_counter()
            models = EmbeddedModels.load()
            progress.say(f"embedded models loaded in {time.perf_counter() - started:.1f}s")
            async with asyncio.timeout(opts.timeout_s):
                progress.say("starting the Temporal dev server")
                extra = [a for kv in opts.dynamic_config for a in ("--dynamic-config-value", kv)]
                async with dev_server(workdir, sa.ALL, extra) as server:
                    progress.say(f"Temporal dev server ready on {server.address}")
                    bench = Bench(
                        server,
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
    report["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
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
        help="dev server dynamic config (repeatable), e.g. history.transferProcessorMaxPollRPS=100",
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


def _json_safe(value: Any) -> Any:
    """NaN (a figure that could not be computed) becomes null: strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def main(argv: Sequence[str] | None = None) -> int:
    opts, as_json, out = parse_args(argv)
    # Workers and activities log through structlog; keep their chatter out of the figures.
    configure_logging("WARNING")
    try:
        report = asyncio.run(run_benchmark(opts))
    except KeyboardInterrupt:
        print("interrupted: the Temporal dev server is stopped", file=sys.stderr)
        return 130
    except TimeoutError as err:
        print(f"gave up: {str(err) or f'--timeout {opts.timeout_s:.0f} s passed'}", file=sys.stderr)
        return 2
    text = json.dumps(_json_safe(report), indent=2, allow_nan=False)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    print(text if as_json else render_table(report))
    return 0 if report["verified"] else 1


if __name__ == "__main__":
    sys.exit(main())
