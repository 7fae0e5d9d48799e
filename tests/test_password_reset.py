"""Password reset on the time-skipping test server: every path, against a real SCIM directory.

The directory is the embedded SCIM service (`starter/scim_server.py`, seeded demo employees)
served on a loopback port; the identity, audit, notification and decision activities are the
real ones on a temporary SQLite database. The employee's entry point is played by the test: it
reads the code from the outbox (the email), stores the attempt with `record_code_attempt` and
sends the attempt id by the `enter_code` update, as the API's verification page would.

`PODIUM_RECORD_PASSWORD_RESET_HISTORIES=1 pytest tests/test_password_reset.py` (re)writes the
committed `tests/histories/password_reset-*.json` that `test_replay.py` replays: only for a
deliberate, versioned change of the workflow.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
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
from temporalio.client import WorkflowHandle, WorkflowHistory, WorkflowUpdateFailedError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from activities.identity import (
    IdentityActivities,
    PendingPasswordWrite,
    ScimDirectory,
    record_code_attempt,
)
from activities.types import CheckVerificationCodeInput
from core.db import AuditEvent, Message
from core.policy import DEFAULT_POLICIES_DIR, policy_digest
from core.settings import Settings
from starter.client import PodiumClient
from starter.scim_server import ScimApplication, serving
from starter.verification import code_from_outbox
from tests.helpers import (
    history_recording,
    make_worker,
    real_system_activities,
    seeded_engine,
    signed,
)
from worker import workflow_runner
from workflows.contracts import search_attributes as sa
from workflows.contracts.approval import ApprovalDecisionInput, ApprovalDecisionResult
from workflows.password_reset.types import (
    CodeAttemptInput,
    CodeAttemptResult,
    PasswordResetInput,
    PasswordResetOutcome,
    PasswordResetResult,
    PasswordResetState,
    PasswordResetStatus,
)
from workflows.registry import PROCESSES

pytestmark = pytest.mark.timeout(120)

Handle = WorkflowHandle[Any, PasswordResetResult]
TOKEN = "test-scim-token"
HISTORIES = Path(__file__).parent / "histories"
RECORD = history_recording("PODIUM_RECORD_PASSWORD_RESET_HISTORIES")
SECURITY = {"approver": "grace.kim@example.com", "approver_roles": ["it_security"]}
DESK = {"approver": "desk.agent@example.com", "approver_roles": ["it_service_desk"]}
CODE_RE = re.compile(r"code is (\d{6})\.")
PASSWORD_RE = re.compile(r"temporary password is (\S+) ;")
TIMESTAMP_RE = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(\.\d+)?Z?")


@dataclass
class Directory:
    url: str
    identity: IdentityActivities
    app: ScimApplication | None = None

    @property
    def writes(self) -> int:
        return self.identity.directory.writes

    async def user(self, user_name: str) -> dict[str, Any]:
        async with httpx.AsyncClient(
            base_url=self.url, headers={"Authorization": f"Bearer {TOKEN}"}
        ) as http:
            found = await http.get("/Users", params={"filter": f'userName eq "{user_name}"'})
            return dict(found.json()["Resources"][0])


@pytest.fixture
async def engine(time_env: WorkflowEnvironment, tmp_path: Path) -> AsyncIterator[Engine]:
    engine = seeded_engine(tmp_path, now=await time_env.get_current_time())
    yield engine
    engine.dispose()


class FlakyTransport(httpx.AsyncBaseTransport):
    """Loopback HTTP to the directory that first answers 429 to a lookup and 503 to a password
    change (neither forwarded), then forwards everything; counts what reached the directory."""

    def __init__(self) -> None:
        self._http = httpx.AsyncHTTPTransport(retries=0)
        self.refused: list[str] = []
        self.forwarded: Counter[str] = Counter()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET" and "429" not in self.refused:
            self.refused.append("429")
            return httpx.Response(429, headers={"Retry-After": "2"}, json={"detail": "slow"})
        if request.method == "PATCH" and "503" not in self.refused:
            self.refused.append("503")
            return httpx.Response(503, json={"detail": "maintenance"})
        self.forwarded[request.method] += 1
        return await self._http.handle_async_request(request)

    async def aclose(self) -> None:
        await self._http.aclose()


@pytest.fixture
def flaky() -> httpx.AsyncBaseTransport | None:
    return None


@pytest.fixture
async def directory(
    engine: Engine, flaky: httpx.AsyncBaseTransport | None
) -> AsyncIterator[Directory]:
    async with serving(TOKEN) as (url, app):
        scim = ScimDirectory(url, TOKEN, transport=flaky)
        yield Directory(url, IdentityActivities(scim, engine), app)
        await scim.aclose()


_STARTED: list[Handle] = []


@pytest.fixture
async def worker(
    time_env: WorkflowEnvironment, engine: Engine, directory: Directory
) -> AsyncIterator[Worker]:
    with ThreadPoolExecutor(max_workers=4) as executor:
        worker = make_worker(
            time_env.client,
            [*real_system_activities(engine), *directory.identity.activities()],
            executor,
        )
        async with worker:
            yield worker
            # A case left running (a failed test) would stall time skipping for the next tests.
            for handle in _STARTED:
                with contextlib.suppress(Exception):
                    await handle.terminate("test finished")
            _STARTED.clear()


async def start(env: WorkflowEnvironment, worker: Worker, user_name: str) -> Handle:
    handle: Handle = await env.client.start_workflow(
        "password_reset",
        PasswordResetInput(user_name=user_name, requested_by="portal@example.com"),
        id=f"password_reset-test-{uuid.uuid4().hex}",
        task_queue=worker.task_queue,
        result_type=PasswordResetResult,
    )
    _STARTED.append(handle)
    return handle


async def state_of(handle: Handle) -> PasswordResetState:
    state: PasswordResetState = await handle.query("get_state", result_type=PasswordResetState)
    return state


async def wait_for(handle: Handle, status: PasswordResetStatus) -> PasswordResetState:
    state = await state_of(handle)
    for _ in range(400):
        if state.status == status:
            return state
        await asyncio.sleep(0.02)
        state = await state_of(handle)
    raise AssertionError(f"case never reached {status}; last {state.status}")


def outbox(engine: Engine, case_id: str, kind: str) -> list[Message]:
    with Session(engine) as session:
        query = select(Message).where(Message.case_id == case_id, Message.kind == kind)
        return list(session.exec(query))


def code_sent(engine: Engine, case_id: str) -> str:
    (message,) = outbox(engine, case_id, "identity_verification_code")
    found = CODE_RE.search(message.body)
    assert found is not None, "the code message carries the code"
    return found.group(1)


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


async def enter(handle: Handle, engine: Engine, code: str) -> CodeAttemptResult:
    """What the employee's verification page does: store the attempt, send its id."""
    attempt_id = record_code_attempt(engine, handle.id, code)
    result: CodeAttemptResult = await handle.execute_update(
        "enter_code", CodeAttemptInput(attempt_id=attempt_id), result_type=CodeAttemptResult
    )
    return result


