"""Unit tests for the approval gate's rules: policies, decision checks and state changes.

These parts of the gate run outside a workflow (no timers, no activities), so they are tested
directly; `tests/test_approval_gate_workflow.py` covers the waiting, the notices and the audit.
"""

# STYLE.md asks for `assert expected == actual`, which ruff's SIM300 calls a Yoda condition.
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from workflows.components.approval import ApprovalGate, GateHooks
from workflows.contracts.approval import (
    ApprovalAction,
    ApprovalDecisionInput,
    ApprovalLevel,
    ApprovalPolicy,
    BreachAction,
    DefaultAction,
    GateStatus,
)
from workflows.refund.types import RefundCaseInput, RefundPolicy, RiskLevel

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
LEAD = ApprovalLevel(name="team_lead", approver_roles=["team_lead"])
FINANCE = ApprovalLevel(name="finance", approver_roles=["finance"])


async def _no_audit(action: str, **detail: Any) -> None:
    return None


def opened(policy: ApprovalPolicy | None = None, *, amount: int = 34_900) -> ApprovalGate:
    gate = ApprovalGate(process="refund", hooks=GateHooks(audit=_no_audit))
    gate.open_request(
        request_id="approval-1",
        now=NOW,
        policy=policy or ApprovalPolicy(levels=[LEAD]),
        requested_by="email:C-1002",
        recommendation="approve",
        reasons=["over the limit"],
        subject="Refund of $349.00",
        amount_cents=amount,
    )
    return gate


_counter = 0


def decision(**overrides: Any) -> ApprovalDecisionInput:
    global _counter
    _counter += 1
    values: dict[str, Any] = {
        "request_id": "approval-1",
        "decision_id": f"d-{_counter}",
        "action": "approve",
        "approver": "lead@acme.test",
        "approver_roles": ["team_lead"],
    }
    values.update(overrides)
    return ApprovalDecisionInput(**values)


def accept(gate: ApprovalGate, d: ApprovalDecisionInput) -> Any:
    assert d.decision_id is not None
    return gate.accept(d, now=NOW + timedelta(hours=1), decision_id=d.decision_id, via="update")


# --- policies -----------------------------------------------------------------------------------


def test_refund_defaults_medium_one_level_high_two() -> None:
    policy = RefundPolicy()
    medium = policy.approval_for(RiskLevel.MEDIUM)
    assert ["team_lead"] == [level.name for level in medium.levels]
    lead = medium.levels[0]
    assert (["team_lead"], 1, timedelta(hours=48), [0.5, 0.9], BreachAction.ESCALATE) == (
        lead.approver_roles,
        lead.quorum,
        lead.sla,
        lead.reminders,
        lead.on_breach,
    )
    high = policy.approval_for(RiskLevel.HIGH)
    assert ["team_lead", "finance"] == [level.name for level in high.levels]
    assert (["finance"], 1) == (high.levels[1].approver_roles, high.levels[1].quorum)
    for p in (medium, high):
        assert (timedelta(days=7), DefaultAction.DENY, True) == (
            p.deadline,
            p.default_action,
            p.four_eyes,
        )


