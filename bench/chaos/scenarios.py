"""The scenarios of `make chaos`, most valuable first. Each returns its figures as a dict with at
least `tried`, `lost`, `duplicated` and `5xx`, and `passed`.

- R4 decisions with duplicates and races: per case, the same decision id sent many times at once
  by one approver while a second approver races with their own decision (an approval, or a
  rejection on every fifth case); exactly one decision is applied (one `approval_decided` audit
  event, one refund row when an approval won, none when a rejection won) and every 200 answer
  names the winner.
- R1 parked cases and repeated `kill -9` of the Temporal dev server (restarted by `podium up` on
  the same SQLite file): kills while cases are opened, while they wait, and while they are
  decided; every case ends decided with one refund.
- R2 three workers on one task queue (`podium up`'s and two more, a stack of its own whose
  intent provider holds its answers, so every opening case has its triage activity in flight):
  `kill -9` of workers with at least 200 activities in flight (full profile) and while
  decisions carry refunds out; one extra worker stays dead, the others carry on.
- R5 hostile requests: schemathesis against the live OpenAPI (with a valid token, and with none
  or a forged one), plus hand-made cases (oversized, malformed, duplicate keys, NUL text, wrong
  types); no 5xx, and no case started by a request that was unauthenticated or invalid.
- R8 auth probes on the API, the codec server and the decision paths (a forged
  `approval_decision` signal, in clear and encrypted): all refused, nothing refunded.
- R7 canary personal data (an email as customer id, a card number in the message and the
  approver's comment): absent from raw history, logs and search attributes, present once
  decrypted (so the probe can see it).
- R9 the systems-of-record database locked by another writer while cases are decided; after the
  lock is released every case completes with one refund.
- R9P the systems-of-record database a PostgreSQL server of its own (under a `podium up` of its
  own), stopped with `pg_ctl stop -m fast` while decided cases carry out their refunds and more
  decisions arrive, kept down for a while (60 s in the full profile) and started again: every
  case completes with one refund, none fails. Skipped, and said so, where no PostgreSQL server
  is installed.

A scenario that cannot run here returns `skipped` (its reason) and `passed: None`: never a pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import secrets
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import inspect
from sqlmodel import Session, col, select
from temporalio.client import Client, WorkflowExecutionStatus

from bench.chaos.llm import API_KEY_ENV, FaultyLLM, models_file
from bench.chaos.probe import (
    Api,
    Tally,
    bounded,
    check_cases,
    decide_all,
    open_cases,
    parked_ids,
    per_case_counts,
    wait_for,
    wait_parked,
)
from bench.chaos.stack import CODE_ROOT, ChaosStack, pid_alive
from bench.data import BenchCase, seed_cases
from bench.postgres_cluster import PostgresCluster, PostgresUnavailable, create_database
from core.db import AuditEvent, Customer, ModelCall, Order, Refund, utcnow

__all__ = ["PROFILES", "SCENARIOS", "Profile"]

BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Profile:
    name: str
    r4_cases: int
    r4_duplicates: int  # requests per case of the first approver (same decision id)
    r4_racers: int  # requests per case of the second approver (their own decision id)
    r1_cases: int
    r1_kills: int
    r2_cases: int
    r2_kills: int
    r2_model_hold_s: float  # how long the intent provider holds each answer while cases open
    r5_examples: int  # schemathesis examples per operation and phase
    r5_phases: str  # schemathesis phases
    r9_cases: int
    r9_lock_s: float
    r9_model_fault_s: float
    r9p_cases: int
    r9p_outage_s: float
    concurrency: int = 24


PROFILES = {
    "full": Profile(
        name="full",
        r4_cases=100,
        r4_duplicates=40,
        r4_racers=10,
        r1_cases=1000,
        r1_kills=10,
        r2_cases=250,
        r2_kills=4,
        r2_model_hold_s=25.0,
        r5_examples=30,
        r5_phases="examples,coverage,fuzzing,stateful",
        r9_cases=60,
        r9_lock_s=60.0,
        r9_model_fault_s=25.0,
        r9p_cases=60,
        r9p_outage_s=60.0,
    ),
    "quick": Profile(
        name="quick",
        r4_cases=12,
        r4_duplicates=6,
        r4_racers=2,
        r1_cases=24,
        r1_kills=2,
        r2_cases=24,
        r2_kills=2,
        r2_model_hold_s=4.0,
        r5_examples=3,
        r5_phases="examples,fuzzing",
        r9_cases=6,
        r9_lock_s=10.0,
        r9_model_fault_s=6.0,
        r9p_cases=6,
        r9p_outage_s=8.0,
        concurrency=12,
    ),
}

SERVICE = ("service:chaos", ["service"])
LEAD_A = ("lead-a@example.com", ["team_lead"])
LEAD_B = ("lead-b@example.com", ["team_lead"])


class Context:
    """What every scenario gets: the stack, the profile, fresh order numbers."""

    def __init__(self, stack: ChaosStack, profile: Profile, seed: int) -> None:
        self.stack = stack
        self.workdir = stack.data_dir
        self.profile = profile
        self.rng = random.Random(seed)
        self._next_number = 700_000

    def seed(self, label: str, count: int) -> list[BenchCase]:
        """`count` customers with one delivered order each, over the automatic limit and at most
        five times it: one approval level (team_lead)."""
        cases = seed_cases(
            self.stack.engine(),
            label=label,
            first_number=self._next_number,
            count=count,
            min_cents=15_000,
            max_cents=45_000,
            rng=self.rng,
        )
        self._next_number += count
        return cases

    def token(self, who: tuple[str, list[str]]) -> str:
        return self.stack.token(who[0], who[1])


def _skipped(reason: str) -> dict[str, Any]:
    """The figures of a scenario that could not run here: tried nothing, passed nothing."""
    return {"skipped": reason, "passed": None, "tried": 0, "lost": 0, "duplicated": 0, "5xx": 0}


def _verdict(figures: dict[str, Any]) -> dict[str, Any]:
    figures["passed"] = (
        figures.get("lost", 0) == 0
        and figures.get("duplicated", 0) == 0
        and figures.get("5xx", 0) == 0
        and not figures.get("failures")
    )
    return figures


async def _park(
    ctx: Context, api: Api, label: str, count: int
) -> tuple[list[str], list[str], set[str]]:
    """Open `count` cases; returns (opened case ids, cases the API never accepted, parked)."""
    cases = ctx.seed(label, count)
    opened = await open_cases(api, ctx.token(SERVICE), cases, ctx.profile.concurrency)
    refused = [c.case_id for c in cases if c.case_id not in opened]
    case_ids = sorted(opened.values())
    parked = await wait_parked(ctx.stack, case_ids)
    return case_ids, refused, parked


# --- R4 --------------------------------------------------------------------------------------


async def r4_decision_races(ctx: Context) -> dict[str, Any]:
    tally = Tally()
    async with Api(ctx.stack, tally) as api:
        case_ids, refused, parked = await _park(ctx, api, "r4", ctx.profile.r4_cases)
        token_a, token_b = ctx.token(LEAD_A), ctx.token(LEAD_B)
        winners: dict[str, set[str]] = {}
        racing_reject = {case_id: i % 5 == 4 for i, case_id in enumerate(case_ids)}
        decision_requests = 0
        conflicting_answers: list[str] = []

        async def race(case_id: str) -> None:
            nonlocal decision_requests
            id_a, id_b = f"r4a-{uuid.uuid4().hex}", f"r4b-{uuid.uuid4().hex}"
            sends = [
                api.send(
                    "POST",
                    f"/cases/{case_id}/approve",
                    token=token_a,
                    retry=True,
                    json={"decision_id": id_a, "comment": "duplicate"},
                )
                for _ in range(ctx.profile.r4_duplicates)
            ]
            if racing_reject[case_id]:
                body_b = {"decision_id": id_b, "reason": "racing rejection"}
                path_b = f"/cases/{case_id}/reject"
            else:
                body_b = {"decision_id": id_b, "comment": "racing approval"}
                path_b = f"/cases/{case_id}/approve"
            sends += [
                api.send("POST", path_b, token=token_b, json=body_b, retry=True)
                for _ in range(ctx.profile.r4_racers)
            ]
            decision_requests += len(sends)
            answers = await asyncio.gather(*sends)
            ok = {
                str(r.json()["decision_id"])
                for r in answers
                if r is not None and r.status_code == 200
            }
            winners[case_id] = ok
            unexpected = [
                r.status_code if r is not None else 0
                for r in answers
                if r is None or r.status_code not in (200, 409)
            ]
            if unexpected:
                conflicting_answers.append(f"{case_id}: {unexpected}")

        await bounded(
            max(1, ctx.profile.concurrency // 4),
            [lambda c=c: race(c) for c in case_ids],  # type: ignore[misc]
        )
        # Which decision won, by the audit trail: a rejection refunds nothing.
        expect_refund, audited_ids = await _approved_by_audit(ctx, case_ids)
        check = await check_cases(ctx.stack, case_ids, expect_refund)
    two_winners = [c for c, ids in winners.items() if len(ids) > 1]
    no_winner_answer = [c for c, ids in winners.items() if not ids]
    # Every 200 answer must name the decision the audit trail says was applied.
    disagreeing = [c for c, ids in winners.items() if ids and ids != {audited_ids.get(c)}]
    figures = {
        "tried": len(case_ids) + len(refused),
        "decision_requests": decision_requests,
        "duplicates_per_case": ctx.profile.r4_duplicates,
        "racing_requests_per_case": ctx.profile.r4_racers,
        "cases_where_a_rejection_raced": sum(racing_reject.values()),
        "rejections_won": sum(1 for v in expect_refund.values() if not v),
        "not_accepted_by_api": len(refused),
        "not_parked": len(set(case_ids) - parked),
        **check.summary(),
        "lost": len(check.lost) + len(refused),
        "duplicated": len(check.duplicated) + len(two_winners) + len(disagreeing),
        "cases_with_two_winning_answers": len(two_winners),
        "cases_without_a_200_answer": len(no_winner_answer),
        "answers_naming_another_decision_than_the_audit_trail": len(disagreeing),
        "unexpected_answers": conflicting_answers[:10],
        **tally.summary(),
    }
    return _verdict(figures)


async def _approved_by_audit(
    ctx: Context, case_ids: list[str]
) -> tuple[dict[str, bool], dict[str, str]]:
    """Per case, once decided: whether the applied decision approved, and its decision id (by
    its audit event)."""
    engine = ctx.stack.engine()
    found: dict[str, bool] = {}
    decision_ids: dict[str, str] = {}

    async def all_decided() -> bool:
        with Session(engine) as session:
            rows = session.exec(
                select(AuditEvent.case_id, AuditEvent.detail)
                .where(col(AuditEvent.case_id).in_(case_ids))
                .where(AuditEvent.action == "approval_decided")
            ).all()
        for case_id, detail in rows:
            text = json.dumps(detail)
            found[case_id] = '"reject"' not in text and '"approved": false' not in text
            decision_ids[case_id] = str(detail.get("decision_id"))
        return len(found) == len(case_ids)

    await wait_for(all_decided, "decisions in the audit trail", timeout=300)
    return {c: found.get(c, True) for c in case_ids}, decision_ids


# --- R1 --------------------------------------------------------------------------------------


class Killer:
    """Kills `podium up`'s child `name` with SIGKILL, one kill at a time, waiting for it to be
    back (and to have served for `settle_s`) before the next."""

    def __init__(self, stack: ChaosStack, name: str) -> None:
        self.stack = stack
        self.name = name
        self.kills = 0
        self.restart_s: list[float] = []

    async def kill_once(self) -> None:
        old = self.stack.kill_child(self.name)
        killed_at = time.monotonic()
        self.kills += 1
        await asyncio.to_thread(self.stack.wait_restarted, self.name, old, 180.0)
        if self.name == "temporal":
            await self.stack.forget_client()

            async def serving() -> bool:
                await (await self.stack.client()).count_workflows("")
                return True

            await wait_for(serving, "Temporal back", timeout=180)
        self.restart_s.append(round(time.monotonic() - killed_at, 1))

    async def run(self, kills: int, settle_s: float, stop: asyncio.Event | None = None) -> None:
        for _ in range(kills):
            if stop is not None and stop.is_set():
                return
            await asyncio.sleep(settle_s)
            await self.kill_once()


async def r1_server_kills(ctx: Context) -> dict[str, Any]:
    tally = Tally(faults=True)
    killer = Killer(ctx.stack, "temporal")
    n, kills = ctx.profile.r1_cases, ctx.profile.r1_kills
    park_kills = (kills + 1) // 2
    parked_kills = 1 if kills >= 3 else 0
    decide_kills = kills - park_kills - parked_kills
    settle = 3.0 if ctx.profile.name == "quick" else 8.0
    async with Api(ctx.stack, tally) as api:
        cases = ctx.seed("r1", n)
        done = asyncio.Event()
        killing = asyncio.create_task(killer.run(park_kills, settle, done))
        opened = await open_cases(api, ctx.token(SERVICE), cases, ctx.profile.concurrency)
        case_ids = sorted(opened.values())
        parked = await wait_parked(ctx.stack, case_ids)
        done.set()
        await killing
        for _ in range(parked_kills):  # while every case waits
            await killer.kill_once()
        still_parked = await _retry_rpc(lambda: parked_ids(ctx.stack, case_ids))
        decide_stop = asyncio.Event()
        killing = asyncio.create_task(killer.run(decide_kills, settle / 2, decide_stop))
        final = await decide_all(api, ctx.token(LEAD_A), case_ids, ctx.profile.concurrency, "r1")
        decide_stop.set()
        await killing
        for _ in range(kills - killer.kills):  # the decisions outran the planned kills
            await killer.kill_once()
        check = await check_cases(ctx.stack, case_ids)
    refused = [c.case_id for c in cases if c.case_id not in opened]
    figures = {
        "tried": n,
        "server_kills": killer.kills,
        "kill_to_serving_again_s": killer.restart_s,
        "opened": len(case_ids),
        "parked": len(parked),
        "parked_after_kills_while_waiting": len(still_parked),
        "decision_answers": dict(Counter(str(s) for s in final.values())),
        **check.summary(),
        "lost": len(check.lost) + len(refused),
        "duplicated": len(check.duplicated),
        **tally.summary(),
    }
    return _verdict(figures)


async def _retry_rpc(call: Any) -> Any:
    for _ in range(60):
        with contextlib.suppress(Exception):
            return await call()
        await asyncio.sleep(1.0)
    return await call()


# --- R2 --------------------------------------------------------------------------------------


async def _in_flight(stack: ChaosStack, case_ids: list[str]) -> tuple[int, int]:
    """Running cases not yet at the gate, and their pending activities (by describe)."""
    client = await stack.client()
    parked = await parked_ids(stack, case_ids)
    running = {
        wf.id async for wf in client.list_workflows('ExecutionStatus = "Running"', page_size=1000)
    }
    busy = sorted((running & set(case_ids)) - parked)

    async def pending(case_id: str) -> int:
        try:
            description = await client.get_workflow_handle(case_id).describe()
        except Exception:
            return 0
        return len(description.raw_description.pending_activities)

    counts = await bounded(32, [lambda c=c: pending(c) for c in busy])  # type: ignore[misc]
    return len(busy), sum(counts)


async def r2_worker_kills(ctx: Context) -> dict[str, Any]:
    """Worker kills with many activities in flight, three workers on one task queue. A
    `podium up` of its own whose intent model is a provider on loopback that holds every answer
    `r2_model_hold_s` while the cases open, so each opened case has its triage activity in
    flight when the first workers are killed; the others carry on, the killed ones' activities
    are retried after their timeout. Then every case is decided while the rest are killed."""
    profile = ctx.profile
    key = secrets.token_urlsafe(24)
    folder = ctx.workdir / "r2-workers"
    folder.mkdir(parents=True, exist_ok=True)
    with FaultyLLM(key) as llm:
        path = models_file(
            folder,
            llm.base_url,
            CODE_ROOT / "config" / "prompts",
            timeout_s=profile.r2_model_hold_s + 15,
        )
        env = {"PODIUM_MODELS_FILE": str(path), API_KEY_ENV: key}
        stack = ChaosStack(folder / "var", env)
        try:
            try:
                await asyncio.to_thread(stack.start)
            except RuntimeError:  # a busy machine missed podium up's start-up deadline: again
                stack = ChaosStack(folder / "var-2", env)
                await asyncio.to_thread(stack.start)
            stack.start_extra_worker()
            stack.start_extra_worker()
            own = Context(stack, profile, seed=ctx.rng.randint(0, 10**6))
            llm.hold_s = profile.r2_model_hold_s
            figures = await _r2_on(own, llm)
        finally:
            await asyncio.to_thread(stack.close)
    figures["model_answers"] = dict(llm.answers)
    figures["model_hold_s"] = profile.r2_model_hold_s
    return _verdict(figures)


async def _r2_on(ctx: Context, llm: FaultyLLM) -> dict[str, Any]:
    tally = Tally(faults=True)
    stack = ctx.stack
    extras = list(stack.extra_workers)  # three workers from the start
    kills: list[dict[str, Any]] = []

    async def pollers() -> int:
        from temporalio.api.enums.v1 import TaskQueueType
        from temporalio.api.taskqueue.v1 import TaskQueue
        from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

        client = await stack.client()
        response = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace="default",
                task_queue=TaskQueue(name=stack.settings.task_queue),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
            )
        )
        return len({p.identity for p in response.pollers})

    await wait_for(lambda: _at_least(pollers, 3), "three workers polling", timeout=240)
    workers_polling = await pollers()
    n = ctx.profile.r2_cases
    # The bar: at least 200 activities in flight at a kill (four in five cases in the
    # quick profile's few).
    wanted = min(200, (n * 4) // 5)
    cases = ctx.seed("r2", n)
    async with Api(stack, tally) as api:

        async def kill(which: str, ids: list[str], fill: bool = False) -> None:
            """`fill`: first wait (a while, not past the provider's hold) until the wanted
            number of activities is in flight, as the opening cases schedule their triage."""
            await asyncio.sleep(0.5)
            busy, activities = await _in_flight(stack, ids)
            deadline = time.monotonic() + ctx.profile.r2_model_hold_s * 0.6
            while fill and activities < wanted and time.monotonic() < deadline:
                await asyncio.sleep(1.0)
                busy, activities = await _in_flight(stack, ids)
            if which == "extra":
                victim = next(p for p in extras if p.poll() is None)
                victim.kill()
                pid = victim.pid
            else:
                pid = stack.kill_child("worker")
            kills.append(
                {
                    "worker": which,
                    "pid": pid,
                    "cases_in_flight": busy,
                    "pending_activities_at_kill": activities,
                }
            )

        case_ids = [f"refund-{c.case_id}" for c in cases]
        plan = ["extra", "podium", "extra", "podium"][: ctx.profile.r2_kills]
        opening = asyncio.create_task(
            open_cases(api, ctx.token(SERVICE), cases, max(ctx.profile.concurrency, 32))
        )
        # Kill once most cases have started and run their activities.
        started = max(1, (len(case_ids) * 3) // 5)
        await wait_for(
            lambda: _running_at_least(stack, case_ids, started), "cases running", timeout=180
        )
        for which in plan[: (len(plan) + 1) // 2]:
            await kill(which, case_ids, fill=True)
        opened = await opening
        llm.hold_s = 0.0  # the provider answers at once again
        ids = sorted(opened.values())
        parked = await wait_parked(stack, ids)
        deciding = asyncio.create_task(
            decide_all(api, ctx.token(LEAD_A), ids, max(ctx.profile.concurrency, 32), "r2")
        )
        for which in plan[(len(plan) + 1) // 2 :]:
            await asyncio.sleep(1.0)
            await kill(which, ids)
        final = await deciding
        check = await check_cases(stack, ids)
    alive_extras = sum(1 for p in extras if p.poll() is None)
    supervised_restarted = pid_alive(stack.child_pid("worker"))
    refused = [c.case_id for c in cases if c.case_id not in opened]
    figures = {
        "tried": n,
        "worker_processes": 1 + len(extras),
        "workers_polling_before": workers_polling,
        "worker_kills": len(kills),
        "kills": kills,
        "max_pending_activities_at_a_kill": max(
            (k["pending_activities_at_kill"] for k in kills), default=0
        ),
        "extra_workers_alive_at_end": alive_extras,
        "podium_up_worker_restarted": supervised_restarted,
        "parked": len(parked),
        "decision_answers": dict(Counter(str(s) for s in final.values())),
        **check.summary(),
        "lost": len(check.lost) + len(refused),
        "duplicated": len(check.duplicated),
        **tally.summary(),
    }
    figures["pending_activities_wanted_at_a_kill"] = wanted
    if figures["max_pending_activities_at_a_kill"] < wanted:
        figures["failures"] = [
            f"at most {figures['max_pending_activities_at_a_kill']} activities in flight at a "
            f"kill, not {wanted}"
        ]
    for process in extras:
        if process.poll() is None:
            process.terminate()
    return figures


async def _at_least(count: Any, n: int) -> bool:
    return bool(await count() >= n)


async def _running_at_least(stack: ChaosStack, case_ids: list[str], n: int) -> bool:
    client = await stack.client()
    running = {
        wf.id async for wf in client.list_workflows('ExecutionStatus = "Running"', page_size=1000)
    }
    return len(running & set(case_ids)) >= n


# --- R5 --------------------------------------------------------------------------------------


PUBLIC_PATHS = ("/healthz", "/openapi.json", "/docs", "/redoc")


def _schemathesis(
    stack: ChaosStack, out: Path, profile: Profile, header: str | None, seed: int
) -> dict[str, Any]:
    """One schemathesis run against the live OpenAPI; its HAR log counted."""
    har = out.with_suffix(".har")
    args = [
        str(BIN / "st"),
        "run",
        f"{stack.api_url}/openapi.json",
        "--checks",
        "not_a_server_error",
        "--max-examples",
        str(profile.r5_examples),
        "--phases",
        profile.r5_phases,
        "--seed",
        str(seed),
        "--workers",
        "2",
        "--request-timeout",
        "60",
        "--no-shrink",
        "--suppress-health-check",
        "all",
        "--report",
        "har",
        "--report-har-path",
        str(har),
    ]
    if header:
        args += ["--header", header]
    started = time.monotonic()
    result = subprocess.run(
        args, capture_output=True, text=True, timeout=1800, cwd=out.parent, check=False
    )
    statuses: Counter[int] = Counter()
    examples_5xx: list[str] = []
    not_refused: Counter[str] = Counter()
    if har.exists():
        entries = json.loads(har.read_text()).get("log", {}).get("entries", [])
        for entry in entries:
            status = int(entry["response"]["status"])
            statuses[status] += 1
            if status >= 500 and len(examples_5xx) < 10:
                request = entry["request"]
                examples_5xx.append(f"{request['method']} {request['url']} -> {status}")
            path = "/" + entry["request"]["url"].split("/", 3)[-1].split("?")[0]
            if status not in (401, 404, 405, 413) and not path.startswith(PUBLIC_PATHS):
                not_refused[f"{entry['request']['method']} {path} -> {status}"] += 1
    out.write_text(result.stdout[-20000:] + "\n" + result.stderr[-5000:])
    return {
        "requests": sum(statuses.values()),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "5xx": sum(n for s, n in statuses.items() if s >= 500),
        "5xx_examples": examples_5xx,
        "answers_other_than_refusals": dict(not_refused.most_common(10)),
        "exit_code": result.returncode,
        "wall_s": round(time.monotonic() - started, 1),
    }


async def _case_count(stack: ChaosStack) -> int:
    client = await stack.client()
    return (await client.count_workflows("")).count


async def r5_hostile_requests(ctx: Context) -> dict[str, Any]:
    workdir = ctx.workdir
    stack = ctx.stack
    tally = Tally()
    failures: list[str] = []
    cases = ctx.seed("r5", 2)
    service = ctx.token(SERVICE)
    valid = {
        "channel": "email",
        "customer_id": cases[0].customer_id,
        "order_id": cases[0].order_id,
        "message": cases[0].message,
    }
    before = await _case_count(stack)
    async with Api(stack, tally) as api:
        hostile: list[tuple[str, dict[str, Any], set[int]]] = []

        def add(what: str, expect: set[int], **kwargs: Any) -> None:
            hostile.append((what, kwargs, expect))

        auth = {"Authorization": f"Bearer {service}"}
        json_ct = {**auth, "Content-Type": "application/json"}
        add("no credentials", {401}, json=valid)
        add("garbage token", {401}, json=valid, headers={"Authorization": "Bearer x.y.z"})
        add(
            "token signed with another key",
            {401},
            json=valid,
            headers={"Authorization": "Bearer " + _forged_token()},
        )
        add("basic auth", {401}, json=valid, headers={"Authorization": "Basic YTpi"})
        add("unparseable body", {400, 422}, content=b"{not json", headers=json_ct)
        add("truncated body", {400, 422}, content=json.dumps(valid)[:-3].encode(), headers=json_ct)
        add(
            "duplicate keys",
            {400, 422},
            content=(
                b'{"channel":"email","customer_id":"C-1001","customer_id":"'
                + valid["customer_id"].encode()
                + b'","order_id":"'
                + valid["order_id"].encode()
                + b'","message":"refund please"}'
            ),
            headers=json_ct,
        )
        add("NUL message", {422}, json={**valid, "message": "\u0000"}, headers=auth)
        add("blank message", {422}, json={**valid, "message": " \t\n"}, headers=auth)
        add("wrong types", {422}, json={**valid, "customer_id": 12, "order_id": []}, headers=auth)
        add("array body", {422}, json=[valid], headers=auth)
        add("null body", {422}, content=b"null", headers=json_ct)
        add("huge message", {413, 422}, json={**valid, "message": "a" * 200_000}, headers=auth)
        add(
            "oversized body (20 MB)",
            {413},
            content=b'{"message":"' + b"a" * 20_000_000 + b'"}',
            headers=json_ct,
        )
        add(
            "oversized body, no credentials",
            {401, 413},
            content=b"a" * 20_000_000,
            headers={"Content-Type": "application/json"},
        )
        add(
            "bad idempotency key",
            {422},
            json=valid,
            headers={**auth, "Idempotency-Key": "\x7f" * 3},
        )
        add("wrong content type", {415, 422}, content=b"channel=email", headers={**auth})
        add(
            "deep nesting",
            {400, 413, 422},
            content=b"[" * 100_000 + b"]" * 100_000,
            headers=json_ct,
        )
        own: list[dict[str, Any]] = []
        for what, kwargs, expect in hostile:
            response = None
            with contextlib.suppress(Exception):
                response = await api.send("POST", "/cases/refund", **kwargs)
            status = response.status_code if response is not None else 0
            own.append({"case": what, "status": status, "expected": sorted(expect)})
            if status not in expect and status != 0:
                failures.append(f"{what}: {status}, expected {sorted(expect)}")
        for what, raw_request, expect in _raw_requests(service, valid):
            status = await _raw_status(stack, raw_request)
            tally.statuses[status] += 1
            own.append({"case": what, "status": status, "expected": sorted(expect)})
            if status not in expect:
                failures.append(f"{what}: {status}, expected {sorted(expect)}")
        unknown = await api.send("POST", "/cases/no-such-process", token=service, json={})
        if unknown is not None and unknown.status_code >= 500:
            failures.append("unknown process: 5xx")
    after_own = await _case_count(stack)
    started_by_hostile = after_own - before

    # schemathesis without credentials, and with a forged token: every answer 401, no case.
    unauth = await asyncio.to_thread(
        _schemathesis,
        stack,
        workdir / "schemathesis-unauthenticated.txt",
        ctx.profile,
        None,
        1,
    )
    skipped: dict[str, Any] = {"requests": 0, "5xx": 0, "skipped": "quick profile"}
    forged = (
        await asyncio.to_thread(
            _schemathesis,
            stack,
            workdir / "schemathesis-forged-token.txt",
            ctx.profile,
            f"Authorization: Bearer {_forged_token()}",
            2,
        )
        if ctx.profile.name != "quick"
        else skipped
    )
    after_unauth = await _case_count(stack)
    started_unauth = after_unauth - after_own
    # With a valid service token: cases may open (valid requests are valid), no 5xx.
    authed = await asyncio.to_thread(
        _schemathesis,
        stack,
        workdir / "schemathesis-service-token.txt",
        ctx.profile,
        f"Authorization: Bearer {service}",
        3,
    )
    for name, run in (("unauthenticated", unauth), ("forged token", forged)):
        not_refused = run.get("answers_other_than_refusals")
        if not_refused:
            failures.append(f"schemathesis {name}: answers other than 401: {not_refused}")
    five = tally.five_xx + unauth["5xx"] + forged["5xx"] + authed["5xx"]
    figures = {
        "tried": tally.tried + unauth["requests"] + forged["requests"] + authed["requests"],
        "own_cases": own,
        "own_requests": tally.tried,
        "schemathesis_examples_per_operation": ctx.profile.r5_examples,
        "schemathesis_phases": ctx.profile.r5_phases,
        "schemathesis_unauthenticated": unauth,
        "schemathesis_forged_token": forged,
        "schemathesis_service_token": authed,
        "cases_started_by_invalid_or_unauthenticated_requests": started_by_hostile + started_unauth,
        "lost": 0,
        "duplicated": 0,
        "5xx": five,
        "own_5xx_examples": tally.server_errors,
        "failures": failures,
    }
    if started_by_hostile + started_unauth:
        failures.append(f"{started_by_hostile + started_unauth} cases started by hostile requests")
    return _verdict(figures)


def _raw_requests(token: str, valid: dict[str, Any]) -> list[tuple[str, bytes, set[int]]]:
    """Requests no well-behaved HTTP client would send, written byte by byte."""
    body = json.dumps(valid).encode()
    head = (
        "POST /cases/refund HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
    )
    return [
        (
            "Content-Length claims 100 GB",
            (head + "Content-Length: 99999999999\r\nConnection: close\r\n\r\n").encode() + body,
            {400, 413},
        ),
        (
            "Content-Length shorter than the body",
            (head + "Content-Length: 10\r\nConnection: close\r\n\r\n").encode() + body,
            {400, 422},
        ),
        (
            "negative Content-Length",
            (head + "Content-Length: -1\r\nConnection: close\r\n\r\n").encode() + body,
            {400, 413, 422},
        ),
        (
            "chunked body cut short",
            (head + "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n").encode()
            + b"ffff\r\n"
            + body,
            {400, 408, 413, 422, 0},
        ),
    ]


async def _raw_status(stack: ChaosStack, request: bytes) -> int:
    """Status of the answer to `request` sent on a raw loopback socket; 0 when the server just
    closed the connection (a refusal, not an error)."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", stack.api_port)
    except OSError:
        return 0
    try:
        writer.write(request)
        await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
        line = await asyncio.wait_for(reader.readline(), timeout=60)
    except (OSError, TimeoutError):
        return 0
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    parts = line.split()
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def _forged_token() -> str:
    from starter.auth import mint_token

    return mint_token("not-the-secret-" + "x" * 40, "admin@example.com", ["admin"])