def audit_actions(engine: Engine, case_id: str) -> list[str]:
    with Session(engine) as session:
        query = (
            select(AuditEvent).where(AuditEvent.case_id == case_id).order_by(col(AuditEvent.seq))
        )
        return [event.action for event in session.exec(query)]


async def no_secret_anywhere(handle: Handle, engine: Engine, secrets: list[str]) -> None:
    """Neither the code nor the password is in history or the audit trail."""
    history = (await handle.fetch_history()).to_json()
    with Session(engine) as session:
        audit = json.dumps(
            [event.detail for event in session.exec(select(AuditEvent))], default=str
        )
    for secret in secrets:
        assert secret not in history
        assert secret not in audit


async def replays(handle: Handle, path: str) -> None:
    """The run's history replays on the current code (and, when recording, is committed)."""
    history = await handle.fetch_history()
    replayer = Replayer(
        workflows=PROCESSES.workflows,
        data_converter=pydantic_data_converter,
        workflow_runner=workflow_runner(),
    )
    await replayer.replay_workflow(history)
    if name := RECORD(path):
        (HISTORIES / f"password_reset-{name}.json").write_text(history.to_json())


def decision(request_id: str, action: str, who: dict[str, Any], **extra: Any) -> Any:
    return ApprovalDecisionInput(request_id=request_id, action=action, **who, **extra)


# --- the automated path ---------------------------------------------------------------------


