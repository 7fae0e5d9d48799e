"""Payload types of the operations activities (`activities/operations.py`): the daily KPI
snapshot and the SLA-risk sweep. Plain pydantic; imports nothing of ours."""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, Field

__all__ = [
    "FindSlaRisksInput",
    "FindSlaRisksResult",
    "NotifySlaRiskInput",
    "NotifySlaRiskResult",
    "SlaRisk",
    "TakeKpiSnapshotInput",
    "TakeKpiSnapshotResult",
]


class TakeKpiSnapshotInput(BaseModel):
    day: date = Field(description="The UTC day whose closed cases are summed")


class TakeKpiSnapshotResult(BaseModel):
    day: date
    created: bool = Field(description="False when the day's snapshot was already there")
    cases: int
    baseline_version: str


class FindSlaRisksInput(BaseModel):
    now: datetime = Field(description="Approvals due before this have breached already")
    due_before: datetime = Field(description="now + the lead time")
    limit: int = Field(default=500, ge=1, le=5000)


class SlaRisk(BaseModel):
    """An open approval whose SLA passes within the lead time (from its search attributes)."""

    case_id: str
    process: str
    sla_due_at: datetime
    level: int = Field(default=1, ge=1)
    roles: list[str] = Field(default_factory=list)
    users: list[str] = Field(default_factory=list)


class FindSlaRisksResult(BaseModel):
    namespace: str
    risks: list[SlaRisk] = Field(default_factory=list)
    truncated: bool = False


class NotifySlaRiskInput(BaseModel):
    idempotency_key: str = Field(description="<case>:sla-risk:<due>: one notice per case and due")
    namespace: str
    risk: SlaRisk


class NotifySlaRiskResult(BaseModel):
    created: bool = Field(description="False when this case and due time had its notice already")
    message_id: str
    channel: str
