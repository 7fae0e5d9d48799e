"""What the scenarios share: an HTTP client that counts every answer, opening and deciding refund
cases through the API with retry-safe keys, and the end-state checks (lost, duplicated).

Counting 5xx: every 5xx answer counts, except a 503 `temporal-unavailable` (a declared
"come back later", with `Retry-After`) received while the scenario itself has Temporal or a
worker down on purpose; those are counted apart as `declared_503` and retried with the same
idempotency key or decision id, as a client should.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError
from temporalio.worker import Replayer

from bench.chaos.stack import ChaosStack
from bench.data import BenchCase
from core.case_metrics import case_interceptors
from core.db import AuditEvent, Refund
from worker import workflow_runner
from workflows.registry import PROCESSES

__all__ = [
    "Api",
    "CaseCheck",
    "Tally",
    "bounded",
    "check_cases",
    "decide_all",
    "open_cases",
    "wait_for",
    "wait_parked",
    "wait_progress",
]

RETRY_ATTEMPTS = 240
RETRY_SLEEP_S = 0.5
REQUEST_TIMEOUT_S = 120.0
# How long a wait may go on before the scenario calls the case lost (never a speed test): a
# wait for many cases lasts as long as they keep arriving, and gives up after this long without.
SETTLE_TIMEOUT_S = 900.0
STALL_TIMEOUT_S = 300.0


@dataclass
class Tally:
    """Every answer a scenario got, by status."""

    faults: bool = False  # the scenario takes Temporal or a worker down on purpose
    statuses: Counter[int] = field(default_factory=Counter)
    transport_errors: int = 0
    transport_examples: list[str] = field(default_factory=list)
    declared_503: int = 0
    server_errors: list[str] = field(default_factory=list)

    @property
    def tried(self) -> int:
        return sum(self.statuses.values()) + self.transport_errors

    @property
    def five_xx(self) -> int:
        return sum(n for s, n in self.statuses.items() if s >= 500) - self.declared_503

    def record(self, response: httpx.Response, what: str) -> None:
        self.statuses[response.status_code] += 1
        if response.status_code < 500:
            return
        declared = (
            self.faults
            and response.status_code == 503
            and "temporal-unavailable" in response.text
            and "retry-after" in response.headers
            # A case whose history its own code cannot replay is no outage: that is a defect.
            and "Nondeterminism" not in response.text
            and "workflow machines" not in response.text
        )
        if declared:
            self.declared_503 += 1
        elif len(self.server_errors) < 20:
            self.server_errors.append(f"{what}: {response.status_code} {response.text[:300]}")

    def summary(self) -> dict[str, Any]:
        return {
            "requests": self.tried,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "transport_errors": self.transport_errors,
            "transport_error_examples": self.transport_examples,
            "declared_503_during_faults": self.declared_503,
            "5xx": self.five_xx,
            "5xx_examples": self.server_errors,
        }


async def bounded(limit: int, jobs: Iterable[Callable[[], Awaitable[Any]]]) -> list[Any]:
    """Run `jobs` with at most `limit` at once; results in order."""
    gate = asyncio.Semaphore(limit)

    async def one(job: Callable[[], Awaitable[Any]]) -> Any:
        async with gate:
            return await job()

    return await asyncio.gather(*(one(job) for job in jobs))


async def wait_for(
    predicate: Callable[[], Awaitable[bool]], what: str, timeout: float = SETTLE_TIMEOUT_S
) -> bool:
    """Poll until `predicate` holds; False (not an exception) when it never did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if await predicate():
                return True
        except (RPCError, httpx.HTTPError, RuntimeError):
            pass  # Temporal restarting: ask again
        await asyncio.sleep(1.0)
    return False


