"""`make bench`: Podium against a bare workflow running the same activities, in one run.

    python -m bench.compare [--n 40] [--rounds 3] [--concurrency 10] [--parked 1000]
                            [--sample 30] [--warmup 3] [--out results/bench.json] [--json]

Production configuration on both sides: payload encryption on (a throwaway key), the refund
policy file on every case (`policies/refund.yaml`, evaluated by `evaluate_policy`), audit events,
decision tokens checked by `verify_decision`. One run starts its own Temporal dev server and
database (`bench.server`, `bench.data`) and two workers, each in its own subprocess (its CPU and
memory are read from `/proc` alone, apart from the server's and the benchmark client's):

- Podium: `python -m worker`, the real entry point, every process registered;
- bare: `python -m bench.shaped`, the same entry point (`worker.run`: same settings, activities
  and models, thread pool, sandbox, codec, decision key) with only `bench_shaped` registered: a
  plain workflow calling the same activities in the same order, audits as plain activities,
  and none of Podium's logic (gate, search attributes, details, state).

Phases:
1. warm-up: `--warmup` automatic cases per system, untimed;
2. parked (first, so that memory freed by other phases cannot hide what parked cases cost):
   `--parked` cases per system over the automatic limit (the policy's `team_lead` chain) until
   each waits for its decision (verified on the server); the worker's RSS before and after,
   idle both times: RSS per parked case (all cached: `--parked` below the cache);
3. decisions, one at a time, on `--sample` parked cases per system, interleaved: Podium's
   `decide` update (answers once the decision is carried out: the refund issued), Podium's
   `record_decision` update (answers once the decision is validated, verified and recorded),
   and the bare workflow's `decide` update (answers once verified and recorded); each timed to
   its answer (ack) and to the workflow result (outcome);
4. burst: as many of the remaining parked cases on both sides decided at once (Podium:
   `record_decision`): the time until every outcome is in;
5. throughput, interleaved: `--rounds` rounds, each one Podium then bare (the order alternates
   per round) of `--n` automatic cases (the policy auto-approves: refund issued, reply sent),
   `--concurrency` in flight; per system over all rounds: cases/s, latency p50/p95 (start ->
   result), worker-process CPU per case and the server's CPU per case.

The table goes to stdout, progress to stderr, the JSON to `--out` (default results/bench.json).
Exit code 1 when a case did not end as expected, 2 on `--timeout`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from temporalio.client import Client, WorkflowExecutionStatus

from activities.policy import PolicyVersions
from bench.data import BenchCase, count_refunds, seed_cases
from bench.gate import (
    KIB,
    MIB,
    Progress,
    WorkerProcess,
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
from bench.shaped_types import ShapedDecisionResult, ShapedInput, ShapedResult
from core.db import create_tables, make_engine
from core.decision_tokens import DecisionKey
from core.logging import configure_logging
from core.policy import load_policy, policy_path
from workflows.contracts import search_attributes as sa
from workflows.contracts.approval import (
    ApprovalAction,
    ApprovalDecisionInput,
    ApprovalDecisionResult,
    decision_digest,
)
from workflows.contracts.case import CaseContext
from workflows.refund.starting import RefundRequest, prepare
from workflows.refund.types import RefundCaseResult, RefundOutcome
from workflows.refund.workflow import APPROVAL_REQUEST_ID

__all__ = ["Options", "main", "run_benchmark"]

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "results" / "bench.json"
APPROVER = "bench@podium.test"
APPROVER_ROLES = ["team_lead"]
CHANNEL = "email"
CASE_TIMEOUT_S = 180.0
PARK_SWEEP_S = 1.0
PARK_TIMEOUT_S = 600.0
DECIDE_TIMEOUT_S = 120.0
AUTO_ORDERS, PARKED_ORDERS, WARM_ORDERS = 200_000, 300_000, 400_000


@dataclass(frozen=True)
class Options:
    n: int = 40
    rounds: int = 3
    concurrency: int = 10
    parked: int = 1000
    sample: int = 30
    warmup: int = 3
    seed: int = 5
    timeout_s: float = 1_800.0


@dataclass
class Throughput:
    cases: int = 0
    wall_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    worker_cpu_s: float = 0.0
    server_cpu_s: float = 0.0
    failures: list[str] = field(default_factory=list)

    def report(self) -> dict[str, Any]:
        return {
            "cases": self.cases,
            "cases_per_s": _round(self.cases / self.wall_s if self.wall_s else None, 2),
            "latency_ms": _spread(self.latencies_ms),
            "worker_cpu_ms_per_case": _round(1_000 * self.worker_cpu_s / max(self.cases, 1), 1),
            "server_cpu_ms_per_case": _round(1_000 * self.server_cpu_s / max(self.cases, 1), 1),
            "failures": self.failures,
        }


@dataclass
class ParkedRun:
    cases: list[str] = field(default_factory=list)
    rss_before: int = 0
    rss_after: int = 0
    worker_cpu_s: float = 0.0
    not_parked: list[str] = field(default_factory=list)

    def report(self) -> dict[str, Any]:
        n = max(len(self.cases), 1)
        return {
            "cases": len(self.cases),
            "verified": len(self.cases) - len(self.not_parked),
            "worker_rss_mib_before": _round(self.rss_before / MIB, 1),
            "worker_rss_mib_parked": _round(self.rss_after / MIB, 1),
            "rss_kib_per_parked_case": _round((self.rss_after - self.rss_before) / KIB / n, 1),
            "worker_cpu_ms_per_parked_case": _round(1_000 * self.worker_cpu_s / n, 1),
            "not_parked": self.not_parked,
        }


@dataclass
class Decisions:
    ack_ms: list[float] = field(default_factory=list)
    outcome_ms: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def report(self) -> dict[str, Any]:
        return {
            "n": len(self.ack_ms),
            "ack_ms": _spread(self.ack_ms),
            "outcome_ms": _spread(self.outcome_ms),
            "failures": self.failures,
        }


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None or math.isnan(value) else round(value, digits)


def _spread(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "max": None}
    return {
        "p50": round(percentile(values, 50), 1),
        "p95": round(percentile(values, 95), 1),
        "max": round(max(values), 1),
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


# --- one case -------------------------------------------------------------------------------------


class Systems:
    """How the benchmark starts and decides each system's cases."""

    def __init__(
        self,
        client: Client,
        key: DecisionKey,
        policy: dict[str, Any],
        queues: dict[str, str],
        *,
        policy_stored: bool,
    ) -> None:
        """`policy_stored`: the policy is in the database under its digest (as the starter
        stores it): both systems' cases carry the digest, else the whole document."""
        self.client = client
        self.key = key
        self.policy = policy
        self.queues = queues
        self.policy_stored = policy_stored

    async def start(self, system: str, case: BenchCase) -> None:
        if system == "podium":
            request = RefundRequest(
                channel=CHANNEL,
                customer_id=case.customer_id,
                order_id=case.order_id,
                message=case.message,
            )
            context = CaseContext(
                case_id=case.case_id,
                requested_by=case.customer_id,
                policy_document=self.policy,
                policy_stored=self.policy_stored,
            )
            await self.client.start_workflow(
                "refund",
                prepare(request, context),
                id=case.case_id,
                task_queue=self.queues["podium"],
            )
        else:
            await self.client.start_workflow(
                "bench_shaped",
                ShapedInput(
                    customer_id=case.customer_id,
                    order_id=case.order_id,
                    message=case.message,
                    channel=CHANNEL,
                    policy_document=None if self.policy_stored else self.policy,
                    policy_digest=self.policy["digest"] if self.policy_stored else None,
                    auto_refund_limit=float(self.policy["limits"]["auto_refund_limit"]),
                ),
                id=case.case_id,
                task_queue=self.queues["bare"],
            )

    async def result(self, system: str, case_id: str) -> str | None:
        """None when the case ended as expected (a refund issued), else what went wrong."""
        if system == "podium":
            handle = self.client.get_workflow_handle(case_id, result_type=RefundCaseResult)
            result = await handle.result()
            if result.refund_id and result.outcome in (
                RefundOutcome.AUTO_RESOLVED,
                RefundOutcome.APPROVED,
            ):
                return None
            return f"outcome {result.outcome.value}: {'; '.join(result.reasons)}"
        shaped = await self.client.get_workflow_handle(case_id, result_type=ShapedResult).result()
        return None if shaped.refund_id else "no refund"

    async def run_case(self, system: str, case: BenchCase) -> float:
        started = time.perf_counter()
        await self.start(system, case)
        async with asyncio.timeout(CASE_TIMEOUT_S):
            problem = await self.result(system, case.case_id)
        if problem is not None:
            raise RuntimeError(problem)
        return (time.perf_counter() - started) * 1_000

    async def is_parked(self, system: str, case_id: str) -> bool:
        handle = self.client.get_workflow_handle(case_id)
        description = await handle.describe()
        raw = description.raw_description
        if (
            description.status != WorkflowExecutionStatus.RUNNING
            or raw.pending_activities
            or raw.HasField("pending_workflow_task")
        ):
            return False
        if system == "podium":
            return description.typed_search_attributes.get(sa.AWAITING_APPROVAL) is True
        return bool(await handle.query("parked", result_type=bool))

    def decision(self, case_id: str) -> ApprovalDecisionInput:
        decision = ApprovalDecisionInput(
            request_id=APPROVAL_REQUEST_ID,
            decision_id=f"bench-{case_id}",
            action=ApprovalAction.APPROVE,
            approver=APPROVER,
            approver_roles=APPROVER_ROLES,
        )
        credential = self.key.mint(
            subject=APPROVER, roles=APPROVER_ROLES, digest=decision_digest(case_id, decision)
        )
        return decision.model_copy(update={"credential": credential})

    async def decide(
        self, system: str, update: str, case_id: str, timeout: float = DECIDE_TIMEOUT_S
    ) -> tuple[float, float]:
        """Send the decision through `update`; (ms to its answer, ms to the case's result)."""
        handle = self.client.get_workflow_handle(case_id)
        result_type = ApprovalDecisionResult if system == "podium" else ShapedDecisionResult
        started = time.perf_counter()
        async with asyncio.timeout(timeout):
            await handle.execute_update(update, self.decision(case_id), result_type=result_type)
            acked = time.perf_counter()
            problem = await self.result(system, case_id)
        done = time.perf_counter()
        if problem is not None:
            raise RuntimeError(problem)
        return (acked - started) * 1_000, (done - started) * 1_000


