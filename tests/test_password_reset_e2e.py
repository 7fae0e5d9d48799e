"""Password reset end to end: the HTTP API, the real Temporal dev server, the production worker
wiring (`build_activities`, which reaches the directory through `PODIUM_SCIM_URL` and
`PODIUM_SCIM_TOKEN`) and the embedded SCIM service on a loopback port.

Everything goes through the API: opening the case, the employee entering the code from the
email (signed in as themselves), reading the case, the approvals inbox and the approval of a
privileged reset.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import Session, select

from activities.intelligence import EmbeddedModels
from core.db import AuditEvent, Message
from starter.scim_server import serving
from tests.approvals_stack import ApprovalsStack, approvals_stack, eventually
from tests.auth_helpers import AsCaller

pytestmark = pytest.mark.timeout(180)

TOKEN = "e2e-scim-token"
PORTAL = AsCaller("portal@example.com", roles=("service",))
SECURITY = AsCaller("grace.kim@example.com", roles=("it_security",))
# A role only the password reset's policy names (its review of a locked case).
DESK = AsCaller("desk.agent@example.com", roles=("it_service_desk",))


@pytest.fixture(scope="module")
def models() -> EmbeddedModels:
    return EmbeddedModels.load()


@pytest.fixture
async def scim(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    async with serving(TOKEN) as (url, _):
        monkeypatch.setenv("PODIUM_SCIM_URL", url)
        monkeypatch.setenv("PODIUM_SCIM_TOKEN", TOKEN)
        # Nothing configures the IT approval roles: the API learns them from the process's policy.
        monkeypatch.delenv("PODIUM_APPROVAL_BACKUP_ROLES", raising=False)
        yield url


@pytest.fixture
async def stack(
    dev_env: Any, tmp_path: Path, models: EmbeddedModels, scim: str
) -> AsyncIterator[ApprovalsStack]:
    async with approvals_stack(dev_env, tmp_path, models) as running:
        yield running


async def _user(scim: str, user_name: str) -> dict[str, Any]:
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        found = await http.get(f"{scim}/Users", params={"filter": f'userName eq "{user_name}"'})
        return dict(found.json()["Resources"][0])


async def _open(http: httpx.AsyncClient, stack: ApprovalsStack, user_name: str) -> str:
    started = await http.post("/cases/password_reset", json={"user_name": user_name})
    assert 201 == started.status_code, started.text
    case_id = str(started.json()["case_id"])
    stack.started.append(case_id)
    case = await eventually(
        lambda: http.get(f"/cases/{case_id}"),
        lambda response: response.json()["state"]["status"] == "awaiting_code",
    )
    assert "awaiting_code" == case.json()["state"]["status"], case.text
    return case_id


def _code_sent(stack: ApprovalsStack, case_id: str) -> str:
    """The code in the email the outbox holds (the employee's mailbox)."""
    with Session(stack.engine) as session:
        message = session.exec(
            select(Message).where(
                Message.case_id == case_id, Message.kind == "identity_verification_code"
            )
        ).one()
    found = re.search(r"code is (\d{6})\.", message.body)
    assert found is not None
    return found.group(1)


def _wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


async def _post_code(
    stack: ApprovalsStack, case_id: str, code: str, caller: AsCaller
) -> httpx.Response:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60, auth=caller) as http:
        return await http.post(f"/cases/{case_id}/verification-code", json={"code": code})


async def _enter_code(stack: ApprovalsStack, case_id: str, user_name: str) -> dict[str, Any]:
    """The employee types the code from the email, signed in as themselves."""
    employee = AsCaller(f"{user_name}@example.com", roles=())
    entered = await _post_code(stack, case_id, _code_sent(stack, case_id), employee)
    assert 200 == entered.status_code, entered.text
    return dict(entered.json())


async def test_a_reset_runs_through_the_api_against_the_scim_directory(
    stack: ApprovalsStack, scim: str
) -> None:
    before = await _user(scim, "ana.lima")
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60, auth=PORTAL) as http:
        listed = (await http.get("/processes")).json()
        schema = next(p for p in listed if p["name"] == "password_reset")["input_schema"]
        assert ["user_name"] == schema["required"]
        # An address (or anything else) in the request is refused: the code goes to the one
        # on file.
        refused = await http.post(
            "/cases/password_reset", json={"user_name": "ana.lima", "email": "x@evil.test"}
        )
        assert 422 == refused.status_code

        case_id = await _open(http, stack, "ana.lima")
        assert (await _enter_code(stack, case_id, "ana.lima"))["verified"]
        case = await eventually(
            lambda: http.get(f"/cases/{case_id}"),
            lambda response: response.json()["workflow_status"] == "completed",
        )
        view = case.json()
        assert ("password_reset", "reset") == (view["process"], view["outcome"])
        assert view["state"]["verified"] and view["state"]["reset_at"]
    after = await _user(scim, "ana.lima")
    assert before["meta"]["version"] != after["meta"]["version"]


