"""How a knowledge-answer case starts and reads outside its workflow: the caller's request, the
input built from it, the Temporal UI's first text and the approval card of an unsure answer.

Pure functions over pydantic models: the registry hands them to the starter. The workflow never
imports this module.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from workflows.contracts.case import AiView, ApprovalCard, CaseContext, CaseText, Fact
from workflows.contracts.text import VisibleText, text_limits
from workflows.knowledge_answer.types import (
    KnowledgeAnswerInput,
    KnowledgeAnswerPolicy,
    KnowledgeAnswerState,
)

__all__ = ["KnowledgeAnswerRequest", "approval_card", "describe", "prepare"]

_Question = Annotated[VisibleText, text_limits(4_000)]
_CustomerId = Annotated[
    str, StringConstraints(strip_whitespace=True, pattern=r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$")
]


class KnowledgeAnswerRequest(BaseModel):
    """A customer or an employee asks a question the knowledge base may answer."""

    model_config = ConfigDict(extra="forbid")

    question: _Question = Field(examples=["How long do I have to return an item?"])
    customer_id: _CustomerId = Field(
        description="Who asked: a customer id or an employee's user name", examples=["C-1001"]
    )
    channel: Annotated[str, StringConstraints(pattern=r"^[a-z_]{1,32}$")] = "chat"


def prepare(request: KnowledgeAnswerRequest, context: CaseContext) -> KnowledgeAnswerInput:
    document = context.policy_document
    policy = KnowledgeAnswerPolicy.model_validate(document) if document else KnowledgeAnswerPolicy()
    return KnowledgeAnswerInput(
        question=request.question,
        customer_id=request.customer_id,
        channel=request.channel,
        requested_by=context.requested_by,
        policy=policy,
    )


def describe(request: KnowledgeAnswerRequest) -> CaseText:
    # The question stays out of the summary: it may name people; the details are encrypted.
    return CaseText(
        summary=f"Knowledge question from {request.customer_id} ({request.channel})",
        details=f"**Asked by:** {request.customer_id} · **Channel:** {request.channel}",
        customer_id=request.customer_id,
    )


def approval_card(
    case_input: KnowledgeAnswerInput | None, state: KnowledgeAnswerState
) -> ApprovalCard:
    """The question, the documents found and the answer a person is asked to check."""
    facts = [
        Fact(
            label="Sources",
            value=", ".join(f"{hit.doc_id} {hit.title} ({hit.score:.2f})" for hit in state.hits)
            or "none found",
        ),
        Fact(
            label="Confidence",
            value=f"{state.confidence or 0:.2f} (threshold {state.min_confidence:.2f})",
        ),
        Fact(label="Suggested answer", value=state.suggested_answer or "-"),
        *(
            Fact(label="Customer wrote again", value=joined.reference())
            for joined in state.customer_messages
        ),
    ]
    request = state.approval
    return ApprovalCard(
        message=case_input.question if case_input else None,
        channel=case_input.channel if case_input else None,
        customer_id=state.customer_id,
        facts=facts,
        ai=AiView(
            recommendation=request.recommendation if request else None,
            reasons=list(request.reasons) if request else [],
        ),
    )
