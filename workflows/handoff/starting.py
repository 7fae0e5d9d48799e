"""How a handoff case starts and reads outside its workflow: the request, the input built from
it, the Temporal UI's first text and the inbox card (summary, intent, sentiment, suggested
reply, where it may be routed, what the customer wrote since the case opened).

Pure functions over pydantic models: the registry hands them to the starter. The workflow never
imports this module.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from workflows.contracts.case import AiView, ApprovalCard, CaseContext, CaseText, Fact
from workflows.contracts.text import VisibleText, text_limits
from workflows.handoff.types import ROUTE_PREFIX, HandoffInput, HandoffPolicy, HandoffState

__all__ = ["HandoffRequest", "approval_card", "describe", "prepare"]

_Message = Annotated[VisibleText, text_limits(10_000)]
_Reason = Annotated[VisibleText, text_limits(500)]
_CustomerId = Annotated[
    str, StringConstraints(strip_whitespace=True, pattern=r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$")
]


class HandoffRequest(BaseModel):
    """A case only a person can handle: the customer's (or employee's) message and why."""

    model_config = ConfigDict(extra="forbid")

    message: _Message = Field(examples=["I want to speak to a manager about my sofa."])
    customer_id: _CustomerId = Field(examples=["C-1002"])
    channel: Annotated[str, StringConstraints(pattern=r"^[a-z_]{1,32}$")] = "chat"
    reason: _Reason = Field(default="a person was asked for", examples=["customer asked"])


def prepare(request: HandoffRequest, context: CaseContext) -> HandoffInput:
    document = context.policy_document
    policy = HandoffPolicy.model_validate(document) if document else HandoffPolicy()
    return HandoffInput(
        message=request.message,
        customer_id=request.customer_id,
        channel=request.channel,
        reason=request.reason,
        requested_by=context.requested_by,
        policy=policy,
    )


def describe(request: HandoffRequest) -> CaseText:
    return CaseText(
        summary=f"Handoff to a person: {request.customer_id} ({request.channel})",
        details=f"**From:** {request.customer_id} · **Channel:** {request.channel}"
        f"\n\n**Why a person:** {request.reason}",
        customer_id=request.customer_id,
    )


def approval_card(case_input: HandoffInput | None, state: HandoffState) -> ApprovalCard:
    facts = [
        Fact(label="Summary", value=state.summary or "-"),
        Fact(label="Why a person", value=state.handoff_reason),
        *(
            Fact(
                label="Customer wrote again",
                value=(f"{joined.text} " if joined.text else "") + f"({joined.reference()})",
            )
            for joined in state.customer_messages
        ),
        Fact(label="Suggested reply", value=state.suggested_reply or "-"),
        Fact(
            label="Sources",
            value=", ".join(f"{hit.doc_id} {hit.title}" for hit in state.sources) or "-",
        ),
        Fact(
            label="How to answer",
            value="approve sends your comment as the reply (the suggested reply without one); "
            f"reject with reason '{ROUTE_PREFIX}<process>' re-routes it to "
            + (", ".join(state.routes) or "-")
            + "; any other reason closes it",
        ),
    ]
    return ApprovalCard(
        message=case_input.message if case_input else None,
        channel=case_input.channel if case_input else None,
        customer_id=state.customer_id,
        facts=facts,
        ai=AiView(
            recommendation=state.approval.recommendation if state.approval else None,
            intent=state.intent,
            intent_confidence=state.intent_confidence,
            sentiment=state.sentiment,
            reasons=list(state.approval.reasons) if state.approval else [],
        ),
    )
