"""Podium's operations (`workflows/operations/`) with the real activities on a temporary
database: the daily KPI snapshot on the time-skipping server, the SLA-risk sweep and both
Temporal Schedules on the dev server (the sweep reads its cases through a visibility query, and
a Schedule does not run under the time-skipping server)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from temporalio.client import Client, WorkflowHandle
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from activities.operations import sla_risk_query
from core.db import AuditEvent, CaseOutcome, KpiSnapshot, Message, create_tables, make_engine
from core.settings import Settings
from starter.operations import (
    KPI_SCHEDULE_ID,
    SWEEP_SCHEDULE_ID,
    build_schedules,
    describe_schedules,
    ensure_schedules,
    load_operations_policy,
)
from tests.helpers import history_recording
from worker import build_operations_worker, workflow_runner
from workflows.contracts import search_attributes as sa
from workflows.operations.types import (
    KpiSnapshotInput,
    KpiSnapshotResult,
    OperationsPolicy,
    SlaSweepInput,
    SlaSweepResult,
    SlaSweepSchedule,
)
from workflows.operations.workflow import WORKFLOWS

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parent.parent
REPO_POLICIES = ROOT / "policies"
HISTORIES = Path(__file__).parent / "histories"
# `PODIUM_RECORD_OPERATIONS_HISTORIES=1` re-records `tests/histories/<workflow>-<path>.json`.
RECORD = history_recording("PODIUM_RECORD_OPERATIONS_HISTORIES")
DAY = date(2026, 11, 30)


def settings_for(task_queue: str, policies: Path = REPO_POLICIES) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None, task_queue=task_queue, policies_dir=policies, encryption="off"
    )


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'podium.db'}")
    create_tables(engine)
    yield engine
    engine.dispose()


async def replayed(handle: WorkflowHandle[object, object], workflow: str, path: str) -> None:
    """The run's history replays on the current code; recorded when asked."""
    history = await handle.fetch_history()
    replayer = Replayer(
        workflows=list(WORKFLOWS),
        data_converter=pydantic_data_converter,
        workflow_runner=workflow_runner(),
    )
    await replayer.replay_workflow(history)
    if name := RECORD(path):
        text = history.to_json().replace(str(ROOT), "podium")
        (HISTORIES / f"{workflow}-{name}.json").write_text(text)


def outcome(
    case_id: str,
    process: str,
    *,
    automated: bool,
    minutes: float,
    closed: datetime,
    sla_met: bool | None = None,
    cost: float = 0.0,
) -> CaseOutcome:
    return CaseOutcome(
        case_id=case_id,
        run_id="run-" + case_id,
        process=process,
        channel="chat",
        outcome="done",
        automated=automated,
        people=[] if automated else ["reviewer-1"],
        sla_met=sla_met,
        started_at=closed - timedelta(minutes=minutes),
        closed_at=closed,
        resolution_s=minutes * 60,
        model_cost_usd=cost,
        policy_version="v1",
    )


# --- policy -------------------------------------------------------------------------------------


def test_the_policy_file_says_the_typed_defaults() -> None:
    policy, version = load_operations_policy(settings_for("tq"))
    assert OperationsPolicy() == policy
    assert "typed-defaults" != version
    assert ("5 0 * * *", None) == (policy.kpi_snapshot.cron, policy.kpi_snapshot.every)
    assert (None, timedelta(minutes=15), timedelta(hours=2)) == (
        policy.sla_sweep.cron,
        policy.sla_sweep.every,
        policy.sla_sweep.lead_time,
    )


def test_a_cron_replaces_the_default_interval_and_bad_schedules_are_refused() -> None:
    assert (None, "*/10 * * * *") == (
        SlaSweepSchedule(cron="*/10 * * * *").every,
        SlaSweepSchedule(cron="*/10 * * * *").cron,
    )
    for bad in (
        {"cron": "* * * * *", "every": "PT5M"},
        {"every": "PT10S"},
        {"lead_time": "PT0S"},
        {"every": "PT5M", "unknown": 1},
    ):
        with pytest.raises(ValidationError):
            SlaSweepSchedule.model_validate(bad)


def test_the_sweep_query_asks_for_open_approvals_due_within_the_lead_time() -> None:
    now = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)
    assert (
        'PodiumAwaitingApproval = true AND PodiumSlaDueAt > "2026-12-04T10:00:00Z" AND '
        'PodiumSlaDueAt < "2026-12-04T12:00:00Z" AND ExecutionStatus = "Running"'
    ) == sla_risk_query(now, now + timedelta(hours=2))


