"""How a refund case starts and reads outside its workflow: the caller's request, the input the
platform builds from it (policy knobs from the operator's settings and the policy file), the
text the Temporal UI shows before the workflow runs, and the approval card of the inbox.

Pure functions over pydantic models: the registry hands them to the starter. The workflow never
imports this module.
"""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, Field, model_validator

from workflows.contracts.approval import (
    ApprovalLevel,
    ApprovalPolicy,
    BreachAction,
    DefaultAction,
)
from workflows.contracts.case import AiView, ApprovalCard, CaseContext, CaseText
from workflows.contracts.documents import DOCUMENT_ID_PATTERN, AttachmentUpload
from workflows.contracts.text import VisibleText, text_limits
from workflows.refund.types import (
    RefundCaseInput,
    RefundCaseState,
    RefundPolicy,
    RiskLevel,
)

__all__ = [
    "RefundDefaults",
    "RefundRequest",
    "approval_card",
    "approval_policies",
    "describe",
    "prepare",
    "refund_policy",
]

DETAILS_MESSAGE_LIMIT = 500

_Channel = Annotated[VisibleText, text_limits(32)]
_CustomerId = Annotated[VisibleText, text_limits(64)]
_OrderId = Annotated[VisibleText, text_limits(64)]
_Message = Annotated[VisibleText, text_limits(5_000)]
_Person = Annotated[VisibleText, text_limits(128)]


class RefundRequest(BaseModel):
    """A customer's refund request as a channel sends it; the policy is added by Podium."""

    channel: _Channel = Field(default="web", examples=["email"])
    customer_id: _CustomerId = Field(examples=["C-1002"])
    order_id: _OrderId | None = Field(default=None, examples=["O-5004"])
    message: _Message = Field(examples=["My blender arrived broken, I want my money back."])
    requested_by: _Person | None = Field(
        default=None,
        description="Who asks on the customer's behalf (four-eyes keeps them from approving); "
        "default: the customer's channel identity",
    )
    attachment: AttachmentUpload | None = Field(
        default=None,
        description="A receipt image (PNG or JPEG, up to 10 MB), stored before the case starts; "
        "the case carries only its id",
    )
    attachment_id: str | None = Field(
        default=None,
        pattern=DOCUMENT_ID_PATTERN,
        description="A document stored earlier (POST /documents), instead of `attachment`",
    )

    @model_validator(mode="after")
    def _one_attachment(self) -> Self:
        if self.attachment is not None and self.attachment_id is not None:
            raise ValueError("send either 'attachment' or 'attachment_id', not both")
        return self

    def sha256(self) -> str:
        """Hash of the canonical JSON of the request: what an idempotent retry must repeat.
        An attachment counts by the sha256 of its bytes, not by its base64 text."""
        fields = self.model_dump(mode="json", exclude={"attachment"})
        # Hashes stay as they were before these fields existed.
        for name in ("requested_by", "attachment_id"):
            if fields[name] is None:
                del fields[name]
        if self.attachment is not None:
            fields["attachment_sha256"] = self.attachment.sha256()
        canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class RefundDefaults(BaseModel):
    """The operator's refund knobs, read from the settings (`PODIUM_*`) by their names."""

    auto_refund_limit: float = Field(default=100.0, ge=0)
    return_window_days: int = Field(default=30, ge=0)
    min_intent_confidence: float = Field(default=0.8, ge=0.0, le=1.0)
    approval_sla_hours: float = Field(default=48.0, gt=0)
    approval_deadline_hours: float = Field(default=168.0, gt=0)
    approval_reminders: list[float] = Field(default_factory=lambda: [0.5, 0.9])
    approval_on_breach: Literal["escalate", "backup"] = "escalate"
    approval_backup_roles: list[str] = Field(default_factory=lambda: ["ops_manager"])
    approval_team_lead_roles: list[str] = Field(default_factory=lambda: ["team_lead"])
    approval_finance_roles: list[str] = Field(default_factory=lambda: ["finance"])
    approval_finance_quorum: int = Field(default=1, ge=1)
    approval_default_action: Literal["deny", "handoff", "approve_within_limit"] = "deny"
    approval_default_limit: float | None = None
    approval_four_eyes: bool = True


