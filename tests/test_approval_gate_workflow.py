"""The approval gate inside the refund process, on the time-skipping test server.

Days of SLAs, reminders and deadlines pass in seconds. Real systems-of-record, notification and
audit activities on a temporary SQLite database; deterministic fakes for the model activities.
Seeded cases: O-5003 (C-1002, $349.00) is medium risk, O-5004 (C-1002, $1,299.00) high risk.
"""

# STYLE.md asks for `assert expected == actual`, which ruff's SIM300 calls a Yoda condition.
from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError, WorkflowUpdateStage
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import MetricBuffer, Runtime, TelemetryConfig
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from core.admission import AdmissionInterceptor
from core.db import AuditEvent, Message, Refund, Ticket
from tests.conftest import TEMPORAL_TEST_SERVER, register_search_attributes
from tests.helpers import (
    fake_draft,
    fake_triage,
    make_worker,
    real_system_activities,
    seeded_engine,
    signed,
)
from workflows.contracts import search_attributes as sa
from workflows.contracts.approval import (
    ApprovalDecisionInput,
    ApprovalDecisionResult,
    ApprovalLevel,
    ApprovalPolicy,
    GateStatus,
)
from workflows.refund.types import (
    CaseStatus,
    RefundCaseInput,
    RefundCaseResult,
    RefundCaseState,
    RefundOutcome,
    RefundPolicy,
    RiskLevel,
)

pytestmark = pytest.mark.timeout(60)

Handle = WorkflowHandle[Any, RefundCaseResult]
LEAD = ApprovalLevel(name="team_lead", approver_roles=["team_lead"], reminders=[0.5, 0.9])


@pytest.fixture
async def engine(time_env: WorkflowEnvironment, tmp_path: Path) -> AsyncIterator[Engine]:
    # Seed relative to the test server's clock, which earlier tests have skipped ahead.
    engine = seeded_engine(tmp_path, now=await time_env.get_current_time())
    yield engine
    engine.dispose()


_STARTED: list[Handle] = []


@pytest.fixture
async def worker(time_env: WorkflowEnvironment, engine: Engine) -> AsyncIterator[Worker]:
    with ThreadPoolExecutor(max_workers=4) as executor:
        worker = make_worker(
            time_env.client, [*real_system_activities(engine), fake_triage, fake_draft], executor
        )
        async with worker:
            yield worker
            # A case left running (a failed test) would stall time skipping for the next tests.
            for handle in _STARTED:
                with contextlib.suppress(Exception):
                    await handle.terminate("test finished")
            _STARTED.clear()


def medium(policy: ApprovalPolicy) -> RefundPolicy:
    return RefundPolicy(approvals={RiskLevel.MEDIUM: policy, RiskLevel.HIGH: policy})


async def start(
    env: WorkflowEnvironment,
    worker: Worker,
    order: str = "O-5003",
    *,
    policy: RefundPolicy | None = None,
    requested_by: str | None = None,
) -> Handle:
    handle: Handle = await env.client.start_workflow(
        "refund",
        RefundCaseInput(
            channel="email",
            customer_id="C-1002",
            order_id=order,
            message=f"refund {order} please",
            policy=policy or RefundPolicy(),
            requested_by=requested_by,
        ),
        id=f"gate-test-{uuid.uuid4().hex}",
        task_queue=worker.task_queue,
        result_type=RefundCaseResult,
    )
    _STARTED.append(handle)
    await pending(handle)
    return handle


async def state_of(handle: Handle) -> RefundCaseState:
    return await handle.query("get_state", result_type=RefundCaseState)


async def pending(handle: Handle) -> RefundCaseState:
    """The state once the gate has opened and sent its first notice."""
    for _ in range(300):
        state = await state_of(handle)
        if state.approval is not None and state.status == CaseStatus.AWAITING_APPROVAL:
            return state
        await asyncio.sleep(0.02)
    raise AssertionError(f"no approval was requested; status {state.status}")


async def decide(handle: Handle, **fields: Any) -> ApprovalDecisionResult:
    fields.setdefault("request_id", "approval-1")
    fields.setdefault("decision_id", uuid.uuid4().hex)
    fields.setdefault("action", "approve")
    return await handle.execute_update(
        "decide",
        signed(handle.id, ApprovalDecisionInput(**fields)),
        result_type=ApprovalDecisionResult,
    )


async def refused(handle: Handle, **fields: Any) -> str:
    with pytest.raises(WorkflowUpdateFailedError) as caught:
        await decide(handle, **fields)
    return str(caught.value.cause)


