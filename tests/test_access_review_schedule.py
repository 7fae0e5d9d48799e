"""The access reviews' Temporal Schedule against the real dev server (a Schedule does not run
under the time-skipping server; the cycle itself is tested there, tests/test_access_review.py).

`ensure_schedule` (what `podium up` and `podium reviews schedule` call) creates the Schedule
from the policy file, updates it on the next call and keeps an operator's pause; `run_now`
(`podium reviews run-now`) starts a cycle at once, which a worker with the real workflow runs
(its directory listing faked: nobody holds sensitive access, so the cycle ends at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from temporalio import activity
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from core.settings import Settings
from starter.reviews import SCHEDULE_ID, describe_schedule, ensure_schedule, run_now
from tests.helpers import make_worker, real_system_activities, seeded_engine
from workflows.access_review.types import AccessReviewOutcome, AccessReviewResult
from workflows.contracts.access import ListAccessReviewsInput, ListAccessReviewsResult

pytestmark = pytest.mark.timeout(120)

REPO_POLICIES = Path(__file__).resolve().parent.parent / "policies"


@activity.defn(name="list_access_reviews")
async def nobody_holds_sensitive_access(input: ListAccessReviewsInput) -> ListAccessReviewsResult:
    return ListAccessReviewsResult(
        catalogue_version="test",
        catalogue_digest="test",
        groups=["app-github-admin"],
        managers=["maria.chen"],
    )


def settings_for(task_queue: str, policies: Path = REPO_POLICIES) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None, task_queue=task_queue, policies_dir=policies, encryption="off"
    )


@pytest.fixture
async def client(dev_env: WorkflowEnvironment) -> AsyncIterator[Client]:
    yield dev_env.client
    with contextlib.suppress(Exception):
        await dev_env.client.get_schedule_handle(SCHEDULE_ID).delete()


async def test_the_schedule_follows_the_policy_file_and_keeps_an_operators_pause(
    client: Client, tmp_path: Path
) -> None:
    settings = settings_for(f"tq-{uuid.uuid4().hex}")
    assert "created" == await ensure_schedule(client, settings)
    view = await describe_schedule(client)
    assert (["0 9 1 * *"], [], False) == (view.cron, view.every, view.paused)
    assert view.next_cycles and all(at.day == 1 and at.hour == 9 for at in view.next_cycles)

    # An edited policy: every 7 days; the next `podium up` updates the Schedule.
    edited = yaml.safe_load((REPO_POLICIES / "access_review.yaml").read_text())
    edited["schedule"] = {"every": "P7D"}
    (tmp_path / "access_review.yaml").write_text(yaml.safe_dump(edited))
    assert "updated" == await ensure_schedule(client, settings_for("tq", tmp_path))
    view = await describe_schedule(client)
    assert ([], ["7 days, 0:00:00"]) == (view.cron, view.every)

    # An operator pauses it; an update keeps the pause.
    await client.get_schedule_handle(SCHEDULE_ID).pause(note="audit freeze")
    assert "updated" == await ensure_schedule(client, settings)
    view = await describe_schedule(client)
    assert (True, "audit freeze", ["0 9 1 * *"]) == (view.paused, view.note, view.cron)


async def test_run_now_starts_a_cycle_that_a_worker_runs(client: Client, tmp_path: Path) -> None:
    task_queue = f"tq-{uuid.uuid4().hex}"
    engine = seeded_engine(tmp_path)
    with ThreadPoolExecutor(max_workers=4) as executor:
        worker = make_worker(
            client,
            [*real_system_activities(engine), nobody_holds_sensitive_access],
            executor,
            task_queue=task_queue,
        )
        async with worker:
            settings = settings_for(task_queue)
            await ensure_schedule(client, settings)
            await run_now(client)
            cycle_id = ""
            for _ in range(400):  # the trigger is asynchronous: poll, generously bounded
                recent = (await describe_schedule(client)).recent_cycles
                if recent:
                    cycle_id = recent[-1]
                    break
                await asyncio.sleep(0.05)
            assert cycle_id.startswith("access_review-cycle-")
            result = await client.get_workflow_handle(
                cycle_id, result_type=AccessReviewResult
            ).result()
    engine.dispose()
    assert (AccessReviewOutcome.NOTHING_TO_REVIEW, ["maria.chen"]) == (
        result.outcome,
        result.managers_without_reviews,
    )
    assert result.policy_version is not None and result.policy_version != "typed-defaults"
