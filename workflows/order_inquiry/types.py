"""Input, policy, state and result of the `order_inquiry` process (a customer asks where their
order is). Pure pydantic: safe to import from the workflow (under passthrough), the starter
and tests. Nothing personal: the case knows the customer by id, never by name or address.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from workflows.contracts.approval import ApprovalLevel, ApprovalPolicy
from workflows.contracts.carrier import ShipmentTracking
from workflows.contracts.case import CaseState
from workflows.contracts.messages import JoinedMessage

__all__ = [
    "OrderInquiryDecision",
    "OrderInquiryInput",
    "OrderInquiryOutcome",
    "OrderInquiryPolicy",
    "OrderInquiryPolicyFile",
    "OrderInquiryResult",
    "OrderInquiryState",
    "OrderInquiryStatus",
    "Route",
]


def _team_lead() -> ApprovalPolicy:
    return ApprovalPolicy(
        levels=[
            ApprovalLevel(name="team_lead", approver_roles=["team_lead"], sla=timedelta(hours=8))
        ],
        deadline=timedelta(hours=48),
    )


class OrderInquiryPolicy(BaseModel):
    """When Podium answers alone, what it may credit, who decides otherwise, and how the case
    keeps watching the parcel. Fixed on the case when it starts: `policies/order_inquiry.yaml`
    as the platform read it (`OrderInquiryPolicyFile`), these defaults without one."""

    version: str | None = None
    digest: str | None = Field(default=None, description="Short sha256 of the policy file")

    grace_days: int = Field(
        default=2, ge=0, description="Late by at most this many days: the new date, no credit"
    )
    credit_per_late_day_cents: int = Field(default=500, ge=0)
    auto_credit_limit_cents: int = Field(
        default=2_500, ge=0, le=5_000, description="The most Podium credits with no person"
    )
    person_credit_limit_cents: int = Field(
        default=5_000, ge=0, le=5_000, description="The most a person is asked to approve"
    )
    high_value_cents: int = Field(
        default=50_000, ge=0, description="Orders worth this or more: a person decides"
    )
    repeat_complaints: int = Field(
        default=2, ge=1, description="Earlier inquiries about the order that make it a person's"
    )
    angry_sentiment_score: float = Field(
        default=-0.6, ge=-1.0, le=1.0, description="A message at or below this: a person"
    )
    approval: ApprovalPolicy = Field(default_factory=_team_lead)
    followup_slack: timedelta = Field(
        default=timedelta(hours=12), description="Checked again this long after the date given"
    )
    max_followups: int = Field(default=3, ge=0, description="Slips written about, then a person")
    watch_limit: timedelta = Field(
        default=timedelta(days=30), description="No delivery by then: a person takes the case"
    )
    carrier_retry_after: timedelta = Field(
        default=timedelta(hours=1), description="A carrier outage is waited out this long"
    )
    carrier_retry_rounds: int = Field(
        default=3, ge=0, description="Rounds of waiting out an outage before a person"
    )


class OrderInquiryPolicyFile(OrderInquiryPolicy):
    """`policies/order_inquiry.yaml` as the registry reads it: no field it does not know."""

    model_config = ConfigDict(extra="forbid")

    version: str = Field(min_length=1, max_length=64)
    digest: str = Field(default="", max_length=64)


class OrderInquiryInput(BaseModel):
    channel: str = Field(default="web", max_length=32)
    customer_id: str = Field(min_length=1, max_length=64)
    order_id: str | None = Field(default=None, max_length=64)
    message: str = Field(min_length=1, max_length=5_000)
    exception_requested: bool = Field(
        default=False, description="The customer asks for something the policy does not give"
    )
    requested_by: str = Field(min_length=1, max_length=128)
    policy: OrderInquiryPolicy = Field(default_factory=OrderInquiryPolicy)


class OrderInquiryStatus(StrEnum):
    RECEIVED = "received"
    TRACKING = "tracking"
    WAITING_FOR_CARRIER = "waiting_for_carrier"
    AWAITING_APPROVAL = "awaiting_approval"
    ANSWERING = "answering"
    WATCHING = "watching"
    COMPLETED = "completed"


class OrderInquiryOutcome(StrEnum):
    ON_TIME = "on_time"  # answered with the estimated delivery
    LATE_ANSWERED = "late_answered"  # late within the grace: the new date, no credit
    CREDIT_ISSUED = "credit_issued"  # late beyond the grace: a goodwill credit, no person
    DELIVERED = "delivered"  # the carrier had already delivered it
    CREDIT_APPROVED = "credit_approved"  # a person approved the credit
    ANSWERED_AFTER_REVIEW = "answered_after_review"  # a person approved, nothing to credit
    CREDIT_REJECTED = "credit_rejected"  # a person refused the credit: the date only
    APPROVAL_EXPIRED = "approval_expired"  # nobody decided: the date only
    CARRIER_UNAVAILABLE = "carrier_unavailable"  # the carrier stayed down: a person
    ORDER_NOT_FOUND = "order_not_found"  # no such order, or no parcel: a person


AUTOMATED = frozenset(
    {
        OrderInquiryOutcome.ON_TIME,
        OrderInquiryOutcome.LATE_ANSWERED,
        OrderInquiryOutcome.CREDIT_ISSUED,
        OrderInquiryOutcome.DELIVERED,
    }
)


class Route(StrEnum):
    ON_TIME = "on_time"
    LATE = "late"
    CREDIT = "credit"
    DELIVERED = "delivered"
    PERSON = "person"


class OrderInquiryDecision(BaseModel):
    """What the policy concluded from the order and the carrier, in plain words."""

    route: Route
    late_days: int
    credit_cents: int = Field(description="The credit given (or proposed to a person)")
    reasons: list[str]


class OrderInquiryState(CaseState):
    """The `get_state` query: the fields every process shares, and its own."""

    status: OrderInquiryStatus
    customer_id: str
    order_id: str | None = None
    amount_cents: int | None = None
    tracking: ShipmentTracking | None = None
    promised_delivery: datetime | None = Field(
        default=None, description="The date the customer was last given"
    )
    assessment: OrderInquiryDecision | None = None
    credit_id: str | None = None
    credit_cents: int | None = None
    follow_ups: int = 0
    delivered_at: datetime | None = None
    reason: str | None = None
    notes: list[str] = Field(default_factory=list)
    customer_messages: list[JoinedMessage] = Field(
        default_factory=list,
        description="Messages the customer wrote after the case opened (signal "
        "customer_message): their references, not their text",
    )


class OrderInquiryResult(BaseModel):
    case_id: str
    outcome: OrderInquiryOutcome
    automated: bool = Field(description="Answered with no person involved")
    decided_by: str
    late_days: int = 0
    credit_cents: int | None = None
    credit_id: str | None = None
    follow_ups: int = 0
    delivered_at: datetime | None = None
    closed_by: str = Field(description="delivered, watch_ended, handed_off or answered")
    reasons: list[str] = Field(default_factory=list)
