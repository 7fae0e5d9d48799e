"""Access reviews on the time-skipping test server: every path, against a real SCIM directory.

The directory is the embedded SCIM service (`starter/scim_server.py`: seeded demo employees,
their managers and the catalogue's application groups) on a loopback port; the access, notice,
audit and decision activities are the real ones on a temporary SQLite database; the catalogue
and the policy are the repository's files. Memberships of the sensitive groups are added through
a second client, so `Directory.writes` counts only what the reviews wrote.

`PODIUM_RECORD_ACCESS_REVIEW_HISTORIES=1 pytest tests/test_access_review.py` (re)writes the
committed `tests/histories/access_review-*.json` that `test_replay.py` replays: only for a
deliberate, versioned change of the workflow.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from activities.access import DEFAULT_CATALOGUE, AccessActivities
from activities.identity import ScimDirectory
from core.db import AuditEvent, Message
from core.policy import policy_path
from starter.client import parse_policy_as
from starter.scim_server import serving
from tests.helpers import make_worker, real_system_activities, seeded_engine, signed
from worker import workflow_runner
from workflows.access_review import starting
from workflows.access_review.rules import outcome_of, reviewer_for
from workflows.access_review.types import (
    AccessReviewOutcome,
    AccessReviewPolicyFile,
    AccessReviewResult,
    AccessReviewState,
    AccessReviewStatus,
    DeadlineAction,
)
from workflows.contracts import search_attributes as sa
from workflows.contracts.access import ReviewItem, RevokeMembershipInput
from workflows.contracts.approval import (
    ApprovalDecisionInput,
    ApprovalDecisionResult,
    GateStatus,
)
from workflows.contracts.case import CaseContext
from workflows.registry import PROCESSES

pytestmark = pytest.mark.timeout(120)

Handle = WorkflowHandle[Any, AccessReviewResult]
TOKEN = "test-scim-token"
HISTORIES = Path(__file__).parent / "histories"
RECORD = os.environ.get("PODIUM_RECORD_ACCESS_REVIEW_HISTORIES") == "1"
SCHEDULER = "schedule:podium-access-review"
POLICY = parse_policy_as(policy_path(None, "access_review"), AccessReviewPolicyFile)
# Every manager of the demo directory (someone's manager in the enterprise extension).
MANAGERS = ["grace.kim", "james.park", "maria.chen", "omar.haddad", "sofia.rossi"]


def person(name: str, *roles: str) -> dict[str, Any]:
    return {"approver": name, "approver_roles": list(roles)}


@dataclass
class Directory:
    url: str
    scim: ScimDirectory  # the worker's: its `writes` are the reviews' writes
    admin: ScimDirectory  # the test's own, to set memberships up
    access: AccessActivities

    @property
    def writes(self) -> int:
        return self.scim.writes

    async def user_id(self, user_name: str) -> str:
        user = await self.admin.find_user(user_name)
        assert user is not None
        return str(user["id"])

    async def give(self, user_name: str, group: str) -> None:
        group_id = await self.admin.group_id(group)
        assert group_id is not None
        assert await self.admin.add_member(group_id, await self.user_id(user_name))

    async def members(self, group: str) -> list[str]:
        group_id = await self.admin.group_id(group)
        assert group_id is not None
        names = []
        for member in await self.admin.group_members(group_id):
            user = await self.admin.get_user(member)
            assert user is not None
            names.append(str(user["userName"]))
        return sorted(names)


@pytest.fixture
async def engine(time_env: WorkflowEnvironment, tmp_path: Path) -> AsyncIterator[Engine]:
    engine = seeded_engine(tmp_path, now=await time_env.get_current_time())
    yield engine
    engine.dispose()


@pytest.fixture
async def directory(engine: Engine) -> AsyncIterator[Directory]:
    async with serving(TOKEN) as (url, _):
        scim = ScimDirectory(url, TOKEN)
        admin = ScimDirectory(url, TOKEN)
        yield Directory(url, scim, admin, AccessActivities(scim, engine, DEFAULT_CATALOGUE))
        await scim.aclose()
        await admin.aclose()


_STARTED: list[Handle] = []


@pytest.fixture
async def worker(
    time_env: WorkflowEnvironment, engine: Engine, directory: Directory
) -> AsyncIterator[Worker]:
    with ThreadPoolExecutor(max_workers=4) as executor:
        worker = make_worker(
            time_env.client,
            [*real_system_activities(engine), *directory.access.activities()],
            executor,
        )
        async with worker:
            yield worker
            # A cycle left running (a failed test) would stall time skipping for the next tests.
            for handle in _STARTED:
                with contextlib.suppress(Exception):
                    await handle.terminate("test finished")
            _STARTED.clear()


async def start_cycle(
    env: WorkflowEnvironment,
    worker: Worker,
    policy: dict[str, Any] | None = None,
    *,
    case_id: str | None = None,
) -> Handle:
    """`case_id`: a cycle names its reviews after itself, and the replay test replays a history
    under its file's name: a recorded cycle runs under that name."""
    case_id = case_id or f"access_review-test-{uuid.uuid4().hex[:12]}"
    cycle = starting.prepare(
        starting.AccessReviewRequest(),
        CaseContext(case_id=case_id, requested_by=SCHEDULER, policy_document=policy or POLICY),
    )
    handle: Handle = await env.client.start_workflow(
        "access_review",
        cycle,
        id=case_id,
        task_queue=worker.task_queue,
        result_type=AccessReviewResult,
    )
    _STARTED.append(handle)
    return handle


