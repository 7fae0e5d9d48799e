"""What a case writes at its close (`core.outcomes`, activity `record_outcome`): the row the
operations KPIs count. Pure pydantic: safe under the sandbox's passthrough."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

__all__ = ["CaseOutcomeInput", "CaseOutcomeResult"]


class CaseOutcomeInput(BaseModel):
    case_id: str
    run_id: str
    process: str
    channel: str | None = None
    outcome: str
    automated: bool = Field(description="No person was asked")
    people: list[str] = Field(default_factory=list, description="Who decided, if a person did")
    escalated: bool = Field(default=False, description="An approval SLA passed (escalation)")
    started_at: datetime
    closed_at: datetime
    model_cost_usd: float = 0.0
    policy_version: str | None = None


class CaseOutcomeResult(BaseModel):
    created: bool = Field(description="False when a retry found the row written before")
