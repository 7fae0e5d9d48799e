"""Instant acknowledgement: `record_decision` answers once the decision is verified and recorded,
before it is carried out; the outcome follows in the case's result. Exactly once either way: a
retry with the same decision id, through either update, applies nothing new and issues one
refund. Audit events of new cases are activities (patch `audit-activity`, which ended the local
activities of `audit-local-activity`): ordered in history with everything else, no local
activity marker, and the chain holds each once.

The real refund workflow on the real Temporal dev server, with the real systems-of-record,
audit and decision-check activities (fakes only for the model activities).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from activities.notifications import NotificationActivities
from activities.types import SendReplyInput, SendReplyResult
from core.db import AuditEvent, Refund
from core.settings import Settings
from starter.client import PodiumClient
from tests.helpers import (
    fake_draft,
    fake_triage,
    make_worker,
    real_system_activities,
    seeded_engine,
    signed,
)
from tests.test_api import api, make_settings, refund_body
from workflows.contracts.approval import (
    ApprovalDecisionInput,
    ApprovalDecisionResult,
    GateStatus,
)
from workflows.refund.starting import RefundRequest
from workflows.refund.types import CaseStatus, RefundCaseInput, RefundCaseResult, RefundCaseState

pytestmark = pytest.mark.timeout(120)

Handle = WorkflowHandle[Any, RefundCaseResult]


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = seeded_engine(tmp_path)
    yield engine
    engine.dispose()


async def _parked(client: Any, task_queue: str) -> Handle:
    handle: Handle = await client.start_workflow(
        "refund",
        RefundCaseInput(
            channel="email", customer_id="C-1002", order_id="O-5003", message="refund O-5003"
        ),
        id=f"ack-{uuid.uuid4().hex}",
        task_queue=task_queue,
        result_type=RefundCaseResult,
    )
    for _ in range(200):
        state = await handle.query("get_state", result_type=RefundCaseState)
        if state.status == CaseStatus.AWAITING_APPROVAL:
            return handle
        await asyncio.sleep(0.1)
    raise AssertionError(f"the case never asked for approval: {state.status}")


def _lead(decision_id: str) -> ApprovalDecisionInput:
    return ApprovalDecisionInput(
        request_id="approval-1",
        decision_id=decision_id,
        approve=True,
        approver="lead@example.com",
        approver_roles=["team_lead"],
    )


def _rows(engine: Engine, model: Any, case_id: str) -> list[Any]:
    with Session(engine) as session:
        return list(session.exec(select(model).where(model.case_id == case_id)))


async def test_record_decision_answers_before_the_outcome_and_applies_once(
    dev_env: WorkflowEnvironment, engine: Engine
) -> None:
    # The customer's reply (after the refund) waits until the retry has been answered, so the
    # retry reaches a case that is still open however loaded the machine is (the real activity
    # then runs). Sent while the case carries the decision out, the retry is deferred (`CaseBusy`,
    # sent again by the client's `AdmissionInterceptor`) and then answered with the first result.
    retried = threading.Event()
    notifications = NotificationActivities(engine)

    @activity.defn(name="send_reply")
    def send_reply(input: SendReplyInput) -> SendReplyResult:
        retried.wait(timeout=60)
        return notifications.send_reply(input)

    with ThreadPoolExecutor(max_workers=4) as executor:
        activities = [
            *(a for a in real_system_activities(engine) if a.__name__ != "send_reply"),
            send_reply,
            fake_triage,
            fake_draft,
        ]
        worker = make_worker(dev_env.client, activities, executor)
        async with worker:
            handle = await _parked(dev_env.client, worker.task_queue)
            try:
                decision = signed(handle.id, _lead("d-1"))
                ack = await handle.execute_update(
                    "record_decision", decision, result_type=ApprovalDecisionResult
                )
                retry = await handle.execute_update(
                    "record_decision", decision, result_type=ApprovalDecisionResult
                )
                retried.set()
                result = await handle.result()
            finally:
                retried.set()
                with contextlib.suppress(Exception):
                    await handle.terminate("test finished")
            history = await handle.fetch_history()
    assert ("d-1", GateStatus.APPROVED, "lead@example.com") == (
        ack.decision_id,
        ack.gate,
        ack.approver,
    )
    assert ack.outcome is None  # recorded, not yet carried out
    assert ("d-1", "approved") == (retry.decision_id, retry.outcome)  # the first, carried out
    assert ("approved", "lead@example.com") == (result.outcome.value, result.decided_by)
    assert 1 == len(_rows(engine, Refund, handle.id))
    audit = _rows(engine, AuditEvent, handle.id)
    assert 1 == sum(1 for row in audit if row.action == "approval_decided")
    assert 1 == sum(1 for row in audit if row.action == "case_closed")
    scheduled = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    assert "record_audit_event" in scheduled
    assert "issue_refund" in scheduled
    assert not any(
        e.marker_recorded_event_attributes.marker_name == "core_local_activity"
        for e in history.events
    )


async def test_decide_after_record_decision_answers_with_the_outcome(
    dev_env: WorkflowEnvironment, engine: Engine
) -> None:
    """The caller that acknowledged at once and then wants the outcome sends the same decision
    again, waiting (`PodiumClient.decide`, as the API and CLI do): it is not applied again, and
    the answer carries what the case did, whether the case is still carrying it out (it defers
    the update until then) or has closed in between."""
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, task_queue=f"tq-{uuid.uuid4().hex}", policy_as_code=False
    )
    podium = PodiumClient(dev_env.client, settings)
    with ThreadPoolExecutor(max_workers=4) as executor:
        activities = [*real_system_activities(engine), fake_triage, fake_draft]
        worker = make_worker(dev_env.client, activities, executor, settings.task_queue)
        async with worker:
            ref = await podium.create_refund_case(
                RefundRequest(customer_id="C-1002", order_id="O-5003", message="refund O-5003")
            )
            handle = dev_env.client.get_workflow_handle(ref.case_id, result_type=RefundCaseResult)
            try:
                for _ in range(200):
                    state = await handle.query("get_state", result_type=RefundCaseState)
                    if state.status == CaseStatus.AWAITING_APPROVAL:
                        break
                    await asyncio.sleep(0.1)
                lead = {"roles": ["team_lead"], "decision_id": "d-2"}
                ack = await podium.decide(
                    ref.case_id, "approve", "lead@example.com", wait=False, **lead
                )
                settled = await podium.decide(ref.case_id, "approve", "lead@example.com", **lead)
                await handle.result()
            finally:
                with contextlib.suppress(Exception):
                    await handle.terminate("test finished")
    assert ("d-2", None) == (ack.decision_id, ack.outcome)
    assert ("d-2", "approved") == (settled.decision_id, settled.outcome)
    assert settled.effects.get("refund_id")
    assert 1 == len(_rows(engine, Refund, ref.case_id))


async def test_record_decision_refuses_a_decision_without_a_token(
    dev_env: WorkflowEnvironment, engine: Engine
) -> None:
    with ThreadPoolExecutor(max_workers=4) as executor:
        activities = [*real_system_activities(engine), fake_triage, fake_draft]
        worker = make_worker(dev_env.client, activities, executor)
        async with worker:
            handle = await _parked(dev_env.client, worker.task_queue)
            try:
                with pytest.raises(WorkflowUpdateFailedError):
                    await handle.execute_update(
                        "record_decision", _lead("d-3"), result_type=ApprovalDecisionResult
                    )
                state = await handle.query("get_state", result_type=RefundCaseState)
            finally:
                with contextlib.suppress(Exception):
                    await handle.terminate("test finished")
    assert CaseStatus.AWAITING_APPROVAL == state.status
    assert [] == _rows(engine, Refund, handle.id)


async def test_client_decide_without_waiting_answers_recorded_then_the_case_closes(
    dev_env: WorkflowEnvironment, engine: Engine
) -> None:
    """`PodiumClient.decide(..., wait=False)` (the API's `?ack=recorded`, `podium approve
    --no-wait`): the answer names the decision and the closed gate, not yet the outcome."""
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, task_queue=f"tq-{uuid.uuid4().hex}", policy_as_code=False
    )
    podium = PodiumClient(dev_env.client, settings)
    with ThreadPoolExecutor(max_workers=4) as executor:
        activities = [*real_system_activities(engine), fake_triage, fake_draft]
        worker = make_worker(dev_env.client, activities, executor, settings.task_queue)
        async with worker:
            ref = await podium.create_refund_case(
                RefundRequest(customer_id="C-1002", order_id="O-5003", message="refund O-5003")
            )
            handle = dev_env.client.get_workflow_handle(ref.case_id, result_type=RefundCaseResult)
            try:
                for _ in range(200):
                    state = await handle.query("get_state", result_type=RefundCaseState)
                    if state.status == CaseStatus.AWAITING_APPROVAL:
                        break
                    await asyncio.sleep(0.1)
                ack = await podium.decide(
                    ref.case_id,
                    "approve",
                    "lead@example.com",
                    roles=["team_lead"],
                    decision_id="d-4",
                    wait=False,
                )
                result = await handle.result()
                again = await podium.decide(
                    ref.case_id,
                    "approve",
                    "lead@example.com",
                    roles=["team_lead"],
                    decision_id="d-4",
                )
            finally:
                with contextlib.suppress(Exception):
                    await handle.terminate("test finished")
    assert ("d-4", GateStatus.APPROVED, None) == (ack.decision_id, ack.gate, ack.outcome)
    assert "approved" == result.outcome.value
    assert ("d-4", "approved") == (again.decision_id, again.outcome)  # the retry: first result
    assert 1 == len(_rows(engine, Refund, ref.case_id))


async def test_api_ack_recorded_answers_before_the_outcome(
    dev_env: WorkflowEnvironment, engine: Engine
) -> None:
    """`POST /cases/{id}/approve?ack=recorded` answers with the recorded decision; the case's
    view, long-polled with `GET /cases/{id}?wait=60`, then answers with the outcome, with one
    refund."""
    settings = make_settings(policy_as_code=False)
    with ThreadPoolExecutor(max_workers=4) as executor:
        activities = [*real_system_activities(engine), fake_triage, fake_draft]
        worker = make_worker(dev_env.client, activities, executor, settings.task_queue)
        async with worker, api(dev_env, settings) as http:
            created = await http.post(
                "/cases/refund",
                json=refund_body(order_id="O-5003", message="refund O-5003"),
            )
            assert 201 == created.status_code, created.text
            case_id = created.json()["case_id"]
            handle = dev_env.client.get_workflow_handle(case_id, result_type=RefundCaseResult)
            try:
                for _ in range(200):
                    state = await handle.query("get_state", result_type=RefundCaseState)
                    if state.status == CaseStatus.AWAITING_APPROVAL:
                        break
                    await asyncio.sleep(0.1)
                answer = await http.post(
                    f"/cases/{case_id}/approve?ack=recorded",
                    json={"approver": "lead@example.com", "roles": ["team_lead"]},
                )
                too_long = await http.get(f"/cases/{case_id}?wait=61")
                # The long-poll: answers once the case has its outcome.
                waited = await http.get(f"/cases/{case_id}?wait=60", timeout=90)
                view = waited.json()
                await handle.result()
            finally:
                with contextlib.suppress(Exception):
                    await handle.terminate("test finished")
    assert 200 == answer.status_code, answer.text
    assert ("approved", None) == (answer.json()["gate"], answer.json()["outcome"])
    assert 422 == too_long.status_code, too_long.text
    assert 200 == waited.status_code, waited.text
    assert "approved" == view["outcome"]
    assert 1 == len(_rows(engine, Refund, case_id))