def rows(engine: Engine, model: Any, case_id: str) -> list[Any]:
    with Session(engine) as session:
        query = select(model).where(model.case_id == case_id).order_by(model.id)
        return list(session.exec(query))


def audit(engine: Engine, case_id: str) -> list[AuditEvent]:
    return rows(engine, AuditEvent, case_id)


def actions(engine: Engine, case_id: str) -> list[str]:
    return [event.action for event in audit(engine, case_id)]


def notices(engine: Engine, case_id: str) -> dict[str, Message]:
    """Approver notices in the outbox by idempotency key, without the case prefix."""
    prefix = f"{case_id}:approval:approval-1:"
    return {
        m.idempotency_key.removeprefix(prefix): m
        for m in rows(engine, Message, case_id)
        if m.kind.startswith("approval_")
    }


def refunds(engine: Engine, case_id: str) -> list[int]:
    return [refund.amount_cents for refund in rows(engine, Refund, case_id)]


async def current_details(handle: Handle) -> str:
    metadata = await handle.query("__temporal_workflow_metadata")
    return str(metadata.current_details)


# --- deciding in time ---------------------------------------------------------------------------


async def test_approval_within_sla(time_env, worker, engine) -> None:
    handle = await start(time_env, worker)
    state = await state_of(handle)
    assert state.approval is not None
    assert ("team_lead", ["team_lead"], "email:C-1002") == (
        state.approval.level_name,
        state.approval.awaiting_roles,
        state.approval.requested_by,
    )

    result = await decide(
        handle,
        decision_id="d-approve",
        approver="lead@acme.test",
        approver_roles=["team_lead"],
        comment="photos check out",
    )
    final = await handle.result()

    assert (GateStatus.APPROVED, RefundOutcome.APPROVED, "d-approve") == (
        result.gate,
        result.outcome,
        result.decision_id,
    )
    assert result.effects["refund_id"] == final.refund_id
    assert "lead@acme.test" == final.decided_by
    assert [34_900] == refunds(engine, handle.id)
    assert ["1:request:1"] == list(notices(engine, handle.id))
    request_notice = notices(engine, handle.id)["1:request:1"]
    assert "team_lead" == request_notice.recipient
    assert f"/namespaces/default/workflows/{handle.id}" in request_notice.body
    decided = [e for e in audit(engine, handle.id) if e.action == "approval_decided"]
    assert [("lead@acme.test", "approve", "photos check out")] == [
        (e.actor, e.detail["decision"], e.detail["comment"]) for e in decided
    ]
    assert "approval_reminder_sent" not in actions(engine, handle.id)
    details = await current_details(handle)
    assert "**approve** by lead@acme.test (team_lead): photos check out" in details


async def test_reminders_then_approval(time_env, worker, engine) -> None:
    handle = await start(time_env, worker)
    await time_env.sleep(timedelta(hours=25))  # past 50% of the 48-hour SLA
    assert ["1:request:1", "1:reminder:1"] == list(notices(engine, handle.id))
    await time_env.sleep(timedelta(hours=19))  # past 90%: 43.2 hours
    sent = notices(engine, handle.id)
    assert ["1:request:1", "1:reminder:1", "1:reminder:2"] == list(sent)
    assert "approval_reminder" == sent["1:reminder:2"].kind
    assert "Reminder: approval still needed (reminder 2)" in sent["1:reminder:2"].body
    state = await state_of(handle)
    assert state.approval is not None
    assert (["1:1", "1:2"], False) == (state.approval.reminders_sent, state.approval.escalated)

    await decide(handle, approver="lead@acme.test", approver_roles=["team_lead"])
    assert RefundOutcome.APPROVED == (await handle.result()).outcome
    assert 2 == actions(engine, handle.id).count("approval_reminder_sent")
    assert "approval_escalated" not in actions(engine, handle.id)