# --- R8 --------------------------------------------------------------------------------------


MALLORY = {
    "request_id": "approval-1",
    "approve": True,
    "approver": "mallory@evil.example",
    "approver_roles": ["team_lead"],
}
EVE = {**MALLORY, "approver": "eve@evil.example", "approver_roles": ["finance"]}


async def r8_auth_probes(ctx: Context) -> dict[str, Any]:
    stack = ctx.stack
    tally = Tally()
    failures: list[str] = []
    probes: list[dict[str, Any]] = []
    async with Api(stack, tally) as api:
        case_ids, _, _ = await _park(ctx, api, "r8", 2)
        target = case_ids[0]
        service, reader_lead = ctx.token(SERVICE), ctx.token(LEAD_A)
        finance = stack.token("fin@example.com", ["finance"])

        async def probe(what: str, expect: set[int], method: str, url: str, **kw: Any) -> None:
            response = await api.send(method, url, **kw)
            status = response.status_code if response is not None else 0
            probes.append({"probe": what, "status": status})
            if status not in expect:
                failures.append(f"{what}: {status}, expected {sorted(expect)}")

        approve = f"/cases/{target}/approve"
        await probe("approve, no credentials", {401}, "POST", approve, json={})
        await probe(
            "approve, forged admin token",
            {401},
            "POST",
            approve,
            json={},
            headers={"Authorization": "Bearer " + _forged_token()},
        )
        await probe("approve, service role", {403}, "POST", approve, token=service, json={})
        await probe(
            "approve, finance at the team_lead level",
            {403},
            "POST",
            approve,
            token=finance,
            json={},
        )
        await probe(
            "approve in another's name",
            {403},
            "POST",
            approve,
            token=reader_lead,
            json={"approver": "boss@example.com"},
        )
        await probe(
            "approve, roles not held",
            {403},
            "POST",
            approve,
            token=reader_lead,
            json={"roles": ["finance"]},
        )
        await probe("read case, no credentials", {401}, "GET", f"/cases/{target}")
        await probe("pending, no credentials", {401}, "GET", "/approvals/pending")
        await probe(
            "open case, team_lead only",
            {403},
            "POST",
            "/cases/refund",
            token=reader_lead,
            json={
                "channel": "email",
                "customer_id": "C-1001",
                "order_id": "O-5001",
                "message": "refund O-5001",
            },
        )
        expired = stack.token("svc", ["service"])  # valid; then one that expired
        from starter.auth import mint_token

        old = mint_token(
            stack.jwt_secret, "service:chaos", ["service"], ttl_seconds=60, now=time.time() - 3600
        )
        await probe("expired token", {401}, "POST", "/cases/refund", token=old, json={})
        del expired

        # The codec server: no token, wrong token, a foreign page's Origin.
        payloads = {
            "payloads": [{"metadata": {"encoding": "YmluYXJ5L2VuY3J5cHRlZA=="}, "data": "AAAA"}]
        }
        codec = stack.codec_url
        await probe("codec decode, no token", {401}, "POST", f"{codec}/decode", json=payloads)
        await probe(
            "codec decode, wrong token",
            {401},
            "POST",
            f"{codec}/decode",
            json=payloads,
            headers={"Authorization": "Bearer wrong"},
        )
        await probe(
            "codec decode, token in path wrong",
            {401, 404},
            "POST",
            f"{codec}/t/wrong/decode",
            json=payloads,
        )
        await probe(
            "codec decode, foreign Origin",
            {401, 403},
            "POST",
            f"{codec}/decode",
            json=payloads,
            headers={"Origin": "http://evil.example"},
        )
        await probe(
            "codec decode, API token",
            {401},
            "POST",
            f"{codec}/decode",
            json=payloads,
            token=service,
        )

        # The decision path below the API: forged signals, encrypted and in clear.
        client = await stack.client()
        raw = await stack.raw_client()
        handle = client.get_workflow_handle(target)
        forged_signals = 0
        for sender, payload in (
            (handle, MALLORY),
            (handle, EVE),
            (raw.get_workflow_handle(target), MALLORY),
        ):
            await sender.signal("approval_decision", payload)
            forged_signals += 1
        refused_rows = await _audit_count_until(ctx, target, "approval_signal_refused", 3)
        description = await handle.describe()
        with Session(stack.engine()) as session:
            refunds = len(session.exec(select(Refund).where(Refund.case_id == target)).all())
        still_waiting = target in await parked_ids(stack, [target])
        if refunds or not still_waiting or description.status != WorkflowExecutionStatus.RUNNING:
            failures.append(f"forged signals: refunds={refunds}, still waiting={still_waiting}")
        if refused_rows < forged_signals:
            failures.append(f"forged signals audited as refused: {refused_rows}/{forged_signals}")
        # A real decision still works after the attack.
        ok = await api.send("POST", approve, token=reader_lead, json={"decision_id": "r8-ok"})
        if ok is None or ok.status_code != 200:
            failures.append(f"the real approval after the attack: {ok and ok.status_code}")
        final = await check_cases(stack, [target])
    figures = {
        "tried": len(probes) + forged_signals,
        "probes": probes,
        "forged_signals": forged_signals,
        "forged_signals_refused_in_audit": refused_rows,
        "refunds_after_forged_signals": refunds,
        "lost": len(final.lost),
        "duplicated": len(final.duplicated),
        **tally.summary(),
        "failures": failures,
    }
    return _verdict(figures)