async def state_of(handle: Handle) -> AccessReviewState:
    state: AccessReviewState = await handle.query("get_state", result_type=AccessReviewState)
    return state


async def wait_for(handle: Handle, status: AccessReviewStatus) -> AccessReviewState:
    for _ in range(1_000):
        with contextlib.suppress(Exception):  # a child not started yet cannot answer
            state = await state_of(handle)
            if state.status == status:
                return state
        await asyncio.sleep(0.02)
    raise AssertionError(f"{handle.id} never reached {status}")


async def reviews_of(env: WorkflowEnvironment, cycle: Handle) -> dict[str, Handle]:
    """The cycle's review cases, by the employee they review, once each waits for its reviewer."""
    state = await wait_for(cycle, AccessReviewStatus.REVIEWING)
    handles: dict[str, Handle] = {}
    for line in state.reviews:
        handle: Handle = env.client.get_workflow_handle(
            line.case_id, result_type=AccessReviewResult
        )
        await wait_for(handle, AccessReviewStatus.AWAITING_REVIEW)
        handles[line.employee] = handle
    return handles


async def decide(
    handle: Handle, action: str, who: dict[str, Any], **extra: Any
) -> ApprovalDecisionResult:
    decision = ApprovalDecisionInput(request_id="review-1", action=action, **who, **extra)
    result: ApprovalDecisionResult = await handle.execute_update(
        "decide", signed(handle.id, decision), result_type=ApprovalDecisionResult
    )
    return result


def audit_actions(engine: Engine, case_id: str) -> list[str]:
    with Session(engine) as session:
        query = (
            select(AuditEvent).where(AuditEvent.case_id == case_id).order_by(col(AuditEvent.seq))
        )
        return [event.action for event in session.exec(query)]


def notices(engine: Engine, case_id: str) -> list[Message]:
    with Session(engine) as session:
        query = select(Message).where(Message.case_id == case_id).order_by(col(Message.id))
        return [m for m in session.exec(query) if m.kind.startswith("access_")]


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
        (HISTORIES / f"access_review-{path}.json").write_text(text)


# --- pure rules -------------------------------------------------------------------------------


def _item(**fields: Any) -> ReviewItem:
    base: dict[str, Any] = {
        "user_id": "u1",
        "user_name": "ana.lima",
        "manager": "maria.chen",
        "application": "github",
        "application_title": "GitHub",
        "access_level": "admin",
        "group": "app-github-admin",
        "group_id": "g1",
        "owner": "dev.patel",
    }
    return ReviewItem(**{**base, **fields})


def test_the_reviewer_is_the_manager_else_the_owner_never_the_member() -> None:
    assert "maria.chen" == reviewer_for(_item())
    assert "dev.patel" == reviewer_for(_item(manager=None))
    assert reviewer_for(_item(user_name="dev.patel", manager=None)) is None