async def test_breach_escalates_to_finance_who_approves(time_env, worker, engine) -> None:
    handle = await start(time_env, worker, "O-5004")  # high risk: team_lead, then finance
    await time_env.sleep(timedelta(hours=49))
    state = await state_of(handle)
    assert state.approval is not None
    assert (CaseStatus.ESCALATED, 2, "finance", ["finance"], True) == (
        state.status,
        state.approval.level,
        state.approval.level_name,
        state.approval.awaiting_roles,
        state.approval.escalated,
    )
    with Session(engine) as session:
        assert session.exec(select(Ticket).where(Ticket.case_id == handle.id)).one().escalated
    inbox = (await handle.describe()).typed_search_attributes
    assert (["finance"], 2, True, True, 1_299.0) == (
        list(inbox.get(sa.AWAITING_ROLES) or []),
        inbox.get(sa.APPROVAL_LEVEL),
        inbox.get(sa.AWAITING_APPROVAL),
        inbox.get(sa.ESCALATED),
        inbox.get(sa.AMOUNT),
    )
    assert state.approval.sla_due_at == inbox.get(sa.SLA_DUE_AT)
    sent = notices(engine, handle.id)
    assert {"1:request:1", "1:reminder:1", "1:reminder:2", "2:escalation:1"} == set(sent)
    assert "finance" == sent["2:escalation:1"].recipient
    escalated = next(e for e in audit(engine, handle.id) if e.action == "approval_escalated")
    assert ("next_level", "team_lead", "finance") == (
        escalated.detail["mode"],
        escalated.detail["from_level"],
        escalated.detail["to_level"],
    )

    cause = await refused(handle, approver="lead@acme.test", approver_roles=["team_lead"])
    assert "lacks a role for level 2 'finance'" in cause
    result = await decide(handle, approver="cfo@acme.test", approver_roles=["finance"])
    final = await handle.result()
    assert (RefundOutcome.APPROVED, 2, "finance") == (
        result.outcome,
        result.level,
        result.level_name,
    )
    assert "cfo@acme.test" == final.decided_by
    assert [129_900] == refunds(engine, handle.id)


async def test_quorum_two_of_three(time_env, worker, engine) -> None:
    panel = ApprovalLevel(name="panel", approver_roles=["team_lead"], quorum=2)
    handle = await start(time_env, worker, policy=medium(ApprovalPolicy(levels=[panel])))

    first = await decide(handle, approver="alice", approver_roles=["team_lead"])
    assert (GateStatus.OPEN, None, ["team_lead"]) == (
        first.gate,
        first.outcome,
        first.waiting_for,
    )
    assert "already decided at level 1 'panel'" in await refused(
        handle, approver="Alice", approver_roles=["team_lead"]
    )
    second = await decide(handle, approver="bob", approver_roles=["team_lead"])
    assert (GateStatus.APPROVED, RefundOutcome.APPROVED) == (second.gate, second.outcome)
    final = await handle.result()
    assert "bob" == final.decided_by
    assert [34_900] == refunds(engine, handle.id)
    decided = [e.actor for e in audit(engine, handle.id) if e.action == "approval_decided"]
    assert ["alice", "bob"] == decided


async def test_four_eyes_refuses_the_requester_and_a_second_approval(
    time_env, worker, engine
) -> None:
    handle = await start(time_env, worker, "O-5004", requested_by="agent@acme.test")
    cause = await refused(handle, approver="agent@acme.test", approver_roles=["team_lead"])
    assert "four-eyes: 'agent@acme.test' requested this" in cause

    both = ["team_lead", "finance"]
    level_one = await decide(handle, approver="alice", approver_roles=both)
    assert (GateStatus.OPEN, ["finance"]) == (level_one.gate, level_one.waiting_for)
    cause = await refused(handle, approver="alice", approver_roles=both)
    assert "four-eyes: 'alice' already approved at level 'team_lead'" in cause
    await decide(handle, approver="bob", approver_roles=["finance"])
    assert RefundOutcome.APPROVED == (await handle.result()).outcome
    sent = notices(engine, handle.id)
    assert "2:request:1" in sent  # finance was asked when the team lead approved


async def test_delegation_lets_the_delegate_decide(time_env, worker, engine) -> None:
    handle = await start(time_env, worker)
    assert "lacks a role" in await refused(
        handle, action="delegate", approver="intern", delegate_to="bob", reason="x"
    )
    assert "delegate needs delegate_to" in await refused(
        handle, action="delegate", approver="lead", approver_roles=["team_lead"], reason="x"
    )
    delegated = await decide(
        handle,
        action="delegate",
        approver="lead",
        approver_roles=["team_lead"],
        delegate_to="bob",
        reason="on leave this week",
    )
    assert (GateStatus.OPEN, ["team_lead", "user:bob"]) == (
        delegated.gate,
        delegated.waiting_for,
    )
    delegation = notices(engine, handle.id)["1:delegation:1"]
    assert ("approval_delegation", "user:bob") == (delegation.kind, delegation.recipient)

    result = await decide(handle, approver="bob")  # no role: a delegate
    final = await handle.result()
    assert (RefundOutcome.APPROVED, "bob") == (result.outcome, final.decided_by)
    state = await state_of(handle)
    assert state.approval is not None
    assert [("delegate", "lead", False), ("approve", "bob", True)] == [
        (d.action.value, d.approver, d.as_delegate) for d in state.approval.decisions
    ]
    delegated_event = next(e for e in audit(engine, handle.id) if e.action == "approval_delegated")
    assert ("lead", "bob", "on leave this week") == (
        delegated_event.actor,
        delegated_event.detail["delegate_to"],
        delegated_event.detail["reason"],
    )


