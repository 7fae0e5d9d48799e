"""Input, state and result of the `handoff` process.

Pure pydantic: safe to import from the workflow (under passthrough), the starter and tests.
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from workflows.contracts.approval import ApprovalLevel, ApprovalPolicy
from workflows.contracts.case import CaseState
from workflows.contracts.knowledge import KnowledgeHit
from workflows.contracts.messages import JoinedMessage

__all__ = [
    "ROUTE_PREFIX",
    "HandoffInput",
    "HandoffOutcome",
    "HandoffPolicy",
    "HandoffPolicyFile",
    "HandoffResult",
    "HandoffState",
    "HandoffStatus",
]

# A rejection whose reason starts with this re-routes the case: `route:refund`.
ROUTE_PREFIX = "route:"
CaseField = Literal["message", "customer_id", "channel"]


def _agent_inbox() -> ApprovalPolicy:
    return ApprovalPolicy(
        levels=[
            ApprovalLevel(
                name="support_agent",
                approver_roles=["support_agent"],
                sla=timedelta(hours=4),
                reminders=[0.5],
            )
        ],
        deadline=timedelta(hours=48),
    )


def _routes() -> dict[str, dict[str, CaseField]]:
    return {
        "knowledge_answer": {"question": "message", "customer_id": "customer_id"},
        "agent_assist": {"message": "message", "customer_id": "customer_id"},
    }


class HandoffPolicy(BaseModel):
    """Who takes a handed-off case, and where a person may re-route it. Fixed on the case when
    it starts: `policies/handoff.yaml`, these defaults when policy as code is off."""

    version: str | None = None
    digest: str | None = None
    inbox: ApprovalPolicy = Field(default_factory=_agent_inbox)
    routes: dict[str, dict[str, CaseField]] = Field(
        default_factory=_routes,
        description="Process -> its request's fields, each taken from the case's message, "
        "customer_id or channel",
    )


class HandoffPolicyFile(HandoffPolicy):
    """`policies/handoff.yaml` as the registry reads it: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")

    version: str = Field(min_length=1, max_length=64)
    digest: str = Field(default="", max_length=64)


class HandoffInput(BaseModel):
    message: str = Field(min_length=1, max_length=10_000)
    customer_id: str = Field(min_length=1, max_length=128)
    channel: str = Field(default="chat", max_length=32)
    reason: str = Field(default="a person was asked for", max_length=500)
    requested_by: str = Field(min_length=1, max_length=128, description="The verified caller")
    policy: HandoffPolicy = Field(default_factory=HandoffPolicy)


class HandoffStatus(StrEnum):
    BRIEFING = "briefing"
    AWAITING_PERSON = "awaiting_person"
    REPLYING = "replying"
    ROUTING = "routing"
    COMPLETED = "completed"


class HandoffOutcome(StrEnum):
    ANSWERED = "answered"  # a person's reply (or the suggested one) was sent
    REROUTED = "rerouted"  # a person opened a case of another process with the message
    CLOSED = "closed"  # a person closed it with a reason; nothing sent
    EXPIRED = "expired"  # nobody took it before the deadline
    ROUTE_FAILED = "route_failed"  # the other process refused the case


class HandoffState(CaseState):
    customer_id: str
    handoff_reason: str
    summary: str | None = None
    intent: str | None = None
    intent_confidence: float | None = None
    sentiment: str | None = None
    suggested_reply: str | None = None
    sources: list[KnowledgeHit] = Field(default_factory=list)
    routes: list[str] = Field(default_factory=list, description="Processes it may be routed to")
    reply_message_id: str | None = None
    routed_to: str | None = Field(default=None, description="The case it was routed to")
    reason: str | None = None
    customer_messages: list[JoinedMessage] = Field(
        default_factory=list,
        description="Messages the customer wrote after the case opened (signal "
        "customer_message), with their text: the person answering reads them",
    )


class HandoffResult(BaseModel):
    case_id: str
    outcome: HandoffOutcome
    handled_by: str | None = None
    reply_message_id: str | None = None
    routed_to: str | None = None
    reason: str
