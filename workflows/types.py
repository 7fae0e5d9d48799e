"""Inputs, results, updates and queries of Podium's processes.

Pure pydantic: safe to import from workflows (under passthrough), the starter and tests.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Self

from pydantic import BaseModel, Field, field_validator, model_validator

# RiskLevel is the payload types' own, re-exported: one enum for rules, gate and model routes.
from activities.types import CustomerTier, Intent, ReadDocumentResult, RiskLevel, Sentiment

__all__ = [
    "ApprovalAction",
    "ApprovalDecisionInput",
    "ApprovalDecisionRecord",
    "ApprovalDecisionResult",
    "ApprovalLevel",
    "ApprovalPolicy",
    "ApprovalRequest",
    "BreachAction",
    "CaseStatus",
    "DefaultAction",
    "GateStatus",
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


# --- the approval gate ---------------------------------------------------------------------------


class ApprovalAction(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"
    REQUEST_CHANGES = "request_changes"
    DELEGATE = "delegate"


class BreachAction(StrEnum):
    """What happens when a level's SLA passes with no decision."""

    ESCALATE = "escalate"  # the next level decides (or, at the last level, escalated and waiting)
    BACKUP = "backup"  # the level's backup roles may decide as well


class DefaultAction(StrEnum):
    """What the gate does when the final deadline passes with no decision."""

    DENY = "deny"
    HANDOFF = "handoff"  # a person takes the case over outside the gate
    APPROVE_WITHIN_LIMIT = "approve_within_limit"  # approve if at or under `approve_limit_cents`


class GateStatus(StrEnum):
    OPEN = "open"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"


