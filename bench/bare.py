"""The baseline: a bare Temporal workflow that runs N no-op activities one after another.

It has the shape of a refund case without any of its work: the same number of sequential
activities with the same timeout and a bounded retry policy, on a worker built with the same
settings and sandbox, and, for the approval path, the same `decide` update (same payload, same
"no approval is pending" refusal until the gate opens) at the same point. What it leaves out is
exactly what the benchmark measures: Podium's activities doing real work (SQLite systems of
record, embedded models), search-attribute upserts, audit events, bigger payloads.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from bench.types import BareDecisionResult, BareInput, BareResult, NoopPayload
    from workflows.contracts.approval import ApprovalDecisionInput

__all__ = ["BareWorkflow", "noop"]

NOOP_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=10,
)


@activity.defn(name="bench_noop")
def noop(input: NoopPayload) -> NoopPayload:
    """Does nothing; synchronous like Podium's activities, so it runs on the same thread pool."""
    return input


@workflow.defn(name="bench_bare")
class BareWorkflow:
    @workflow.init
    def __init__(self, input: BareInput) -> None:
        self._gate_open = False
        self._decision: ApprovalDecisionInput | None = None
        self._step = 0

    @workflow.update(name="decide")
    def decide(self, decision: ApprovalDecisionInput) -> BareDecisionResult:
        self._decision = decision
        return BareDecisionResult(request_id=decision.request_id, approved=decision.approve)

    @decide.validator
    def validate_decide(self, decision: ApprovalDecisionInput) -> None:
        if not self._gate_open:
            raise ValueError("no approval is pending for this case")
        if self._decision is not None:
            raise ValueError("the approval was already decided")
        if not decision.approver.strip():
            raise ValueError("an approver is required")

    @workflow.run
    async def run(self, input: BareInput) -> BareResult:
        case_id = workflow.info().workflow_id
        await self._noops(case_id, input.before, input.start_to_close)
        if input.gate:
            self._gate_open = True
        await self._noops(case_id, input.during, input.start_to_close)
        if input.gate:
            await workflow.wait_condition(lambda: self._decision is not None)
        await self._noops(case_id, input.after, input.start_to_close)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return BareResult(
            case_id=case_id,
            activities=self._step,
            approved=self._decision.approve if self._decision else None,
        )

    async def _noops(self, case_id: str, count: int, timeout: timedelta) -> None:
        for _ in range(count):
            self._step += 1
            await workflow.execute_activity(
                noop,
                NoopPayload(case_id=case_id, step=self._step),
                start_to_close_timeout=timeout,
                retry_policy=NOOP_RETRY,
            )