class Api:
    """The HTTP API as a client sees it, every answer tallied."""

    def __init__(self, stack: ChaosStack, tally: Tally) -> None:
        self.stack = stack
        self.tally = tally
        self.http = httpx.AsyncClient(
            base_url=stack.api_url,
            timeout=REQUEST_TIMEOUT_S,
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
        )

    async def __aenter__(self) -> Api:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()

    async def send(
        self,
        method: str,
        url: str,
        *,
        token: str | None = None,
        retry: bool = False,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> httpx.Response | None:
        """One request (`retry`: again on 503/504 and lost connections, bounded)."""
        all_headers = dict(headers or {})
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        for _ in range(RETRY_ATTEMPTS if retry else 1):
            try:
                response = await self.http.request(method, url, headers=all_headers, **kwargs)
            except httpx.HTTPError as err:
                self.tally.transport_errors += 1
                if len(self.tally.transport_examples) < 10:
                    self.tally.transport_examples.append(f"{method} {url}: {err!r}"[:300])
                await asyncio.sleep(RETRY_SLEEP_S)
                continue
            self.tally.record(response, f"{method} {url}")
            if retry and response.status_code in (502, 503, 504):
                await asyncio.sleep(RETRY_SLEEP_S)
                continue
            return response
        return None


def refund_request(case: BenchCase, message: str | None = None) -> dict[str, Any]:
    return {
        "channel": "email",
        "customer_id": case.customer_id,
        "order_id": case.order_id,
        "message": message or case.message,
    }


async def open_cases(
    api: Api, token: str, cases: Sequence[BenchCase], concurrency: int
) -> dict[str, str]:
    """Open every case (Idempotency-Key = its bench case id, so a retry is the same case);
    returns bench case id -> Podium case id for those the API accepted."""
    opened: dict[str, str] = {}

    async def one(case: BenchCase) -> None:
        response = await api.send(
            "POST",
            "/cases/refund",
            token=token,
            retry=True,
            json=refund_request(case),
            headers={"Idempotency-Key": case.case_id},
        )
        if response is not None and response.status_code in (200, 201):
            opened[case.case_id] = str(response.json()["case_id"])

    await bounded(concurrency, [lambda c=c: one(c) for c in cases])  # type: ignore[misc]
    return opened


async def _ids(stack: ChaosStack, query: str) -> set[str]:
    client = await stack.client()
    return {wf.id async for wf in client.list_workflows(query, page_size=1000)}


async def parked_ids(stack: ChaosStack, case_ids: Iterable[str]) -> set[str]:
    wanted = set(case_ids)
    found = await _ids(stack, 'PodiumAwaitingApproval = true AND ExecutionStatus = "Running"')
    return found & wanted


async def wait_progress(
    count: Callable[[], Awaitable[int]], target: int, stall: float = STALL_TIMEOUT_S
) -> int:
    """Poll `count` until it reaches `target`, for as long as it keeps growing; the last count."""
    best, last_gain = -1, time.monotonic()
    while True:
        try:
            value = await count()
        except (RPCError, httpx.HTTPError, RuntimeError):
            value = best  # Temporal restarting: ask again
        if value >= target:
            return value
        if value > best:
            best, last_gain = value, time.monotonic()
        elif time.monotonic() - last_gain > stall:
            return best
        await asyncio.sleep(1.0)


async def wait_parked(stack: ChaosStack, case_ids: Sequence[str]) -> set[str]:
    """Wait until every case waits at the approval gate; returns those that do."""
    parked: set[str] = set()

    async def count() -> int:
        nonlocal parked
        parked = await parked_ids(stack, case_ids)
        return len(parked)

    await wait_progress(count, len(set(case_ids)))
    return parked


async def decide_all(
    api: Api, token: str, case_ids: Sequence[str], concurrency: int, prefix: str
) -> dict[str, int]:
    """Approve every case once, retrying with the same decision id; final status per case."""
    final: dict[str, int] = {}

    async def one(case_id: str) -> None:
        response = await api.send(
            "POST",
            f"/cases/{case_id}/approve",
            token=token,
            retry=True,
            json={"decision_id": f"{prefix}-{case_id}"[:120], "comment": "chaos battery"},
        )
        final[case_id] = response.status_code if response is not None else 0

    await bounded(concurrency, [lambda c=c: one(c) for c in case_ids])  # type: ignore[misc]
    return final


@dataclass
class CaseCheck:
    """The end state of a set of cases that were all approved once."""

    tried: int
    completed: int
    lost: list[str]
    duplicated: list[str]
    refund_rows: int
    decisions_in_audit: int
    replayed: int = 0
    unreplayable: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "cases": self.tried,
            "completed": self.completed,
            # Every history replayed by today's worker code: a case that completed once but
            # that its own code cannot replay (a nondeterminism error) is stuck at its next
            # worker restart, so it counts as lost.
            "histories_replayed": self.replayed,
            "unreplayable": len(self.unreplayable),
            "unreplayable_examples": self.unreplayable[:10],
            "lost": len(self.lost),
            "duplicated": len(self.duplicated),
            "lost_examples": self.lost[:10],
            "duplicated_examples": self.duplicated[:10],
            "refund_rows": self.refund_rows,
            "decisions_in_audit_trail": self.decisions_in_audit,
        }


