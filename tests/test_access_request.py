"""Access request on the time-skipping test server: every path, against a real SCIM directory.

The directory is the embedded SCIM service (`starter/scim_server.py`: seeded demo employees,
managers and the catalogue's application groups) on a loopback port; the identity, access,
ticket, policy, notification, audit and decision activities are the real ones on a temporary
SQLite database; the catalogue and the policy are the repository's files.

`PODIUM_RECORD_ACCESS_REQUEST_HISTORIES=1 pytest tests/test_access_request.py` (re)writes the
committed `tests/histories/access_request-*.json` that `test_replay.py` replays: only for a
deliberate, versioned change of the workflow.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from activities.access import DEFAULT_CATALOGUE, AccessActivities, load_catalogue
from activities.identity import IdentityActivities, ScimDirectory
from core.db import AuditEvent, Message, Ticket
from core.policy import load_policy, policy_path
from starter.scim_server import serving
from tests.helpers import make_worker, real_system_activities, seeded_engine, signed
from worker import workflow_runner
from workflows.access_request.types import (
    AccessRequestInput,
    AccessRequestOutcome,
    AccessRequestResult,
    AccessRequestState,
    AccessRequestStatus,
    EmployeeTerminatedInput,
    ExtensionInput,
    ExtensionResult,
)
from workflows.contracts.approval import ApprovalDecisionInput, ApprovalDecisionResult
from workflows.registry import PROCESSES

pytestmark = pytest.mark.timeout(120)

Handle = WorkflowHandle[Any, AccessRequestResult]
TOKEN = "test-scim-token"
HISTORIES = Path(__file__).parent / "histories"
RECORD = os.environ.get("PODIUM_RECORD_ACCESS_REQUEST_HISTORIES") == "1"
REQUESTER = "portal@example.com"
POLICY = load_policy(policy_path(None, "access_request")).model_dump(mode="json")


def person(name: str, *roles: str) -> dict[str, Any]:
    return {"approver": name, "approver_roles": list(roles)}


@dataclass
class Directory:
    url: str
    scim: ScimDirectory
    access: AccessActivities

    @property
    def writes(self) -> int:
        return self.scim.writes

    async def members(self, group: str) -> list[str]:
        """The user names in a group, read straight from the directory."""
        async with httpx.AsyncClient(
            base_url=self.url, headers={"Authorization": f"Bearer {TOKEN}"}
        ) as http:
            found = await http.get("/Groups", params={"filter": f'displayName eq "{group}"'})
            (resource,) = found.json()["Resources"]
            names = []
            for member in resource.get("members") or []:
                user = await http.get(f"/Users/{member['value']}")
                names.append(str(user.json()["userName"]))
            return sorted(names)


@pytest.fixture
async def engine(time_env: WorkflowEnvironment, tmp_path: Path) -> AsyncIterator[Engine]:
    engine = seeded_engine(tmp_path, now=await time_env.get_current_time())
    yield engine
    engine.dispose()


class LostAnswerTransport(httpx.AsyncBaseTransport):
    """Loopback HTTP to the directory that forwards the first PATCH and then answers 503 as
    if the answer were lost (the directory did write); counts what reached the directory."""

    def __init__(self) -> None:
        self._http = httpx.AsyncHTTPTransport(retries=0)
        self.lost = 0
        self.forwarded: Counter[str] = Counter()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.forwarded[request.method] += 1
        response = await self._http.handle_async_request(request)
        if request.method == "PATCH" and not self.lost:
            self.lost += 1
            await response.aread()
            return httpx.Response(503, json={"detail": "gateway timeout"})
        return response

    async def aclose(self) -> None:
        await self._http.aclose()


@pytest.fixture
def flaky() -> httpx.AsyncBaseTransport | None:
    return None


@pytest.fixture
async def directory(
    engine: Engine, flaky: httpx.AsyncBaseTransport | None
) -> AsyncIterator[Directory]:
    async with serving(TOKEN) as (url, _):
        scim = ScimDirectory(url, TOKEN, transport=flaky)
        yield Directory(url, scim, AccessActivities(scim, engine, DEFAULT_CATALOGUE))
        await scim.aclose()


_STARTED: list[Handle] = []


@pytest.fixture
async def worker(
    time_env: WorkflowEnvironment, engine: Engine, directory: Directory
) -> AsyncIterator[Worker]:
    identity = IdentityActivities(directory.scim, engine)
    with ThreadPoolExecutor(max_workers=4) as executor:
        worker = make_worker(
            time_env.client,
            [
                *real_system_activities(engine),
                *identity.activities(),
                *directory.access.activities(),
            ],
            executor,
        )
        async with worker:
            yield worker
            # A case left running (a failed test) would stall time skipping for the next tests.
            for handle in _STARTED:
                with contextlib.suppress(Exception):
                    await handle.terminate("test finished")
            _STARTED.clear()


async def start(
    env: WorkflowEnvironment,
    worker: Worker,
    employee: str,
    application: str,
    level: str,
    *,
    days: int | None = None,
) -> Handle:
    handle: Handle = await env.client.start_workflow(
        "access_request",
        AccessRequestInput(
            employee=employee,
            application=application,
            access_level=level,
            justification="needed for the platform migration",
            duration_days=days,
            requested_by=REQUESTER,
            policy_document=POLICY,
        ),
        id=f"access_request-test-{uuid.uuid4().hex}",
        task_queue=worker.task_queue,
        result_type=AccessRequestResult,
    )
    _STARTED.append(handle)
    return handle


async def state_of(handle: Handle) -> AccessRequestState:
    state: AccessRequestState = await handle.query("get_state", result_type=AccessRequestState)
    return state


async def wait_for(handle: Handle, status: AccessRequestStatus) -> AccessRequestState:
    state = await state_of(handle)
    for _ in range(500):
        if state.status == status:
            return state
        await asyncio.sleep(0.02)
        state = await state_of(handle)
    raise AssertionError(f"case never reached {status}; last {state.status}")


async def decide(
    handle: Handle, request_id: str, action: str, who: dict[str, Any], **extra: Any
) -> ApprovalDecisionResult:
    decision = ApprovalDecisionInput(request_id=request_id, action=action, **who, **extra)
    result: ApprovalDecisionResult = await handle.execute_update(
        "decide", signed(handle.id, decision), result_type=ApprovalDecisionResult
    )
    return result


def outbox(engine: Engine, case_id: str) -> list[Message]:
    """What the case sent the employee (the approvers' notices are the gate's)."""
    with Session(engine) as session:
        query = select(Message).where(Message.case_id == case_id).order_by(col(Message.id))
        return [m for m in session.exec(query) if m.kind.startswith("access_")]


def audit_actions(engine: Engine, case_id: str) -> list[str]:
    with Session(engine) as session:
        query = (
            select(AuditEvent).where(AuditEvent.case_id == case_id).order_by(col(AuditEvent.seq))
        )
        return [event.action for event in session.exec(query)]


def ticket_of(engine: Engine, case_id: str) -> Ticket:
    with Session(engine) as session:
        return session.exec(select(Ticket).where(Ticket.case_id == case_id)).one()


async def replays(handle: Handle, path: str) -> None:
    """The run's history replays on the current code (and, when recording, is committed)."""
    history = await handle.fetch_history()
    replayer = Replayer(
        workflows=PROCESSES.workflows,
        data_converter=pydantic_data_converter,
        workflow_runner=workflow_runner(),
    )
    await replayer.replay_workflow(history)
    if RECORD:
        text = history.to_json()
        # No machine path in a committed history (a failure's stack trace may carry one).
        text = text.replace(str(Path(__file__).resolve().parent.parent), "podium")
        (HISTORIES / f"access_request-{path}.json").write_text(text)