def test_an_answer_decides_and_silence_does_what_the_policy_says() -> None:
    keep, revoke = DeadlineAction.KEEP, DeadlineAction.REVOKE
    assert AccessReviewOutcome.CONFIRMED == outcome_of(GateStatus.APPROVED, revoke)
    assert AccessReviewOutcome.REVOKED == outcome_of(GateStatus.REJECTED, keep)
    assert AccessReviewOutcome.REVOKED_AT_DEADLINE == outcome_of(GateStatus.EXPIRED, revoke)
    assert AccessReviewOutcome.KEPT_AT_DEADLINE == outcome_of(GateStatus.EXPIRED, keep)


def test_the_policy_file_says_what_the_typed_defaults_say() -> None:
    policy, version = starting.policy_of(POLICY)
    assert starting.policy_of(None)[0] == policy
    assert (POLICY["digest"], "0 9 1 * *") == (version, policy.schedule.cron)
    with pytest.raises(ValueError):
        starting.policy_of({**POLICY, "on_deadlin": "keep"})  # a typo is an error


# --- the revocation activity ------------------------------------------------------------------


async def test_a_revocation_writes_once_and_a_membership_already_gone_not_at_all(
    engine: Engine, directory: Directory
) -> None:
    await directory.give("carla.diaz", "app-payroll-viewer")
    group_id = await directory.admin.group_id("app-payroll-viewer")
    assert group_id is not None
    revoke = RevokeMembershipInput(
        idempotency_key="case-1:revoke",
        case_id="case-1",
        user_id=await directory.user_id("carla.diaz"),
        group_id=group_id,
        group="app-payroll-viewer",
        reason="not needed",
    )
    first = await directory.access.revoke_membership(revoke)
    again = await directory.access.revoke_membership(revoke)
    assert (True, True, 1) == (first.removed, again.removed, directory.writes)
    assert [] == await directory.members("app-payroll-viewer")
    gone = await directory.access.revoke_membership(
        revoke.model_copy(update={"idempotency_key": "case-2:revoke", "case_id": "case-2"})
    )
    assert (False, 1) == (gone.removed, directory.writes)


# --- a cycle ----------------------------------------------------------------------------------


async def test_a_cycle_asks_each_manager_who_confirms_revokes_or_lets_the_deadline_revoke(
    time_env: WorkflowEnvironment, worker: Worker, engine: Engine, directory: Directory
) -> None:
    await directory.give("ana.lima", "app-github-admin")  # manager maria.chen
    await directory.give("carla.diaz", "app-payroll-viewer")  # manager james.park
    await directory.give("ben.okafor", "app-salesforce-admin")  # manager sofia.rossi
    await directory.give("ana.lima", "app-github-read")  # standard access: not reviewed
    cycle = await start_cycle(time_env, worker, case_id="access_review-cycle")
    reviews = await reviews_of(time_env, cycle)
    assert ["ana.lima", "ben.okafor", "carla.diaz"] == sorted(reviews)

    state = await state_of(cycle)
    assert {"ana.lima": "maria.chen", "carla.diaz": "james.park", "ben.okafor": "sofia.rossi"} == {
        line.employee: line.reviewer for line in state.reviews
    }
    assert ["grace.kim", "omar.haddad"] == state.managers_without_reviews
    # Each review is in its manager's inbox, found by name.
    for employee, manager in (("ana.lima", "maria.chen"), ("carla.diaz", "james.park")):
        attributes = (await reviews[employee].describe()).typed_search_attributes
        assert (
            ["user:" + manager],
            True,
            "access_review",
            employee,
            POLICY["digest"],
        ) == (
            attributes.get(sa.AWAITING_ROLES),
            attributes.get(sa.AWAITING_APPROVAL),
            attributes.get(sa.PROCESS),
            attributes.get(sa.CUSTOMER_ID),
            attributes.get(sa.POLICY_VERSION),
        )

    ana = reviews["ana.lima"]
    # Not her manager, and not the member herself.
    with pytest.raises(WorkflowUpdateFailedError) as other:
        await decide(ana, "approve", person("james.park"))
    assert "it names maria.chen" in str(other.value.cause)
    with pytest.raises(WorkflowUpdateFailedError) as own:
        await decide(ana, "approve", person("ana.lima@example.com"))
    assert "holds this access" in str(own.value.cause)
    confirmed = await decide(ana, "approve", person("maria.chen"), comment="on-call lead")
    assert ("approved", "confirmed", "false") == (
        confirmed.gate,
        confirmed.outcome,
        confirmed.effects["removed"],
    )
    assert 0 == directory.writes

    revoked = await decide(
        reviews["carla.diaz"], "reject", person("james.park"), reason="moved to treasury"
    )
    assert ("rejected", "revoked", "true") == (
        revoked.gate,
        revoked.outcome,
        revoked.effects["removed"],
    )
    assert 1 == directory.writes  # one PATCH: the membership
    assert [] == await directory.members("app-payroll-viewer")
    (notice,) = notices(engine, reviews["carla.diaz"].id)
    assert ("access_review_revoked", "carla.diaz@example.com") == (
        notice.kind,
        notice.recipient,
    )

    result = await cycle.result()  # 14 days pass: sofia.rossi is reminded twice, then revoked
    assert (AccessReviewOutcome.CYCLE_COMPLETED, 3, 2) == (
        result.outcome,
        result.reviews,
        result.removed,
    )
    assert {"confirmed": 1, "revoked": 1, "revoked_at_deadline": 1} == result.counts
    assert ["grace.kim", "omar.haddad"] == result.managers_without_reviews
    assert 2 == directory.writes
    assert ["ana.lima"] == await directory.members("app-github-admin")
    assert [] == await directory.members("app-salesforce-admin")
    assert ["ana.lima"] == await directory.members("app-github-read")

    ben = await reviews["ben.okafor"].result()
    assert (AccessReviewOutcome.REVOKED_AT_DEADLINE, 1) == (ben.outcome, ben.removed)
    actions = audit_actions(engine, reviews["ben.okafor"].id)
    assert 2 == actions.count("approval_reminder_sent")
    assert ["approval_expired", "access_revoked"] == [
        a for a in actions if a in {"approval_expired", "access_revoked"}
    ]
    assert [
        "access_review_cycle_started",
        "access_reviews_listed",
        "access_review_cycle_finished",
    ] == audit_actions(engine, cycle.id)
    await replays(cycle, "cycle")
    await replays(ana, "confirmed")
    await replays(reviews["carla.diaz"], "revoked")
    await replays(reviews["ben.okafor"], "revoked_at_deadline")


