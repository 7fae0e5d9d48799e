"""Audit step shared by every process: one `record_audit_event` call per decision.

The idempotency key is the case id plus the process's own audit sequence number, so a retried
call records once and a continued-as-new run carries its counter on.

Patch `audit-local-activity`: cases started after it wrote their audit events as local
activities (run by the case's own worker, recorded as a marker: no extra round trip through the
server per event). Patch `audit-activity` ends that for new cases: a local activity's result
is replayed at the marker, which under load is not where it resolved the first time, so a case
that also took updates (decisions) in that workflow task could no longer be replayed. New cases
write audit events as activities again, ordered in history like everything else. Each case
keeps the way it started with: `workflow.patched` is asked at the first audit event and its
answers hold for the rest of the run.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.types import AuditEventInput, AuditEventResult

__all__ = [
    "AUDIT_RETRY",
    "AUDIT_TIMEOUT",
    "PATCH_AUDIT_ACTIVITY",
    "PATCH_AUDIT_LOCAL",
    "record_audit",
]

PATCH_AUDIT_LOCAL = "audit-local-activity"
PATCH_AUDIT_ACTIVITY = "audit-activity"
AUDIT_TIMEOUT = timedelta(seconds=30)
AUDIT_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=10,
)


async def record_audit(
    *, case_id: str, process: str, seq: int, action: str, actor: str, detail: dict[str, Any]
) -> None:
    event = AuditEventInput(
        idempotency_key=f"{case_id}:audit:{seq}",
        case_id=case_id,
        process=process,
        action=action,
        actor=actor,
        detail=detail,
        occurred_at=workflow.now(),
    )
    if not workflow.patched(PATCH_AUDIT_ACTIVITY) and workflow.patched(PATCH_AUDIT_LOCAL):
        await workflow.execute_local_activity(
            "record_audit_event",
            event,
            result_type=AuditEventResult,
            start_to_close_timeout=AUDIT_TIMEOUT,
            retry_policy=AUDIT_RETRY,
            summary=f"Audit: {action}",
        )
        return
    await workflow.execute_activity(
        "record_audit_event",
        event,
        result_type=AuditEventResult,
        start_to_close_timeout=AUDIT_TIMEOUT,
        retry_policy=AUDIT_RETRY,
        summary=f"Audit: {action}",
    )