async def test_a_verified_employee_is_reset_end_to_end_with_no_person(
    time_env: WorkflowEnvironment,
    worker: Worker,
    engine: Engine,
    directory: Directory,
    capfd: pytest.CaptureFixture[str],
) -> None:
    before = await directory.user("ana.lima")
    handle = await start(time_env, worker, "ana.lima")
    state = await wait_for(handle, PasswordResetStatus.AWAITING_CODE)
    assert "a***@example.com" == state.code_sent_to
    assert state.employee is not None
    assert (False, ["employees", "engineering"]) == (state.privileged, state.employee.groups)
    code = code_sent(engine, handle.id)
    (message,) = outbox(engine, handle.id, "identity_verification_code")
    assert "ana.lima@example.com" == message.recipient

    entered = await enter(handle, engine, code)
    assert (True, "matched", 0) == (entered.verified, entered.reason, entered.attempts)
    result = await handle.result()

    assert PasswordResetOutcome.RESET == result.outcome
    assert (True, True, False) == (result.automated, result.verified, result.privileged)
    assert result.reset_at is not None
    # Exactly one write to the directory: the password.
    assert 1 == directory.writes
    after = await directory.user("ana.lima")
    assert before["meta"]["version"] != after["meta"]["version"]
    assert "password" not in after
    (delivered,) = outbox(engine, handle.id, "identity_temporary_password")
    assert "ana.lima@example.com" == delivered.recipient
    password = PASSWORD_RE.search(delivered.body)
    assert password is not None
    await no_secret_anywhere(handle, engine, [code, password.group(1)])
    captured = capfd.readouterr()
    logs = captured.out + captured.err
    assert "password_reset_done" in logs  # the worker's logs were captured
    assert password.group(1) not in logs
    # Timestamps carry 6-digit fractions: a code could match one by chance, never by a leak.
    assert code not in TIMESTAMP_RE.sub("", logs)
    assert [
        "reset_requested",
        "employee_found",
        "verification_code_sent",
        "verification_code_checked",
        "identity_verified",
        "password_reset",
        "reset_finished",
    ] == audit_actions(engine, handle.id)
    # The code is used: it cannot verify anything again.
    assert (
        "used"
        == directory.identity.check_verification_code(
            CheckVerificationCodeInput(
                case_id=handle.id, attempt_id=record_code_attempt(engine, handle.id, code)
            )
        ).reason
    )
    await replays(handle, "automated")


@pytest.mark.parametrize("flaky", [FlakyTransport()], ids=["429_then_503"])
async def test_a_rate_limited_and_failing_directory_is_retried_and_written_once(
    time_env: WorkflowEnvironment,
    worker: Worker,
    engine: Engine,
    directory: Directory,
    flaky: FlakyTransport,
) -> None:
    handle = await start(time_env, worker, "ana.lima")
    await wait_for(handle, PasswordResetStatus.AWAITING_CODE)
    assert (await enter(handle, engine, code_sent(engine, handle.id))).verified
    result = await handle.result()
    assert PasswordResetOutcome.RESET == result.outcome
    assert ["429", "503"] == flaky.refused
    # One password change reached the directory; one write counted.
    assert (1, 1) == (flaky.forwarded["PATCH"], directory.writes)
    history = await handle.fetch_history()
    failures = [
        event.activity_task_started_event_attributes.attempt
        for event in history.events
        if event.HasField("activity_task_started_event_attributes")
    ]
    assert max(failures) >= 2  # Temporal retried, the connector did not


class LostAnswerTransport(httpx.AsyncBaseTransport):
    """Loopback HTTP to the directory where the answer to the first password change is lost:
    the directory takes the change, then the connection drops before its answer arrives."""

    def __init__(self) -> None:
        self._http = httpx.AsyncHTTPTransport(retries=0)
        self.patches_taken = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._http.handle_async_request(request)
        if request.method == "PATCH":
            self.patches_taken += 1
            if self.patches_taken == 1:
                await response.aclose()
                raise httpx.ReadError("connection reset before the answer", request=request)
        return response

    async def aclose(self) -> None:
        await self._http.aclose()


