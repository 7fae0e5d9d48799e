"""Payload types shared by activities, workflows and the starter.

This module is the leaf of the dependency graph: it imports nothing from Podium, only pydantic.
Every activity takes one input model and returns one result model defined here. Money is carried
as integer cents so no rounding ever happens on the way to a system of record.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Any, ClassVar

from pydantic import BaseModel, Field

__all__ = [
    "ApprovalNoticeKind",
    "AuditEventInput",
    "AuditEventResult",
    "CustomerInfo",
    "CustomerStanding",
    "CustomerTier",
    "DraftReplyInput",
    "DraftReplyResult",
    "ExtractFieldsInput",
    "ExtractFieldsResult",
    "Intent",
    "IssueRefundInput",
    "IssueRefundResult",
    "LookupOrderInput",
    "LookupOrderResult",
    "NotifyApproversInput",
    "NotifyApproversResult",
    "NotifyEscalationInput",
    "NotifyEscalationResult",
    "OpenTicketInput",
    "OrderInfo",
    "OrderStatus",
    "ReadDocumentInput",
    "ReadDocumentResult",
    "RiskLevel",
    "SendReplyInput",
    "SendReplyResult",
    "Sentiment",
    "TicketResult",
    "TicketStatus",
    "TriageInput",
    "TriageResult",
    "UpdateTicketInput",
]


class Intent(StrEnum):
    """The intent taxonomy shared by every process."""

    ORDER_STATUS = "order_status"
    REFUND_REQUEST = "refund_request"
    CANCEL_ORDER = "cancel_order"
    CHANGE_ORDER = "change_order"
    PAYMENT_ISSUE = "payment_issue"
    INVOICE = "invoice"
    COMPLAINT = "complaint"
    FEEDBACK = "feedback"
    ACCOUNT = "account"
    PASSWORD_RESET = "password_reset"
    HUMAN_AGENT = "human_agent"
    DELIVERY_OPTIONS = "delivery_options"
    PLACE_ORDER = "place_order"
    ACCESS_REQUEST = "access_request"
    HARDWARE_REQUEST = "hardware_request"
    HR_QUESTION = "hr_question"
    OTHER = "other"


class RiskLevel(StrEnum):
    """How much a wrong model answer would cost; picks the model chain in `config/models.yaml`."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class Sentiment(StrEnum):
    NEGATIVE = "negative"
    NEUTRAL = "neutral"
    POSITIVE = "positive"


class CustomerTier(StrEnum):
    STANDARD = "standard"
    GOLD = "gold"
    PLATINUM = "platinum"


class CustomerStanding(StrEnum):
    """Account standing: only `good` customers may be refunded without a person."""

    GOOD = "good"
    WATCH = "watch"
    BLOCKED = "blocked"


class OrderStatus(StrEnum):
    PROCESSING = "processing"
    SHIPPED = "shipped"
    DELIVERED = "delivered"
    CANCELLED = "cancelled"
    REFUNDED = "refunded"


class TicketStatus(StrEnum):
    OPEN = "open"
    AWAITING_APPROVAL = "awaiting_approval"
    ESCALATED = "escalated"
    NEEDS_HUMAN = "needs_human"
    RESOLVED = "resolved"
    CLOSED = "closed"


# --- Intelligence -------------------------------------------------------------------------------


class TriageInput(BaseModel):
    case_id: str
    text: str
    channel: str
    risk: RiskLevel | None = Field(default=None, description="Model route; default: medium")
    model_chain: list[str] | None = Field(
        default=None, description="Models to try instead of the configured route (policy file)"
    )


class TriageResult(BaseModel):
    intent: Intent
    intent_confidence: float = Field(ge=0.0, le=1.0)
    sentiment: Sentiment
    sentiment_score: float = Field(ge=-1.0, le=1.0, description="VADER compound score")
    order_ids: list[str] = Field(default_factory=list, description="Order ids found in the text")
    model: str = Field(description="Which model produced the result")
    # Added with the model gateway: defaults keep older histories decodable.
    cost_usd: float = Field(default=0.0, description="Model spend of this call, USD")
    tokens_in: int = 0
    tokens_out: int = 0
    needs_human: bool = Field(
        default=False, description="No model in the route gave an answer good enough"
    )
    attempts: list[str] = Field(default_factory=list, description="Models tried, in order")


class DraftReplyInput(BaseModel):
    case_id: str
    template: str = Field(description="Reply template name, e.g. 'refund_approved'")
    customer_name: str
    order_id: str | None = None
    amount_cents: int | None = None
    currency: str = "USD"
    reason: str | None = None
    risk: RiskLevel | None = Field(default=None, description="Model route; default: medium")
    model_chain: list[str] | None = Field(
        default=None, description="Models to try instead of the configured route (policy file)"
    )