async def test_request_changes_refunds_the_lower_amount(time_env, worker, engine) -> None:
    handle = await start(time_env, worker)
    lead = {"approver": "lead", "approver_roles": ["team_lead"], "action": "request_changes"}
    assert "lower than the current 34900 cents" in await refused(
        handle, **lead, new_amount_cents=40_000
    )
    assert "positive new_amount_cents" in await refused(handle, **lead)
    result = await decide(handle, **lead, new_amount_cents=12_000, reason="item partly used")
    final = await handle.result()
    assert (RefundOutcome.APPROVED, 12_000) == (result.outcome, result.amount_cents)
    assert (34_900, 12_000) == (final.amount_cents, final.refund_amount_cents)
    assert [12_000] == refunds(engine, handle.id)
    assert "approved for $120.00 instead of $349.00" in final.reasons


# --- the final deadline -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("default", "limit", "outcome", "refunded", "ticket_status"),
    [
        ("deny", None, RefundOutcome.ESCALATED_EXPIRED, [], "needs_human"),
        ("handoff", None, RefundOutcome.NEEDS_HUMAN, [], "needs_human"),
        ("approve_within_limit", 50_000, RefundOutcome.APPROVED, [34_900], "resolved"),
        ("approve_within_limit", 10_000, RefundOutcome.ESCALATED_EXPIRED, [], "needs_human"),
    ],
    ids=["deny", "handoff", "approve-under-limit", "approve-over-limit"],
)
async def test_expiry_applies_the_default_action(
    time_env, worker, engine, default, limit, outcome, refunded, ticket_status
) -> None:
    policy = ApprovalPolicy(levels=[LEAD], default_action=default, approve_limit_cents=limit)
    handle = await start(time_env, worker, policy=medium(policy))
    final = await handle.result()  # the test server skips the 7 days

    assert outcome == final.outcome
    assert "policy:deadline" == final.decided_by
    assert refunded == refunds(engine, handle.id)
    with Session(engine) as session:
        ticket = session.exec(select(Ticket).where(Ticket.case_id == handle.id)).one()
    assert ticket_status == ticket.status
    expired = next(e for e in audit(engine, handle.id) if e.action == "approval_expired")
    assert ("policy:deadline", default) == (expired.actor, expired.detail["default_action"])
    assert "no decision before the deadline" in final.reasons[-1]
    assert {"1:request:1", "1:reminder:1", "1:reminder:2", "1:escalation:1"} == set(
        notices(engine, handle.id)
    )


# --- retries, closed gates, refusals ------------------------------------------------------------


async def test_duplicate_decision_id_returns_the_first_result(time_env, worker, engine) -> None:
    panel = ApprovalLevel(name="panel", approver_roles=["team_lead"], quorum=2)
    handle = await start(time_env, worker, policy=medium(ApprovalPolicy(levels=[panel])))
    alice = {"decision_id": "d-1", "approver": "alice", "approver_roles": ["team_lead"]}
    first = await decide(handle, **alice, comment="first")
    retried = await decide(handle, **alice, comment="retried later")
    assert first == retried
    assert "already used for a different decision" in await refused(
        handle, decision_id="d-1", approver="bob", approver_roles=["team_lead"]
    )
    state = await state_of(handle)
    assert state.approval is not None and ["alice"] == state.approval.approvals

    await decide(handle, decision_id="d-2", approver="bob", approver_roles=["team_lead"])
    assert RefundOutcome.APPROVED == (await handle.result()).outcome
    assert 2 == actions(engine, handle.id).count("approval_decided")


async def test_decision_on_a_closed_gate_is_refused(time_env, worker, engine) -> None:
    handle = await start(time_env, worker)
    # Accepted: the gate closes at once, while the refund is still being carried out.
    closing = await handle.start_update(
        "decide",
        signed(
            handle.id,
            ApprovalDecisionInput(
                request_id="approval-1",
                action="reject",
                approver="lead",
                approver_roles=["team_lead"],
                reason="outside the policy",
            ),
        ),
        wait_for_stage=WorkflowUpdateStage.ACCEPTED,
        result_type=ApprovalDecisionResult,
    )
    cause = await refused(handle, approver="other", approver_roles=["team_lead"])
    assert "already decided (rejected by lead)" in cause
    assert RefundOutcome.REJECTED == (await closing.result()).outcome
    final = await handle.result()
    assert (RefundOutcome.REJECTED, "outside the policy") == (final.outcome, final.reasons[-1])
    assert [] == refunds(engine, handle.id)