@pytest.mark.parametrize("flaky", [LostAnswerTransport()], ids=["lost_answer"])
async def test_a_password_change_whose_answer_was_lost_is_not_made_twice(
    time_env: WorkflowEnvironment,
    worker: Worker,
    engine: Engine,
    directory: Directory,
    flaky: LostAnswerTransport,
) -> None:
    before = await directory.user("ana.lima")
    handle = await start(time_env, worker, "ana.lima")
    await wait_for(handle, PasswordResetStatus.AWAITING_CODE)
    assert (await enter(handle, engine, code_sent(engine, handle.id))).verified
    result = await handle.result()
    assert PasswordResetOutcome.RESET == result.outcome
    # The activity failed once (the lost answer) and Temporal retried it...
    history = await handle.fetch_history()
    reset_attempts = [
        event.activity_task_started_event_attributes.attempt
        for event in history.events
        if event.HasField("activity_task_started_event_attributes")
    ]
    assert max(reset_attempts) >= 2
    # ... and the directory took exactly one password change: the one the employee was sent.
    assert 1 == flaky.patches_taken
    after = await directory.user("ana.lima")
    assert before["meta"]["version"] != after["meta"]["version"]
    (delivered,) = outbox(engine, handle.id, "identity_temporary_password")
    sent = PASSWORD_RE.search(delivered.body)
    assert sent is not None
    assert directory.app is not None
    (stored,) = [
        user
        for user in directory.app.storage.resources
        if getattr(user, "user_name", None) == "ana.lima"
    ]
    assert sent.group(1) == stored.password  # type: ignore[attr-defined]
    # Nothing of the write is kept once the reset is recorded.
    with Session(engine) as session:
        assert [] == list(session.exec(select(PendingPasswordWrite)))
    await replays(handle, "lost_password_answer")


@pytest.mark.parametrize(
    ("patch", "path"),
    [
        ("password-reset-policy-file", "policy_file_locked_rejected"),
        ("password-reset-retire-code", "policy_file_locked_rejected"),
        ("password-reset-retire-code", "code_retired_reset"),
        ("password-reset-retire-code", "code_retired_expired"),
        ("password-reset-retire-code", "lost_password_answer"),
    ],
)
def test_cases_of_the_new_patches_have_committed_histories(patch: str, path: str) -> None:
    """`test_replay.py` replays them, next to the cases from before the patches."""
    history = WorkflowHistory.from_json(
        path, (HISTORIES / f"password_reset-{path}.json").read_text()
    )
    markers = [
        event.marker_recorded_event_attributes.SerializeToString()
        for event in history.events
        if event.marker_recorded_event_attributes.marker_name == "core_patch"
    ]
    assert any(patch.encode() in marker for marker in markers)


class DownTransport(httpx.AsyncBaseTransport):
    """A directory that answers every request with 503."""

    def __init__(self) -> None:
        self.calls = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        return httpx.Response(503, json={"detail": "down"})


@pytest.mark.parametrize("flaky", [DownTransport()], ids=["down"])
async def test_a_directory_down_past_the_retries_hands_the_case_to_a_person(
    time_env: WorkflowEnvironment,
    worker: Worker,
    engine: Engine,
    directory: Directory,
    flaky: DownTransport,
) -> None:
    handle = await start(time_env, worker, "ana.lima")
    result = await handle.result()  # the retries' backoff passes on the test server's clock
    assert (PasswordResetOutcome.DIRECTORY_UNAVAILABLE, False) == (
        result.outcome,
        result.automated,
    )
    assert "lookup_employee (ScimUnavailable)" in result.reason
    assert 10 == flaky.calls  # DIRECTORY_RETRY's attempts, no more
    assert "directory_failed" in audit_actions(engine, handle.id)
    await replays(handle, "directory_unavailable")


# --- wrong codes: locked, handed to a person --------------------------------------------------


