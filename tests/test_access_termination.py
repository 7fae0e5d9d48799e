"""Access termination on the time-skipping test server, against a real SCIM directory: an
employee who left loses every membership Podium granted them, also from finished access
requests, with one SCIM write per membership still held, and a repeated termination writes
nothing.

The directory, the activities and the database are those of `tests/test_access_request.py`
(its fixtures): the embedded SCIM service on a loopback port, the real access, identity,
ticket, policy, notification and audit activities on a temporary SQLite database.

`PODIUM_RECORD_ACCESS_TERMINATION_HISTORIES=1 pytest tests/test_access_termination.py`
(re)writes the committed `tests/histories/access_termination-*.json` that `test_replay.py`
replays: only for a deliberate, versioned change of the workflow.
"""

# ruff: noqa: F811 - the fixtures of tests/test_access_request.py are imported by name
from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from temporalio.client import WorkflowHandle
from temporalio.common import WorkflowIDReusePolicy
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from activities.access import AccessGrant
from core.db import AuditEvent
from tests.test_access_request import (  # noqa: F401 - fixtures of the same directory
    Directory,
    directory,
    engine,
    flaky,
    start,
    wait_for,
    worker,
)
from worker import workflow_runner
from workflows.access_request.types import (
    AccessRequestOutcome,
    AccessRequestStatus,
    EmployeeTerminatedInput,
)
from workflows.access_termination.types import (
    AccessTerminationInput,
    AccessTerminationOutcome,
    AccessTerminationResult,
)
from workflows.contracts.access import GrantState
from workflows.registry import PROCESSES

pytestmark = pytest.mark.timeout(120)

HISTORIES = Path(__file__).parent / "histories"
RECORD = os.environ.get("PODIUM_RECORD_ACCESS_TERMINATION_HISTORIES") == "1"
Handle = WorkflowHandle[Any, AccessTerminationResult]


async def terminate(
    env: WorkflowEnvironment, worker: Worker, employee: str, *, case_id: str | None = None
) -> Handle:
    """The employee's termination case, under the id the starter derives from the employee."""
    handle: Handle = await env.client.start_workflow(
        "access_termination",
        AccessTerminationInput(employee=employee, reason="left", requested_by="directory-sync"),
        id=case_id or f"access_termination-{employee}-{uuid.uuid4().hex[:8]}",
        task_queue=worker.task_queue,
        result_type=AccessTerminationResult,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,  # as the starter opens cases
    )
    return handle


def audit_actions(engine: Engine, case_id: str) -> list[str]:
    with Session(engine) as session:
        query = (
            select(AuditEvent).where(AuditEvent.case_id == case_id).order_by(col(AuditEvent.seq))
        )
        return [event.action for event in session.exec(query)]


def revoked_by(engine: Engine, case_id: str) -> str | None:
    with Session(engine) as session:
        row = session.exec(select(AccessGrant).where(AccessGrant.case_id == case_id)).one()
        return row.revoked_by


async def replays(handle: Handle, path: str) -> None:
    history = await handle.fetch_history()
    replayer = Replayer(
        workflows=PROCESSES.workflows,
        data_converter=pydantic_data_converter,
        workflow_runner=workflow_runner(),
    )
    await replayer.replay_workflow(history)
    if RECORD:
        text = history.to_json().replace(str(Path(__file__).resolve().parent.parent), "podium")
        (HISTORIES / f"access_termination-{path}.json").write_text(text)


async def test_a_permanent_grant_of_a_finished_case_is_revoked_once_on_termination(
    time_env: WorkflowEnvironment, worker: Worker, engine: Engine, directory: Directory
) -> None:
    granted = await start(time_env, worker, "ana.lima", "github", "read")  # no expiry
    assert AccessRequestOutcome.GRANTED == (await granted.result()).outcome
    assert ["ana.lima"] == await directory.members("app-github-read")
    assert 1 == directory.writes
    # Someone else's grant is never touched.
    other = await start(time_env, worker, "lee.wong", "zendesk", "agent")
    assert AccessRequestOutcome.GRANTED == (await other.result()).outcome
    assert 2 == directory.writes

    case_id = f"access_termination-ana.lima-{uuid.uuid4().hex[:8]}"
    handle = await terminate(time_env, worker, "ana.lima", case_id=case_id)
    result = await handle.result()
    assert (AccessTerminationOutcome.REVOKED, 1) == (result.outcome, result.removed)
    ((line),) = result.grants
    assert (granted.id, "app-github-read", GrantState.REMOVED) == (
        line.case_id,
        line.group,
        line.state,
    )
    assert 3 == directory.writes  # exactly one SCIM write: the removal
    assert [] == await directory.members("app-github-read")
    assert ["lee.wong"] == await directory.members("app-zendesk-agent")
    assert case_id == revoked_by(engine, granted.id)
    assert [
        "employee_terminated",
        "employee_grants_listed",
        "access_revoked",
        "termination_finished",
    ] == audit_actions(engine, case_id)
    await replays(handle, "revoked")

    # The same termination again: the same case id is refused by Temporal (the starter
    # returns the first case), and a later case (after retention) finds nothing to revoke.
    with pytest.raises(WorkflowAlreadyStartedError):
        await terminate(time_env, worker, "ana.lima", case_id=case_id)
    again = await (await terminate(time_env, worker, "ana.lima")).result()
    assert (AccessTerminationOutcome.NOTHING_HELD, 0, []) == (
        again.outcome,
        again.removed,
        again.grants,
    )
    assert 3 == directory.writes


