"""The SCIM directory and the identity activities.

Error mapping on `httpx.MockTransport` (what Temporal retries and what it must not); lookups,
writes and the secrets' lifecycle against the embedded SCIM service served on loopback
(`starter/scim_server.py`), through `ActivityEnvironment`.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.identity import (
    IdentityActivities,
    PasswordResetRecord,
    ScimDirectory,
    UnknownVerification,
    VerificationAttempt,
    VerificationCode,
    mask_email,
    record_code_attempt,
)
from activities.types import (
    CheckVerificationCodeInput,
    LookupEmployeeInput,
    ResetPasswordInput,
    SendVerificationCodeInput,
)
from core.db import Message, create_tables, make_engine
from starter.scim_server import DEMO_EMPLOYEES, serving

pytestmark = pytest.mark.timeout(60)

TOKEN = "test-scim-token"
CODE_RE = re.compile(r"code is (\d{6})\.")


# --- error mapping --------------------------------------------------------------------------


def _directory(handler: httpx.MockTransport) -> ScimDirectory:
    return ScimDirectory("http://scim.test/v2", TOKEN, transport=handler)


async def test_429_and_5xx_are_retryable_after_retry_after() -> None:
    answers = iter(
        [
            httpx.Response(429, headers={"Retry-After": "7"}, json={"detail": "slow down"}),
            httpx.Response(503, json={"detail": "maintenance"}),
        ]
    )
    directory = _directory(httpx.MockTransport(lambda request: next(answers)))
    with pytest.raises(ApplicationError) as limited:
        await directory.find_user("ana.lima")
    assert (False, "ScimUnavailable", timedelta(seconds=7)) == (
        limited.value.non_retryable,
        limited.value.type,
        limited.value.next_retry_delay,
    )
    assert "slow down" in str(limited.value)
    with pytest.raises(ApplicationError) as down:
        await directory.set_password("u1", "x" * 16)
    assert (False, None) == (down.value.non_retryable, down.value.next_retry_delay)
    assert 0 == directory.writes


async def test_other_4xx_are_not_retried_and_name_the_directory_s_reason() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert f"Bearer {TOKEN}" == request.headers["Authorization"]
        return httpx.Response(400, json={"scimType": "invalidValue", "detail": "bad: secret-1"})

    directory = _directory(httpx.MockTransport(handler))
    with pytest.raises(ApplicationError) as refused:
        await directory.find_user("ana.lima")
    assert (True, "ScimRejected") == (refused.value.non_retryable, refused.value.type)
    assert "bad: secret-1" in str(refused.value)
    # A password change's error never quotes the directory: its detail may echo the password.
    with pytest.raises(ApplicationError) as password:
        await directory.set_password("u1", "secret-1")
    assert (True, "ScimRejected") == (password.value.non_retryable, password.value.type)
    assert "secret-1" not in str(password.value)


async def test_an_unreachable_directory_is_retryable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(ApplicationError) as unreachable:
        await _directory(httpx.MockTransport(handler)).find_user("ana.lima")
    assert (False, "ScimUnavailable") == (unreachable.value.non_retryable, unreachable.value.type)


async def test_a_filter_value_is_quoted() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.params["filter"])
        return httpx.Response(200, json={"totalResults": 0, "Resources": []})

    assert await _directory(httpx.MockTransport(handler)).find_user('x" or userName pr "') is None
    assert ['userName eq "x\\" or userName pr \\""'] == seen


def test_mask_email() -> None:
    assert "a***@example.com" == mask_email("ana.lima@example.com")
    assert mask_email("not-an-address") is None


# --- against the embedded directory ---------------------------------------------------------


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    engine = make_engine(f"sqlite:///{tmp_path / 'podium.db'}")
    create_tables(engine)
    return engine


@pytest.fixture
async def identity(engine: Engine) -> AsyncIterator[IdentityActivities]:
    async with serving(TOKEN) as (url, _):
        directory = ScimDirectory(url, TOKEN)
        yield IdentityActivities(directory, engine)
        await directory.aclose()


async def test_the_directory_refuses_a_wrong_token(identity: IdentityActivities) -> None:
    async with serving(TOKEN) as (url, _):
        with pytest.raises(ApplicationError) as refused:
            await ScimDirectory(url, "wrong").find_user("ana.lima")
    assert (True, "ScimRejected") == (refused.value.non_retryable, refused.value.type)
    assert "401" in str(refused.value)


async def test_lookup_reads_role_department_manager_status_and_groups(
    identity: IdentityActivities,
) -> None:
    env = ActivityEnvironment()
    found = await env.run(identity.lookup_employee, LookupEmployeeInput(user_name="carla.diaz"))
    employee = found.employee
    assert employee is not None
    assert (
        "Financial Analyst",
        "Finance",
        "james.park",
        True,
        ["employees", "finance"],
        "c***@example.com",
    ) == (
        employee.title,
        employee.department,
        employee.manager_user_name,
        employee.active,
        employee.groups,
        employee.email_masked,
    )
    left = await env.run(identity.lookup_employee, LookupEmployeeInput(user_name="tom.berg"))
    assert left.employee is not None and not left.employee.active
    missing = await env.run(identity.lookup_employee, LookupEmployeeInput(user_name="nobody"))
    assert missing.employee is None
    assert 0 == identity.directory.writes
    assert len(DEMO_EMPLOYEES) == 11


async def test_group_membership_is_checked_before_it_is_added(
    identity: IdentityActivities,
) -> None:
    directory = identity.directory
    user = await directory.find_user("ana.lima")
    assert user is not None
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        base = str(directory._client.base_url)
        groups = await http.get(f"{base}/Groups", params={"filter": 'displayName eq "sales"'})
        group_id = groups.json()["Resources"][0]["id"]
    assert await directory.add_member(group_id, user["id"])
    assert not await directory.add_member(group_id, user["id"])  # a retry adds nothing
    assert 1 == directory.writes
    assert "sales" in await directory.groups_of(user["id"])


async def test_a_code_is_sent_once_and_checked_once(
    identity: IdentityActivities, engine: Engine
) -> None:
    env = ActivityEnvironment()
    user = await identity.directory.find_user("ana.lima")
    assert user is not None
    sent = SendVerificationCodeInput(
        idempotency_key="case-1:code:1",
        case_id="case-1",
        user_id=user["id"],
        expires_at=datetime.now(UTC) + timedelta(minutes=10),
    )
    first = await env.run(identity.send_verification_code, sent)
    again = await env.run(identity.send_verification_code, sent)
    assert (True, False, first.message_id) == (first.created, again.created, again.message_id)
    with Session(engine) as session:
        (message,) = session.exec(select(Message).where(Message.case_id == "case-1")).all()
        stored = session.exec(select(VerificationCode)).one()
    assert "ana.lima@example.com" == message.recipient
    found = CODE_RE.search(message.body)
    assert found is not None
    code = found.group(1)
    # Only a salted HMAC is stored.
    assert code not in stored.digest and code not in stored.salt

    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    attempt = record_code_attempt(engine, "case-1", wrong)
    check = CheckVerificationCodeInput(case_id="case-1", attempt_id=attempt)
    assert "wrong_code" == env.run(identity.check_verification_code, check).reason
    right = record_code_attempt(engine, "case-1", code)
    ok = CheckVerificationCodeInput(case_id="case-1", attempt_id=right)
    assert env.run(identity.check_verification_code, ok).valid
    assert env.run(identity.check_verification_code, ok).valid  # a retry: the same answer
    reused = CheckVerificationCodeInput(
        case_id="case-1", attempt_id=record_code_attempt(engine, "case-1", code)
    )
    assert "used" == env.run(identity.check_verification_code, reused).reason
    other_case = CheckVerificationCodeInput(case_id="case-2", attempt_id=right)
    assert "unknown_attempt" == env.run(identity.check_verification_code, other_case).reason
    with Session(engine) as session:
        digests = [a.digest for a in session.exec(select(VerificationAttempt))]
    assert code not in digests
    with pytest.raises(UnknownVerification):
        record_code_attempt(engine, "no-such-case", code)


async def test_an_expired_code_does_not_verify(
    identity: IdentityActivities, engine: Engine
) -> None:
    env = ActivityEnvironment()
    user = await identity.directory.find_user("lee.wong")
    assert user is not None
    await env.run(
        identity.send_verification_code,
        SendVerificationCodeInput(
            idempotency_key="case-3:code:1",
            case_id="case-3",
            user_id=user["id"],
            expires_at=datetime.now(UTC) - timedelta(seconds=1),
        ),
    )
    with Session(engine) as session:
        body = session.exec(select(Message).where(Message.case_id == "case-3")).one().body
    found = CODE_RE.search(body)
    assert found is not None
    attempt = record_code_attempt(engine, "case-3", found.group(1))
    check = CheckVerificationCodeInput(case_id="case-3", attempt_id=attempt)
    assert "expired" == env.run(identity.check_verification_code, check).reason


async def test_a_reset_writes_the_directory_once_under_retries(
    identity: IdentityActivities, engine: Engine
) -> None:
    env = ActivityEnvironment()
    user = await identity.directory.find_user("ben.okafor")
    assert user is not None
    reset = ResetPasswordInput(
        idempotency_key="case-4:reset:1", case_id="case-4", user_id=user["id"]
    )
    first = await env.run(identity.reset_password, reset)
    again = await env.run(identity.reset_password, reset)
    assert (True, False, "b***@example.com") == (first.created, again.created, first.delivered_to)
    assert first.scim_version == again.scim_version is not None
    assert 1 == identity.directory.writes
    with Session(engine) as session:
        (message,) = session.exec(select(Message).where(Message.case_id == "case-4")).all()
        record = session.exec(select(PasswordResetRecord)).one()
    assert "ben.okafor@example.com" == message.recipient
    password = re.search(r"temporary password is (\S+) ;", message.body)
    assert password is not None and 16 == len(password.group(1))
    assert password.group(1) not in record.model_dump_json()


async def test_a_reset_of_an_unknown_user_is_not_retried(identity: IdentityActivities) -> None:
    env = ActivityEnvironment()
    with pytest.raises(ApplicationError) as failed:
        await env.run(
            identity.reset_password,
            ResetPasswordInput(idempotency_key="k", case_id="case-5", user_id="no-such-user"),
        )
    assert (True, "NoAddressOnFile") == (failed.value.non_retryable, failed.value.type)
    assert 0 == identity.directory.writes