def approval_policies(defaults: RefundDefaults) -> dict[RiskLevel, ApprovalPolicy]:
    """Medium risk: `team_lead`; high risk: `team_lead` then `finance` (the settings' SLAs)."""

    def level(name: str, roles: list[str], quorum: int = 1) -> ApprovalLevel:
        on_breach = BreachAction(defaults.approval_on_breach)
        return ApprovalLevel(
            name=name,
            approver_roles=roles,
            quorum=quorum,
            sla=timedelta(hours=defaults.approval_sla_hours),
            reminders=defaults.approval_reminders,
            on_breach=on_breach,
            backup_roles=defaults.approval_backup_roles if on_breach == BreachAction.BACKUP else [],
        )

    limit = defaults.approval_default_limit

    def policy(*levels: ApprovalLevel) -> ApprovalPolicy:
        return ApprovalPolicy(
            levels=list(levels),
            deadline=timedelta(hours=defaults.approval_deadline_hours),
            default_action=DefaultAction(defaults.approval_default_action),
            approve_limit_cents=round(limit * 100) if limit is not None else None,
            four_eyes=defaults.approval_four_eyes,
        )

    team_lead = level("team_lead", defaults.approval_team_lead_roles)
    finance = level("finance", defaults.approval_finance_roles, defaults.approval_finance_quorum)
    return {RiskLevel.MEDIUM: policy(team_lead), RiskLevel.HIGH: policy(team_lead, finance)}


def refund_policy(settings: dict[str, Any]) -> RefundPolicy:
    """The refund knobs of a new case from the operator's settings."""
    defaults = RefundDefaults.model_validate(settings)
    return RefundPolicy(
        auto_refund_limit_cents=round(defaults.auto_refund_limit * 100),
        return_window_days=defaults.return_window_days,
        min_intent_confidence=defaults.min_intent_confidence,
        approvals=approval_policies(defaults),
    )


def prepare(request: RefundRequest, context: CaseContext) -> RefundCaseInput:
    """The case input: the request, the settings' knobs and the policy file (whose limits then
    drive the eligibility rules too), by digest when the platform stored it. The attachment is
    stored by the platform beforehand."""
    policy = refund_policy(context.settings)
    document = context.policy_document
    if document is not None:
        limits = document.get("limits") or {}
        policy = policy.model_copy(
            update={
                "auto_refund_limit_cents": round(float(limits["auto_refund_limit"]) * 100),
                "return_window_days": int(limits["return_window_days"]),
                "min_intent_confidence": float(limits["min_intent_confidence"]),
            }
        )
    by_reference = document is not None and context.policy_stored
    return RefundCaseInput(
        channel=request.channel,
        customer_id=request.customer_id,
        order_id=request.order_id,
        message=request.message,
        requested_by=request.requested_by,
        attachment_id=request.attachment_id,
        policy=policy,
        # Stored under its digest: the case carries the digest and the model routes alone.
        policy_document=None if by_reference else document,
        policy_digest=str(document["digest"]) if by_reference and document else None,
        policy_routes=dict((document or {}).get("model_routing") or {}) if by_reference else {},
    )


def describe(request: RefundRequest) -> CaseText:
    order = f" for order {request.order_id}" if request.order_id else ""
    message = request.message
    if len(message) > DETAILS_MESSAGE_LIMIT:
        message = message[:DETAILS_MESSAGE_LIMIT].rstrip() + "…"
    # The UI renders `$...$` as math: escape dollar signs.
    quoted = "\n".join(f"> {line}" for line in message.replace("$", "\\$").splitlines())
    return CaseText(
        summary=f"Refund request from {request.customer_id}{order} via {request.channel}",
        details=(
            f"**Channel:** {request.channel}  \n"
            f"**Customer:** {request.customer_id}  \n"
            f"**Order:** {request.order_id or '—'}\n\n"
            f"**Message:**\n\n{quoted}\n"
        ),
        customer_id=request.customer_id,
    )


def approval_card(case_input: RefundCaseInput | None, state: RefundCaseState) -> ApprovalCard:
    assessment = state.assessment
    request = state.approval
    return ApprovalCard(
        message=case_input.message if case_input else None,
        channel=case_input.channel if case_input else None,
        customer_id=state.customer_id,
        customer_tier=state.customer_tier.value if state.customer_tier else None,
        order_id=state.order_id,
        amount_cents=state.amount_cents,
        ai=AiView(
            recommendation=assessment.recommendation if assessment else None,
            risk=assessment.risk.value if assessment else None,
            eligible=assessment.eligible if assessment else None,
            intent=state.intent.value if state.intent else None,
            intent_confidence=state.intent_confidence,
            sentiment=state.sentiment.value if state.sentiment else None,
            reasons=(
                list(assessment.reasons)
                if assessment
                else (list(request.reasons) if request else [])
            ),
        ),
    )