# --- phases ---------------------------------------------------------------------------------------


async def _bounded_all(
    items: Sequence[BenchCase], concurrency: int, one: Callable[[BenchCase], Awaitable[None]]
) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def run(item: BenchCase) -> None:
        async with gate:
            await one(item)

    async with asyncio.TaskGroup() as group:
        for item in items:
            group.create_task(run(item))


async def throughput_round(
    systems: Systems,
    system: str,
    cases: Sequence[BenchCase],
    concurrency: int,
    worker: WorkerProcess,
    server_cpu: Callable[[], float | None],
    into: Throughput,
) -> None:
    async def one(case: BenchCase) -> None:
        try:
            into.latencies_ms.append(await systems.run_case(system, case))
        except Exception as err:  # counted and printed, never hidden
            into.failures.append(f"{case.case_id}: {type(err).__name__}: {err}")

    cpu, server = worker.cpu_seconds(), server_cpu()
    started = time.perf_counter()
    await _bounded_all(cases, concurrency, one)
    into.wall_s += time.perf_counter() - started
    into.cases += len(cases)
    into.worker_cpu_s += worker.cpu_seconds() - cpu
    after = server_cpu()
    if server is not None and after is not None:
        into.server_cpu_s += after - server


async def park(
    systems: Systems,
    system: str,
    cases: Sequence[BenchCase],
    concurrency: int,
    worker: WorkerProcess,
    progress: Progress,
) -> ParkedRun:
    run = ParkedRun(cases=[c.case_id for c in cases])
    await worker.wait_idle()
    run.rss_before = worker.rss()
    cpu = worker.cpu_seconds()
    todo = set(run.cases)

    async def one(case: BenchCase) -> None:
        await systems.start(system, case)
        async with asyncio.timeout(PARK_TIMEOUT_S):
            while not await systems.is_parked(system, case.case_id):
                await asyncio.sleep(PARK_SWEEP_S)
        todo.discard(case.case_id)

    async def guarded(case: BenchCase) -> None:
        try:
            await worker.alive_while(one(case), PARK_TIMEOUT_S + 30)
        except Exception as err:  # reported below as not parked
            progress.say(f"{system}: {case.case_id} did not park: {type(err).__name__}: {err}")

    await _bounded_all(cases, concurrency, guarded)
    await worker.wait_idle()
    run.worker_cpu_s = worker.cpu_seconds() - cpu
    run.rss_after = worker.rss()
    run.not_parked = sorted(todo)
    return run


