"""Inputs, results and policy of the operations workflows (`kpi_snapshot`, `sla_sweep`).

Pure pydantic: safe to import from the workflow (under passthrough), the starter and tests.
`policies/operations.yaml` is read as `OperationsPolicyFile`.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "DAILY_0005",
    "KpiSnapshotInput",
    "KpiSnapshotResult",
    "KpiSnapshotSchedule",
    "OperationSchedule",
    "OperationsPolicy",
    "OperationsPolicyFile",
    "SlaSweepInput",
    "SlaSweepResult",
    "SlaSweepSchedule",
    "operations_task_queue",
]

DAILY_0005 = "5 0 * * *"  # 00:05 UTC every day
EVERY_15_MINUTES = timedelta(minutes=15)
DEFAULT_LEAD_TIME = timedelta(hours=2)


def operations_task_queue(task_queue: str) -> str:
    """The operations' own task queue: their worker runs without the case interceptors, so an
    operation never writes a case outcome (it would count in the very KPIs it snapshots)."""
    return f"{task_queue}-operations"


class OperationSchedule(BaseModel):
    """When an operation runs: a cron expression or an interval, one of them."""

    model_config = ConfigDict(extra="forbid")

    cron: str | None = None
    every: timedelta | None = None
    paused: bool = False

    @model_validator(mode="after")
    def _one_of(self) -> Self:
        given = self.model_fields_set
        if "every" in given and "cron" not in given:
            self.cron = None  # an interval replaces a default cron
        if "cron" in given and "every" not in given:
            self.every = None  # a cron replaces a default interval
        if (self.cron is None) == (self.every is None):
            raise ValueError("a schedule has either `cron` or `every`")
        if self.every is not None and self.every < timedelta(minutes=1):
            raise ValueError("`every` is at least a minute")
        return self


class KpiSnapshotSchedule(OperationSchedule):
    cron: str | None = DAILY_0005


class SlaSweepSchedule(OperationSchedule):
    every: timedelta | None = EVERY_15_MINUTES
    lead_time: timedelta = Field(
        default=DEFAULT_LEAD_TIME, description="How long before its SLA an approval is at risk"
    )

    @model_validator(mode="after")
    def _positive_lead(self) -> Self:
        if self.lead_time <= timedelta(0):
            raise ValueError("`lead_time` is positive")
        return self


class OperationsPolicy(BaseModel):
    """How the operations run (typed defaults; `policies/operations.yaml` says the same)."""

    model_config = ConfigDict(extra="forbid")

    kpi_snapshot: KpiSnapshotSchedule = Field(default_factory=KpiSnapshotSchedule)
    sla_sweep: SlaSweepSchedule = Field(default_factory=SlaSweepSchedule)


class OperationsPolicyFile(OperationsPolicy):
    """`policies/operations.yaml`: the policy, a `version` label, no unknown field; `digest` is
    set by the loader from the file's bytes."""

    version: str = Field(min_length=1, max_length=64)
    digest: str = Field(default="", max_length=64)


class KpiSnapshotInput(BaseModel):
    day: date | None = Field(default=None, description="Default: the UTC day before the run")


class KpiSnapshotResult(BaseModel):
    day: date
    created: bool
    cases: int


class SlaSweepInput(BaseModel):
    lead_time: timedelta = Field(default=DEFAULT_LEAD_TIME, gt=timedelta(0))
    policy_version: str = Field(default="typed-defaults", max_length=64)


class SlaSweepResult(BaseModel):
    at_risk: int = Field(description="Open approvals due within the lead time")
    notified: int = Field(description="Notices sent by this sweep")
    already_notified: int = Field(description="At risk, noticed by an earlier sweep")