# --- pre-approved: end to end, no person -----------------------------------------------------


async def test_pre_approved_standard_access_is_granted_end_to_end_with_one_scim_write(
    time_env: WorkflowEnvironment, worker: Worker, engine: Engine, directory: Directory
) -> None:
    handle = await start(time_env, worker, "ana.lima", "github", "read")
    result = await handle.result()

    assert (AccessRequestOutcome.GRANTED, True, True) == (
        result.outcome,
        result.automated,
        result.granted,
    )
    assert (None, "app-github-read") == (result.expires_at, result.group)
    assert 1 == directory.writes  # one PATCH: the membership
    assert ["ana.lima"] == await directory.members("app-github-read")
    catalogue = load_catalogue(DEFAULT_CATALOGUE)
    assert (catalogue.digest, POLICY["digest"]) == (result.catalogue_digest, result.policy_version)
    state = await state_of(handle)
    assert ("pre_approved_standard", None) == (state.policy_rule, state.approval)
    (notice,) = outbox(engine, handle.id)
    assert ("access_granted", "ana.lima@example.com") == (notice.kind, notice.recipient)
    assert "resolved" == ticket_of(engine, handle.id).status
    assert [
        "access_requested",
        "employee_found",
        "entitlement_found",
        "policy_evaluated",
        "access_granted",
        "employee_notified",
        "access_finished",
    ] == audit_actions(engine, handle.id)
    await replays(handle, "granted")