async def test_a_running_case_and_the_termination_revoke_its_grant_with_one_write(
    time_env: WorkflowEnvironment, worker: Worker, engine: Engine, directory: Directory
) -> None:
    """The directory's notice reaches a running time-bound case and the termination at once:
    whichever claims the grant first removes the membership; the other writes nothing."""
    permanent = await start(time_env, worker, "ana.lima", "github", "read")
    assert AccessRequestOutcome.GRANTED == (await permanent.result()).outcome
    running = await start(time_env, worker, "ana.lima", "github", "write", days=60)
    await wait_for(running, AccessRequestStatus.ACTIVE)
    assert 2 == directory.writes

    await running.signal(
        "employee_terminated", EmployeeTerminatedInput(user_name="ana.lima", reason="left")
    )
    handle = await terminate(time_env, worker, "ana.lima")
    result = await handle.result()
    case = await running.result()
    assert AccessRequestOutcome.REVOKED_TERMINATED == case.outcome
    assert 4 == directory.writes  # one removal per membership, whoever made it
    assert [] == await directory.members("app-github-read")
    assert [] == await directory.members("app-github-write")
    by_case = {line.case_id: line for line in result.grants}
    assert GrantState.REMOVED == by_case[permanent.id].state
    holder = revoked_by(engine, running.id)
    if holder == running.id:  # the running case was first: the termination wrote nothing
        line = by_case.get(running.id)  # claimed before the listing: not even listed
        assert line is None or GrantState.REVOKED_ELSEWHERE == line.state
    else:  # the termination was first: the case found the claim and wrote nothing
        assert (handle.id, GrantState.REMOVED) == (holder, by_case[running.id].state)


async def test_the_case_revokes_first_and_the_termination_writes_nothing_for_it(
    time_env: WorkflowEnvironment, worker: Worker, engine: Engine, directory: Directory
) -> None:
    running = await start(time_env, worker, "ana.lima", "github", "write", days=60)
    await wait_for(running, AccessRequestStatus.ACTIVE)
    await running.signal("employee_terminated", EmployeeTerminatedInput(user_name="ana.lima"))
    assert AccessRequestOutcome.REVOKED_TERMINATED == (await running.result()).outcome
    assert 2 == directory.writes
    result = await (await terminate(time_env, worker, "ana.lima")).result()
    assert (AccessTerminationOutcome.NOTHING_HELD, 0) == (result.outcome, result.removed)
    assert 2 == directory.writes


async def test_the_termination_revokes_first_and_the_running_case_writes_nothing(
    time_env: WorkflowEnvironment, worker: Worker, engine: Engine, directory: Directory
) -> None:
    running = await start(time_env, worker, "ana.lima", "github", "write", days=60)
    await wait_for(running, AccessRequestStatus.ACTIVE)
    handle = await terminate(time_env, worker, "ana.lima")
    result = await handle.result()
    assert (AccessTerminationOutcome.REVOKED, 1) == (result.outcome, result.removed)
    assert 2 == directory.writes
    await running.signal("employee_terminated", EmployeeTerminatedInput(user_name="ana.lima"))
    case = await running.result()
    assert AccessRequestOutcome.REVOKED_TERMINATED == case.outcome
    assert 2 == directory.writes  # the case found the termination's claim
    assert handle.id == revoked_by(engine, running.id)


async def test_a_membership_already_gone_is_not_written_to(
    time_env: WorkflowEnvironment, worker: Worker, engine: Engine, directory: Directory
) -> None:
    """Removed outside the grant's case (an access review, an administrator): the membership
    check finds it gone and the termination writes nothing."""
    granted = await start(time_env, worker, "ana.lima", "github", "read")
    assert AccessRequestOutcome.GRANTED == (await granted.result()).outcome
    group_id = await directory.scim.group_id("app-github-read")
    user = await directory.scim.find_user("ana.lima")
    assert group_id is not None and user is not None
    assert await directory.scim.remove_member(group_id, str(user["id"]))
    writes = directory.writes
    handle = await terminate(time_env, worker, "ana.lima")
    result = await handle.result()
    assert (AccessTerminationOutcome.NOTHING_HELD, 0) == (result.outcome, result.removed)
    assert [GrantState.ALREADY_GONE] == [line.state for line in result.grants]
    assert writes == directory.writes
    await replays(handle, "already_gone")


async def test_an_unknown_employee_has_nothing_to_revoke(
    time_env: WorkflowEnvironment, worker: Worker, directory: Directory
) -> None:
    handle = await terminate(time_env, worker, "nobody.here")
    result = await handle.result()
    assert (AccessTerminationOutcome.UNKNOWN_EMPLOYEE, 0) == (result.outcome, directory.writes)
    await replays(handle, "unknown_employee")
