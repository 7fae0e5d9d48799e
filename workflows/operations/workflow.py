"""Podium's operations workflows, each started by a Temporal Schedule that `podium up` keeps
(`starter/operations.py`). Neither is a case: they run on their own task queue
(`operations_task_queue`), without the case interceptors, and are not in the process registry.

`kpi_snapshot` (Schedule `podium-kpi-snapshot`, daily at 00:05 UTC): the KPIs of the previous
UTC day's closed cases (`core.report` over `case_outcomes`) written as one `kpi_snapshots` row;
a second run for the same day writes nothing. One activity, no timers, no signals.

`sla_sweep` (Schedule `podium-sla-sweep`, every 15 minutes): finds the open approvals whose SLA
passes within the lead time (a visibility query on `PodiumAwaitingApproval` and
`PodiumSlaDueAt`) and sends each one notice per SLA due time (idempotency key
`<case>:sla-risk:<due>`), audited on the case. No timers, no signals.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.types import AuditEventInput, AuditEventResult
    from workflows.contracts.operations import (
        FindSlaRisksInput,
        FindSlaRisksResult,
        NotifySlaRiskInput,
        NotifySlaRiskResult,
        TakeKpiSnapshotInput,
        TakeKpiSnapshotResult,
    )
    from workflows.operations.types import (
        KpiSnapshotInput,
        KpiSnapshotResult,
        SlaSweepInput,
        SlaSweepResult,
    )

__all__ = ["WORKFLOWS", "KpiSnapshotWorkflow", "SlaSweepWorkflow"]

SNAPSHOT_TIMEOUT = timedelta(minutes=2)
QUERY_TIMEOUT = timedelta(seconds=30)
NOTICE_TIMEOUT = timedelta(seconds=30)
AUDIT_TIMEOUT = timedelta(seconds=30)
OPERATION_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(minutes=1),
    maximum_attempts=10,
)
SWEEPER = "podium"


@workflow.defn(name="kpi_snapshot")
class KpiSnapshotWorkflow:
    @workflow.run
    async def run(self, input: KpiSnapshotInput) -> KpiSnapshotResult:
        day = input.day or (workflow.now() - timedelta(days=1)).date()
        taken = await workflow.execute_activity(
            "take_kpi_snapshot",
            TakeKpiSnapshotInput(day=day),
            result_type=TakeKpiSnapshotResult,
            start_to_close_timeout=SNAPSHOT_TIMEOUT,
            retry_policy=OPERATION_RETRY,
            summary=f"KPI snapshot of {day.isoformat()}",
        )
        return KpiSnapshotResult(day=taken.day, created=taken.created, cases=taken.cases)


@workflow.defn(name="sla_sweep")
class SlaSweepWorkflow:
    @workflow.run
    async def run(self, input: SlaSweepInput) -> SlaSweepResult:
        now = workflow.now()
        found = await workflow.execute_activity(
            "find_sla_risks",
            FindSlaRisksInput(now=now, due_before=now + input.lead_time),
            result_type=FindSlaRisksResult,
            start_to_close_timeout=QUERY_TIMEOUT,
            retry_policy=OPERATION_RETRY,
            summary="Open approvals due within the lead time",
        )
        notified = 0
        for risk in found.risks:
            due = risk.sla_due_at.isoformat()
            key = f"{risk.case_id}:sla-risk:{due}"
            notice = await workflow.execute_activity(
                "notify_sla_risk",
                NotifySlaRiskInput(idempotency_key=key, namespace=found.namespace, risk=risk),
                result_type=NotifySlaRiskResult,
                start_to_close_timeout=NOTICE_TIMEOUT,
                retry_policy=OPERATION_RETRY,
                summary="Notice: approval SLA at risk",
            )
            if not notice.created:
                continue
            notified += 1
            await workflow.execute_activity(
                "record_audit_event",
                AuditEventInput(
                    idempotency_key=f"{key}:audit",
                    case_id=risk.case_id,
                    process=risk.process,
                    action="approval_sla_at_risk",
                    actor=SWEEPER,
                    detail={
                        "sla_due_at": due,
                        "level": risk.level,
                        "lead_time_s": input.lead_time.total_seconds(),
                        "message_id": notice.message_id,
                        "sweep": workflow.info().workflow_id,
                    },
                    occurred_at=now,
                    policy_version=input.policy_version,
                ),
                result_type=AuditEventResult,
                start_to_close_timeout=AUDIT_TIMEOUT,
                retry_policy=OPERATION_RETRY,
                summary="Audit the notice",
            )
        return SlaSweepResult(
            at_risk=len(found.risks),
            notified=notified,
            already_notified=len(found.risks) - notified,
        )


WORKFLOWS: tuple[type, ...] = (KpiSnapshotWorkflow, SlaSweepWorkflow)
