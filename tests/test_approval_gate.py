"""Unit tests for the approval gate's decision checks (the parts that run outside a workflow)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from workflows.components.approval import ApprovalGate
from workflows.types import ApprovalDecisionInput

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


def opened(sla: timedelta = timedelta(hours=48), deadline: timedelta = timedelta(days=7)):
    gate = ApprovalGate()
    gate.open(
        request_id="approval-1",
        now=NOW,
        sla=sla,
        deadline=deadline,
        recommendation="approve",
        reasons=["over the limit"],
    )
    return gate


def decision(**overrides) -> ApprovalDecisionInput:
    values = {"request_id": "approval-1", "approve": True, "approver": "lead@acme.test"}
    values.update(overrides)
    return ApprovalDecisionInput(**values)


def test_no_pending_request_is_refused() -> None:
    with pytest.raises(ValueError, match="no approval is pending"):
        ApprovalGate().validate(decision())


def test_stale_request_id_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown approval request 'approval-0'"):
        opened().validate(decision(request_id="approval-0"))


def test_missing_approver_is_refused() -> None:
    with pytest.raises(ValueError, match="approver is required"):
        opened().validate(decision(approver="   "))


def test_first_decision_stands() -> None:
    gate = opened()
    accepted = gate.accept(decision(approver="  lead@acme.test "), NOW)
    assert "lead@acme.test" == accepted.approver
    assert not gate.is_open
    with pytest.raises(ValueError, match="already decided by lead@acme.test"):
        gate.validate(decision(approve=False, approver="other"))


def test_sla_never_later_than_the_deadline() -> None:
    gate = opened(sla=timedelta(days=10), deadline=timedelta(days=2))
    assert gate.request is not None
    assert NOW + timedelta(days=2) == gate.request.sla_due_at == gate.request.deadline_at