async def _audit_count_until(ctx: Context, case_id: str, action: str, count: int) -> int:
    found = 0

    async def enough() -> bool:
        nonlocal found
        with Session(ctx.stack.engine()) as session:
            found = len(
                session.exec(
                    select(AuditEvent)
                    .where(AuditEvent.case_id == case_id)
                    .where(AuditEvent.action == action)
                ).all()
            )
        return found >= count

    await wait_for(enough, action, timeout=120)
    return found


# --- R7 --------------------------------------------------------------------------------------


def _luhn_card(rng: random.Random) -> str:
    digits = [4] + [rng.randint(0, 9) for _ in range(14)]
    total = 0
    for i, d in enumerate(reversed(digits)):
        total += (d * 2 - 9 if d * 2 > 9 else d * 2) if i % 2 == 0 else d
    return "".join(map(str, digits)) + str((10 - total % 10) % 10)


async def r7_canary_pii(ctx: Context) -> dict[str, Any]:
    stack = ctx.stack
    tally = Tally()
    tag = uuid.uuid4().hex[:10]
    email = f"canary.{tag}@chaos-canary.test"
    card = _luhn_card(ctx.rng)
    spaced = " ".join(card[i : i + 4] for i in range(0, 16, 4))
    with Session(stack.engine()) as session:
        now = utcnow()
        from datetime import timedelta

        session.add(
            Customer(id=email, name=f"Canary {tag}", email=email, tier="standard", standing="good")
        )
        order_id = f"O-{ctx.rng.randint(900_000, 999_999)}"
        session.add(
            Order(
                id=order_id,
                customer_id=email,
                amount_cents=23_456,
                status="delivered",
                ordered_at=now - timedelta(days=6),
                promised_by=now - timedelta(days=2),
                shipped_at=now - timedelta(days=5),
                delivered_at=now - timedelta(days=3),
            )
        )
        session.commit()
    message = (
        f"Please refund order {order_id}, it arrived broken. Charge it back to my card "
        f"{spaced}, or email me at {email}."
    )
    async with Api(stack, tally) as api:
        response = await api.send(
            "POST",
            "/cases/refund",
            token=ctx.token(SERVICE),
            retry=True,
            json={
                "channel": "email",
                "customer_id": email,
                "order_id": order_id,
                "message": message,
            },
            headers={"Idempotency-Key": f"r7-{tag}"},
        )
        assert response is not None and response.status_code == 201, response
        case_id = str(response.json()["case_id"])
        await wait_parked(stack, [case_id])
        await api.send(
            "POST",
            f"/cases/{case_id}/approve",
            token=ctx.token(LEAD_A),
            json={"decision_id": f"r7-{tag}", "comment": f"ok, card {card} and {email} checked"},
        )
        check = await check_cases(stack, [case_id])
    canaries = {"email": email, "card": card, "card_spaced": spaced}
    raw = await stack.raw_client()
    raw_history = await raw.get_workflow_handle(case_id).fetch_history()
    raw_bytes = raw_history.to_json().encode() + b"".join(
        e.SerializeToString() for e in raw_history.events
    )
    decoded = await (await stack.client()).get_workflow_handle(case_id).fetch_history()
    decoded_text = await _decoded_text(await stack.client(), decoded)
    description = await raw.get_workflow_handle(case_id).describe()
    attrs = json.dumps({k: [str(v) for v in vs] for k, vs in description.search_attributes.items()})
    logs = stack.all_logs()
    found: dict[str, dict[str, bool]] = {}
    for name, value in canaries.items():
        found[name] = {
            "raw_history": value.encode() in raw_bytes,
            "search_attributes": value in attrs,
            "logs": value in logs,
            "decrypted_history (control)": value in decoded_text,
        }
    with sqlite3.connect(stack.settings.resolved_database_url.removeprefix("sqlite:///")) as db:
        in_db = {}
        for (table,) in db.execute("select name from sqlite_master where type='table'"):
            text = " ".join(str(row) for row in db.execute(f'select * from "{table}"'))
            hits = [name for name, value in canaries.items() if value in text]
            if hits:
                in_db[table] = hits
    leaks = [
        f"{n} in {w}"
        for n, ws in found.items()
        for w, hit in ws.items()
        if hit and "control" not in w
    ]
    planted = any(ws["decrypted_history (control)"] for ws in found.values())
    failures = list(leaks)
    if not planted:
        failures.append("the canary was not found even in the decrypted history")
    figures = {
        "tried": 1,
        "case_id": case_id,
        "canaries": sorted(canaries),
        "found": found,
        "systems_of_record_tables_holding_a_canary": in_db,
        "raw_history_events": len(raw_history.events),
        "log_bytes_scanned": len(logs),
        "lost": len(check.lost),
        "duplicated": len(check.duplicated),
        **tally.summary(),
        "failures": failures,
    }
    return _verdict(figures)


