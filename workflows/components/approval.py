"""Approval gate: a reusable human-in-the-loop step with an SLA and a final deadline.

A process opens the gate with a request id, a recommendation and reasons, then awaits `wait()`.
Decisions arrive through the process's update (validated first, so bad ones never reach
history) or signal (checked here, ignored and noted when invalid). When the SLA passes with no
decision the gate calls the process's escalation hook once, then keeps waiting until the final
deadline, after which it reports `expired` and the process applies its default action.

Timers: one for the SLA, one for the rest of the time until the deadline. Both survive worker
and server restarts; a waiting case holds no worker resources beyond its cache entry.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from enum import StrEnum

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel

    from workflows.types import ApprovalDecisionInput, ApprovalRequest

__all__ = ["ApprovalGate", "GateDecision", "GateResult"]


class GateResult(StrEnum):
    DECIDED = "decided"
    EXPIRED = "expired"


class GateDecision(BaseModel):
    request_id: str
    approve: bool
    approver: str
    comment: str | None
    decided_at: datetime


class ApprovalGate:
    def __init__(self) -> None:
        self.request: ApprovalRequest | None = None
        self.decision: GateDecision | None = None
        self.refused: list[str] = []

    @property
    def is_open(self) -> bool:
        return self.request is not None and self.decision is None

    def open(
        self,
        *,
        request_id: str,
        now: datetime,
        sla: timedelta,
        deadline: timedelta,
        recommendation: str,
        reasons: list[str],
    ) -> ApprovalRequest:
        self.request = ApprovalRequest(
            request_id=request_id,
            requested_at=now,
            sla_due_at=now + min(sla, deadline),
            deadline_at=now + deadline,
            recommendation=recommendation,
            reasons=reasons,
        )
        return self.request

    def validate(self, decision: ApprovalDecisionInput) -> None:
        """Raise ValueError with a reason a person can act on when the decision can't apply."""
        if self.request is None:
            raise ValueError("no approval is pending for this case")
        if self.decision is not None:
            raise ValueError(
                f"approval {self.request.request_id} was already decided by "
                f"{self.decision.approver}"
            )
        if decision.request_id != self.request.request_id:
            raise ValueError(
                f"unknown approval request '{decision.request_id}'; "
                f"the pending request is '{self.request.request_id}'"
            )
        if not decision.approver.strip():
            raise ValueError("an approver is required")

    def accept(self, decision: ApprovalDecisionInput, now: datetime) -> GateDecision:
        self.validate(decision)
        self.decision = GateDecision(
            request_id=decision.request_id,
            approve=decision.approve,
            approver=decision.approver.strip(),
            comment=decision.comment,
            decided_at=now,
        )
        return self.decision

    def refuse(self, reason: str) -> None:
        self.refused.append(reason)

    async def wait(
        self, *, now: datetime, on_sla_breach: Callable[[], Awaitable[None]]
    ) -> GateResult:
        if self.request is None:
            raise RuntimeError("the approval gate was never opened")
        request = self.request
        try:
            await workflow.wait_condition(
                lambda: self.decision is not None,
                timeout=max(request.sla_due_at - now, timedelta(0)),
                timeout_summary="approval SLA",
            )
            return GateResult.DECIDED
        except TimeoutError:
            pass
        request.escalated = True
        await on_sla_breach()
        remaining = request.deadline_at - workflow.now()
        if remaining > timedelta(0):
            try:
                await workflow.wait_condition(
                    lambda: self.decision is not None,
                    timeout=remaining,
                    timeout_summary="approval deadline",
                )
                return GateResult.DECIDED
            except TimeoutError:
                pass
        return GateResult.DECIDED if self.decision is not None else GateResult.EXPIRED
