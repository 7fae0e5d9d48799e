"""Input, state and result of the `agent_assist` process (the agent loop's own types are in
`workflows.components.agent_types`).

Pure pydantic, like `workflows.refund.types`: safe to import from workflows (under passthrough),
the starter and tests.
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum

from pydantic import BaseModel, Field

from workflows.components.agent_types import (
    AgentCheckpoint,
    AgentLimits,
    AgentOutcome,
    ToolCallRecord,
)
from workflows.contracts.approval import ApprovalLevel, ApprovalPolicy
from workflows.contracts.case import CaseState

__all__ = [
    "AgentAssistInput",
    "AgentAssistResult",
    "AgentAssistResume",
    "AgentAssistState",
    "AgentAssistStatus",
]


def _default_tool_approval() -> ApprovalPolicy:
    return ApprovalPolicy(
        levels=[
            ApprovalLevel(
                name="team_lead",
                approver_roles=["team_lead"],
                sla=timedelta(hours=4),
                reminders=[0.5],
            )
        ],
        deadline=timedelta(hours=24),
    )


class AgentAssistResume(BaseModel):
    """Set only by continue-as-new: where the previous run stopped."""

    checkpoint: AgentCheckpoint
    audit_seq: int = Field(ge=0)
    tool_calls: list[ToolCallRecord] = Field(default_factory=list)


class AgentAssistInput(BaseModel):
    customer_id: str = Field(min_length=1, max_length=64, examples=["C-1002"])
    message: str = Field(min_length=1, max_length=5_000, description="The customer's question")
    requested_by: str = Field(
        default="agent-desk",
        min_length=1,
        max_length=128,
        description="Who started the assist (four-eyes: may not approve its tool calls)",
    )
    tools: list[str] | None = Field(
        default=None, description="Allowlist: a subset of the process's tools; default all"
    )
    limits: AgentLimits = Field(default_factory=AgentLimits)
    approval: ApprovalPolicy = Field(
        default_factory=_default_tool_approval, description="Who approves risky tool calls"
    )
    resume: AgentAssistResume | None = None


class AgentAssistStatus(StrEnum):
    RUNNING = "running"
    AWAITING_APPROVAL = "awaiting_approval"
    COMPLETED = "completed"


class AgentAssistState(CaseState):
    """The `get_state` query; `approval` is the pending (or last) risky tool call's."""

    customer_id: str
    status: AgentAssistStatus
    outcome: AgentOutcome | None = None
    checkpoint: AgentCheckpoint | None = None
    tool_calls: list[ToolCallRecord] = Field(default_factory=list)
    answer: str | None = None
    reason: str | None = None


class AgentAssistResult(BaseModel):
    case_id: str
    outcome: AgentOutcome
    answer: str | None = None
    reason: str
    checkpoint: AgentCheckpoint
    tool_calls: list[ToolCallRecord] = Field(default_factory=list)