async def _decoded_text(client: Client, history: Any) -> str:
    """Every payload of `history` decoded through the client's codec, as text: a payload is
    any JSON object of the history with `metadata` and `data`."""
    from google.protobuf.json_format import MessageToDict, ParseDict
    from temporalio.api.common.v1 import Payload

    found: list[dict[str, Any]] = []

    def collect(node: Any) -> None:
        if isinstance(node, dict):
            if "metadata" in node and "data" in node:
                found.append(node)
                return
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)

    for event in history.events:
        collect(MessageToDict(event))
    payloads = [ParseDict(node, Payload()) for node in found]
    codec = client.data_converter.payload_codec
    decoded = await codec.decode(payloads) if codec is not None else payloads
    return "\n".join(p.data.decode(errors="replace") for p in decoded)


# --- R9 --------------------------------------------------------------------------------------


async def r9_database_locked(ctx: Context) -> dict[str, Any]:
    """Another writer holds the SQLite file's write lock while cases are decided."""
    stack = ctx.stack
    tally = Tally(faults=True)
    async with Api(stack, tally) as api:
        case_ids, refused, _ = await _park(ctx, api, "r9", ctx.profile.r9_cases)
        path = stack.settings.resolved_database_url.removeprefix("sqlite:///")
        locked = threading.Event()
        release = threading.Event()

        def hold_lock() -> None:
            db = sqlite3.connect(path, timeout=60, isolation_level=None)
            try:
                db.execute("BEGIN EXCLUSIVE")
                locked.set()
                release.wait(ctx.profile.r9_lock_s)
                db.execute("COMMIT")
            finally:
                db.close()

        holder = threading.Thread(target=hold_lock, daemon=True)
        holder.start()
        await asyncio.to_thread(locked.wait, 60)
        lock_started = time.monotonic()
        deciding = asyncio.create_task(
            decide_all(api, ctx.token(LEAD_A), case_ids, ctx.profile.concurrency, "r9")
        )
        # Just before the lock goes: what got through meanwhile (readers still read in WAL).
        await asyncio.sleep(max(0.0, ctx.profile.r9_lock_s - 2.0))
        refunds_while_locked, decided_while_locked = per_case_counts(stack.engine(), case_ids)
        await asyncio.to_thread(holder.join, ctx.profile.r9_lock_s + 120)
        lock_held_s = round(time.monotonic() - lock_started, 1)
        final = await deciding
        check = await check_cases(stack, case_ids)
    figures = {
        "tried": len(case_ids) + len(refused),
        "fault": "systems-of-record SQLite file write-locked (BEGIN EXCLUSIVE) by another process",
        "lock_held_s": lock_held_s,
        "refund_rows_while_locked": sum(refunds_while_locked.values()),
        "decisions_audited_while_locked": sum(decided_while_locked.values()),
        "database_locked_errors_logged": stack.all_logs().count("database is locked"),
        "decision_answers": dict(Counter(str(s) for s in final.values())),
        "failed_cases_after_recovery": len(check.lost),
        **check.summary(),
        "lost": len(check.lost) + len(refused),
        "duplicated": len(check.duplicated),
        **tally.summary(),
    }
    return _verdict(figures)


