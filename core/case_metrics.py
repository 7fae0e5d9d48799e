"""`podium_cases_closed_total`: every case that ends, counted by the worker that ran its end.

A worker interceptor, so no process's workflow code changes (and no history does: a metric is
not a command). It counts on the workflow's metric meter, which Temporal silences while a
workflow replays, so a case evicted from the cache and replayed later is not counted again.
Labels: `process`, `outcome` (the result's `outcome`, `failed` or `cancelled`), `channel` (the
input's `channel`, when the process has one) and `automated`: `false` when the case asked a
person (it called `notify_approvers`) or its result says it was not automated.
Every value goes through `core.metrics.label`: names only, never personal data.

Continue-as-new starts a new run: a run that continues is not counted, its successor's end is.
"""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio import workflow
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

__all__ = ["CASES_CLOSED", "PERSON_ACTIVITIES", "CaseMetricsInterceptor"]

CASES_CLOSED = "podium_cases_closed"
# Activities a case calls only when it asks a person.
PERSON_ACTIVITIES = frozenset({"notify_approvers"})


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
        self._closed(
            getattr(result, "outcome", None),
            channel,
            automated=automated if isinstance(automated, bool) else None,
        )
        return result

    def _closed(self, outcome: object, channel: object, *, automated: bool | None) -> None:
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