async def test_the_policy_may_keep_access_nobody_answered_for(
    time_env: WorkflowEnvironment, worker: Worker, engine: Engine, directory: Directory
) -> None:
    await directory.give("dev.patel", "app-payroll-viewer")  # manager grace.kim
    cycle = await start_cycle(time_env, worker, {**POLICY, "on_deadline": "keep"})
    reviews = await reviews_of(time_env, cycle)
    card = PROCESSES.get("access_review").approval_card(None, await state_of(reviews["dev.patel"]))
    assert {"Reviewer": "grace.kim", "No answer by the deadline": "keep"}.items() <= {
        fact.label: fact.value for fact in card.facts
    }.items()

    result = await cycle.result()
    assert {"kept_at_deadline": 1} == result.counts
    assert (0, 0) == (result.removed, directory.writes)
    assert ["dev.patel"] == await directory.members("app-payroll-viewer")
    kept = await reviews["dev.patel"].result()
    assert AccessReviewOutcome.KEPT_AT_DEADLINE == kept.outcome
    assert "access_kept" in audit_actions(engine, kept.case_id)
    await replays(reviews["dev.patel"], "kept_at_deadline")


async def test_managers_whose_reports_hold_no_sensitive_access_are_asked_nothing(
    time_env: WorkflowEnvironment, worker: Worker, engine: Engine, directory: Directory
) -> None:
    await directory.give("lee.wong", "app-zendesk-agent")  # standard access only
    cycle = await start_cycle(time_env, worker)
    result = await cycle.result()
    assert (AccessReviewOutcome.NOTHING_TO_REVIEW, 0, {}) == (
        result.outcome,
        result.reviews,
        result.counts,
    )
    assert MANAGERS == result.managers_without_reviews
    assert 0 == directory.writes
    attributes = (await cycle.describe()).typed_search_attributes
    assert ("nothing_to_review", False) == (
        attributes.get(sa.OUTCOME),
        attributes.get(sa.AWAITING_APPROVAL),
    )
    await replays(cycle, "nothing_to_review")