async def test_a_privileged_reset_is_approved_in_the_inbox(
    stack: ApprovalsStack, scim: str
) -> None:
    before = await _user(scim, "carla.diaz")
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60, auth=PORTAL) as http:
        case_id = await _open(http, stack, "carla.diaz")
        assert (await _enter_code(stack, case_id, "carla.diaz"))["verified"]
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60, auth=SECURITY) as http:
        inbox = await eventually(
            lambda: http.get(
                "/approvals", params={"role": "it_security", "process": "password_reset"}
            ),
            lambda response: case_id in [item["case_id"] for item in response.json()["items"]],
        )
        assert case_id in [item["case_id"] for item in inbox.json()["items"]], inbox.text
        card = (await http.get(f"/approvals/{case_id}")).json()
        facts = {fact["label"]: fact["value"] for fact in card["facts"]}
        assert ("yes", "Finance", "james.park") == (
            facts["Privileged"],
            facts["Department"],
            facts["Manager"],
        )
        assert (await _user(scim, "carla.diaz"))["meta"]["version"] == before["meta"]["version"]
        decided = await http.post(f"/cases/{case_id}/approve", json={"decision_id": "d-1"})
        assert 200 == decided.status_code, decided.text
        assert ("approved", "reset_after_approval") == (
            decided.json()["gate"],
            decided.json()["outcome"],
        )
    after = await _user(scim, "carla.diaz")
    assert before["meta"]["version"] != after["meta"]["version"]


async def test_only_the_employee_enters_the_code_and_it_stays_out_of_history(
    stack: ApprovalsStack,
) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60, auth=PORTAL) as http:
        case_id = await _open(http, stack, "ana.lima")
    code = _code_sent(stack, case_id)
    employee = AsCaller("ana.lima@example.com", roles=())

    # Nobody but the employee: not a colleague, not the service that opened the case, not an
    # admin, not someone whose address merely starts like the employee's.
    for other in (
        AsCaller("ben.okafor@example.com", roles=()),
        PORTAL,
        AsCaller("root@example.com", roles=("admin",)),
        AsCaller("ana.lima@elsewhere.test", roles=()),
    ):
        refused = await _post_code(stack, case_id, code, other)
        assert (403, "urn:podium:problem:not-the-employee") == (
            refused.status_code,
            refused.json()["type"],
        ), refused.text
        assert "application/problem+json" == refused.headers["content-type"]

    # A malformed code is a 422 that does not quote it.
    malformed = await _post_code(stack, case_id, "12ab56", employee)
    assert 422 == malformed.status_code
    assert "12ab56" not in malformed.text

    wrong = await _post_code(stack, case_id, _wrong(code), employee)
    assert 200 == wrong.status_code, wrong.text
    assert ("wrong_code", False, 1, 2) == (
        wrong.json()["outcome"],
        wrong.json()["verified"],
        wrong.json()["attempts"],
        wrong.json()["attempts_left"],
    )
    # The user name alone is the employee too.
    right = await _post_code(stack, case_id, code, AsCaller("ana.lima", roles=()))
    assert ("verified", True) == (right.json()["outcome"], right.json()["verified"]), right.text

    again = await _post_code(stack, case_id, code, employee)
    assert (409, "urn:podium:problem:code-not-awaited") == (
        again.status_code,
        again.json()["type"],
    ), again.text
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60, auth=PORTAL) as http:
        done = await eventually(
            lambda: http.get(f"/cases/{case_id}"),
            lambda response: response.json()["workflow_status"] == "completed",
        )
    assert "reset" == done.json()["outcome"], done.text

    # Neither the code nor a wrong one is in the case's history or its audit trail.
    history = await stack.client.get_workflow_handle(case_id).fetch_history()
    text = history.to_json()
    for entered in (code, _wrong(code)):
        assert f'"{entered}"' not in text and f"code is {entered}" not in text
    with Session(stack.engine) as session:
        trail = session.exec(select(AuditEvent).where(AuditEvent.case_id == case_id)).all()
    checked = [event for event in trail if event.action == "verification_code_checked"]
    assert ["wrong_code", "matched"] == [event.detail["result"] for event in checked]
    assert all(code not in str(event.detail) for event in trail)


async def test_wrong_codes_lock_the_case_through_the_api(stack: ApprovalsStack) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60, auth=PORTAL) as http:
        case_id = await _open(http, stack, "ana.lima")
    employee = AsCaller("ana.lima", roles=())
    code = _code_sent(stack, case_id)
    answers = [(await _post_code(stack, case_id, _wrong(code), employee)).json() for _ in range(3)]
    assert [("wrong_code", 2), ("wrong_code", 1), ("locked", 0)] == [
        (answer["outcome"], answer["attempts_left"]) for answer in answers
    ]
    locked = await _post_code(stack, case_id, code, employee)
    assert (409, "urn:podium:problem:verification-locked") == (
        locked.status_code,
        locked.json()["type"],
    ), locked.text


async def test_the_service_desk_role_only_the_policy_names_decides_a_locked_case(
    stack: ApprovalsStack, scim: str
) -> None:
    before = await _user(scim, "ana.lima")
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60, auth=PORTAL) as http:
        case_id = await _open(http, stack, "ana.lima")
    wrong = _wrong(_code_sent(stack, case_id))
    for _ in range(3):
        await _post_code(stack, case_id, wrong, AsCaller("ana.lima", roles=()))
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60, auth=DESK) as http:
        # Its own inbox, with no role named: the credential's approval role.
        inbox = await eventually(
            lambda: http.get("/approvals", params={"process": "password_reset"}),
            lambda response: case_id in [item["case_id"] for item in response.json()["items"]],
        )
        assert "it_service_desk" == inbox.json()["role"], inbox.text
        assert case_id in [item["case_id"] for item in inbox.json()["items"]], inbox.text
        card = await http.get(f"/approvals/{case_id}")
        assert 200 == card.status_code, card.text
        assert ["it_service_desk"] == card.json()["waiting_for"]
        decided = await http.post(
            f"/cases/{case_id}/approve", json={"comment": "called back on the desk phone"}
        )
        assert 200 == decided.status_code, decided.text
        assert "reset_after_review" == decided.json()["outcome"]
    after = await _user(scim, "ana.lima")
    assert before["meta"]["version"] != after["meta"]["version"]
