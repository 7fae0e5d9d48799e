"""Record the histories the replay test checks: one per path of every released workflow version.

    .venv/bin/python -m tests.record_histories      # or: make histories

Runs each scenario on the time-skipping test server (real systems-of-record activities on a
temporary database, deterministic model fakes) and writes `tests/histories/<workflow>-<path>.json`.
Re-record only for a deliberate, versioned change: the committed files are what running cases
look like, and the replay test fails when the workflow code can no longer replay them.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

from temporalio.client import WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from tests.conftest import TEMPORAL_TEST_SERVER, register_search_attributes
from tests.helpers import (
    fake_draft,
    fake_triage,
    make_worker,
    real_system_activities,
    seeded_engine,
)
from workflows.types import ApprovalDecisionInput, RefundCaseInput, RefundCaseState

HISTORIES = Path(__file__).parent / "histories"

Scenario = Callable[[WorkflowEnvironment, WorkflowHandle[object, object]], Awaitable[None]]


async def _approval_pending(handle: WorkflowHandle[object, object]) -> RefundCaseState:
    for _ in range(200):
        state = await handle.query("get_state", result_type=RefundCaseState)
        if state.approval is not None:
            return state
        await asyncio.sleep(0.02)
    raise RuntimeError("no approval was requested")


async def _nothing(env: WorkflowEnvironment, handle: WorkflowHandle[object, object]) -> None:
    return None


async def _approve_after_escalation(
    env: WorkflowEnvironment, handle: WorkflowHandle[object, object]
) -> None:
    await _approval_pending(handle)
    await env.sleep(timedelta(days=3))
    await handle.execute_update(
        "decide", ApprovalDecisionInput(request_id="approval-1", approve=True, approver="lead")
    )


async def _reject(env: WorkflowEnvironment, handle: WorkflowHandle[object, object]) -> None:
    await _approval_pending(handle)
    await handle.execute_update(
        "decide",
        ApprovalDecisionInput(request_id="approval-1", approve=False, approver="f", comment="no"),
    )


async def _signal_paths(env: WorkflowEnvironment, handle: WorkflowHandle[object, object]) -> None:
    await _approval_pending(handle)
    await handle.signal(
        "approval_decision", ApprovalDecisionInput(request_id="bad", approve=True, approver="x")
    )
    await handle.signal(
        "approval_decision",
        ApprovalDecisionInput(request_id="approval-1", approve=True, approver="ops"),
    )


SCENARIOS: dict[str, tuple[str, str | None, str, Scenario]] = {
    "auto_resolved": ("C-1001", "O-5001", "refund O-5001 please", _nothing),
    "approved_after_escalation": ("C-1002", "O-5003", "refund O-5003", _approve_after_escalation),
    "rejected": ("C-1002", "O-5003", "refund O-5003", _reject),
    "escalated_expired": ("C-1002", "O-5004", "refund O-5004", _nothing),
    "needs_human": ("C-1001", "O-9999", "refund please", _nothing),
    "approved_by_signal": ("C-1004", "O-5007", "refund O-5007", _signal_paths),
}


async def record() -> None:
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter,
        test_server_existing_path=str(TEMPORAL_TEST_SERVER),
    )
    await register_search_attributes(env.client)
    HISTORIES.mkdir(exist_ok=True)
    try:
        with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(4) as executor:
            for name, (customer, order, text, scenario) in SCENARIOS.items():
                folder = Path(tmp) / name
                folder.mkdir()
                engine = seeded_engine(folder, now=await env.get_current_time())
                worker = make_worker(
                    env.client, [*real_system_activities(engine), fake_triage, fake_draft], executor
                )
                async with worker:
                    handle = await env.client.start_workflow(
                        "refund",
                        RefundCaseInput(
                            channel="email", customer_id=customer, order_id=order, message=text
                        ),
                        id=f"refund-history-{name}",
                        task_queue=worker.task_queue,
                    )
                    await scenario(env, handle)
                    await handle.result()
                    history = await handle.fetch_history()
                engine.dispose()
                path = HISTORIES / f"refund-{name}.json"
                path.write_text(history.to_json())
                print(f"recorded {path} ({len(history.events)} events)")
    finally:
        await env.shutdown()


if __name__ == "__main__":
    asyncio.run(record())
