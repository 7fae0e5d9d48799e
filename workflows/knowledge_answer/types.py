"""Input, state and result of the `knowledge_answer` process.

Pure pydantic: safe to import from the workflow (under passthrough), the starter and tests.
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from workflows.contracts.approval import ApprovalLevel, ApprovalPolicy
from workflows.contracts.case import CaseState
from workflows.contracts.knowledge import KnowledgeHit
from workflows.contracts.messages import JoinedMessage

__all__ = [
    "KnowledgeAnswerInput",
    "KnowledgeAnswerOutcome",
    "KnowledgeAnswerPolicy",
    "KnowledgeAnswerPolicyFile",
    "KnowledgeAnswerResult",
    "KnowledgeAnswerState",
    "KnowledgeAnswerStatus",
]


def _support_review() -> ApprovalPolicy:
    return ApprovalPolicy(
        levels=[
            ApprovalLevel(
                name="support_agent",
                approver_roles=["support_agent"],
                sla=timedelta(hours=4),
                reminders=[0.5],
            )
        ],
        deadline=timedelta(hours=24),
    )


class KnowledgeAnswerPolicy(BaseModel):
    """When an answer goes out with no person, and who checks it otherwise. Fixed on the case
    when it starts: `policies/knowledge_answer.yaml`, these defaults when policy as code is off."""

    version: str | None = None
    digest: str | None = None
    min_confidence: float = Field(default=0.45, ge=0.0, le=1.0)
    top_k: int = Field(default=3, ge=1, le=10)
    review: ApprovalPolicy = Field(default_factory=_support_review)


class KnowledgeAnswerPolicyFile(KnowledgeAnswerPolicy):
    """`policies/knowledge_answer.yaml` as the registry reads it: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")

    version: str = Field(min_length=1, max_length=64)
    digest: str = Field(default="", max_length=64)


class KnowledgeAnswerInput(BaseModel):
    question: str = Field(min_length=1, max_length=4_000)
    customer_id: str = Field(min_length=1, max_length=128, description="Who asked (the reply's)")
    channel: str = Field(default="chat", max_length=32)
    requested_by: str = Field(min_length=1, max_length=128, description="The verified caller")
    policy: KnowledgeAnswerPolicy = Field(default_factory=KnowledgeAnswerPolicy)


class KnowledgeAnswerStatus(StrEnum):
    SEARCHING = "searching"
    AWAITING_REVIEW = "awaiting_review"
    REPLYING = "replying"
    COMPLETED = "completed"


class KnowledgeAnswerOutcome(StrEnum):
    ANSWERED = "answered"  # retrieval was sure: the answer went out with no person
    ANSWERED_AFTER_REVIEW = "answered_after_review"  # a person approved (or rewrote) it
    NOT_ANSWERED = "not_answered"  # a person refused the answer; nothing was sent
    REVIEW_EXPIRED = "review_expired"  # nobody checked it before the deadline; nothing sent


class KnowledgeAnswerState(CaseState):
    customer_id: str
    hits: list[KnowledgeHit] = Field(default_factory=list)
    confidence: float | None = None
    min_confidence: float
    suggested_answer: str | None = None
    reply: str | None = Field(default=None, description="The reply as it was sent")
    reply_message_id: str | None = None
    reason: str | None = None
    customer_messages: list[JoinedMessage] = Field(
        default_factory=list,
        description="Messages the customer wrote after the case opened (signal "
        "customer_message): their references, not their text",
    )


class KnowledgeAnswerResult(BaseModel):
    case_id: str
    outcome: KnowledgeAnswerOutcome
    automated: bool = Field(description="Answered with no person involved")
    confidence: float
    sources: list[str] = Field(description="The ids of the documents the reply cites")
    reply_message_id: str | None = None
    reason: str