# --- the KPI snapshot (time-skipping) -----------------------------------------------------------


async def test_the_kpi_snapshot_writes_one_row_per_day_with_the_days_figures(
    time_env: WorkflowEnvironment, engine: Engine
) -> None:
    noon = datetime(DAY.year, DAY.month, DAY.day, 12, tzinfo=UTC)
    rows = [
        outcome("A", "refund", automated=True, minutes=10, closed=noon, cost=0.02),
        outcome("B", "refund", automated=False, sla_met=True, minutes=60, closed=noon, cost=0.05),
        outcome("C", "password_reset", automated=False, sla_met=False, minutes=120, closed=noon),
        outcome("D", "handoff", automated=True, minutes=30, closed=noon.replace(hour=23)),
        # The days either side: not in the snapshot.
        outcome("E", "refund", automated=True, minutes=5, closed=noon - timedelta(hours=13)),
        outcome("F", "refund", automated=True, minutes=5, closed=noon + timedelta(hours=12)),
    ]
    with Session(engine) as session:
        session.add_all(rows)
        session.commit()
    task_queue = f"tq-{uuid.uuid4().hex}"
    with ThreadPoolExecutor(max_workers=4) as executor:
        worker = build_operations_worker(
            time_env.client,
            settings_for("tq"),
            engine=engine,
            executor=executor,
            task_queue=task_queue,
        )
        async with worker:
            results = []
            for path in ("taken", "already_taken"):
                handle = await time_env.client.start_workflow(
                    "kpi_snapshot",
                    KpiSnapshotInput(day=DAY),
                    id=f"kpi_snapshot-{uuid.uuid4().hex}",
                    task_queue=task_queue,
                    result_type=KpiSnapshotResult,
                )
                results.append(await handle.result())
                await replayed(handle, "kpi_snapshot", path)
    assert [(DAY, True, 4), (DAY, False, 4)] == [(r.day, r.created, r.cases) for r in results]
    with Session(engine) as session:
        snapshots = list(session.exec(select(KpiSnapshot)))
    assert 1 == len(snapshots)
    snap = snapshots[0]
    assert (DAY.isoformat(), 4, 2, 2, 1, 1) == (
        snap.day,
        snap.cases,
        snap.automated,
        snap.person_asked,
        snap.escalated,
        snap.sla_met,
    )
    assert (0.5, 0.5, 0.5) == (snap.containment_rate, snap.escalation_rate, snap.sla_attainment)
    assert (30 * 60.0, 120 * 60.0) == (snap.resolution_p50_s, snap.resolution_p95_s)
    assert 0.07 == pytest.approx(snap.model_cost)
    assert ["handoff", "password_reset", "refund"] == [line["name"] for line in snap.by_process]
    assert [1, 1, 2] == [line["cases"] for line in snap.by_process]


# --- the SLA-risk sweep (dev server: a visibility query) ----------------------------------------


async def _park(client: Client, case_id: str, due: datetime) -> None:
    """A case waiting on an approval, as its search attributes say (nobody polls its queue)."""
    await client.start_workflow(
        "refund",
        id=case_id,
        task_queue=f"nobody-{uuid.uuid4().hex}",
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(sa.PROCESS, "refund"),
                SearchAttributePair(sa.AWAITING_APPROVAL, True),
                SearchAttributePair(sa.SLA_DUE_AT, due),
                SearchAttributePair(sa.APPROVAL_LEVEL, 1),
                SearchAttributePair(sa.AWAITING_ROLES, ["finance", "user:reviewer-1"]),
            ]
        ),
    )


async def _visible(client: Client, case_ids: list[str]) -> None:
    query = " OR ".join(f'WorkflowId = "{case_id}"' for case_id in case_ids)
    for _ in range(400):  # visibility is eventually consistent: poll, generously bounded
        if len([e async for e in client.list_workflows(query)]) == len(case_ids):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the parked cases never became visible")