@pytest.mark.parametrize("flaky", [LostAnswerTransport()], ids=["lost_answer"])
async def test_a_grant_whose_answer_was_lost_is_retried_and_written_once(
    time_env: WorkflowEnvironment,
    worker: Worker,
    engine: Engine,
    directory: Directory,
    flaky: LostAnswerTransport,
) -> None:
    handle = await start(time_env, worker, "lee.wong", "zendesk", "agent")
    result = await handle.result()
    assert AccessRequestOutcome.GRANTED == result.outcome
    assert 1 == flaky.lost
    # The directory took one PATCH; the retry found the membership and wrote nothing.
    assert 1 == flaky.forwarded["PATCH"]
    assert ["lee.wong"] == await directory.members("app-zendesk-agent")
    history = await handle.fetch_history()
    attempts = [
        event.activity_task_started_event_attributes.attempt
        for event in history.events
        if event.HasField("activity_task_started_event_attributes")
    ]
    assert max(attempts) >= 2  # Temporal retried the grant


# --- the manager by name ----------------------------------------------------------------------


async def test_the_named_manager_approves_and_nobody_else_may(
    time_env: WorkflowEnvironment, worker: Worker, engine: Engine, directory: Directory
) -> None:
    handle = await start(time_env, worker, "ben.okafor", "github", "read")  # Sales
    state = await wait_for(handle, AccessRequestStatus.AWAITING_APPROVAL)
    assert state.approval is not None
    assert (["sofia.rossi"], []) == (state.approval.awaiting_people, state.approval.awaiting_roles)
    assert ("default", "sofia.rossi") == (state.policy_rule, state.manager)
    assert 0 == directory.writes
    # Not a role: a team lead, even an admin-like role, is not the manager.
    with pytest.raises(WorkflowUpdateFailedError) as role:
        await decide(handle, "approval-1", "approve", person("lead@example.com", "team_lead"))
    assert "it names sofia.rossi" in str(role.value.cause)
    # Four-eyes: the requester and the employee are never approvers.
    with pytest.raises(WorkflowUpdateFailedError) as requester:
        await decide(handle, "approval-1", "approve", person(REQUESTER))
    assert "four-eyes" in str(requester.value.cause)
    with pytest.raises(WorkflowUpdateFailedError) as own:
        await decide(handle, "approval-1", "approve", person("Ben.Okafor@example.com"))
    assert "would get this access" in str(own.value.cause)
    # No decision token: refused.
    with pytest.raises(WorkflowUpdateFailedError):
        await handle.execute_update(
            "decide", ApprovalDecisionInput(request_id="approval-1", action="approve")
        )
    decided = await decide(handle, "approval-1", "approve", person("sofia.rossi"))
    assert ("approved", "granted_after_approval") == (decided.gate, decided.outcome)
    assert "app-github-read" == decided.effects["group"]
    result = await handle.result()
    assert (AccessRequestOutcome.GRANTED_AFTER_APPROVAL, False) == (
        result.outcome,
        result.automated,
    )
    assert 1 == directory.writes
    assert ["ben.okafor"] == await directory.members("app-github-read")
    actions = audit_actions(engine, handle.id)
    assert ["approval_requested", "approval_decided", "access_granted"] == [
        a for a in actions if a in {"approval_requested", "approval_decided", "access_granted"}
    ]
    await replays(handle, "approved")


async def test_the_manager_rejects_and_nothing_is_granted(
    time_env: WorkflowEnvironment, worker: Worker, engine: Engine, directory: Directory
) -> None:
    handle = await start(time_env, worker, "lee.wong", "zendesk", "reports")
    await wait_for(handle, AccessRequestStatus.AWAITING_APPROVAL)
    decided = await decide(
        handle, "approval-1", "reject", person("omar.haddad"), reason="reports are for leads"
    )
    assert ("rejected", "rejected") == (decided.gate, decided.outcome)
    result = await handle.result()
    assert (AccessRequestOutcome.REJECTED, "reports are for leads", False) == (
        result.outcome,
        result.reason,
        result.granted,
    )
    assert 0 == directory.writes
    assert [] == await directory.members("app-zendesk-reports")
    assert ["access_rejected"] == [m.kind for m in outbox(engine, handle.id)]
    assert "closed" == ticket_of(engine, handle.id).status
    await replays(handle, "rejected")