async def test_three_wrong_codes_lock_the_case_and_a_person_refuses(
    time_env: WorkflowEnvironment, worker: Worker, engine: Engine, directory: Directory
) -> None:
    handle = await start(time_env, worker, "ben.okafor")
    await wait_for(handle, PasswordResetStatus.AWAITING_CODE)
    code = code_sent(engine, handle.id)

    first = await enter(handle, engine, wrong(code))
    assert (False, "wrong_code", 1, 2) == (
        first.verified,
        first.reason,
        first.attempts,
        first.attempts_left,
    )
    await enter(handle, engine, wrong(wrong(code)))
    third = await enter(handle, engine, "000000" if code != "000000" else "111111")
    assert (False, 3, 0, PasswordResetStatus.LOCKED) == (
        third.verified,
        third.attempts,
        third.attempts_left,
        third.status,
    )
    # Locked: even the right code is refused now, before it reaches history.
    with pytest.raises(WorkflowUpdateFailedError):
        await enter(handle, engine, code)

    state = await wait_for(handle, PasswordResetStatus.AWAITING_APPROVAL)
    assert state.approval is not None
    assert ("review-1", ["it_service_desk"]) == (
        state.approval.request_id,
        state.approval.awaiting_roles,
    )
    await handle.execute_update(
        "decide",
        signed(handle.id, decision("review-1", "reject", DESK, reason="caller failed callback")),
    )
    result = await handle.result()
    assert (PasswordResetOutcome.LOCKED, False, 3) == (
        result.outcome,
        result.automated,
        result.attempts,
    )
    assert "caller failed callback" == result.reason
    assert 0 == directory.writes
    assert [] == outbox(engine, handle.id, "identity_temporary_password")
    actions = audit_actions(engine, handle.id)
    assert 3 == actions.count("verification_code_checked")
    assert "verification_locked" in actions
    assert "approval_decided" in actions
    await no_secret_anywhere(handle, engine, [code])
    await replays(handle, "locked_rejected")


async def test_a_locked_case_a_person_verified_is_reset(
    time_env: WorkflowEnvironment, worker: Worker, engine: Engine, directory: Directory
) -> None:
    handle = await start(time_env, worker, "lee.wong")
    await wait_for(handle, PasswordResetStatus.AWAITING_CODE)
    code = code_sent(engine, handle.id)
    for candidate in (wrong(code), wrong(wrong(code)), wrong(wrong(wrong(code)))):
        await enter(handle, engine, candidate)
    await wait_for(handle, PasswordResetStatus.AWAITING_APPROVAL)
    decided = await handle.execute_update(
        "decide",
        signed(handle.id, decision("review-1", "approve", DESK)),
        result_type=ApprovalDecisionResult,
    )
    assert ("approved", "reset_after_review") == (decided.gate, decided.outcome)
    result = await handle.result()
    assert (PasswordResetOutcome.RESET_AFTER_REVIEW, False) == (result.outcome, result.automated)
    assert 1 == directory.writes
    await replays(handle, "locked_reviewed")


# --- the code's lifetime ----------------------------------------------------------------------


async def test_no_code_within_ten_minutes_expires_the_case(
    time_env: WorkflowEnvironment, worker: Worker, engine: Engine, directory: Directory
) -> None:
    handle = await start(time_env, worker, "omar.haddad")
    state = await wait_for(handle, PasswordResetStatus.AWAITING_CODE)
    code = code_sent(engine, handle.id)
    assert state.code_expires_at is not None
    await enter(handle, engine, wrong(code))  # one wrong code does not lock

    result = await handle.result()  # the test server skips the 10 minutes
    assert (PasswordResetOutcome.CODE_EXPIRED, False, 1) == (
        result.outcome,
        result.verified,
        result.attempts,
    )
    # The case is closed: a late code reaches nothing.
    with pytest.raises((WorkflowUpdateFailedError, RPCError)):
        await enter(handle, engine, code)
    assert 0 == directory.writes
    assert "verification_expired" in audit_actions(engine, handle.id)
    await replays(handle, "code_expired")


# --- privileged accounts: a person approves first ---------------------------------------------


async def test_a_privileged_account_is_reset_only_after_approval(
    time_env: WorkflowEnvironment, worker: Worker, engine: Engine, directory: Directory
) -> None:
    handle = await start(time_env, worker, "carla.diaz")  # finance
    await wait_for(handle, PasswordResetStatus.AWAITING_CODE)
    code = code_sent(engine, handle.id)
    assert (await enter(handle, engine, code)).verified

    state = await wait_for(handle, PasswordResetStatus.AWAITING_APPROVAL)
    assert state.privileged and state.verified
    assert state.approval is not None
    assert ["it_security"] == state.approval.awaiting_roles
    assert 0 == directory.writes  # nothing happens before the approval
    # Four-eyes: whoever asked may not approve.
    requester = {"approver": "portal@example.com", "approver_roles": ["it_security"]}
    with pytest.raises(WorkflowUpdateFailedError):
        await handle.execute_update(
            "decide", signed(handle.id, decision("approval-1", "approve", requester))
        )
    decided = await handle.execute_update(
        "decide",
        signed(handle.id, decision("approval-1", "approve", SECURITY)),
        result_type=ApprovalDecisionResult,
    )
    assert ("approved", "reset_after_approval") == (decided.gate, decided.outcome)
    assert "reset_at" in decided.effects
    result = await handle.result()
    assert (PasswordResetOutcome.RESET_AFTER_APPROVAL, False, True) == (
        result.outcome,
        result.automated,
        result.privileged,
    )
    assert 1 == directory.writes
    await no_secret_anywhere(handle, engine, [code])
    await replays(handle, "privileged_approved")