async def test_the_sweep_notices_a_case_due_within_the_lead_time_once(
    dev_env: WorkflowEnvironment, engine: Engine
) -> None:
    client = dev_env.client
    run = uuid.uuid4().hex[:8]
    now = datetime.now(UTC)
    near, later, breached = f"case-near-{run}", f"case-later-{run}", f"case-breached-{run}"
    await _park(client, near, now + timedelta(hours=1))
    await _park(client, later, now + timedelta(hours=5))
    await _park(client, breached, now - timedelta(minutes=10))
    task_queue = f"tq-{uuid.uuid4().hex}"
    try:
        await _visible(client, [near, later, breached])
        with ThreadPoolExecutor(max_workers=4) as executor:
            worker = build_operations_worker(
                client, settings_for("tq"), engine=engine, executor=executor, task_queue=task_queue
            )
            async with worker:
                results = []
                for path in ("notified", "already_notified"):
                    handle = await client.start_workflow(
                        "sla_sweep",
                        SlaSweepInput(lead_time=timedelta(hours=2)),
                        id=f"sla_sweep-{uuid.uuid4().hex}",
                        task_queue=task_queue,
                        result_type=SlaSweepResult,
                    )
                    results.append(await handle.result())
                    await replayed(handle, "sla_sweep", path)
    finally:
        for case_id in (near, later, breached):
            with contextlib.suppress(Exception):
                await client.get_workflow_handle(case_id).terminate("test over")
    # Other tests' cases may share the server: count this test's cases only.
    assert results[0].notified >= 1 and results[1].already_notified >= 1
    with Session(engine) as session:
        notices = list(
            session.exec(select(Message).where(col(Message.kind) == "approval_sla_risk"))
        )
        audited = list(
            session.exec(select(AuditEvent).where(col(AuditEvent.action) == "approval_sla_at_risk"))
        )
    mine = [m for m in notices if m.case_id in (near, later, breached)]
    assert [near] == [m.case_id for m in mine]
    assert mine[0].idempotency_key.startswith(f"{near}:sla-risk:")
    assert "finance, user:reviewer-1" == mine[0].recipient
    assert [near] == [e.case_id for e in audited if e.case_id in (near, later, breached)]


# --- the Schedules (dev server) -----------------------------------------------------------------


@pytest.fixture
async def schedules(dev_env: WorkflowEnvironment) -> AsyncIterator[Client]:
    yield dev_env.client
    for schedule_id in (KPI_SCHEDULE_ID, SWEEP_SCHEDULE_ID):
        with contextlib.suppress(Exception):
            await dev_env.client.get_schedule_handle(schedule_id).delete()


async def test_the_schedules_follow_the_policy_file_and_keep_an_operators_pause(
    schedules: Client, tmp_path: Path
) -> None:
    client = schedules
    settings = settings_for(f"tq-{uuid.uuid4().hex}")
    built = build_schedules(settings)
    assert {KPI_SCHEDULE_ID, SWEEP_SCHEDULE_ID} == set(built)
    assert {"created"} == set((await ensure_schedules(client, settings)).values())
    kpi, sweep = await describe_schedules(client)
    assert (["5 0 * * *"], [], False) == (kpi.cron, kpi.every, kpi.paused)
    assert kpi.next_cycles and all((at.hour, at.minute) == (0, 5) for at in kpi.next_cycles)
    assert ([], ["0:15:00"], False) == (sweep.cron, sweep.every, sweep.paused)
    action = (await client.get_schedule_handle(SWEEP_SCHEDULE_ID).describe()).schedule.action
    assert f"{settings.task_queue}-operations" == getattr(action, "task_queue", None)

    # An edited policy: the sweep every 30 minutes; the next `podium up` updates it.
    edited = yaml.safe_load((REPO_POLICIES / "operations.yaml").read_text())
    edited["sla_sweep"]["every"] = "PT30M"
    (tmp_path / "operations.yaml").write_text(yaml.safe_dump(edited))
    assert {"updated"} == set(
        (await ensure_schedules(client, settings_for("tq", tmp_path))).values()
    )
    _, sweep = await describe_schedules(client)
    assert ["0:30:00"] == sweep.every

    # An operator pauses the sweep; an update keeps the pause.
    await client.get_schedule_handle(SWEEP_SCHEDULE_ID).pause(note="incident freeze")
    await ensure_schedules(client, settings)
    kpi, sweep = await describe_schedules(client)
    assert (True, "incident freeze", ["0:15:00"]) == (sweep.paused, sweep.note, sweep.every)
    assert False is kpi.paused