async def r9_model_faults(ctx: Context) -> dict[str, Any]:
    """The intent model provider (the only one routed: no fallback) answers 429, 500 or
    nothing for a while as cases arrive; they wait, retried by Temporal, then complete. A
    `podium up` of its own, since the models file is the worker's."""
    profile = ctx.profile
    n = profile.r9_cases
    key = secrets.token_urlsafe(24)
    folder = ctx.workdir / "r9-models"
    folder.mkdir(parents=True, exist_ok=True)
    tally = Tally(faults=True)
    with FaultyLLM(key) as llm:
        path = models_file(folder, llm.base_url, CODE_ROOT / "config" / "prompts")
        env = {
            "PODIUM_MODELS_FILE": str(path),
            API_KEY_ENV: key,
        }
        stack = ChaosStack(folder / "var", env)
        try:
            try:
                await asyncio.to_thread(stack.start)
            except RuntimeError:  # a busy machine missed podium up's start-up deadline: again
                stack = ChaosStack(folder / "var-2", env)
                await asyncio.to_thread(stack.start)
            own = Context(stack, profile, seed=ctx.rng.randint(0, 10**6))
            async with Api(stack, tally) as api:
                cases = own.seed("r9m", n)
                llm.failing = True
                opened = await open_cases(api, own.token(SERVICE), cases, profile.concurrency)
                ids = sorted(opened.values())
                await asyncio.sleep(profile.r9_model_fault_s)
                parked_during_faults = len(await parked_ids(stack, ids))
                fault_answers = dict(llm.answers)
                llm.failing = False
                parked = await wait_parked(stack, ids)
                final = await decide_all(api, own.token(LEAD_A), ids, profile.concurrency, "r9m")
                check = await check_cases(stack, ids)
                client = await stack.client()
                failed = [
                    wf.id
                    async for wf in client.list_workflows('ExecutionStatus = "Failed"')
                    if wf.id in set(ids)
                ]
                with Session(stack.engine()) as session:
                    ledger = Counter(
                        str(outcome)
                        for outcome in session.exec(
                            select(ModelCall.outcome).where(col(ModelCall.case_id).in_(ids))
                        )
                    )
        finally:
            await asyncio.to_thread(stack.close)
    refused = [c.case_id for c in cases if c.case_id not in opened]
    figures = {
        "tried": n,
        "fault": "intent model provider on loopback (only route, no fallback): 429, 500 and "
        f"hangs past the client's timeout in turn, for {profile.r9_model_fault_s:.0f} s",
        "provider_answers_during_faults": fault_answers,
        "provider_answers_total": dict(llm.answers),
        "model_call_ledger_outcomes": dict(ledger),
        "parked_while_provider_failed": parked_during_faults,
        "parked_after_recovery": len(parked),
        "failed_cases_after_recovery": len(failed),
        "decision_answers": dict(Counter(str(s) for s in final.values())),
        **check.summary(),
        "lost": len(set(check.lost) | set(failed)) + len(refused),
        "duplicated": len(check.duplicated),
        **tally.summary(),
    }
    return _verdict(figures)


