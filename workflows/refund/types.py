"""The refund process's payload types: its input, policy knobs, assessment, state and result.

Pure pydantic: safe to import from workflows (under passthrough), the starter and tests.
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

# RiskLevel is the payload types' own, re-exported: one enum for rules, gate and model routes.
from activities.types import CustomerTier, Intent, ReadDocumentResult, RiskLevel, Sentiment
from workflows.contracts.approval import ApprovalLevel, ApprovalPolicy
from workflows.contracts.case import CaseState

__all__ = [
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


def _default_refund_approvals() -> dict[RiskLevel, ApprovalPolicy]:
    team_lead = ApprovalLevel(
        name="team_lead",
        approver_roles=["team_lead"],
        sla=timedelta(hours=48),
        reminders=[0.5, 0.9],
    )
    finance = ApprovalLevel(
        name="finance", approver_roles=["finance"], sla=timedelta(hours=48), reminders=[0.5, 0.9]
    )
    return {
        RiskLevel.MEDIUM: ApprovalPolicy(levels=[team_lead]),
        RiskLevel.HIGH: ApprovalPolicy(levels=[team_lead, finance]),
    }


class RefundPolicy(BaseModel):
    """The knobs of the refund rules, fixed per case when it starts (history keeps them)."""

    auto_refund_limit_cents: int = Field(default=10_000, ge=0)
    return_window_days: int = Field(default=30, ge=0)
    min_intent_confidence: float = Field(default=0.5, ge=0.0, le=1.0)
    approvals: dict[RiskLevel, ApprovalPolicy] = Field(
        default_factory=_default_refund_approvals,
        min_length=1,
        description="Who approves, per risk level of the assessment",
    )

    def approval_for(self, risk: RiskLevel) -> ApprovalPolicy:
        """The policy for `risk`; a missing level borrows the next stricter one configured."""
        order = [RiskLevel.LOW, RiskLevel.MEDIUM, RiskLevel.HIGH]
        for candidate in order[order.index(risk) :] + order[: order.index(risk)][::-1]:
            if candidate in self.approvals:
                return self.approvals[candidate]
        raise AssertionError("approvals is never empty")


class RefundCaseInput(BaseModel):
    channel: str = Field(min_length=1, max_length=32, examples=["email"])
    customer_id: str = Field(min_length=1, max_length=64, examples=["C-1002"])
    order_id: str | None = Field(default=None, max_length=64, examples=["O-5004"])
    message: str = Field(min_length=1, max_length=5_000)
    policy: RefundPolicy = Field(default_factory=RefundPolicy)
    requested_by: str | None = Field(
        default=None,
        max_length=128,
        description="Who asked (four-eyes): default the customer's channel identity",
    )
    # Added with receipt OCR (patch `refund-receipt-ocr`): older histories decode without it.
    attachment_id: str | None = Field(
        default=None,
        max_length=64,
        description="A stored document (receipt image) by id: the bytes never enter history",
    )
    # Added with policy-as-code (patch `refund-policy-v1`): a validated policy file
    # (workflows.contracts.policy.PolicyDocument, serialized; its `digest` is the version). When
    # present its autonomy rules decide; `policy` still gives the eligibility knobs.
    policy_document: dict[str, Any] | None = None
    # The same policy by reference (cases started once the starter stores policy versions):
    # its digest, which the `evaluate_policy` activity reads the document by, and the one part
    # workflow code reads itself, its model routes. A case carries one or the other.
    policy_digest: str | None = Field(default=None, max_length=64)
    policy_routes: dict[str, list[str]] = Field(
        default_factory=dict, description="The policy file's `model_routing`"
    )

    @property
    def requester(self) -> str:
        return self.requested_by or f"{self.channel}:{self.customer_id}"

    @property
    def has_policy_file(self) -> bool:
        return self.policy_document is not None or self.policy_digest is not None

    @property
    def policy_version(self) -> str:
        """The policy file's digest ('' without one)."""
        if self.policy_digest is not None:
            return self.policy_digest
        return str((self.policy_document or {}).get("digest") or "")


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


class RefundCaseState(CaseState):
    """The current state of a refund case, returned by the `get_state` query."""

    status: CaseStatus
    outcome: RefundOutcome | None = None
    customer_id: str
    order_id: str | None = None
    customer_tier: CustomerTier | None = None
    intent: Intent | None = None
    intent_confidence: float | None = None
    sentiment: Sentiment | None = None
    amount_cents: int | None = None
    refund_amount_cents: int | None = None
    assessment: RefundAssessment | None = None
    refund_id: str | None = None
    ticket_id: str | None = None
    reply: str | None = None
    notes: list[str] = Field(default_factory=list)
    attachment_id: str | None = None
    receipt: ReadDocumentResult | None = Field(
        default=None, description="What OCR read from the attached receipt"
    )
    model_cost_usd: float = Field(default=0.0, description="Model spend of the case so far, USD")
    model_tokens: int = Field(default=0, description="Model tokens (in + out) of the case so far")
    policy_version: str | None = Field(default=None, description="Policy file digest, if any")
    policy_explanation: str | None = Field(default=None, description="Which rule decided, why")


class RefundCaseResult(BaseModel):
    case_id: str
    outcome: RefundOutcome
    amount_cents: int | None = None
    refund_amount_cents: int | None = None
    refund_id: str | None = None
    decided_by: str
    reasons: list[str]
    reply: str | None = None
    model_cost_usd: float = Field(default=0.0, description="Model spend of the case, USD")
    model_tokens: int = Field(default=0, description="Model tokens (in + out) of the case")
    policy_version: str | None = Field(default=None, description="Policy file digest, if any")
