"""A model outage on the time-skipping test server: triage retried for its whole budget, then
the case handed to a person. A module of its own: a fresh time-skipping server, whose clock no
earlier test has loaded with timers.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

from sqlalchemy.engine import Engine
from temporalio import activity
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from activities.types import TriageInput, TriageResult
from tests.helpers import fake_draft, make_worker, real_system_activities, signed
from tests.test_refund_workflow import (
    HISTORIES,
    audit_actions,
    engine,
    refunds,
    start_case,
    wait_for_status,
)
from worker import workflow_runner
from workflows.contracts.approval import ApprovalDecisionInput
from workflows.refund.types import CaseStatus, RefundOutcome
from workflows.registry import PROCESSES

__all__ = ["engine"]


@activity.defn(name="triage_request")
def triage_down(input: TriageInput) -> TriageResult:
    """The intent models are down for as long as the test runs (as `ModelsUnavailableError`)."""
    raise ApplicationError("every intent model is unavailable", type="ModelsUnavailableError")


async def test_a_model_outage_past_the_retries_hands_the_case_to_a_person(
    time_env: WorkflowEnvironment, engine: Engine
) -> None:
    """Retried with backoff for the whole triage budget (15 minutes of skipped time), then the
    case does not fail: it waits for a person, who approves it; the refund is issued once."""
    with ThreadPoolExecutor(max_workers=4) as executor:
        worker = make_worker(
            time_env.client, [*real_system_activities(engine), triage_down, fake_draft], executor
        )
        async with worker:
            handle = await start_case(
                time_env, worker, customer="C-1001", order="O-5001", text="refund O-5001 please"
            )
            for _ in range(16):  # past the triage budget, a minute at a time
                await time_env.sleep(timedelta(minutes=1))
            # A generous bound: only a stuck case should hit it, not a busy machine.
            state = await wait_for_status(handle, CaseStatus.AWAITING_APPROVAL, tries=15_000)
            assert state.assessment is not None and not state.assessment.automatic
            assert any("no intent model answered" in n for n in state.notes)
            assert "triage_unavailable" in audit_actions(engine, handle.id)
            history = await handle.fetch_history()
            attempts = [
                e.activity_task_started_event_attributes.attempt
                for e in history.events
                if e.HasField("activity_task_started_event_attributes")
            ]
            assert max(attempts) > 5, attempts  # waited out past the old 5 attempts
            await handle.execute_update(
                "decide",
                signed(
                    handle.id,
                    ApprovalDecisionInput(
                        request_id="approval-1",
                        decision_id="d-1",
                        approve=True,
                        approver="lead",
                        approver_roles=["team_lead"],
                    ),
                ),
            )
            result = await handle.result()
            history = await handle.fetch_history()
    assert RefundOutcome.APPROVED == result.outcome
    assert 1 == len(refunds(engine, handle.id))
    replayer = Replayer(
        workflows=PROCESSES.workflows,
        data_converter=pydantic_data_converter,
        workflow_runner=workflow_runner(),
    )
    await replayer.replay_workflow(history)
    if os.environ.get("PODIUM_RECORD_REFUND_HISTORIES") == "1":
        # The activity failure's stack trace names this checkout: not a path to commit.
        text = history.to_json().replace(str(Path(__file__).parents[1]) + "/", "/srv/podium/")
        (HISTORIES / "refund-triage_unavailable.json").write_text(text)