def _positive_duration(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError("must be a positive duration")
    return value


class ApprovalLevel(BaseModel):
    """One stage of an approval: `quorum` distinct people holding one of `approver_roles`."""

    name: str = Field(min_length=1, max_length=64, examples=["team_lead"])
    approver_roles: list[str] = Field(min_length=1, examples=[["team_lead"]])
    quorum: int = Field(default=1, ge=1, le=20)
    sla: timedelta = Field(default=timedelta(hours=48))
    reminders: list[float] = Field(
        default_factory=list, description="Fractions of the SLA at which to remind, e.g. [0.5, 0.9]"
    )
    on_breach: BreachAction = BreachAction.ESCALATE
    backup_roles: list[str] = Field(default_factory=list)

    @field_validator("sla")
    @classmethod
    def _sla_positive(cls, value: timedelta) -> timedelta:
        return _positive_duration(value)

    @field_validator("reminders")
    @classmethod
    def _reminders_within_sla(cls, value: list[float]) -> list[float]:
        if any(not 0.0 < point < 1.0 for point in value):
            raise ValueError("reminders are fractions of the SLA, strictly between 0 and 1")
        return sorted(set(value))

    @model_validator(mode="after")
    def _backup_needs_roles(self) -> Self:
        if self.on_breach == BreachAction.BACKUP and not self.backup_roles:
            raise ValueError("on_breach 'backup' needs backup_roles")
        return self


class ApprovalPolicy(BaseModel):
    """How a process asks people: ordered levels, a final deadline and its default action.

    Every level must approve in turn (a rejection at any level ends the gate). Fixed per case
    when it starts: history keeps it, so a policy change never alters a running case.
    """

    levels: list[ApprovalLevel] = Field(min_length=1, max_length=10)
    deadline: timedelta = Field(default=timedelta(days=7))
    default_action: DefaultAction = DefaultAction.DENY
    approve_limit_cents: int | None = Field(default=None, ge=0)
    four_eyes: bool = Field(
        default=True,
        description="The requester may not decide, and nobody approves twice across levels",
    )

    @field_validator("deadline")
    @classmethod
    def _deadline_positive(cls, value: timedelta) -> timedelta:
        return _positive_duration(value)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        names = [level.name for level in self.levels]
        if len(set(names)) != len(names):
            raise ValueError("level names must be unique")
        if (
            self.default_action == DefaultAction.APPROVE_WITHIN_LIMIT
            and self.approve_limit_cents is None
        ):
            raise ValueError("default_action 'approve_within_limit' needs approve_limit_cents")
        return self


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
    # (workflows.policy_types.PolicyDocument, serialized; its `digest` is the version). When
    # present its autonomy rules decide; `policy` still gives the eligibility knobs.
    policy_document: dict[str, Any] | None = None

    @property
    def requester(self) -> str:
        return self.requested_by or f"{self.channel}:{self.customer_id}"


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


class ApprovalDecisionRecord(BaseModel):
    """One accepted decision: who, in which role, at which level, when, and why."""

    decision_id: str
    request_id: str
    action: ApprovalAction
    approver: str
    approver_roles: list[str] = Field(default_factory=list)
    level: int = Field(description="1-based level the decision was made at")
    level_name: str
    as_delegate: bool = False
    comment: str | None = None
    reason: str | None = None
    new_amount_cents: int | None = None
    delegate_to: str | None = None
    decided_at: datetime
    via: str = Field(description="'update' or 'signal'")


class ApprovalRequest(BaseModel):
    """The gate's state: what is asked, of whom, until when, and what has been decided."""

    request_id: str
    requested_at: datetime
    requested_by: str
    sla_due_at: datetime = Field(description="When the current level's SLA passes")
    deadline_at: datetime
    recommendation: str
    reasons: list[str]
    escalated: bool = False
    status: GateStatus = GateStatus.OPEN
    policy: ApprovalPolicy
    level: int = Field(default=1, description="1-based index of the level deciding now")
    level_name: str
    level_started_at: datetime
    awaiting_roles: list[str] = Field(description="Roles that may decide now")
    delegates: list[str] = Field(default_factory=list, description="People who may decide now")
    amount_cents: int | None = Field(default=None, description="What would be approved now")
    original_amount_cents: int | None = None
    approvals: list[str] = Field(
        default_factory=list, description="Who has approved at the current level"
    )
    decisions: list[ApprovalDecisionRecord] = Field(default_factory=list)
    reminders_sent: list[str] = Field(default_factory=list, description="'<level>:<index>'")
    refused: list[str] = Field(default_factory=list, description="Refused signals, with reasons")
    default_action: DefaultAction | None = Field(
        default=None, description="Set when the deadline passed and the default was applied"
    )


class ApprovalDecisionInput(BaseModel):
    """A person's decision on a pending approval (update `decide`, signal `approval_decision`).

    `action` says what they decide; older callers (and the Temporal UI's simple signal) may send
    `approve: true|false` instead, which maps to approve/reject (a legacy rejection's `comment`
    serves as its reason). `decision_id` makes retries safe: the same id returns the first
    result; without one, the update id (or a workflow-generated id for a signal) is used.
    """

    request_id: str = Field(min_length=1, max_length=200)
    decision_id: str | None = Field(default=None, min_length=1, max_length=200)
    action: ApprovalAction | None = None
    approve: bool | None = None
    approver: str = Field(default="", max_length=128, description="Who decided; required")
    approver_roles: list[str] = Field(default_factory=list, max_length=20)
    comment: str | None = Field(default=None, max_length=2_000)
    reason: str | None = Field(default=None, max_length=2_000)
    new_amount_cents: int | None = Field(default=None, description="request_changes: lower amount")
    delegate_to: str | None = Field(default=None, max_length=128)

    @model_validator(mode="after")
    def _resolve_action(self) -> Self:
        if self.action is None:
            if self.approve is None:
                raise ValueError("either 'action' or 'approve' is required")
            self.action = ApprovalAction.APPROVE if self.approve else ApprovalAction.REJECT
            if not self.approve and not self.reason:
                self.reason = self.comment
        elif self.approve is not None and self.approve != (self.action == ApprovalAction.APPROVE):
            raise ValueError(f"'approve: {str(self.approve).lower()}' contradicts '{self.action}'")
        return self

    @property
    def resolved_action(self) -> ApprovalAction:
        assert self.action is not None  # set by the validator
        return self.action


class ApprovalDecisionResult(BaseModel):
    """What a decision led to. `gate` is `open` while more approvals are needed; once the
    decision closes the gate, `outcome` is the case's outcome after it has been carried out."""

    request_id: str
    decision_id: str | None = None
    action: ApprovalAction = ApprovalAction.APPROVE
    approved: bool = Field(description="True when this decision approved (possibly less)")
    approver: str
    decided_at: datetime
    level: int = 1
    level_name: str = ""
    gate: GateStatus = GateStatus.APPROVED
    waiting_for: list[str] = Field(
        default_factory=list, description="Roles (and user:<name>) that may decide next"
    )
    amount_cents: int | None = None
    outcome: RefundOutcome | None = None
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
    refund_amount_cents: int | None = None
    assessment: RefundAssessment | None = None
    approval: ApprovalRequest | None = None
    decision: ApprovalDecisionResult | None = None
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