async def test_an_approval_nobody_gives_expires(
    time_env: WorkflowEnvironment, worker: Worker, engine: Engine, directory: Directory
) -> None:
    handle = await start(time_env, worker, "ben.okafor", "github", "write")
    result = await handle.result()  # five days pass: reminders to the manager, then the deadline
    assert AccessRequestOutcome.APPROVAL_EXPIRED == result.outcome
    assert 0 == directory.writes
    actions = audit_actions(engine, handle.id)
    assert 2 == actions.count("approval_reminder_sent")
    assert "approval_expired" in actions
    await replays(handle, "approval_expired")


# --- sensitive and time-bound: two people, revoked at expiry ----------------------------------


async def test_sensitive_access_needs_manager_then_owner_and_is_revoked_at_expiry(
    time_env: WorkflowEnvironment, worker: Worker, engine: Engine, directory: Directory
) -> None:
    handle = await start(time_env, worker, "ana.lima", "github", "admin")  # sensitive, 30 days
    state = await wait_for(handle, AccessRequestStatus.AWAITING_APPROVAL)
    assert state.approval is not None and state.sensitive
    assert ["maria.chen"] == state.approval.awaiting_people
    first = await decide(handle, "approval-1", "approve", person("maria.chen"))
    assert ("open", ["it_security", "user:dev.patel"]) == (first.gate, first.waiting_for)
    # The manager may not approve the second level too.
    with pytest.raises(WorkflowUpdateFailedError):
        await decide(handle, "approval-1", "approve", person("maria.chen", "it_security"))
    second = await decide(handle, "approval-1", "approve", person("dev.patel"))
    assert ("approved", "granted_after_approval") == (second.gate, second.outcome)
    state = await wait_for(handle, AccessRequestStatus.ACTIVE)
    assert state.expires_at is not None and state.granted_at is not None
    assert timedelta(days=30) == state.expires_at - state.granted_at
    assert ["ana.lima"] == await directory.members("app-github-admin")

    result = await handle.result()  # 30 days pass: the reminder 3 days before, then revocation
    assert AccessRequestOutcome.REVOKED_AT_EXPIRY == result.outcome
    assert result.revoked_at is not None and result.expires_at is not None
    assert result.revoked_at >= result.expires_at
    assert [] == await directory.members("app-github-admin")
    assert 2 == directory.writes  # the grant, then the revocation
    assert ["access_granted", "access_expiry_reminder", "access_expired"] == [
        m.kind for m in outbox(engine, handle.id)
    ]
    assert "access_revoked" in audit_actions(engine, handle.id)
    await replays(handle, "revoked_at_expiry")


async def test_an_extension_goes_through_the_manager_again(
    time_env: WorkflowEnvironment, worker: Worker, engine: Engine, directory: Directory
) -> None:
    # Pre-approved, but time-bound because asked so: granted with no person.
    handle = await start(time_env, worker, "ana.lima", "github", "read", days=10)
    state = await wait_for(handle, AccessRequestStatus.ACTIVE)
    assert state.expires_at is not None and state.approval is None
    first_expiry = state.expires_at
    asked: ExtensionResult = await handle.execute_update(
        "request_extension",
        ExtensionInput(days=5, justification="migration runs late"),
        result_type=ExtensionResult,
    )
    assert "extension-1" == asked.request_id
    # One at a time.
    with pytest.raises(WorkflowUpdateFailedError):
        await handle.execute_update(
            "request_extension", ExtensionInput(days=1, justification="again")
        )
    state = await wait_for(handle, AccessRequestStatus.AWAITING_APPROVAL)
    assert state.approval is not None
    assert ("extension-1", ["maria.chen"]) == (
        state.approval.request_id,
        state.approval.awaiting_people,
    )
    decided = await decide(handle, "extension-1", "approve", person("maria.chen"))
    assert ("approved", "extended") == (decided.gate, decided.outcome)
    state = await wait_for(handle, AccessRequestStatus.ACTIVE)
    assert state.expires_at == first_expiry + timedelta(days=5)
    assert ["extension-1: approved"] == state.extensions

    result = await handle.result()
    assert (AccessRequestOutcome.REVOKED_AT_EXPIRY, 1) == (result.outcome, result.extensions)
    assert result.expires_at == first_expiry + timedelta(days=5)
    assert [] == await directory.members("app-github-read")
    assert 2 == directory.writes
    kinds = [m.kind for m in outbox(engine, handle.id)]
    assert ["access_granted", "access_extended", "access_expiry_reminder", "access_expired"] == (
        kinds
    )
    await replays(handle, "extension")