class DraftReplyResult(BaseModel):
    text: str
    model: str
    # Added with the model gateway: defaults keep older histories decodable.
    cost_usd: float = Field(default=0.0, description="Model spend of this call, USD")
    tokens_in: int = 0
    tokens_out: int = 0
    needs_human: bool = False
    attempts: list[str] = Field(default_factory=list, description="Models tried, in order")


class ReadDocumentInput(BaseModel):
    """Read a stored document (a receipt or invoice image) by its id: never the bytes."""

    case_id: str
    document_id: str = Field(min_length=1, max_length=64)
    today: date | None = Field(
        default=None, description="Places a date printed without a year (the workflow's date)"
    )


class ReadDocumentResult(BaseModel):
    """What OCR read from a document: the fields and at most `MAX_TEXT_CHARS` of its text (the
    full text stays with the document, out of workflow history)."""

    MAX_TEXT_CHARS: ClassVar[int] = 2_000

    document_id: str
    content_type: str
    size_bytes: int = Field(ge=0)
    text: str = Field(description="The recognised lines, cut to MAX_TEXT_CHARS")
    text_truncated: bool = False
    line_count: int = Field(default=0, ge=0)
    order_id: str | None = None
    total_cents: int | None = Field(default=None, ge=0)
    currency: str | None = None
    document_date: date | None = None
    confidence: float = Field(ge=0.0, le=1.0, description="OCR recognition score")
    model: str
    cost_usd: float = 0.0
    tokens_in: int = 0
    tokens_out: int = 0


class ExtractFieldsInput(BaseModel):
    case_id: str
    text: str = Field(max_length=20_000)
    expected: list[str] | None = Field(
        default=None, description="Fields the caller needs; a missing one lowers the confidence"
    )
    today: date | None = Field(default=None, description="Resolves relative dates")
    risk: RiskLevel | None = Field(default=None, description="Model route; default: medium")


class ExtractFieldsResult(BaseModel):
    """Structured fields of a message (`activities.intelligence.schemas.ExtractedFields`), with
    the spend of the models that produced them."""

    order_id: str | None = None
    amount_cents: int | None = Field(default=None, ge=0)
    currency: str | None = None
    dates: list[date] = Field(default_factory=list)
    employee: str | None = None
    system_name: str | None = None
    email: str | None = None
    confidence: float = Field(ge=0.0, le=1.0)
    model: str
    cost_usd: float = 0.0
    tokens_in: int = 0
    tokens_out: int = 0
    needs_human: bool = False
    attempts: list[str] = Field(default_factory=list, description="Models tried, in order")


# --- Systems of record --------------------------------------------------------------------------


class CustomerInfo(BaseModel):
    customer_id: str
    name: str
    email: str
    tier: CustomerTier
    standing: CustomerStanding


class OrderInfo(BaseModel):
    order_id: str
    customer_id: str
    amount_cents: int
    currency: str
    status: OrderStatus
    ordered_at: datetime
    promised_by: datetime
    shipped_at: datetime | None = None
    delivered_at: datetime | None = None
    refunded: bool = False


class LookupOrderInput(BaseModel):
    customer_id: str
    order_id: str | None = None


class LookupOrderResult(BaseModel):
    customer: CustomerInfo | None = None
    order: OrderInfo | None = None
    problem: str | None = Field(
        default=None, description="Why the order could not be used, when it could not"
    )


class IssueRefundInput(BaseModel):
    idempotency_key: str = Field(description="Workflow id + step: the same key never refunds twice")
    case_id: str
    order_id: str
    customer_id: str
    amount_cents: int = Field(gt=0)
    currency: str = "USD"
    reason: str


class IssueRefundResult(BaseModel):
    refund_id: str
    amount_cents: int
    created: bool = Field(description="False when an earlier attempt had already issued it")


class OpenTicketInput(BaseModel):
    idempotency_key: str
    case_id: str
    customer_id: str
    order_id: str | None = None
    subject: str
    channel: str


class UpdateTicketInput(BaseModel):
    case_id: str
    status: TicketStatus
    note: str
    escalated: bool | None = None


class TicketResult(BaseModel):
    ticket_id: str
    status: TicketStatus
    escalated: bool


# --- Notifications ------------------------------------------------------------------------------


class SendReplyInput(BaseModel):
    idempotency_key: str
    case_id: str
    customer_id: str
    channel: str
    text: str


class SendReplyResult(BaseModel):
    message_id: str
    created: bool


class NotifyEscalationInput(BaseModel):
    idempotency_key: str
    case_id: str
    reason: str
    amount_cents: int | None = None
    waiting_since: datetime


class NotifyEscalationResult(BaseModel):
    notified: bool
    channel: str


