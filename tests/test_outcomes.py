"""Every case writes one outcome row at its close (`case_outcomes`, patch `case-outcome-record`
in the worker's interceptor `core/case_metrics.py`), the source of truth for the operations KPIs.

Refund cases on the time-skipping server with the worker's interceptors and the real
systems-of-record, audit and outcome activities on a temporary database (fakes only for the
models): an automated case and one a person approved; each history replays with the worker's
interceptors, as do the committed histories of cases that closed before the patch.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from activities.outcomes import OutcomeActivities
from core.case_metrics import case_interceptors
from core.db import CaseOutcome
from tests.helpers import fake_draft, fake_triage, real_system_activities, seeded_engine, signed
from worker import workflow_runner
from workflows.contracts.approval import ApprovalDecisionInput
from workflows.contracts.outcomes import CaseOutcomeInput
from workflows.refund.types import (
    CaseStatus,
    RefundCaseInput,
    RefundCaseResult,
    RefundCaseState,
    RefundOutcome,
)
from workflows.registry import PROCESSES

HISTORIES = Path(__file__).parent / "histories"


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = seeded_engine(tmp_path)
    yield engine
    engine.dispose()


def _replayer() -> Replayer:
    return Replayer(
        workflows=PROCESSES.workflows,
        data_converter=pydantic_data_converter,
        workflow_runner=workflow_runner(),
        interceptors=case_interceptors(),
    )


def _row(engine: Engine, case_id: str) -> CaseOutcome | None:
    with Session(engine) as session:
        return session.get(CaseOutcome, case_id)


async def test_each_case_writes_its_outcome_row_once_at_close(
    time_env: WorkflowEnvironment, engine: Engine
) -> None:
    activities = [
        *real_system_activities(engine),
        OutcomeActivities(engine).record_outcome,
        fake_triage,
        fake_draft,
    ]
    with ThreadPoolExecutor(max_workers=4) as executor:
        worker = Worker(
            time_env.client,
            task_queue=f"tq-{uuid.uuid4().hex}",
            workflows=PROCESSES.workflows,
            activities=activities,
            activity_executor=executor,
            workflow_runner=workflow_runner(),
            interceptors=case_interceptors(),
        )
        async with worker:

            async def start(order: str) -> object:
                return await time_env.client.start_workflow(
                    "refund",
                    RefundCaseInput(
                        channel="chat",
                        customer_id="C-1001" if order == "O-5001" else "C-1002",
                        order_id=order,
                        message=f"refund {order} please",
                    ),
                    id=f"refund-outcome-{uuid.uuid4().hex}",
                    task_queue=worker.task_queue,
                    result_type=RefundCaseResult,
                )

            automated = await start("O-5001")
            approved = await start("O-5003")  # medium risk: a team lead decides
            for _ in range(300):
                state = await approved.query("get_state", result_type=RefundCaseState)  # type: ignore[attr-defined]
                if state.status == CaseStatus.AWAITING_APPROVAL and state.approval:
                    break
                await time_env.sleep(timedelta(seconds=1))
            await approved.execute_update(  # type: ignore[attr-defined]
                "decide",
                signed(
                    approved.id,  # type: ignore[attr-defined]
                    ApprovalDecisionInput(
                        request_id="approval-1",
                        decision_id="d-1",
                        action="approve",
                        approver="lead",
                        approver_roles=["team_lead"],
                    ),
                ),
            )
            results = [await h.result() for h in (automated, approved)]  # type: ignore[attr-defined]
            histories = [await h.fetch_history() for h in (automated, approved)]  # type: ignore[attr-defined]
    assert [RefundOutcome.AUTO_RESOLVED, RefundOutcome.APPROVED] == [r.outcome for r in results]
    auto_row = _row(engine, automated.id)  # type: ignore[attr-defined]
    person_row = _row(engine, approved.id)  # type: ignore[attr-defined]
    assert auto_row is not None and person_row is not None
    assert ("refund", "chat", "auto_resolved", True, []) == (
        auto_row.process,
        auto_row.channel,
        auto_row.outcome,
        auto_row.automated,
        auto_row.people,
    )
    assert ("approved", False, ["lead"], True) == (
        person_row.outcome,
        person_row.automated,
        person_row.people,
        person_row.sla_met,
    )
    assert auto_row.sla_met is None
    assert person_row.resolution_s >= auto_row.resolution_s >= 0
    for history in histories:  # the outcome step replays with the worker's interceptors
        await _replayer().replay_workflow(history)


@pytest.mark.parametrize("name", ["refund-auto_resolved", "password_reset-automated"])
async def test_cases_closed_before_the_patch_replay_with_the_interceptors(name: str) -> None:
    path = HISTORIES / f"{name}.json"
    await _replayer().replay_workflow(WorkflowHistory.from_json(name, path.read_text()))


def test_a_retried_write_finds_the_row_and_writes_nothing(engine: Engine) -> None:
    now = datetime.now(UTC)
    record = CaseOutcomeInput(
        case_id="refund-x",
        run_id="r",
        process="refund",
        outcome="approved",
        automated=False,
        people=["lead"],
        started_at=now - timedelta(minutes=5),
        closed_at=now,
    )
    outcomes = OutcomeActivities(engine)
    assert outcomes.record_outcome(record).created
    assert not outcomes.record_outcome(record).created
    row = _row(engine, "refund-x")
    assert row is not None and 300.0 == pytest.approx(row.resolution_s)