async def decide_all(
    systems: Systems, podium: Sequence[str], bare: Sequence[str], progress: Progress
) -> dict[str, Decisions]:
    """One decision at a time, interleaved: Podium `decide`, Podium `record_decision`, bare."""
    results = {"podium_outcome": Decisions(), "podium_recorded": Decisions(), "bare": Decisions()}
    half = len(podium) // 2
    plan: list[tuple[str, str, str, str]] = []
    for i in range(max(half, len(bare))):
        if i < half:
            plan.append(("podium_outcome", "podium", "decide", podium[2 * i]))
            plan.append(("podium_recorded", "podium", "record_decision", podium[2 * i + 1]))
        if i < len(bare):
            plan.append(("bare", "bare", "decide", bare[i]))
    for label, system, update, case_id in plan:
        into = results[label]
        try:
            ack, outcome = await systems.decide(system, update, case_id)
            into.ack_ms.append(ack)
            into.outcome_ms.append(outcome)
        except Exception as err:  # counted and printed, never hidden
            into.failures.append(f"{case_id}: {type(err).__name__}: {err}")
            progress.say(f"{label}: decision on {case_id} failed: {err}")
    return results


async def burst(
    systems: Systems,
    system: str,
    update: str,
    case_ids: Sequence[str],
    timeout: float = DECIDE_TIMEOUT_S,
) -> dict[str, Any]:
    """Every remaining parked case decided at once: how long until every outcome is in."""
    failures: list[str] = []
    acks: list[float] = []
    outcomes: list[float] = []

    async def one(case_id: str) -> None:
        try:
            ack, outcome = await systems.decide(system, update, case_id, timeout)
            acks.append(ack)
            outcomes.append(outcome)
        except Exception as err:  # counted, never hidden
            failures.append(f"{case_id}: {type(err).__name__}: {err}")

    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for case_id in case_ids:
            group.create_task(one(case_id))
    return {
        "n": len(case_ids),
        "update": update,
        "wall_s": round(time.perf_counter() - started, 1),
        "ack_ms": _spread(acks),
        "outcome_ms": _spread(outcomes),
        "failures": failures,
    }


