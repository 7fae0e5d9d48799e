"""Inputs, results, updates and queries of Podium's processes.

Pure pydantic: safe to import from workflows (under passthrough), the starter and tests.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel, Field, field_validator

from activities.types import CustomerTier, Intent, Sentiment

__all__ = [
    "ApprovalDecisionInput",
    "ApprovalDecisionResult",
    "ApprovalRequest",
    "CaseStatus",
    "RefundAssessment",
    "RefundCaseInput",
    "RefundCaseResult",
    "RefundCaseState",
    "RefundOutcome",
    "RefundPolicy",
    "RiskLevel",
]


class RefundOutcome(StrEnum):
    AUTO_RESOLVED = "auto_resolved"
    APPROVED = "approved"
    REJECTED = "rejected"
    ESCALATED_EXPIRED = "escalated_expired"
    NEEDS_HUMAN = "needs_human"


class CaseStatus(StrEnum):
    RECEIVED = "received"
    TRIAGED = "triaged"
    AWAITING_APPROVAL = "awaiting_approval"
    ESCALATED = "escalated"
    RESOLVING = "resolving"
    COMPLETED = "completed"


class RiskLevel(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class RefundPolicy(BaseModel):
    """The knobs of the refund rules, fixed per case when it starts (history keeps them)."""

    auto_refund_limit_cents: int = Field(default=10_000, ge=0)
    return_window_days: int = Field(default=30, ge=0)
    min_intent_confidence: float = Field(default=0.5, ge=0.0, le=1.0)
    approval_sla: timedelta = Field(default=timedelta(hours=48))
    approval_deadline: timedelta = Field(default=timedelta(days=7))

    @field_validator("approval_sla", "approval_deadline")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be a positive duration")
        return value


class RefundCaseInput(BaseModel):
    channel: str = Field(min_length=1, max_length=32, examples=["email"])
    customer_id: str = Field(min_length=1, max_length=64, examples=["C-1002"])
    order_id: str | None = Field(default=None, max_length=64, examples=["O-5004"])
    message: str = Field(min_length=1, max_length=5_000)
    policy: RefundPolicy = Field(default_factory=RefundPolicy)


class RefundAssessment(BaseModel):
    """What the eligibility rules concluded, with the reasons in plain words."""

    eligible: bool
    automatic: bool = Field(description="True when policy lets Podium refund without a person")
    automatic_rejection: bool = Field(
        default=False, description="True when the request can be refused without a person"
    )
    recommendation: str = Field(description="'approve' or 'reject': what Podium would do")
    risk: RiskLevel
    amount_cents: int
    reasons: list[str]
    late: bool = False
    within_return_window: bool = False


class ApprovalRequest(BaseModel):
    request_id: str
    requested_at: datetime
    sla_due_at: datetime
    deadline_at: datetime
    recommendation: str
    reasons: list[str]
    escalated: bool = False


class ApprovalDecisionInput(BaseModel):
    request_id: str = Field(min_length=1)
    approve: bool
    approver: str = Field(default="", description="Who decided; required")
    comment: str | None = Field(default=None, max_length=2_000)


class ApprovalDecisionResult(BaseModel):
    request_id: str
    approved: bool
    approver: str
    decided_at: datetime
    outcome: RefundOutcome
    refund_id: str | None = None


class RefundCaseState(BaseModel):
    """The current state of a refund case, returned by the `get_state` query."""

    case_id: str
    status: CaseStatus
    outcome: RefundOutcome | None = None
    customer_id: str
    order_id: str | None = None
    customer_tier: CustomerTier | None = None
    intent: Intent | None = None
    intent_confidence: float | None = None
    sentiment: Sentiment | None = None
    amount_cents: int | None = None
    assessment: RefundAssessment | None = None
    approval: ApprovalRequest | None = None
    decision: ApprovalDecisionResult | None = None
    refund_id: str | None = None
    ticket_id: str | None = None
    reply: str | None = None
    notes: list[str] = Field(default_factory=list)


class RefundCaseResult(BaseModel):
    case_id: str
    outcome: RefundOutcome
    amount_cents: int | None = None
    refund_id: str | None = None
    decided_by: str
    reasons: list[str]
    reply: str | None = None