async def test_a_privileged_reset_a_person_rejects_changes_nothing(
    time_env: WorkflowEnvironment, worker: Worker, engine: Engine, directory: Directory
) -> None:
    handle = await start(time_env, worker, "dev.patel")  # admins
    await wait_for(handle, PasswordResetStatus.AWAITING_CODE)
    assert (await enter(handle, engine, code_sent(engine, handle.id))).verified
    await wait_for(handle, PasswordResetStatus.AWAITING_APPROVAL)
    # A decision without a decision token is refused.
    with pytest.raises(WorkflowUpdateFailedError):
        await handle.execute_update("decide", decision("approval-1", "approve", SECURITY))
    # The account's owner may not approve their own reset, whatever their roles.
    owner = {"approver": "Dev.Patel@example.com", "approver_roles": ["it_security"]}
    with pytest.raises(WorkflowUpdateFailedError) as own:
        await handle.execute_update(
            "decide", signed(handle.id, decision("approval-1", "approve", owner))
        )
    assert "account being reset" in str(own.value.cause)
    await handle.execute_update(
        "decide",
        signed(handle.id, decision("approval-1", "reject", SECURITY, reason="not expected")),
    )
    result = await handle.result()
    assert (PasswordResetOutcome.REJECTED, "not expected") == (result.outcome, result.reason)
    assert 0 == directory.writes
    assert [] == outbox(engine, handle.id, "identity_temporary_password")
    await replays(handle, "privileged_rejected")


async def test_a_privileged_approval_nobody_gives_expires(
    time_env: WorkflowEnvironment, worker: Worker, engine: Engine, directory: Directory
) -> None:
    handle = await start(time_env, worker, "james.park")  # finance
    await wait_for(handle, PasswordResetStatus.AWAITING_CODE)
    assert (await enter(handle, engine, code_sent(engine, handle.id))).verified
    result = await handle.result()  # 24 hours pass: reminder, SLA, deadline
    assert PasswordResetOutcome.APPROVAL_EXPIRED == result.outcome
    assert 0 == directory.writes
    assert "approval_expired" in audit_actions(engine, handle.id)


# --- who cannot be reset ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user_name", "outcome", "path"),
    [
        ("nobody.here", PasswordResetOutcome.UNKNOWN_EMPLOYEE, "unknown_employee"),
        ("tom.berg", PasswordResetOutcome.INACTIVE_EMPLOYEE, "terminated_employee"),
    ],
)
async def test_unknown_and_terminated_employees_get_no_code(
    time_env: WorkflowEnvironment,
    worker: Worker,
    engine: Engine,
    directory: Directory,
    user_name: str,
    outcome: PasswordResetOutcome,
    path: str,
) -> None:
    handle = await start(time_env, worker, user_name)
    result = await handle.result()
    assert (outcome, False, False) == (result.outcome, result.automated, result.verified)
    assert [] == outbox(engine, handle.id, "identity_verification_code")
    assert 0 == directory.writes
    assert ["reset_requested", "reset_refused", "reset_finished"] == audit_actions(
        engine, handle.id
    )
    await replays(handle, path)


