"""Safe deploys on the real Temporal dev server with Worker Versioning: a bad build is detected
by the replay gate and never becomes current (the previous build keeps every case); a good
build passes, becomes current, and the running auto-upgrade cases finish on it.

The workflows are three builds of one small process (`rollout_probe`) defined here: the
released build, a bad one that added a timer before the wait without a version patch (it
cannot replay the released build's histories), and a good one (the same commands).
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

import pytest
from temporalio.client import Client, WorkflowHandle
from temporalio.common import VersioningBehavior, WorkerDeploymentVersion
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker, WorkerDeploymentConfig

import worker
from core.rollout import current_build, promote, replay_check
from core.settings import Settings
from tests.rollout_probes import NAME, BadProbe, GoodProbe, ReleasedProbe
from worker import workflow_runner
from workflows.registry import PROCESSES, Registry

pytestmark = pytest.mark.timeout(180)


@asynccontextmanager
async def build(
    client: Client, task_queue: str, deployment: str, build_id: str, probe: type
) -> AsyncIterator[Worker]:
    """A worker of one build, under Worker Versioning (as `worker.py` runs one)."""
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[probe],
        workflow_runner=workflow_runner(),
        deployment_config=WorkerDeploymentConfig(
            version=WorkerDeploymentVersion(deployment_name=deployment, build_id=build_id),
            use_worker_versioning=True,
            default_versioning_behavior=VersioningBehavior.PINNED,
        ),
    ) as worker:
        yield worker


async def running_on(handle: WorkflowHandle[object, str]) -> str:
    """The build id a case's next task goes to, as the server records it."""
    for _ in range(100):
        info = (await handle.describe()).raw_description.workflow_execution_info.versioning_info
        if info.deployment_version.build_id:
            return info.deployment_version.build_id
        await asyncio.sleep(0.2)
    return ""


async def test_a_bad_build_is_refused_and_a_good_one_takes_over(
    dev_env: WorkflowEnvironment,
) -> None:
    client = dev_env.client
    task_queue = f"rollout-{uuid.uuid4().hex}"
    deployment = f"podium-{uuid.uuid4().hex[:8]}"
    handles: list[WorkflowHandle[object, str]] = []
    async with build(client, task_queue, deployment, "released", ReleasedProbe):
        first = await replay_check(
            client, [ReleasedProbe], workflow_runner(), task_queue=task_queue
        )
        assert await promote(client, deployment, "released", first)
        for _ in range(3):
            handles.append(
                await client.start_workflow(
                    NAME, id=f"probe-{uuid.uuid4().hex}", task_queue=task_queue, result_type=str
                )
            )
        assert ["released"] * 3 == [await running_on(handle) for handle in handles]

        # The bad build: the gate replays the three running cases with its code and refuses.
        async with build(client, task_queue, deployment, "bad", BadProbe):
            bad = await replay_check(client, [BadProbe], workflow_runner(), task_queue=task_queue)
            assert (3, 3) == (len(bad.checked), len(bad.failed))
            assert not await promote(client, deployment, "bad", bad)
            assert "released" == await current_build(client, deployment)
            late = await client.start_workflow(
                NAME, id=f"probe-{uuid.uuid4().hex}", task_queue=task_queue, result_type=str
            )
            handles.append(late)
            assert "released" == await running_on(late)

        # The good build passes the same gate and becomes current; the running cases
        # auto-upgrade to it at their next task and finish there.
        async with build(client, task_queue, deployment, "good", GoodProbe):
            good = await replay_check(client, [GoodProbe], workflow_runner(), task_queue=task_queue)
            assert (4, {}) == (len(good.checked), good.failed)
            assert await promote(client, deployment, "good", good)
            assert "good" == await current_build(client, deployment)
            for handle in handles:
                await handle.signal("release")
            results = [await handle.result() for handle in handles]
    assert ["released by the good build"] * 4 == results


def test_the_worker_joins_its_deployment_when_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """`PODIUM_DEPLOYMENT_NAME` + `PODIUM_BUILD_ID`: the worker runs under Worker Versioning
    (pinned by default; a process may auto-upgrade); without them, no versioning."""
    built: list[dict[str, Any]] = []
    monkeypatch.setattr(worker, "Worker", lambda client, **options: built.append(options))
    bare = Registry(dataclasses.replace(p, activities=()) for p in PROCESSES)
    for fields in ({}, {"deployment_name": "podium", "build_id": "2026-12-03.1"}):
        settings = Settings(_env_file=None, **fields)  # type: ignore[call-arg]
        worker.build_worker(
            SimpleNamespace(data_converter=pydantic_data_converter),  # type: ignore[arg-type]
            settings,
            activities=[],
            executor=None,  # type: ignore[arg-type]
            processes=bare,
        )
    assert "deployment_config" not in built[0]
    config = built[1]["deployment_config"]
    assert ("podium", "2026-12-03.1", True, VersioningBehavior.PINNED) == (
        config.version.deployment_name,
        config.version.build_id,
        config.use_worker_versioning,
        config.default_versioning_behavior,
    )
