"""Safe deploys: a new worker build becomes the current version of its Temporal Worker
Deployment only when it replays the histories of the cases it would take over.

With `PODIUM_DEPLOYMENT_NAME` and `PODIUM_BUILD_ID` set, the worker runs under Worker
Versioning (`worker.py`): a case started on a build stays with it while the process is pinned,
and moves to the current build at its next task when it auto-upgrades. Before a build asks
to become current, `replay_check` replays the recent histories of the running cases on its
task queue with the build's own workflow code (the sandbox on, as in production); `promote`
makes it current only when every one replayed. A build that fails is refused: the previous
version stays current, no running case ever reaches code it cannot replay, and the refused
worker exits non-zero so the deploy is rolled back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

import structlog
from temporalio.api.workflowservice.v1 import (
    DescribeWorkerDeploymentRequest,
    SetWorkerDeploymentCurrentVersionRequest,
)
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Replayer, WorkflowRunner

from core.case_metrics import case_interceptors

__all__ = ["ReplayReport", "current_build", "promote", "replay_check"]

log = structlog.get_logger()

DEFAULT_REPLAY_LIMIT = 100
VERSION_ATTEMPTS = 60
VERSION_RETRY_S = 0.5


@dataclass
class ReplayReport:
    """What the candidate build replayed: every running case checked, and which ones failed."""

    checked: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed


async def replay_check(
    client: Client,
    workflows: Sequence[type],
    runner: WorkflowRunner,
    *,
    task_queue: str,
    limit: int = DEFAULT_REPLAY_LIMIT,
) -> ReplayReport:
    """Replay the histories of the running cases on `task_queue` (the most recent `limit`)
    with `workflows`, the candidate build's code."""
    replayer = Replayer(
        workflows=list(workflows),
        data_converter=client.data_converter,
        workflow_runner=runner,
        # The worker's interceptors add steps of their own (the outcome record).
        interceptors=case_interceptors(),
    )
    report = ReplayReport()
    query = f'TaskQueue = "{task_queue}" AND ExecutionStatus = "Running"'
    async for execution in client.list_workflows(query, limit=limit):
        handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
        history = await handle.fetch_history()
        result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        report.checked.append(execution.id)
        if result.replay_failure is not None:
            report.failed[execution.id] = str(result.replay_failure)
    return report


async def current_build(client: Client, deployment_name: str) -> str | None:
    """The build id of the deployment's current version (None before any is set)."""
    try:
        description = await client.workflow_service.describe_worker_deployment(
            DescribeWorkerDeploymentRequest(
                namespace=client.namespace, deployment_name=deployment_name
            )
        )
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
    current = description.worker_deployment_info.routing_config.current_deployment_version
    return current.build_id or None


async def promote(
    client: Client, deployment_name: str, build_id: str, report: ReplayReport
) -> bool:
    """Make `build_id` the deployment's current version when `report` holds no failure;
    otherwise leave the current version as it is (the rollback) and say why."""
    if not report.ok:
        log.error(
            "rollout_refused",
            deployment=deployment_name,
            build_id=build_id,
            checked=len(report.checked),
            failed=len(report.failed),
            first_failure=next(iter(report.failed.values()))[:500],
        )
        return False
    request = SetWorkerDeploymentCurrentVersionRequest(
        namespace=client.namespace, deployment_name=deployment_name, build_id=build_id
    )
    # The server knows a version once its worker has polled: give a starting worker a moment.
    for attempt in range(VERSION_ATTEMPTS):
        try:
            await client.workflow_service.set_worker_deployment_current_version(request)
            break
        except RPCError as err:
            waiting = err.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION)
            if not waiting or attempt == VERSION_ATTEMPTS - 1:
                raise
            await asyncio.sleep(VERSION_RETRY_S)
    log.info(
        "rollout_promoted",
        deployment=deployment_name,
        build_id=build_id,
        checked=len(report.checked),
    )
    return True
