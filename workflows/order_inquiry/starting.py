"""How a delayed-order inquiry starts and reads outside its workflow: the customer's request,
the input built from it (the verified caller as requester, the policy file the platform read),
the Temporal UI's first text and the approval card.

Pure functions over pydantic models: the registry hands them to the starter. The workflow never
imports this module.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from workflows.contracts.case import AiView, ApprovalCard, CaseContext, CaseText, Fact
from workflows.contracts.text import VisibleText, text_limits
from workflows.order_inquiry.types import (
    OrderInquiryInput,
    OrderInquiryPolicy,
    OrderInquiryState,
)

__all__ = ["OrderInquiryRequest", "approval_card", "describe", "prepare"]

DETAILS_MESSAGE_LIMIT = 500

_Channel = Annotated[VisibleText, text_limits(32)]
_CustomerId = Annotated[VisibleText, text_limits(64)]
_OrderId = Annotated[VisibleText, text_limits(64)]
_Message = Annotated[VisibleText, text_limits(5_000)]


class OrderInquiryRequest(BaseModel):
    """A customer asks where their order is."""

    model_config = ConfigDict(extra="forbid")

    channel: _Channel = Field(default="web", examples=["email"])
    customer_id: _CustomerId = Field(examples=["C-1003"])
    order_id: _OrderId | None = Field(
        default=None, examples=["O-5008"], description="Default: the order id in the message"
    )
    message: _Message = Field(examples=["Where is my order O-5008? It was due days ago."])
    exception_requested: bool = Field(
        default=False,
        description="The customer asks for more than the policy gives (a person decides)",
    )


def prepare(request: OrderInquiryRequest, context: CaseContext) -> OrderInquiryInput:
    document = context.policy_document
    policy = OrderInquiryPolicy.model_validate(document) if document else OrderInquiryPolicy()
    return OrderInquiryInput(
        channel=request.channel,
        customer_id=request.customer_id,
        order_id=request.order_id,
        message=request.message,
        exception_requested=request.exception_requested,
        requested_by=context.requested_by,
        policy=policy,
    )


def describe(request: OrderInquiryRequest) -> CaseText:
    order = f" about order {request.order_id}" if request.order_id else ""
    message = request.message
    if len(message) > DETAILS_MESSAGE_LIMIT:
        message = message[:DETAILS_MESSAGE_LIMIT].rstrip() + "…"
    quoted = "\n".join(f"> {line}" for line in message.replace("$", "\\$").splitlines())
    return CaseText(
        summary=f"Delayed-order inquiry from {request.customer_id}{order} via {request.channel}",
        details=(
            f"**Channel:** {request.channel}  \n"
            f"**Customer:** {request.customer_id}  \n"
            f"**Order:** {request.order_id or '—'}"
            + ("  \n**Exception asked for**" if request.exception_requested else "")
            + f"\n\n**Message:**\n\n{quoted}\n"
        ),
        customer_id=request.customer_id,
    )


def approval_card(case_input: OrderInquiryInput | None, state: OrderInquiryState) -> ApprovalCard:
    """The order, the parcel, how late, and the credit a person is asked to approve."""
    tracking = state.tracking
    assessment = state.assessment
    facts = []
    if tracking is not None:
        facts += [
            Fact(label="Parcel", value=f"{tracking.tracking_number or '-'} ({tracking.carrier})"),
            Fact(label="Carrier status", value=tracking.status.value),
            Fact(
                label="Expected",
                value=(
                    tracking.estimated_delivery.date().isoformat()
                    if tracking.estimated_delivery
                    else "-"
                ),
            ),
        ]
    if assessment is not None:
        facts += [
            Fact(label="Late by", value=f"{assessment.late_days} days"),
            Fact(label="Proposed credit", value=f"${assessment.credit_cents / 100:,.2f}"),
        ]
    facts += [
        Fact(label="Customer wrote again", value=joined.reference())
        for joined in state.customer_messages
    ]
    request = state.approval
    return ApprovalCard(
        message=case_input.message if case_input else None,
        channel=case_input.channel if case_input else None,
        customer_id=state.customer_id,
        order_id=state.order_id,
        amount_cents=request.amount_cents if request else None,
        facts=facts,
        ai=AiView(
            recommendation=request.recommendation if request else None,
            reasons=list(assessment.reasons) if assessment else [],
        ),
    )
