"""The approval gate's named approvers: a level may name people (`approvers`), and a `$slot`
there is a person the process names when it opens the gate (the requester's manager from the
directory), who may decide at that level without holding any role."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from workflows.components.approval import ApprovalGate, GateHooks
from workflows.contracts.approval import (
    ApprovalDecisionInput,
    ApprovalLevel,
    ApprovalPolicy,
    GateStatus,
)

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
MANAGER = ApprovalLevel(name="manager", approvers=["$manager"])
OWNER = ApprovalLevel(name="app_owner", approvers=["$app_owner"], approver_roles=["it_security"])
TWO_LEVELS = ApprovalPolicy(levels=[MANAGER, OWNER])


async def _no_audit(action: str, **detail: Any) -> None:
    return None


def opened(policy: ApprovalPolicy = TWO_LEVELS, **people: str) -> ApprovalGate:
    gate = ApprovalGate(process="access_request", hooks=GateHooks(audit=_no_audit))
    gate.open_request(
        request_id="approval-1",
        now=NOW,
        policy=policy,
        requested_by="portal",
        recommendation="approve",
        reasons=["not pre-approved"],
        subject="Access to GitHub (admin) for ana.lima",
        people=people or {"manager": "maria.chen", "app_owner": "dev.patel"},
    )
    return gate


def decide(gate: ApprovalGate, approver: str, roles: list[str] | None = None, **extra: Any) -> Any:
    decision = ApprovalDecisionInput(
        request_id="approval-1",
        decision_id=f"d-{approver}-{len(gate.request.decisions) if gate.request else 0}",
        action=extra.pop("action", "approve"),
        approver=approver,
        approver_roles=roles or [],
        **extra,
    )
    assert decision.decision_id is not None
    return gate.accept(
        decision, now=NOW + timedelta(hours=1), decision_id=decision.decision_id, via="update"
    )


def test_a_level_needs_roles_or_people() -> None:
    with pytest.raises(ValidationError, match="approver_roles or approvers"):
        ApprovalLevel(name="nobody")
    with pytest.raises(ValidationError, match="never blank"):
        ApprovalLevel(name="blank", approvers=["$"])
    # Files written before named approvers still load as they did.
    assert [] == ApprovalLevel.model_validate({"name": "x", "approver_roles": ["r"]}).approvers


def test_the_named_manager_decides_without_a_role_and_others_may_not() -> None:
    gate = opened()
    assert gate.request is not None
    assert ["maria.chen"] == gate.request.awaiting_people
    assert ["user:maria.chen"] == gate.waiting_for()
    # A holder of some role is not the manager.
    with pytest.raises(ValueError, match=r"it names maria\.chen"):
        decide(gate, "lead@example.com", ["team_lead", "it_security"])
    record = decide(gate, "Maria.Chen ")
    assert (1, False) == (record.level, record.as_delegate)
    # Level 2: the app owner by name, or security by role.
    assert ["dev.patel"] == gate.request.awaiting_people
    assert ["it_security", "user:dev.patel"] == gate.waiting_for()
    decide(gate, "dev.patel")
    assert GateStatus.APPROVED == gate.request.status


def test_security_decides_for_the_app_owner_and_four_eyes_holds_across_levels() -> None:
    gate = opened(manager="maria.chen", app_owner="maria.chen")
    assert gate.request is not None
    decide(gate, "maria.chen")
    # The owner already approved as manager: another person (security) must decide.
    with pytest.raises(ValueError, match="four-eyes"):
        decide(gate, "maria.chen")
    decide(gate, "grace.kim", ["it_security"])
    assert GateStatus.APPROVED == gate.request.status


def test_the_requester_is_never_an_approver_even_when_named() -> None:
    gate = opened(manager="portal", app_owner="dev.patel")
    with pytest.raises(ValueError, match="four-eyes"):
        decide(gate, "portal")


def test_an_unfilled_slot_refuses_to_open() -> None:
    gate = ApprovalGate(process="access_request", hooks=GateHooks(audit=_no_audit))
    with pytest.raises(ValueError, match=r"\$app_owner"):
        gate.open_request(
            request_id="approval-1",
            now=NOW,
            policy=TWO_LEVELS,
            requested_by="portal",
            recommendation="approve",
            reasons=[],
            subject="s",
            people={"manager": "maria.chen"},
        )
    assert gate.request is None


def test_the_current_details_name_the_person_who_decides() -> None:
    lines = opened().describe()
    assert "waiting for user:maria.chen" in lines[0]
    assert "as `maria.chen`" in lines[1]