class ApprovalNoticeKind(StrEnum):
    REQUEST = "request"  # a level starts: its approvers are asked
    REMINDER = "reminder"  # a reminder point of the level's SLA passed
    ESCALATION = "escalation"  # the SLA passed: the next level (or the same, escalated) is asked
    BACKUP = "backup"  # the SLA passed: the level's backup roles are asked too
    DELEGATION = "delegation"  # a person was delegated the decision
    SLA_RISK = "sla_risk"  # the SLA passes soon with no decision (the SLA-risk sweep)


class NotifyApproversInput(BaseModel):
    """A notice to the people who may decide an approval now. The activity adds the link."""

    idempotency_key: str = Field(description="Case + level + kind + index: one notice each")
    case_id: str
    workflow_id: str
    namespace: str
    process: str
    kind: ApprovalNoticeKind
    index: int = Field(default=1, ge=1, description="Which reminder/delegation of the level")
    request_id: str
    level: int = Field(ge=1)
    level_name: str
    roles: list[str] = Field(default_factory=list)
    users: list[str] = Field(default_factory=list)
    subject: str = Field(description="What is asked, in one line")
    amount_cents: int | None = None
    due_at: datetime | None = None
    deadline_at: datetime | None = None


class NotifyApproversResult(BaseModel):
    message_id: str
    created: bool = Field(description="False when an earlier attempt had written the outbox row")
    channel: str
    link: str


# --- Audit --------------------------------------------------------------------------------------


class AuditEventInput(BaseModel):
    idempotency_key: str = Field(description="Workflow id + step, so a retry records once")
    case_id: str
    process: str
    action: str
    actor: str = Field(description="'podium' for automated steps, else the person's id")
    detail: dict[str, Any] = Field(default_factory=dict)
    occurred_at: datetime
    # Added with the hash-chained audit trail: defaults keep older histories decodable. When
    # left out, the activity lifts `model`, `confidence` and the policy from `detail`.
    policy_version: str | None = Field(default=None, max_length=64)
    model: str | None = Field(default=None, max_length=200, description="When a model decided")
    confidence: float | None = Field(default=None, description="The deciding model's confidence")


class AuditEventResult(BaseModel):
    event_id: int
    created: bool
    seq: int | None = Field(default=None, description="Place in the audit chain")


# --- identity (SCIM directory, identity verification, password resets) ----------------------
# Neither a one-time code nor a password ever travels in these: codes and passwords are made,
# compared and delivered inside the identity activities; workflows see outcomes and references.

__all__ += [
    "CheckVerificationCodeInput",
    "CheckVerificationCodeResult",
    "EmployeeInfo",
    "LookupEmployeeInput",
    "LookupEmployeeResult",
    "ResetPasswordInput",
    "ResetPasswordResult",
    "RetireVerificationCodeInput",
    "RetireVerificationCodeResult",
    "SendVerificationCodeInput",
    "SendVerificationCodeResult",
]


class EmployeeInfo(BaseModel):
    """An employee as the directory (SCIM core + enterprise extension) describes them. The
    address on file stays in the directory: only its masked form travels (`j***@example.com`)."""

    user_id: str = Field(description="The directory's id (SCIM `id`)")
    user_name: str
    display_name: str | None = None
    title: str | None = Field(default=None, description="Role (SCIM `title`)")
    department: str | None = None
    manager_id: str | None = None
    manager_user_name: str | None = None
    employee_number: str | None = None
    active: bool
    groups: list[str] = Field(default_factory=list)
    email_masked: str | None = None


class LookupEmployeeInput(BaseModel):
    user_name: str = Field(min_length=1, max_length=128)


class LookupEmployeeResult(BaseModel):
    employee: EmployeeInfo | None = None


class SendVerificationCodeInput(BaseModel):
    idempotency_key: str
    case_id: str
    user_id: str
    expires_at: datetime


class SendVerificationCodeResult(BaseModel):
    sent_to: str = Field(description="The masked address on file the code went to")
    message_id: str
    created: bool


class CheckVerificationCodeInput(BaseModel):
    case_id: str
    attempt_id: str = Field(description="The attempt the entry point stored (never the code)")


class CheckVerificationCodeResult(BaseModel):
    valid: bool
    reason: str = Field(description="matched | wrong_code | expired | unknown_attempt | used")


class RetireVerificationCodeInput(BaseModel):
    """The case no longer takes its code: take the code's text out of the outbox."""

    case_id: str
    reason: str = Field(description="verified | expired | locked")


class RetireVerificationCodeResult(BaseModel):
    redacted: bool = Field(description="False when the outbox held no code text any more")


class ResetPasswordInput(BaseModel):
    idempotency_key: str
    case_id: str
    user_id: str


class ResetPasswordResult(BaseModel):
    reset_at: datetime
    delivered_to: str = Field(description="The masked address the temporary password went to")
    scim_version: str | None = Field(default=None, description="The user's ETag after the reset")
    created: bool = Field(description="False when a retry found the reset already done")
