"""Decision updates a case defers: sent again until the case admits them.

A case takes a decision update only while it is quiet (`ApprovalGate.admit`): in a workflow task
in which an activity or timer also resolved, the update would replay in another order than it
ran. Its validator rejects the update as `CaseBusy` before history, and this client interceptor
sends the same update (same update id) again after a short pause, doubling up to a second, for
at most `ADMISSION_PATIENCE`; then the caller gets the `CaseBusy` failure. A retry of a decision
the case has answered, sent while it is busy, is rejected as `DecisionRecorded` with the first
result as the failure's detail: the caller gets that result, as if the case had taken the
retry. Every other answer, and every update of another kind, passes through untouched.

Every Podium client installs it (`core.temporal.connect`); a client of one's own adds
`AdmissionInterceptor()` to `Client.connect(interceptors=...)`.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

from temporalio import client
from temporalio.api.update.v1 import Outcome

from workflows.contracts.approval import CASE_BUSY, DECISION_RECORDED

__all__ = ["ADMISSION_PATIENCE", "AdmissionInterceptor", "deferred"]

ADMISSION_PATIENCE = timedelta(minutes=2)
FIRST_PAUSE_S = 0.05
MAX_PAUSE_S = 1.0


def _rejection(handle: client.WorkflowUpdateHandle[Any]) -> str | None:
    """The type of the case's rejection of the update, if the server answered with one (the
    SDK keeps an outcome that came with the answer on the handle)."""
    outcome = getattr(handle, "_known_outcome", None)
    if outcome is None or not outcome.HasField("failure"):
        return None
    return str(outcome.failure.application_failure_info.type)


def deferred(handle: client.WorkflowUpdateHandle[Any]) -> bool:
    """Whether the server answered the update with the case's `CaseBusy` rejection."""
    return _rejection(handle) == CASE_BUSY


def _answer_recorded(handle: client.WorkflowUpdateHandle[Any]) -> None:
    """A `DecisionRecorded` rejection becomes its detail, the first result, as the update's
    result (the payloads are as the case encoded them: the caller's converter decodes them)."""
    if _rejection(handle) != DECISION_RECORDED:
        return
    details = handle._known_outcome.failure.application_failure_info.details  # type: ignore[union-attr]
    if details.payloads:
        handle._known_outcome = Outcome(success=details)


class AdmissionInterceptor(client.Interceptor):
    """Retries decision updates a busy case rejected as `CaseBusy` (see the module)."""

    def intercept_client(self, next: client.OutboundInterceptor) -> client.OutboundInterceptor:
        return _Outbound(next)


class _Outbound(client.OutboundInterceptor):
    async def start_workflow_update(
        self, input: client.StartWorkflowUpdateInput
    ) -> client.WorkflowUpdateHandle[Any]:
        deadline = time.monotonic() + ADMISSION_PATIENCE.total_seconds()
        pause = FIRST_PAUSE_S
        while True:
            handle = await super().start_workflow_update(input)
            if not deferred(handle) or time.monotonic() + pause > deadline:
                _answer_recorded(handle)
                return handle
            await asyncio.sleep(pause)
            pause = min(pause * 2, MAX_PAUSE_S)