# --- R9P -------------------------------------------------------------------------------------

R9P_DATABASE = "podium"
# Who tells of the outage in the worker's and API's logs: the driver's refused connections.
R9P_DB_ERRORS = ("OperationalError", "Connection refused", "connection failed")


async def r9p_postgres_outage(ctx: Context) -> dict[str, Any]:
    """The systems-of-record database is a PostgreSQL server of its own, under a `podium up` of
    its own: a third of the cases are decided, and once the first refund is written the server
    is stopped (`pg_ctl stop -m fast`) while those cases carry out their decisions (refund,
    ticket, reply, audit: all written there); the other cases are decided while it is down. It
    stays down `r9p_outage_s`, starts again on the same port, and every case must complete with
    one refund: none failed, none refunded twice."""
    profile = ctx.profile
    try:
        cluster = PostgresCluster.create(prefix="podium-chaos-pg-")
    except PostgresUnavailable as exc:
        return _skipped(f"no PostgreSQL server to stop here: {exc}")
    folder = ctx.workdir / "r9p"
    tally = Tally(faults=True)
    with cluster:  # stopped and removed whatever happens
        await asyncio.to_thread(cluster.init)
        # Started from the event loop's thread: the kernel kills the server when the thread
        # that started it ends (and so when the battery dies).
        cluster.start()
        url = create_database(cluster.url(), R9P_DATABASE)
        env = {"PODIUM_DATABASE_URL": url}
        stack = ChaosStack(folder / "var", env)
        started = time.monotonic()
        try:
            try:
                await asyncio.to_thread(stack.start)
            except RuntimeError:  # a busy machine missed podium up's start-up deadline: again
                stack = ChaosStack(folder / "var-2", env)
                await asyncio.to_thread(stack.start)
            stack_start_s = round(time.monotonic() - started, 1)
            tables = sorted(inspect(stack.engine()).get_table_names())
            own = Context(stack, profile, seed=ctx.rng.randint(0, 10**6))
            async with Api(stack, tally) as api:
                started = time.monotonic()
                case_ids, refused, parked = await _park(own, api, "r9p", profile.r9p_cases)
                park_s = round(time.monotonic() - started, 1)
                token = own.token(LEAD_A)
                before = case_ids[: max(1, len(case_ids) // 3)]
                during = case_ids[len(before) :]
                first_wave = asyncio.create_task(
                    decide_all(api, token, before, profile.concurrency, "r9p")
                )
                refunded_first = await wait_for(
                    lambda: _any_refund(stack, before), "a first refund", timeout=300
                )
                refunds_before, decided_before = per_case_counts(stack.engine(), case_ids)
                stack.engine().dispose()  # the battery's own connections: none left open
                await asyncio.to_thread(cluster.stop, "fast")
                down_at = time.monotonic()
                refused_while_down = await asyncio.to_thread(_refuses_connections, url)
                second_wave = asyncio.create_task(
                    decide_all(api, token, during, profile.concurrency, "r9p")
                )
                await asyncio.sleep(max(0.0, profile.r9p_outage_s - (time.monotonic() - down_at)))
                answered_while_down = second_wave.done()
                cluster.spawn()  # from the event loop's thread again (see above)
                await asyncio.to_thread(cluster.wait_ready)
                up_at = time.monotonic()
                outage_s = round(up_at - down_at, 1)
                final = {**await first_wave, **await second_wave}
                decisions_answered_s = round(time.monotonic() - up_at, 1)
                check = await check_cases(stack, case_ids)
                checked_s = round(time.monotonic() - up_at, 1)
                client = await stack.client()
                wanted = set(case_ids)
                failed = [
                    wf.id
                    async for wf in client.list_workflows(
                        'ExecutionStatus = "Failed" OR ExecutionStatus = "TimedOut" '
                        'OR ExecutionStatus = "Terminated"'
                    )
                    if wf.id in wanted
                ]
                retries = await _activity_retries(client, case_ids)
            logs = stack.all_logs()
        finally:
            await asyncio.to_thread(stack.close)
    figures = {
        "tried": len(case_ids) + len(refused),
        "fault": "systems-of-record PostgreSQL server stopped (pg_ctl stop -m fast), kept down, "
        "started again on the same port",
        "postgres": str(cluster.bin_dir),
        "tables_created_by_podium_up": len(tables),
        "refunds_table_created": "refunds" in tables,
        "stack_start_s": stack_start_s,
        "open_and_park_s": park_s,
        "outage_s": outage_s,
        "outage_planned_s": profile.r9p_outage_s,
        "server_refused_connections_while_down": refused_while_down,
        "decided_before_the_outage": len(before),
        "first_refund_seen_before_the_stop": refunded_first,
        "refund_rows_at_the_stop": sum(refunds_before.values()),
        "decisions_audited_at_the_stop": sum(decided_before.values()),
        "decisions_sent_during_the_outage": len(during),
        "decisions_all_answered_while_down": answered_while_down,
        "restart_to_every_decision_answered_s": decisions_answered_s,
        "restart_to_every_case_completed_and_replayed_s": checked_s,
        "not_parked": len(set(case_ids) - parked),
        "decision_answers": dict(Counter(str(s) for s in final.values())),
        **retries,
        "database_errors_logged": sum(logs.count(marker) for marker in R9P_DB_ERRORS),
        "failed_cases_after_recovery": len(failed),
        "failed_examples": failed[:10],
        **check.summary(),
        "lost": len(set(check.lost) | set(failed)) + len(refused),
        "duplicated": len(check.duplicated),
        **tally.summary(),
    }
    failures = []
    if not refused_while_down:
        failures.append("the server still took connections while it was to be down")
    if not retries["activities_retried"]:
        failures.append("no activity was retried: the outage touched no case")
    if failures:
        figures["failures"] = failures
    return _verdict(figures)


async def _any_refund(stack: ChaosStack, case_ids: list[str]) -> bool:
    refunds, _ = per_case_counts(stack.engine(), case_ids)
    return sum(refunds.values()) > 0


def _refuses_connections(url: str) -> bool:
    """Whether the server of `url` refuses a connection now (it is down)."""
    libpq = url.replace("postgresql+psycopg://", "postgresql://", 1)
    try:
        with psycopg.connect(libpq, connect_timeout=2):
            return False
    except psycopg.OperationalError:
        return True


def _failure_kind(failure: Any) -> str:
    """The error type of an activity failure (messages are encrypted, and the server may have
    wrapped an oversized failure in one of its own, the original as its cause)."""
    while failure is not None:
        kind = str(failure.application_failure_info.type)
        if kind:
            return kind
        failure = failure.cause if failure.HasField("cause") else None
    return "unknown"


async def _activity_retries(client: Client, case_ids: list[str]) -> dict[str, Any]:
    """From every case's history: the activities that took more than one attempt (their
    started event carries the attempt that succeeded), the most attempts, and by activity."""
    retried: Counter[str] = Counter()
    most = 0
    failures: Counter[str] = Counter()
    gate = asyncio.Semaphore(8)

    async def one(case_id: str) -> None:
        nonlocal most
        async with gate:
            history = await client.get_workflow_handle(case_id).fetch_history()
        names: dict[int, str] = {}
        for event in history.events:
            if event.HasField("activity_task_scheduled_event_attributes"):
                attributes = event.activity_task_scheduled_event_attributes
                names[event.event_id] = attributes.activity_type.name
            elif event.HasField("activity_task_started_event_attributes"):
                started = event.activity_task_started_event_attributes
                if started.attempt > 1:
                    retried[names.get(started.scheduled_event_id, "?")] += 1
                    most = max(most, started.attempt)
                    if started.HasField("last_failure"):
                        failures[_failure_kind(started.last_failure)] += 1

    await asyncio.gather(*(one(c) for c in case_ids))
    return {
        "activities_retried": sum(retried.values()),
        "activities_retried_by_name": dict(retried),
        "most_attempts_of_an_activity": most,
        "errors_of_the_failed_attempts": dict(failures.most_common(5)),
    }


SCENARIOS: dict[str, Callable[[Context], Awaitable[dict[str, Any]]]] = {
    "R4": r4_decision_races,
    "R1": r1_server_kills,
    "R2": r2_worker_kills,
    "R5": r5_hostile_requests,
    "R8": r8_auth_probes,
    "R7": r7_canary_pii,
    "R9": r9_database_locked,
    "R9M": r9_model_faults,
    "R9P": r9p_postgres_outage,
}