async def test_the_code_leaves_the_outbox_once_used_expired_or_locked_out(
    time_env: WorkflowEnvironment, worker: Worker, engine: Engine, directory: Directory
) -> None:
    used = await start(time_env, worker, "ana.lima")
    await wait_for(used, PasswordResetStatus.AWAITING_CODE)
    used_code = code_sent(engine, used.id)
    assert (used_code, "ana.lima@example.com") == code_from_outbox(engine, used.id)  # waiting
    await enter(used, engine, used_code)
    assert PasswordResetOutcome.RESET == (await used.result()).outcome

    expired = await start(time_env, worker, "ben.okafor")
    await wait_for(expired, PasswordResetStatus.AWAITING_CODE)
    expired_code = code_sent(engine, expired.id)
    assert PasswordResetOutcome.CODE_EXPIRED == (await expired.result()).outcome

    locked = await start(time_env, worker, "lee.wong")
    await wait_for(locked, PasswordResetStatus.AWAITING_CODE)
    locked_code = code_sent(engine, locked.id)
    for _ in range(3):
        await enter(locked, engine, wrong(locked_code))
    await wait_for(locked, PasswordResetStatus.AWAITING_APPROVAL)  # with the service desk

    for handle, code, reason in (
        (used, used_code, "used"),
        (expired, expired_code, "expired"),
        (locked, locked_code, "locked"),
    ):
        (message,) = outbox(engine, handle.id, "identity_verification_code")
        assert code not in message.body, reason
        assert f"it has been removed ({reason})" in message.body
        assert code_from_outbox(engine, handle.id) is None
    # The temporary password's email of the reset case is still there to be read.
    assert outbox(engine, used.id, "identity_temporary_password")
    await replays(used, "code_retired_reset")
    await replays(expired, "code_retired_expired")


async def test_the_policy_file_decides_a_new_cases_wrong_codes_and_code_lifetime(
    time_env: WorkflowEnvironment, worker: Worker, engine: Engine, tmp_path: Path
) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    shipped = (DEFAULT_POLICIES_DIR / "password_reset.yaml").read_text()
    edited = shipped.replace("max_attempts: 3", "max_attempts: 1")
    edited = edited.replace("code_ttl: PT10M", "code_ttl: PT2M")
    assert edited.count("max_attempts: 1") == 1 and "code_ttl: PT2M" in edited
    (policies / "password_reset.yaml").write_text(edited)
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        task_queue=worker.task_queue,
        policies_dir=policies,
        data_dir=tmp_path,
    )
    podium = PodiumClient(time_env.client, settings)
    try:
        ref = await podium.start(
            "password_reset", {"user_name": "ana.lima"}, requested_by="portal@example.com"
        )
    finally:
        podium.close()
    handle: Handle = time_env.client.get_workflow_handle(
        ref.case_id, result_type=PasswordResetResult
    )
    _STARTED.append(handle)
    await wait_for(handle, PasswordResetStatus.AWAITING_CODE)

    # The case carries the edited file, by its digest.
    (started,) = [event async for event in handle.fetch_history_events(page_size=1)][:1]
    payloads = started.workflow_execution_started_event_attributes.input.payloads
    (case_input,) = await time_env.client.data_converter.decode(
        list(payloads), [PasswordResetInput]
    )
    digest = policy_digest(edited.encode())
    assert digest != policy_digest(shipped.encode())
    assert (1, timedelta(minutes=2), digest) == (
        case_input.policy.max_attempts,
        case_input.policy.code_ttl,
        case_input.policy.digest,
    )
    described = await handle.describe()
    assert digest == described.typed_search_attributes.get(sa.POLICY_VERSION)

    # One wrong code locks it (the shipped file allows three).
    locked = await enter(handle, engine, wrong(code_sent(engine, handle.id)))
    assert (False, 1, 0, PasswordResetStatus.LOCKED) == (
        locked.verified,
        locked.attempts,
        locked.attempts_left,
        locked.status,
    )
    await wait_for(handle, PasswordResetStatus.AWAITING_APPROVAL)  # the service desk's review
    assert "verification_locked" in audit_actions(engine, handle.id)
    await handle.execute_update(
        "decide",
        signed(handle.id, decision("review-1", "reject", DESK, reason="caller failed callback")),
    )
    assert PasswordResetOutcome.LOCKED == (await handle.result()).outcome
    await replays(handle, "policy_file_locked_rejected")
    requested = next(
        event for event in _audit_events(engine, handle.id) if event.action == "reset_requested"
    )
    assert digest == requested.detail["policy_version"]


def _audit_events(engine: Engine, case_id: str) -> list[AuditEvent]:
    with Session(engine) as session:
        return list(session.exec(select(AuditEvent).where(AuditEvent.case_id == case_id)))