def per_case_counts(engine: Engine, case_ids: Sequence[str]) -> tuple[Counter[str], Counter[str]]:
    """Refund rows and `approval_decided` audit events per case."""
    refunds: Counter[str] = Counter()
    decided: Counter[str] = Counter()
    ids = list(case_ids)
    with Session(engine) as session:
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            for case_id, n in session.exec(
                select(Refund.case_id, func.count())
                .where(col(Refund.case_id).in_(chunk))
                .group_by(Refund.case_id)
            ):
                refunds[case_id] = int(n)
            for case_id, n in session.exec(
                select(AuditEvent.case_id, func.count())
                .where(col(AuditEvent.case_id).in_(chunk))
                .where(AuditEvent.action == "approval_decided")
                .group_by(AuditEvent.case_id)
            ):
                decided[case_id] = int(n)
    return refunds, decided


async def completed_ids(stack: ChaosStack, case_ids: Iterable[str]) -> set[str]:
    client = await stack.client()
    done: set[str] = set()
    for case_id in case_ids:
        description = await client.get_workflow_handle(case_id).describe()
        if description.status == WorkflowExecutionStatus.COMPLETED:
            done.add(case_id)
    return done


async def check_cases(
    stack: ChaosStack, case_ids: Sequence[str], expect_refund: dict[str, bool] | None = None
) -> CaseCheck:
    """Wait for every case to complete, then count: lost = not completed, or its approved
    refund missing; duplicated = more than one refund or more than one decision applied."""
    wanted = set(case_ids)
    done: set[str] = set()

    async def count() -> int:
        nonlocal done
        done = await _ids(stack, 'ExecutionStatus = "Completed"') & wanted
        return len(done)

    await wait_progress(count, len(wanted))
    if done != wanted:  # visibility can lag: ask each case
        done |= await completed_ids(stack, wanted - done)
    refunds, decided = per_case_counts(stack.engine(), case_ids)
    replayed, unreplayable = await replay_cases(stack, case_ids)
    lost, duplicated = list(unreplayable), []
    for case_id in case_ids:
        refund_expected = True if expect_refund is None else expect_refund[case_id]
        never_done = case_id not in done or decided[case_id] == 0
        if (never_done or (refund_expected and refunds[case_id] == 0)) and case_id not in lost:
            lost.append(case_id)
        twice = refunds[case_id] > 1 or decided[case_id] > 1
        if twice or (not refund_expected and refunds[case_id] > 0):
            duplicated.append(case_id)
    return CaseCheck(
        tried=len(case_ids),
        completed=len(done),
        lost=lost,
        duplicated=duplicated,
        refund_rows=sum(refunds.values()),
        decisions_in_audit=sum(decided.values()),
        replayed=replayed,
        unreplayable=unreplayable,
    )


async def replay_cases(
    stack: ChaosStack, case_ids: Sequence[str], concurrency: int = 8
) -> tuple[int, list[str]]:
    """Replay every case's history with the worker's own workflows and sandbox: how many
    replayed, and the ids of those that did not (with the first failure)."""
    client = await stack.client()
    replayer = Replayer(
        workflows=PROCESSES.workflows,
        data_converter=client.data_converter,
        workflow_runner=workflow_runner(),
        # The worker's interceptors add steps of their own (the outcome record).
        interceptors=case_interceptors(),
    )
    gate = asyncio.Semaphore(concurrency)
    failed: list[str] = []

    async def one(case_id: str) -> None:
        async with gate:
            history = await client.get_workflow_handle(case_id).fetch_history()
            result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        if result.replay_failure is not None:
            failed.append(f"{case_id}: {str(result.replay_failure)[:200]}")

    await asyncio.gather(*(one(c) for c in case_ids))
    return len(case_ids), sorted(failed)