async def test_validator_refuses_before_history(time_env, worker, engine) -> None:
    handle = await start(time_env, worker)
    lead = {"approver_roles": ["team_lead"]}
    cases = [
        ({"approver": "fin", "approver_roles": ["finance"]}, "lacks a role"),
        ({"approver": "nobody"}, "lacks a role"),
        # A token minted for no one is refused before the gate reads the decision.
        ({"approver": " ", **lead}, "the decision token names no one"),
        ({"approver": "lead", "action": "reject", **lead}, "a reason is required to reject"),
        ({"approver": "lead", "request_id": "approval-0", **lead}, "unknown approval request"),
        ({"approver": "email:C-1002", **lead}, "four-eyes"),
    ]
    for fields, message in cases:
        assert message in await refused(handle, **fields), fields
    history = await handle.fetch_history()
    assert not [
        e
        for e in history.events
        if e.HasField("workflow_execution_update_accepted_event_attributes")
    ]
    await decide(handle, approver="lead", approver_roles=["team_lead"])
    assert RefundOutcome.APPROVED == (await handle.result()).outcome


async def test_signal_path_with_a_refused_signal_audited(time_env, worker, engine) -> None:
    handle = await start(time_env, worker)
    await handle.signal(
        "approval_decision",
        signed(
            handle.id,
            ApprovalDecisionInput(request_id="approval-1", approve=True, approver="mallory"),
        ),
    )
    for _ in range(100):
        if "approval_signal_refused" in actions(engine, handle.id):
            break
        await asyncio.sleep(0.05)
    refusal = next(e for e in audit(engine, handle.id) if e.action == "approval_signal_refused")
    assert "unverified:mallory" == refusal.actor
    assert "lacks a role for level 1 'team_lead'" in refusal.detail["reason"]
    state = await state_of(handle)
    assert state.status == CaseStatus.AWAITING_APPROVAL
    assert any("refused approval signal from 'mallory'" in note for note in state.notes)
    assert state.approval is not None and state.approval.refused

    # The Temporal UI's simple signal, with a role.
    await handle.signal(
        "approval_decision",
        signed(
            handle.id,
            ApprovalDecisionInput(
                request_id="approval-1", approve=True, approver="ops", approver_roles=["team_lead"]
            ),
        ),
    )
    final = await handle.result()
    assert (RefundOutcome.APPROVED, "ops") == (final.outcome, final.decided_by)
    decided = next(e for e in audit(engine, handle.id) if e.action == "approval_decided")
    assert ("ops", "signal") == (decided.actor, decided.detail["via"])


# --- metrics ------------------------------------------------------------------------------------


async def test_gate_records_metrics(tmp_path: Path) -> None:
    """On a runtime of its own whose metrics go to a buffer: reminders, escalation, latency."""
    buffer = MetricBuffer(10_000)
    runtime = Runtime(telemetry=TelemetryConfig(metrics=buffer))
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter,
        test_server_existing_path=str(TEMPORAL_TEST_SERVER),
        runtime=runtime,
        interceptors=[AdmissionInterceptor()],
    )
    try:
        await register_search_attributes(env.client)
        engine = seeded_engine(tmp_path, now=await env.get_current_time())
        with ThreadPoolExecutor(max_workers=2) as executor:
            worker = make_worker(
                env.client, [*real_system_activities(engine), fake_triage, fake_draft], executor
            )
            async with worker:
                handle = await start(env, worker, "O-5004")
                await env.sleep(timedelta(hours=49))
                await decide(handle, approver="cfo", approver_roles=["finance"])
                await handle.result()
        engine.dispose()
    finally:
        await env.shutdown()

    seen: dict[tuple[str, str], float] = {}
    for update in buffer.retrieve_updates():
        if update.metric.name.startswith("podium_approval_"):
            key = (update.metric.name, str(update.attributes.get("level")))
            assert "refund" == update.attributes.get("process")
            seen[key] = seen.get(key, 0) + update.value
    assert 2 == seen[("podium_approval_reminders", "team_lead")]
    assert 1 == seen[("podium_approval_escalations", "team_lead")]
    latency = seen[("podium_approval_latency_seconds", "finance")]
    assert timedelta(hours=49).total_seconds() <= latency < timedelta(hours=50).total_seconds()
    assert ("podium_approval_expiries", "finance") not in seen