# --- the run --------------------------------------------------------------------------------------


async def run_benchmark(opts: Options, out: TextIO = sys.stderr) -> dict[str, Any]:
    if min(opts.n, opts.rounds, opts.concurrency, opts.parked, opts.warmup) < 1:
        raise ValueError("--n, --rounds, --concurrency, --parked and --warmup must be >= 1")
    progress = Progress(out)
    run = uuid.uuid4().hex[:8]
    report: dict[str, Any] = report_header("compare")
    sample = min(opts.sample, opts.parked // 2)
    with tempfile.TemporaryDirectory(prefix="podium-bench-") as tmp:
        workdir = Path(tmp)
        settings = production_settings(workdir, run)
        database_url = settings.resolved_database_url
        decision_key = DecisionKey.from_settings(settings)
        document = load_policy(policy_path(settings.policies_dir, "refund"))
        policy = document.model_dump(mode="json")
        limit = round(float(document.limits.auto_refund_limit) * 100)
        report["config"] = {
            "n_per_round": opts.n,
            "rounds": opts.rounds,
            "concurrency": opts.concurrency,
            "parked": opts.parked,
            "decision_sample": sample,
            "warmup": opts.warmup,
            "seed": opts.seed,
            "payload_encryption": "on",
            "policy_file": f"policies/refund.yaml ({document.digest}), carried by digest",
            "audit": "on",
            "decision_tokens": "on",
            "max_cached_workflows": settings.max_cached_workflows,
            "max_concurrent_activities": settings.max_concurrent_activities,
            "activity_threads": settings.activity_threads,
            "workers": "podium: python -m worker; bare: python -m bench.shaped (worker.run)",
        }
        engine = make_engine(database_url)
        rng = random.Random(opts.seed)
        try:
            create_tables(engine)
            PolicyVersions(engine).save("refund", policy)  # as the starter does

            def seed(label: str, first: int, count: int, auto: bool) -> list[BenchCase]:
                low, high = (500, limit) if auto else (limit + 100, 4 * limit)
                return seed_cases(
                    engine,
                    label=f"{label}-{run}",
                    first_number=first,
                    count=count,
                    min_cents=low,
                    max_cents=high,
                    rng=rng,
                )

            per_system = opts.n * opts.rounds
            auto = {
                s: seed(f"auto-{s}", AUTO_ORDERS + i * 50_000, per_system, True)
                for i, s in enumerate(("podium", "bare"))
            }
            warm = {
                s: seed(f"warm-{s}", WARM_ORDERS + i * 1_000, opts.warmup, True)
                for i, s in enumerate(("podium", "bare"))
            }
            parked = {
                s: seed(f"park-{s}", PARKED_ORDERS + i * 50_000, opts.parked, False)
                for i, s in enumerate(("podium", "bare"))
            }
            code = snapshot_code(workdir)
            progress.say(f"seeded the cases; workers run a snapshot of the code in {code}")
            async with asyncio.timeout(opts.timeout_s), dev_server(workdir, sa.ALL) as server:
                queues = {"podium": f"bench-podium-{run}", "bare": f"bench-bare-{run}"}
                envs = {
                    s: worker_env(settings, server, database_url, queues[s], code) for s in queues
                }
                for env in envs.values():
                    env["PODIUM_DECISION_SECRET"] = decision_key.secret
                check_snapshot(envs["podium"], workdir, code)
                client = podium_client(server, settings)
                systems = Systems(client, decision_key, policy, queues, policy_stored=True)
                async with (
                    worker_process("podium", "worker", envs["podium"], workdir) as podium_w,
                    worker_process("bare", "bench.shaped", envs["bare"], workdir) as bare_w,
                ):
                    workers = {"podium": podium_w, "bare": bare_w}
                    report |= await _phases(
                        opts, systems, workers, server, auto, warm, parked, sample, progress
                    )
            report["refund_rows"] = count_refunds(
                engine, [c.case_id for cases in auto.values() for c in cases]
            )
        finally:
            engine.dispose()
    report["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return report


async def _phases(
    opts: Options,
    systems: Systems,
    workers: dict[str, WorkerProcess],
    server: Any,
    auto: dict[str, list[BenchCase]],
    warm: dict[str, list[BenchCase]],
    parked: dict[str, list[BenchCase]],
    sample: int,
    progress: Progress,
) -> dict[str, Any]:
    say = progress.say
    for system in ("podium", "bare"):
        for case in warm[system]:
            await workers[system].alive_while(systems.run_case(system, case), CASE_TIMEOUT_S)
        say(f"warm-up {system}: {len(warm[system])} cases ok")

    # Parked first, on workers that have run only the warm-up: memory freed by earlier
    # phases would otherwise be reused by the parked cases and hide what they cost.
    parked_runs: dict[str, ParkedRun] = {}
    for system in ("podium", "bare"):
        say(f"{system}: parking {len(parked[system])} cases")
        parked_runs[system] = await park(
            systems, system, parked[system], opts.concurrency, workers[system], progress
        )
        p = parked_runs[system].report()
        say(f"{system}: {p['verified']} parked, {p['rss_kib_per_parked_case']} KiB each")
    ok = {
        s: [c for c in parked_runs[s].cases if c not in parked_runs[s].not_parked]
        for s in parked_runs
    }
    decisions = await decide_all(systems, ok["podium"][: 2 * sample], ok["bare"][:sample], progress)
    say("decisions done")
    # As many at once on both sides: the cases the sampled decisions left parked.
    size = min(len(ok["podium"]) - 2 * sample, len(ok["bare"]) - sample)
    bursts = {
        "podium": await burst(
            systems, "podium", "record_decision", ok["podium"][2 * sample :][:size]
        ),
        "bare": await burst(systems, "bare", "decide", ok["bare"][sample:][:size]),
    }
    say(
        "bursts: "
        + ", ".join(
            f"{s}: {b['n']} decisions, all outcomes in {b['wall_s']} s" for s, b in bursts.items()
        )
    )

    totals = {"podium": Throughput(), "bare": Throughput()}
    for r in range(opts.rounds):
        order = ("podium", "bare") if r % 2 == 0 else ("bare", "podium")
        for system in order:
            chunk = auto[system][r * opts.n : (r + 1) * opts.n]
            await throughput_round(
                systems,
                system,
                chunk,
                opts.concurrency,
                workers[system],
                server.cpu_seconds,
                totals[system],
            )
            t = totals[system]
            say(
                f"round {r + 1}/{opts.rounds} {system}: {t.cases} cases so far, "
                f"{len(t.failures)} failures"
            )

    tp = {s: t.report() for s, t in totals.items()}
    pk = {s: r.report() for s, r in parked_runs.items()}
    dc = {label: d.report() for label, d in decisions.items()}
    recorded = dc["podium_recorded"]["ack_ms"]
    ratios = {
        "throughput_auto": _ratio(tp["podium"]["cases_per_s"], tp["bare"]["cases_per_s"]),
        "latency_p50_auto": _ratio(
            tp["podium"]["latency_ms"]["p50"], tp["bare"]["latency_ms"]["p50"]
        ),
        "latency_p95_auto": _ratio(
            tp["podium"]["latency_ms"]["p95"], tp["bare"]["latency_ms"]["p95"]
        ),
        "cpu_per_case_auto": _ratio(
            tp["podium"]["worker_cpu_ms_per_case"], tp["bare"]["worker_cpu_ms_per_case"]
        ),
        "server_cpu_per_case_auto": _ratio(
            tp["podium"]["server_cpu_ms_per_case"], tp["bare"]["server_cpu_ms_per_case"]
        ),
        "rss_per_parked_case": _ratio(
            pk["podium"]["rss_kib_per_parked_case"], pk["bare"]["rss_kib_per_parked_case"]
        ),
        "cpu_per_parked_case": _ratio(
            pk["podium"]["worker_cpu_ms_per_parked_case"],
            pk["bare"]["worker_cpu_ms_per_parked_case"],
        ),
        "decision_ack_p95": _ratio(recorded["p95"], dc["bare"]["ack_ms"]["p95"]),
        "decision_outcome_p95": _ratio(
            dc["podium_recorded"]["outcome_ms"]["p95"], dc["bare"]["outcome_ms"]["p95"]
        ),
    }
    failures = [
        *[f for t in tp.values() for f in t["failures"]],
        *[f for p in pk.values() for f in p["not_parked"]],
        *[f for d in dc.values() for f in d["failures"]],
        *[f for b in bursts.values() for f in b["failures"]],
    ]
    return {
        "throughput": tp,
        "parked": pk,
        "decisions": dc,
        "burst": bursts,
        "ratios": ratios,
        "decision_ack_ms": {
            **recorded,
            "mode": "recorded (record_decision update)",
            "outcome_mode": dc["podium_outcome"]["ack_ms"],
            "bare": dc["bare"]["ack_ms"],
        },
        "workflow_worker_rss_mib_parked": pk["podium"]["worker_rss_mib_parked"],
        "verified": not failures,
    }


# --- the table ------------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.2f}"
    return str(value)


def render_table(report: dict[str, Any]) -> str:
    c, m = report["config"], report["machine"]
    tp, pk, dc, r = report["throughput"], report["parked"], report["decisions"], report["ratios"]
    rows: list[tuple[str, Any, Any, Any]] = [
        (
            "auto: throughput (cases/s)",
            tp["podium"]["cases_per_s"],
            tp["bare"]["cases_per_s"],
            r["throughput_auto"],
        ),
        (
            "auto: latency p50 (ms)",
            tp["podium"]["latency_ms"]["p50"],
            tp["bare"]["latency_ms"]["p50"],
            r["latency_p50_auto"],
        ),
        (
            "auto: latency p95 (ms)",
            tp["podium"]["latency_ms"]["p95"],
            tp["bare"]["latency_ms"]["p95"],
            r["latency_p95_auto"],
        ),
        (
            "auto: worker CPU per case (ms)",
            tp["podium"]["worker_cpu_ms_per_case"],
            tp["bare"]["worker_cpu_ms_per_case"],
            r["cpu_per_case_auto"],
        ),
        (
            "auto: server CPU per case (ms)",
            tp["podium"]["server_cpu_ms_per_case"],
            tp["bare"]["server_cpu_ms_per_case"],
            r["server_cpu_per_case_auto"],
        ),
        (
            "parked: worker RSS before (MiB)",
            pk["podium"]["worker_rss_mib_before"],
            pk["bare"]["worker_rss_mib_before"],
            None,
        ),
        (
            "parked: worker RSS parked (MiB)",
            pk["podium"]["worker_rss_mib_parked"],
            pk["bare"]["worker_rss_mib_parked"],
            None,
        ),
        (
            "parked: RSS per parked case (KiB)",
            pk["podium"]["rss_kib_per_parked_case"],
            pk["bare"]["rss_kib_per_parked_case"],
            r["rss_per_parked_case"],
        ),
        (
            "parked: worker CPU per parked case (ms)",
            pk["podium"]["worker_cpu_ms_per_parked_case"],
            pk["bare"]["worker_cpu_ms_per_parked_case"],
            r["cpu_per_parked_case"],
        ),
        (
            "decision ack p50 (ms), recorded",
            dc["podium_recorded"]["ack_ms"]["p50"],
            dc["bare"]["ack_ms"]["p50"],
            None,
        ),
        (
            "decision ack p95 (ms), recorded",
            dc["podium_recorded"]["ack_ms"]["p95"],
            dc["bare"]["ack_ms"]["p95"],
            r["decision_ack_p95"],
        ),
        (
            "decision ack p95 (ms), outcome (decide)",
            dc["podium_outcome"]["ack_ms"]["p95"],
            None,
            None,
        ),
        (
            "decision -> outcome p95 (ms)",
            dc["podium_recorded"]["outcome_ms"]["p95"],
            dc["bare"]["outcome_ms"]["p95"],
            r["decision_outcome_p95"],
        ),
    ]
    bursts = report.get("burst") or {}
    if bursts:
        rows.append(
            (
                f"burst: {bursts['podium']['n']} / {bursts['bare']['n']} decisions at once, "
                "all outcomes in (s)",
                bursts["podium"]["wall_s"],
                bursts["bare"]["wall_s"],
                None,
            )
        )
        rows.append(
            (
                "burst: ack p95 (ms)",
                bursts["podium"]["ack_ms"]["p95"],
                bursts["bare"]["ack_ms"]["p95"],
                None,
            )
        )
    width = max(len(row[0]) for row in rows)
    lines = [
        f"Podium vs bare (same activities), {report['date']}",
        f"config: encryption on, policy file {c['policy_file']}, audit on, decision tokens on; "
        f"{c['rounds']} interleaved rounds x {c['n_per_round']} auto cases per system, "
        f"{c['concurrency']} in flight; {c['parked']} parked per system; "
        f"{c['decision_sample']} decisions per kind, one at a time",
        f"machine: {m['cpus']} cores, load average {m['loadavg_at_start']} at start, "
        f"{m.get('loadavg_at_end')} at end",
        "",
        f"{'':<{width}}  {'Podium':>10}  {'bare':>10}  {'Podium/bare':>11}",
    ]
    for name, podium, bare, ratio in rows:
        ratio_text = f"{ratio:.2f}x" if isinstance(ratio, float) else "-"
        lines.append(f"{name:<{width}}  {_fmt(podium):>10}  {_fmt(bare):>10}  {ratio_text:>11}")
    lines.append("")
    lines.append("all cases verified" if report["verified"] else "SOME CASES FAILED: see the JSON")
    return "\n".join(lines)


# --- command line ---------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> tuple[Options, bool, Path]:
    d = Options()
    parser = argparse.ArgumentParser(
        prog="python -m bench.compare", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--n", type=int, default=d.n, help="automatic cases per system per round")
    parser.add_argument("--rounds", type=int, default=d.rounds, help="interleaved rounds")
    parser.add_argument("--concurrency", type=int, default=d.concurrency, help="cases in flight")
    parser.add_argument("--parked", type=int, default=d.parked, help="cases parked per system")
    parser.add_argument("--sample", type=int, default=d.sample, help="decisions per kind")
    parser.add_argument("--warmup", type=int, default=d.warmup, help="untimed cases per system")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--timeout", type=float, default=d.timeout_s, help="seconds, whole run")
    parser.add_argument("--json", action="store_true", help="print the JSON instead of the table")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the JSON report's file")
    args = parser.parse_args(argv)
    opts = Options(
        n=args.n,
        rounds=args.rounds,
        concurrency=args.concurrency,
        parked=args.parked,
        sample=args.sample,
        warmup=args.warmup,
        seed=args.seed,
        timeout_s=args.timeout,
    )
    return opts, args.json, args.out


def main(argv: Sequence[str] | None = None) -> int:
    opts, as_json, out = parse_args(argv)
    configure_logging("WARNING")
    try:
        report = asyncio.run(run_benchmark(opts))
    except KeyboardInterrupt:
        print("interrupted: workers and the Temporal dev server are stopped", file=sys.stderr)
        return 130
    except TimeoutError as err:
        # The whole run's --timeout, or one case or decision that never ended (its own bound).
        why = str(err) or f"--timeout {opts.timeout_s:.0f} s passed, or a case never ended"
        print(f"gave up: {why}", file=sys.stderr)
        return 2
    text = json.dumps(report, indent=2, allow_nan=False)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    print(text if as_json else render_table(report))
    return 0 if report["verified"] else 1


if __name__ == "__main__":
    sys.exit(main())
