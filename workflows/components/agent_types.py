"""Payload types of the agent loop component (`workflows.components.agent`): its limits, the
checkpoint it carries across continue-as-new, the record of each tool call and its outcomes.

Pure pydantic: safe to import from workflows (under passthrough), processes, the starter and
tests. A process built on the loop (`agent_assist`) adds its own input, state and result.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field

from activities.agent_types import ToolCallStatus, TranscriptRef

__all__ = ["AgentCheckpoint", "AgentLimits", "AgentOutcome", "ToolCallRecord"]

MICRO_USD_PER_USD = 1_000_000


class AgentOutcome(StrEnum):
    COMPLETED = "completed"  # the model gave its final answer
    STEP_LIMIT = "step_limit"  # still calling tools when the steps ran out
    BUDGET_EXHAUSTED = "budget_exhausted"  # tokens or spend reached the limit
    NEEDS_HUMAN = "needs_human"  # the model failed (or none is configured): a person takes over


class AgentLimits(BaseModel):
    """Bounds of one agent conversation, across continue-as-new."""

    max_steps: int = Field(default=8, ge=1, le=100, description="Model turns at most")
    max_tokens: int = Field(default=50_000, ge=1, description="Prompt plus completion tokens")
    max_cost_usd: float = Field(default=0.50, gt=0)
    max_tool_calls_per_step: int = Field(
        default=5, ge=1, le=20, description="Calls beyond this in one turn are refused"
    )
    continue_after_steps: int | None = Field(
        default=None,
        ge=1,
        description="Continue-as-new after this many turns in one run, besides when Temporal "
        "suggests it (a knob for tests and very long conversations)",
    )

    @property
    def max_cost_micro_usd(self) -> int:
        return round(self.max_cost_usd * MICRO_USD_PER_USD)


class AgentCheckpoint(BaseModel):
    """What an agent loop carries across continue-as-new: the transcript reference and the
    running totals, never the messages."""

    transcript: TranscriptRef
    steps: int = Field(default=0, ge=0, description="Model turns taken")
    tokens_in: int = 0
    tokens_out: int = 0
    cost_micro_usd: int = 0
    tool_calls: int = Field(default=0, description="Tool calls the model asked for")
    runs: int = Field(default=1, ge=1, description="Workflow runs so far (continue-as-new + 1)")

    @property
    def tokens(self) -> int:
        return self.tokens_in + self.tokens_out

    @property
    def cost_usd(self) -> float:
        return self.cost_micro_usd / MICRO_USD_PER_USD


class ToolCallRecord(BaseModel):
    """One tool call the model asked for and what became of it (short, for people)."""

    step: int
    tool_call_id: str
    name: str
    status: ToolCallStatus
    detail: str = Field(default="", max_length=300)
    approval_request_id: str | None = None
