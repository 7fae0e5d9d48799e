"""What every process shares with the platform around it: its state's common fields, how a case
starts, and how a pending approval reads in the inbox.

Pure pydantic that imports only the other contracts: the registry, the starter, the inbox and
tests read a case through these fields whichever process it runs.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from workflows.contracts.approval import ApprovalDecisionResult, ApprovalRequest

__all__ = ["AiView", "ApprovalCard", "CaseContext", "CaseState", "CaseText", "Fact"]


class CaseState(BaseModel):
    """The fields of every process's `get_state` answer; a process's state extends it."""

    case_id: str
    status: str
    outcome: str | None = None
    approval: ApprovalRequest | None = Field(
        default=None, description="The pending (or last) approval the case asked for"
    )
    decision: ApprovalDecisionResult | None = Field(
        default=None, description="The decision that closed the approval, once it has"
    )


class CaseContext(BaseModel):
    """What the platform adds to a caller's request when it opens a case."""

    case_id: str
    requested_by: str = Field(description="The verified caller (the credential's subject)")
    policy_document: dict[str, Any] | None = Field(
        default=None, description="The process's validated policy file, if it has one"
    )
    policy_stored: bool = Field(
        default=False,
        description="The document is stored under its digest (table `policy_versions`): a "
        "process may carry the digest alone, which the `evaluate_policy` activity reads",
    )
    settings: dict[str, Any] = Field(
        default_factory=dict,
        description="The operator's settings (PODIUM_*) as plain values: a process reads its "
        "own defaults from them",
    )


class CaseText(BaseModel):
    """How a new case reads in the Temporal UI and visibility before its workflow runs."""

    summary: str = Field(max_length=400)
    details: str
    customer_id: str | None = Field(
        default=None, description="Set as PodiumCustomerId so a case is found by its customer"
    )


class Fact(BaseModel):
    label: str
    value: str


class AiView(BaseModel):
    """What Podium concluded before asking people, and how sure its models were."""

    recommendation: str | None = Field(default=None, description="'approve' or 'reject'")
    risk: str | None = None
    eligible: bool | None = None
    intent: str | None = None
    intent_confidence: float | None = Field(default=None, ge=0, le=1)
    sentiment: str | None = None
    reasons: list[str] = Field(default_factory=list)


class ApprovalCard(BaseModel):
    """How a process's pending approval reads for the approver (inbox page, API, CLI)."""

    message: str | None = Field(default=None, description="What the requester wrote")
    channel: str | None = None
    customer_id: str | None = None
    customer_tier: str | None = None
    order_id: str | None = None
    amount_cents: int | None = Field(default=None, description="The amount at stake")
    facts: list[Fact] = Field(
        default_factory=list, description="The process's own facts, in reading order"
    )
    ai: AiView = Field(default_factory=AiView)
