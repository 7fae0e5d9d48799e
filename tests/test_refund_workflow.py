"""Refund workflow on the time-skipping test server: days of waiting pass in seconds.

Real systems-of-record, notification and audit activities on a temporary SQLite database;
deterministic fakes for the model activities (registered under the real names).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from core.db import AuditEvent, Message, Refund, Ticket
from tests.helpers import (
    fake_draft,
    fake_triage,
    make_worker,
    real_system_activities,
    seeded_engine,
    signed,
)
from workflows.contracts.approval import ApprovalDecisionInput
from workflows.refund.types import (
    CaseStatus,
    RefundCaseInput,
    RefundCaseResult,
    RefundCaseState,
    RefundOutcome,
)

# `PODIUM_RECORD_REFUND_HISTORIES=1` (re)writes the committed history of the triage handoff
# (`tests/histories/refund-triage_unavailable.json`): only for a deliberate, versioned change.
HISTORIES = Path(__file__).parent / "histories"


@pytest.fixture
async def engine(time_env: WorkflowEnvironment, tmp_path: Path) -> AsyncIterator[Engine]:
    # Seed relative to the test server's clock, which earlier tests have skipped ahead.
    engine = seeded_engine(tmp_path, now=await time_env.get_current_time())
    yield engine
    engine.dispose()


_STARTED: list[WorkflowHandle[object, RefundCaseResult]] = []


@pytest.fixture
async def worker(time_env: WorkflowEnvironment, engine: Engine) -> AsyncIterator[Worker]:
    with ThreadPoolExecutor(max_workers=4) as executor:
        worker = make_worker(
            time_env.client,
            [*real_system_activities(engine), fake_triage, fake_draft],
            executor,
        )
        async with worker:
            yield worker
            # A case left running (a failed test) would stall time skipping for the next tests.
            for handle in _STARTED:
                with contextlib.suppress(Exception):
                    await handle.terminate("test finished")
            _STARTED.clear()


async def start_case(
    env: WorkflowEnvironment, worker: Worker, *, customer: str, order: str | None, text: str
) -> WorkflowHandle[object, RefundCaseResult]:
    handle = await env.client.start_workflow(
        "refund",
        RefundCaseInput(channel="email", customer_id=customer, order_id=order, message=text),
        id=f"refund-test-{uuid.uuid4().hex}",
        task_queue=worker.task_queue,
        result_type=RefundCaseResult,
    )
    _STARTED.append(handle)
    return handle


async def state_of(handle: WorkflowHandle[object, RefundCaseResult]) -> RefundCaseState:
    return await handle.query("get_state", result_type=RefundCaseState)


async def wait_for_status(
    handle: WorkflowHandle[object, RefundCaseResult], status: CaseStatus, tries: int = 200
) -> RefundCaseState:
    for _ in range(tries):
        state = await state_of(handle)
        if state.status == status:
            return state
        await asyncio.sleep(0.02)
    raise AssertionError(f"case never reached {status}; last {state.status}")


async def wait_for_ticket(engine: Engine, case_id: str, status: str) -> None:
    # The state changes before the ticket activity has run: poll the system of record.
    for _ in range(200):
        if ticket(engine, case_id).status == status:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"ticket never reached {status}")


def refunds(engine: Engine, case_id: str) -> list[Refund]:
    with Session(engine) as session:
        return list(session.exec(select(Refund).where(Refund.case_id == case_id)))


def ticket(engine: Engine, case_id: str) -> Ticket:
    with Session(engine) as session:
        found = session.exec(select(Ticket).where(Ticket.case_id == case_id)).one()
        return found


def audit_actions(engine: Engine, case_id: str) -> list[str]:
    with Session(engine) as session:
        rows = session.exec(
            select(AuditEvent).where(AuditEvent.case_id == case_id).order_by(AuditEvent.id)
        )
        return [row.action for row in rows]


def messages(engine: Engine, case_id: str, kind: str) -> list[Message]:
    with Session(engine) as session:
        return list(
            session.exec(select(Message).where(Message.case_id == case_id, Message.kind == kind))
        )


async def test_small_refund_is_resolved_automatically(time_env, worker, engine) -> None:
    handle = await start_case(
        time_env, worker, customer="C-1001", order="O-5001", text="Please refund order O-5001"
    )
    result = await handle.result()

    assert result.outcome == RefundOutcome.AUTO_RESOLVED
    assert result.decided_by == "policy"
    assert result.refund_id is not None
    rows = refunds(engine, handle.id)
    assert [r.amount_cents for r in rows] == [4_900]
    assert ticket(engine, handle.id).status == "resolved"
    assert audit_actions(engine, handle.id) == [
        "triaged",
        "assessed",
        "refund_issued",
        "case_closed",
    ]
    assert len(messages(engine, handle.id, "customer_reply")) == 1


async def test_order_id_is_taken_from_the_message(time_env, worker, engine) -> None:
    handle = await start_case(
        time_env, worker, customer="C-1001", order=None, text="refund O-5002 please, it was late"
    )
    result = await handle.result()
    assert result.outcome == RefundOutcome.AUTO_RESOLVED
    assert result.amount_cents == 8_999


async def test_approval_after_three_days_wait(time_env, worker, engine) -> None:
    handle = await start_case(
        time_env, worker, customer="C-1002", order="O-5003", text="I want my money back O-5003"
    )
    state = await wait_for_status(handle, CaseStatus.AWAITING_APPROVAL)
    assert state.approval is not None
    await wait_for_ticket(engine, handle.id, "awaiting_approval")

    await time_env.sleep(timedelta(days=3))
    state = await state_of(handle)
    # The 48-hour SLA has passed: escalated (the only level: its approvers keep deciding).
    assert state.status == CaseStatus.ESCALATED
    assert state.approval is not None and state.approval.escalated
    assert ticket(engine, handle.id).escalated
    assert len(messages(engine, handle.id, "approval_escalation")) == 1
    assert len(messages(engine, handle.id, "approval_reminder")) == 2

    decision = await handle.execute_update(
        "decide",
        signed(
            handle.id,
            ApprovalDecisionInput(
                request_id=state.approval.request_id,
                approve=True,
                approver="lead@acme.test",
                approver_roles=["team_lead"],
            ),
        ),
        result_type=None,
    )
    result = await handle.result()

    assert result.outcome == RefundOutcome.APPROVED
    assert result.decided_by == "lead@acme.test"
    assert decision["outcome"] == "approved"
    assert decision["effects"]["refund_id"] == result.refund_id
    assert len(refunds(engine, handle.id)) == 1
    assert "approval_decided" in audit_actions(engine, handle.id)


async def test_rejection_issues_no_refund(time_env, worker, engine) -> None:
    handle = await start_case(
        time_env, worker, customer="C-1002", order="O-5003", text="refund O-5003"
    )
    state = await wait_for_status(handle, CaseStatus.AWAITING_APPROVAL)
    assert state.approval is not None
    await handle.execute_update(
        "decide",
        signed(
            handle.id,
            ApprovalDecisionInput(
                request_id=state.approval.request_id,
                approve=False,
                approver="lead@acme.test",
                approver_roles=["team_lead"],
                comment="item was used",
            ),
        ),
    )
    result = await handle.result()
    assert result.outcome == RefundOutcome.REJECTED
    assert result.reasons[-1] == "item was used"
    assert refunds(engine, handle.id) == []
    assert ticket(engine, handle.id).status == "closed"


async def test_no_decision_expires_with_default_deny(time_env, worker, engine) -> None:
    handle = await start_case(
        time_env, worker, customer="C-1002", order="O-5004", text="where is my refund O-5004"
    )
    result = await handle.result()  # the test server skips the 7 days
    assert result.outcome == RefundOutcome.ESCALATED_EXPIRED
    assert result.decided_by == "policy:deadline"
    assert refunds(engine, handle.id) == []
    t = ticket(engine, handle.id)
    assert (t.status, t.escalated) == ("needs_human", True)
    actions = audit_actions(engine, handle.id)
    assert actions.index("approval_escalated") < actions.index("approval_expired")


async def test_unknown_order_needs_a_human(time_env, worker, engine) -> None:
    handle = await start_case(
        time_env, worker, customer="C-1001", order="O-9999", text="refund please"
    )
    result = await handle.result()
    assert result.outcome == RefundOutcome.NEEDS_HUMAN
    assert "unknown order O-9999" in result.reasons[0]
    assert ticket(engine, handle.id).status == "needs_human"


async def test_already_refunded_order_is_rejected_by_policy(time_env, worker, engine) -> None:
    first = await start_case(time_env, worker, customer="C-1001", order="O-5001", text="refund")
    first_result = await first.result()
    assert first_result.outcome == RefundOutcome.AUTO_RESOLVED, first_result.reasons
    second = await start_case(time_env, worker, customer="C-1001", order="O-5001", text="refund")
    result = await second.result()
    assert result.outcome == RefundOutcome.REJECTED
    assert "already been refunded" in result.reasons[0]
    with Session(engine) as session:
        assert len(list(session.exec(select(Refund).where(Refund.order_id == "O-5001")))) == 1


async def test_update_validator_refuses_bad_decisions(time_env, worker, engine) -> None:
    handle = await start_case(
        time_env, worker, customer="C-1002", order="O-5003", text="refund O-5003"
    )
    state = await wait_for_status(handle, CaseStatus.AWAITING_APPROVAL)
    assert state.approval is not None
    request_id = state.approval.request_id

    lead = ["team_lead"]
    with pytest.raises(WorkflowUpdateFailedError) as stale:
        await handle.execute_update(
            "decide",
            signed(
                handle.id,
                ApprovalDecisionInput(
                    request_id="approval-0", approve=True, approver="a", approver_roles=lead
                ),
            ),
        )
    assert "unknown approval request" in str(stale.value.cause)
    with pytest.raises(WorkflowUpdateFailedError) as anonymous:
        await handle.execute_update(
            "decide",
            signed(
                handle.id,
                ApprovalDecisionInput(
                    request_id=request_id, approve=True, approver=" ", approver_roles=lead
                ),
            ),
        )
    # A token minted for no one is refused before the gate reads the decision.
    assert "the decision token names no one" in str(anonymous.value.cause)

    await handle.execute_update(
        "decide",
        signed(
            handle.id,
            ApprovalDecisionInput(
                request_id=request_id, approve=True, approver="a@acme", approver_roles=lead
            ),
        ),
    )
    # The first decision stands; a second one is refused.
    with pytest.raises(WorkflowUpdateFailedError) as twice:
        await handle.execute_update(
            "decide",
            signed(
                handle.id,
                ApprovalDecisionInput(
                    request_id=request_id,
                    approve=False,
                    approver="b",
                    approver_roles=lead,
                    reason="no",
                ),
            ),
        )
    assert "already decided" in str(twice.value.cause)
    assert (await handle.result()).outcome == RefundOutcome.APPROVED


async def test_signal_decides_and_invalid_signal_is_ignored(time_env, worker, engine) -> None:
    handle = await start_case(
        time_env, worker, customer="C-1002", order="O-5003", text="refund O-5003"
    )
    state = await wait_for_status(handle, CaseStatus.AWAITING_APPROVAL)
    assert state.approval is not None
    await handle.signal(
        "approval_decision",
        signed(
            handle.id, ApprovalDecisionInput(request_id="nope", approve=True, approver="mallory")
        ),
    )
    # The signal's token is checked by a local activity first: poll for the refusal note.
    for _ in range(100):
        state = await state_of(handle)
        if any("refused approval signal" in note for note in state.notes):
            break
        await asyncio.sleep(0.1)
    assert state.status == CaseStatus.AWAITING_APPROVAL
    assert any("refused approval signal" in note for note in state.notes)

    await handle.signal(
        "approval_decision",
        signed(
            handle.id,
            ApprovalDecisionInput(
                request_id=state.approval.request_id,
                approve=True,
                approver="ops@acme.test",
                approver_roles=["team_lead"],
            ),
        ),
    )
    result = await handle.result()
    assert result.outcome == RefundOutcome.APPROVED
    assert result.decided_by == "ops@acme.test"
    assert len(refunds(engine, handle.id)) == 1


async def test_unclear_message_goes_to_a_person(time_env, worker, engine) -> None:
    handle = await start_case(
        time_env, worker, customer="C-1001", order="O-5001", text="unclear words"
    )
    state = await wait_for_status(handle, CaseStatus.AWAITING_APPROVAL)
    assert state.assessment is not None and not state.assessment.automatic
    assert any("not a refund request" in r for r in state.assessment.reasons)
    await handle.terminate("test done")
