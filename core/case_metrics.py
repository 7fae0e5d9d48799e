"""`podium_cases_closed_total`: every case that ends, counted by the worker that ran its end.

A worker interceptor, so no process's workflow code changes (and no history does: a metric is
not a command). It counts on the workflow's metric meter, which Temporal silences while a
workflow replays, so a case evicted from the cache and replayed later is not counted again.
Labels: `process`, `outcome` (the result's `outcome`, `failed` or `cancelled`), `channel` (the
input's `channel`, when the process has one) and `automated`: `false` when the case asked a
person (it called `notify_approvers`) or its result says it was not automated.
Every value goes through `core.metrics.label`: names only, never personal data.

Continue-as-new starts a new run: a run that continues is not counted, its successor's end is.

Outcome records (patch `case-outcome-record`): a case that completes also writes its row to
`case_outcomes` through the `record_outcome` activity (`activities/outcomes.py`), its last step:
process, channel, outcome, automated, who decided, SLA met, start and close, model cost, policy
version,
the source of truth for the operations KPIs. Cases whose history ended before the patch replay
without it. Because the interceptor adds that step, whatever replays a production case's
history (the rollout check, the chaos battery) runs with `case_interceptors()` too.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import FailureError
from temporalio.worker import (
    ExecuteWorkflowInput,
    Interceptor,
    StartActivityInput,
    StartLocalActivityInput,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
    WorkflowOutboundInterceptor,
)

from core.metrics import label
from workflows.contracts import search_attributes as sa

with workflow.unsafe.imports_passed_through():
    from workflows.contracts.outcomes import CaseOutcomeInput

__all__ = [
    "CASES_CLOSED",
    "PATCH_OUTCOME_RECORD",
    "PERSON_ACTIVITIES",
    "CaseMetricsInterceptor",
    "case_interceptors",
]

PATCH_OUTCOME_RECORD = "case-outcome-record"
OUTCOME_TIMEOUT = timedelta(seconds=30)
# A database that is down holds the case's close, as it holds every other write: no cap.
OUTCOME_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=1)
)
# Who decided, when no person did: the policy or the deadline.
_NOT_A_PERSON = ("policy:", "podium", "system")

CASES_CLOSED = "podium_cases_closed"
# Activities a case calls only when it asks a person.
PERSON_ACTIVITIES = frozenset({"notify_approvers"})


def case_interceptors() -> list[Interceptor]:
    """The worker's interceptors, also for every replay of a production case's history."""
    return [CaseMetricsInterceptor()]


class CaseMetricsInterceptor(Interceptor):
    """Give it to the worker (`Worker(interceptors=[...])`)."""

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor] | None:
        return _CaseInbound


class _CaseInbound(WorkflowInboundInterceptor):
    asked_person = False

    def init(self, outbound: WorkflowOutboundInterceptor) -> None:
        super().init(_CaseOutbound(outbound, self))

    async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
        channel = getattr(input.args[0], "channel", None) if input.args else None
        try:
            result = await super().execute_workflow(input)
        except FailureError:  # the case failed on purpose (continue-as-new is no FailureError)
            self._closed("failed", channel, automated=None)
            raise
        except asyncio.CancelledError:
            self._closed("cancelled", channel, automated=None)
            raise
        automated = getattr(result, "automated", None)
        outcome = getattr(result, "outcome", None)
        person = self._closed(
            outcome, channel, automated=automated if isinstance(automated, bool) else None
        )
        if workflow.patched(PATCH_OUTCOME_RECORD):
            await self._record(result, outcome, channel, person=person)
        return result

    async def _record(self, result: Any, outcome: object, channel: object, *, person: bool) -> None:
        info = workflow.info()
        decided_by = getattr(result, "decided_by", None)
        people = (
            [decided_by]
            if person
            and isinstance(decided_by, str)
            and decided_by
            and not decided_by.startswith(_NOT_A_PERSON)
            else []
        )
        cost = getattr(result, "model_cost_usd", None)
        version = getattr(result, "policy_version", None)
        await workflow.execute_activity(
            "record_outcome",
            CaseOutcomeInput(
                case_id=info.workflow_id,
                run_id=info.run_id,
                process=info.workflow_type,
                channel=channel if isinstance(channel, str) else None,
                outcome=str(getattr(outcome, "value", outcome) or "unknown"),
                automated=not person,
                people=people,
                escalated=info.typed_search_attributes.get(sa.ESCALATED) is True,
                started_at=info.start_time,
                closed_at=workflow.now(),
                model_cost_usd=float(cost) if isinstance(cost, int | float) else 0.0,
                policy_version=version if isinstance(version, str) else None,
            ),
            start_to_close_timeout=OUTCOME_TIMEOUT,
            retry_policy=OUTCOME_RETRY,
            summary="Record the case's outcome",
        )

    def _closed(self, outcome: object, channel: object, *, automated: bool | None) -> bool:
        """Count the close; whether a person was asked."""
        person = self.asked_person or automated is False
        workflow.metric_meter().create_counter(
            CASES_CLOSED, "Cases closed, by process, channel, outcome and automated"
        ).add(
            1,
            {
                "process": label(workflow.info().workflow_type),
                "outcome": label(outcome),
                "channel": label(channel),
                "automated": "false" if person else "true",
            },
        )
        return person


class _CaseOutbound(WorkflowOutboundInterceptor):
    def __init__(self, next: WorkflowOutboundInterceptor, inbound: _CaseInbound) -> None:
        super().__init__(next)
        self._inbound = inbound

    def start_activity(self, input: StartActivityInput) -> workflow.ActivityHandle[Any]:
        if input.activity in PERSON_ACTIVITIES:
            self._inbound.asked_person = True
        return super().start_activity(input)

    def start_local_activity(self, input: StartLocalActivityInput) -> workflow.ActivityHandle[Any]:
        if input.activity in PERSON_ACTIVITIES:
            self._inbound.asked_person = True
        return super().start_local_activity(input)