# --- the directory says the employee left -----------------------------------------------------


async def test_a_terminated_employee_loses_what_the_case_granted(
    time_env: WorkflowEnvironment, worker: Worker, engine: Engine, directory: Directory
) -> None:
    handle = await start(time_env, worker, "lee.wong", "zendesk", "agent", days=60)
    await wait_for(handle, AccessRequestStatus.ACTIVE)
    assert ["lee.wong"] == await directory.members("app-zendesk-agent")
    # A notice about someone else changes nothing.
    await handle.signal("employee_terminated", EmployeeTerminatedInput(user_name="ben.okafor"))
    await handle.signal(
        "employee_terminated", EmployeeTerminatedInput(user_name="lee.wong", reason="left")
    )
    result = await handle.result()
    assert (AccessRequestOutcome.REVOKED_TERMINATED, True) == (result.outcome, result.granted)
    assert result.revoked_at is not None
    assert [] == await directory.members("app-zendesk-agent")
    assert 2 == directory.writes
    actions = audit_actions(engine, handle.id)
    assert ["employee_terminated", "access_revoked"] == [
        a for a in actions if a in {"employee_terminated", "access_revoked"}
    ]
    await replays(handle, "terminated_employee")


async def test_an_employee_terminated_while_waiting_for_approval_gets_nothing(
    time_env: WorkflowEnvironment, worker: Worker, engine: Engine, directory: Directory
) -> None:
    handle = await start(time_env, worker, "ben.okafor", "github", "read")
    await wait_for(handle, AccessRequestStatus.AWAITING_APPROVAL)
    await handle.signal("employee_terminated", EmployeeTerminatedInput(user_name="ben.okafor"))
    result = await handle.result()
    assert (AccessRequestOutcome.WITHDRAWN_TERMINATED, False) == (result.outcome, result.granted)
    assert 0 == directory.writes
    # The approval is gone from the inbox with the case.
    with pytest.raises(Exception):  # noqa: B017 - the case has completed: no update reaches it
        await decide(handle, "approval-1", "approve", person("sofia.rossi"))
    await replays(handle, "withdrawn_terminated")


# --- who and what cannot be granted -------------------------------------------------------------


@pytest.mark.parametrize(
    ("employee", "application", "level", "days", "outcome"),
    [
        ("tom.berg", "zendesk", "agent", None, AccessRequestOutcome.INACTIVE_EMPLOYEE),
        ("nobody.here", "github", "read", None, AccessRequestOutcome.UNKNOWN_EMPLOYEE),
        ("ana.lima", "jira", "read", None, AccessRequestOutcome.NOT_IN_CATALOGUE),
        ("ana.lima", "github", "owner", None, AccessRequestOutcome.NOT_IN_CATALOGUE),
        ("ana.lima", "github", "admin", 45, AccessRequestOutcome.DURATION_OVER_LIMIT),
        ("maria.chen", "github", "write", None, AccessRequestOutcome.NO_APPROVER),
    ],
)
async def test_requests_that_cannot_be_granted_write_nothing(
    time_env: WorkflowEnvironment,
    worker: Worker,
    engine: Engine,
    directory: Directory,
    employee: str,
    application: str,
    level: str,
    days: int | None,
    outcome: AccessRequestOutcome,
) -> None:
    handle = await start(time_env, worker, employee, application, level, days=days)
    result = await handle.result()
    assert (outcome, False) == (result.outcome, result.granted)
    assert 0 == directory.writes
    assert "access_refused" in audit_actions(engine, handle.id)
    if outcome == AccessRequestOutcome.INACTIVE_EMPLOYEE:
        await replays(handle, "inactive_employee")