def test_missing_risk_level_borrows_the_next_stricter_policy() -> None:
    only_high = RefundPolicy(approvals={RiskLevel.HIGH: ApprovalPolicy(levels=[FINANCE])})
    assert ["finance"] == [lv.name for lv in only_high.approval_for(RiskLevel.MEDIUM).levels]
    only_low = RefundPolicy(approvals={RiskLevel.LOW: ApprovalPolicy(levels=[LEAD])})
    assert ["team_lead"] == [lv.name for lv in only_low.approval_for(RiskLevel.HIGH).levels]


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: ApprovalLevel(name="x", approver_roles=[]), "approver_roles or approvers"),
        (lambda: ApprovalLevel(name="x", approver_roles=["r"], reminders=[1.2]), "between 0"),
        (lambda: ApprovalLevel(name="x", approver_roles=["r"], sla=timedelta(0)), "positive"),
        (lambda: ApprovalLevel(name="x", approver_roles=["r"], on_breach="backup"), "backup"),
        (lambda: ApprovalPolicy(levels=[]), "at least 1 item"),
        (lambda: ApprovalPolicy(levels=[LEAD, LEAD]), "unique"),
        (
            lambda: ApprovalPolicy(levels=[LEAD], default_action="approve_within_limit"),
            "approve_limit_cents",
        ),
    ],
)
def test_bad_policies_are_refused(build: Any, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        build()


def test_reminders_are_sorted_and_deduplicated() -> None:
    level = ApprovalLevel(name="x", approver_roles=["r"], reminders=[0.9, 0.5, 0.9])
    assert [0.5, 0.9] == level.reminders


def test_requester_defaults_to_the_channel_identity() -> None:
    case = RefundCaseInput(channel="email", customer_id="C-1", message="refund")
    assert "email:C-1" == case.requester
    assert "agent@acme" == case.model_copy(update={"requested_by": "agent@acme"}).requester


# --- the decision payload -----------------------------------------------------------------------


def test_legacy_approve_flag_maps_to_an_action() -> None:
    yes = ApprovalDecisionInput(request_id="r", approve=True, approver="a")
    assert ApprovalAction.APPROVE == yes.action
    no = ApprovalDecisionInput(request_id="r", approve=False, approver="a", comment="used")
    assert (ApprovalAction.REJECT, "used") == (no.action, no.reason)


def test_decision_needs_an_action_and_no_contradiction() -> None:
    with pytest.raises(ValidationError, match="'action' or 'approve'"):
        ApprovalDecisionInput(request_id="r", approver="a")
    with pytest.raises(ValidationError, match="contradicts"):
        ApprovalDecisionInput(request_id="r", approver="a", approve=True, action="reject")


# --- decision checks ----------------------------------------------------------------------------


def test_no_pending_request_is_refused() -> None:
    gate = ApprovalGate(process="refund", hooks=GateHooks(audit=_no_audit))
    with pytest.raises(ValueError, match="no approval is pending"):
        gate.validate(decision())


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"request_id": "approval-0"}, "unknown approval request 'approval-0'"),
        ({"approver": "   "}, "an approver is required"),
        ({"approver_roles": ["finance"]}, "lacks a role for level 1 'team_lead'"),
        ({"approver_roles": []}, "needs one of: team_lead"),
        ({"approver": "Email:C-1002 "}, "four-eyes: 'Email:C-1002' requested this"),
        ({"action": "reject"}, "a reason is required to reject"),
        ({"action": "request_changes"}, "positive new_amount_cents"),
        ({"action": "request_changes", "new_amount_cents": 0}, "positive new_amount_cents"),
        ({"action": "request_changes", "new_amount_cents": 34_900}, "lower than the current"),
        ({"action": "delegate", "reason": "away"}, "delegate needs delegate_to"),
        ({"action": "delegate", "delegate_to": "bob"}, "a reason is required to delegate"),
        (
            {"action": "delegate", "delegate_to": " LEAD@acme.test", "reason": "x"},
            "cannot delegate to oneself",
        ),
        (
            {"action": "delegate", "delegate_to": "email:c-1002", "reason": "x"},
            "cannot delegate to the requester",
        ),
    ],
)
def test_bad_decisions_are_refused(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        opened().validate(decision(**overrides))


def test_approval_closes_a_one_level_gate() -> None:
    gate = opened()
    record = accept(gate, decision(approver="  lead@acme.test ", comment="fine"))
    assert ("lead@acme.test", 1, "team_lead", False) == (
        record.approver,
        record.level,
        record.level_name,
        record.as_delegate,
    )
    assert GateStatus.APPROVED == gate.request.status
    assert record == gate.closing
    assert not gate.is_open
    with pytest.raises(ValueError, match=r"already decided \(approved by lead@acme.test\)"):
        gate.validate(decision(approver="other", action="reject", reason="no"))


def test_rejection_closes_the_gate() -> None:
    gate = opened()
    accept(gate, decision(action="reject", reason="item was used"))
    assert GateStatus.REJECTED == gate.request.status
    assert "item was used" == gate.closing.reason


def test_quorum_needs_distinct_people() -> None:
    gate = opened(ApprovalPolicy(levels=[LEAD.model_copy(update={"quorum": 2})]))
    accept(gate, decision(approver="alice"))
    assert gate.is_open
    assert ["alice"] == gate.request.approvals
    with pytest.raises(ValueError, match="'ALICE' has already decided at level 1"):
        gate.validate(decision(approver="ALICE"))
    accept(gate, decision(approver="bob"))
    assert GateStatus.APPROVED == gate.request.status


def test_levels_decide_in_turn_and_four_eyes_spans_them() -> None:
    gate = opened(ApprovalPolicy(levels=[LEAD, FINANCE]))
    accept(gate, decision(approver="alice", approver_roles=["team_lead", "finance"]))
    request = gate.request
    assert (2, "finance", ["finance"], []) == (
        request.level,
        request.level_name,
        request.awaiting_roles,
        request.approvals,
    )
    assert NOW + timedelta(hours=1, days=2) == request.sla_due_at
    with pytest.raises(ValueError, match="lacks a role for level 2 'finance'"):
        gate.validate(decision(approver="bob"))
    with pytest.raises(ValueError, match="four-eyes: 'alice' already approved at level"):
        gate.validate(decision(approver="alice", approver_roles=["finance"]))
    accept(gate, decision(approver="fin", approver_roles=["finance"]))
    assert GateStatus.APPROVED == request.status


def test_without_four_eyes_one_person_may_approve_every_level() -> None:
    gate = opened(ApprovalPolicy(levels=[LEAD, FINANCE], four_eyes=False))
    both = ["team_lead", "finance"]
    accept(gate, decision(approver="email:C-1002", approver_roles=both))
    accept(gate, decision(approver="email:C-1002", approver_roles=both))
    assert GateStatus.APPROVED == gate.request.status


def test_delegate_decides_without_the_role() -> None:
    gate = opened()
    accept(gate, decision(action="delegate", delegate_to="Bob", reason="on leave"))
    assert gate.is_open
    assert ["team_lead", "user:Bob"] == gate.waiting_for()
    with pytest.raises(ValueError, match="already a delegate"):
        gate.validate(decision(action="delegate", delegate_to="bob", reason="again"))
    with pytest.raises(ValueError, match="lacks a role"):
        gate.validate(decision(approver="carol", approver_roles=[]))
    record = accept(gate, decision(approver="bob", approver_roles=[]))
    assert record.as_delegate
    assert GateStatus.APPROVED == gate.request.status


def test_request_changes_lowers_the_amount() -> None:
    gate = opened(ApprovalPolicy(levels=[LEAD, FINANCE]))
    accept(gate, decision(action="request_changes", new_amount_cents=12_000, reason="partial"))
    assert (12_000, 34_900, 2) == (
        gate.request.amount_cents,
        gate.request.original_amount_cents,
        gate.request.level,
    )
    with pytest.raises(ValueError, match="lower than the current 12000 cents"):
        gate.validate(
            decision(
                approver="fin",
                approver_roles=["finance"],
                action="request_changes",
                new_amount_cents=20_000,
            )
        )


def test_same_decision_id_returns_the_first_record() -> None:
    gate = opened(ApprovalPolicy(levels=[LEAD.model_copy(update={"quorum": 2})]))
    first = decision(approver="alice")
    record = accept(gate, first)
    assert gate.validate(first) is True
    assert record is accept(gate, first)
    assert ["alice"] == gate.request.approvals
    with pytest.raises(ValueError, match="already used for a different decision"):
        gate.validate(decision(decision_id=first.decision_id, approver="bob"))


def test_sla_never_later_than_the_deadline() -> None:
    level = LEAD.model_copy(update={"sla": timedelta(days=10)})
    gate = opened(ApprovalPolicy(levels=[level], deadline=timedelta(days=2)))
    assert NOW + timedelta(days=2) == gate.request.sla_due_at == gate.request.deadline_at


def test_a_refused_signal_is_noted() -> None:
    gate = opened()
    gate.refuse(decision(approver="mallory"), "lacks a role", via="signal")
    assert ["mallory: lacks a role"] == gate.request.refused
