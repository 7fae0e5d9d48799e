"""The gate benchmark's baseline: a bare workflow that waits for one decision, then completes.

`bench_wait` does nothing but `wait_condition` until its `decide` signal arrives (the same
`ApprovalDecisionInput` payload a refund case's `decide` update takes), then returns whether it
was approved: what any Temporal workflow parked at a human step costs at the least.

    python -m bench.wait     # its worker, configured from the environment like `worker.py`

The worker is the benchmark's subprocess, so its memory is measured alone. It has the Podium
worker's own options from the same settings (`worker_options`, checked against
`worker.build_worker` by tests/test_bench_gate.py): sandbox, `max_cached_workflows`, limits.
"""

from __future__ import annotations

import asyncio
import signal
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.client import Client
from temporalio.worker import Worker

with workflow.unsafe.imports_passed_through():
    from workflows.contracts.approval import ApprovalAction, ApprovalDecisionInput

__all__ = ["WaitWorkflow", "build_wait_worker", "main", "worker_options"]


@workflow.defn(name="bench_wait")
class WaitWorkflow:
    def __init__(self) -> None:
        self._decision: ApprovalDecisionInput | None = None

    @workflow.signal(name="decide")
    def decide(self, decision: ApprovalDecisionInput) -> None:
        if self._decision is None:
            self._decision = decision

    @workflow.run
    async def run(self) -> bool:
        await workflow.wait_condition(lambda: self._decision is not None)
        assert self._decision is not None
        return self._decision.resolved_action == ApprovalAction.APPROVE


def worker_options(settings: Any, client: Client) -> dict[str, Any]:
    """`Worker` keyword arguments (minus the client): `worker.build_worker`'s, for bench_wait.

    Imported from `worker.py` so they never drift; that loads Podium's modules into this
    process (not its models: nothing here loads them), as in Podium's own worker.
    """
    from worker import GRACEFUL_SHUTDOWN, case_worker_sizing, workflow_runner

    return {
        "task_queue": settings.task_queue,
        "workflows": [WaitWorkflow],
        "max_cached_workflows": settings.max_cached_workflows,
        "sticky_queue_schedule_to_start_timeout": timedelta(
            seconds=settings.sticky_queue_timeout_s
        ),
        **case_worker_sizing(settings, workflow_runner(), client),
        "graceful_shutdown_timeout": GRACEFUL_SHUTDOWN,
    }


def build_wait_worker(client: Client, settings: Any) -> Worker:
    return Worker(client, **worker_options(settings, client))


async def _serve() -> None:
    from core.logging import configure_logging
    from core.settings import Settings
    from core.temporal import connect

    settings = Settings()
    configure_logging(settings.log_level, settings.log_json)
    client = await connect(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with build_wait_worker(client, settings):
        await stop.wait()


def main() -> None:
    asyncio.run(_serve())


if __name__ == "__main__":
    main()
