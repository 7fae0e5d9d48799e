"""The intake end to end: `POST /messages` through the HTTP API on the real Temporal dev server,
with the production worker wiring (`build_activities`), the systems of record seeded with the
demo customers and the embedded SCIM directory for employees.

Each route opens its process's case; a second message of a conversation joins its case
(recorded, audited `message_joined`, signalled `customer_message` to the running case, whose
state then names it); bad messages get problem answers; and two messages of one conversation
sent at once open one case, over many races.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import Session, select

from activities.intelligence import EmbeddedModels
from core.db import AuditEvent
from starter.intake.store import IntakeMessage
from starter.scim_server import serving
from tests.approvals_stack import ApprovalsStack, approvals_stack, eventually
from tests.auth_helpers import AsCaller

pytestmark = pytest.mark.timeout(300)

TOKEN = "intake-scim-token"
CHANNEL_BOT = AsCaller("channels@example.com", roles=("service",))
RACES = 20

ROUTES = [
    ("refund", "C-1001", "My blender from order O-5004 arrived broken, I want my money back."),
    ("order_inquiry", "C-1003", "Where is my order O-5008? It was due days ago."),
    ("password_reset", "ana.lima", "I forgot my password and I'm locked out of my account"),
    ("access_request", "ana.lima", "I need read access to github for code reviews"),
    ("knowledge_answer", "C-1001", "How long do I have to return an item?"),
    ("handoff", "ada@example.com", "I want to speak to a manager about my sofa."),
]


@pytest.fixture(scope="module")
def models() -> EmbeddedModels:
    return EmbeddedModels.load()


@pytest.fixture
async def stack(
    dev_env: Any, tmp_path: Path, models: EmbeddedModels, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[ApprovalsStack]:
    async with serving(TOKEN) as (url, _):
        monkeypatch.setenv("PODIUM_SCIM_URL", url)
        monkeypatch.setenv("PODIUM_SCIM_TOKEN", TOKEN)
        async with approvals_stack(dev_env, tmp_path, models) as running:
            yield running


def _message(sender: str, text: str, conversation: str | None = None) -> dict[str, Any]:
    return {
        "channel": "chat",
        "sender": sender,
        "conversation_id": conversation or f"conv-{uuid.uuid4().hex}",
        "text": text,
    }


async def test_every_route_opens_its_case_and_a_reply_joins_it(stack: ApprovalsStack) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60, auth=CHANNEL_BOT) as http:
        acks: dict[str, dict[str, Any]] = {}
        for process, sender, text in ROUTES:
            sent = await http.post("/messages", json=_message(sender, text))
            assert 201 == sent.status_code, sent.text
            ack = sent.json()
            stack.started.append(ack["case_id"])
            assert (process, False) == (ack["process"], ack["joined"]), ack
            assert ack["intent"] and 0 <= ack["confidence"] <= 1
            acks[process] = ack
        for process, ack in acks.items():
            case_id = ack["case_id"]
            case = await eventually(
                lambda case_id=case_id: http.get(f"/cases/{case_id}"),
                lambda response: response.status_code == 200,
            )
            assert process == case.json()["process"], case.text
        # The customer writes again in an order inquiry's conversation: the message joins its case
        conversation = _message("C-1002", "Where is my parcel O-5005? Nothing came.")
        first = await http.post("/messages", json=conversation)
        again = await http.post("/messages", json={**conversation, "text": "Any news?"})
        stack.started.append(first.json()["case_id"])
        assert (201, 200) == (first.status_code, again.status_code), again.text
        assert first.json()["case_id"] == again.json()["case_id"]
        assert again.json()["joined"] is True
        # ... and reaches the running case (signal `customer_message`): its state names it.
        joined_id = again.json()["message_id"]
        case = await eventually(
            lambda: http.get(f"/cases/{again.json()['case_id']}"),
            lambda response: joined_id in response.text,
        )
        assert "order_inquiry" == case.json()["process"], case.text
        state = case.json()["state"]
        assert [joined_id] == [joined["message_id"] for joined in state["customer_messages"]]
        assert "Any news" not in case.text  # the case keeps its reference, not its text
        # A repeated message id answers the first acknowledgement.
        once = _message("C-1004", "get me a real person now") | {"message_id": "ch-1-42"}
        repeated = [(await http.post("/messages", json=once)).json() for _ in range(2)]
        stack.started.append(repeated[0]["case_id"])
        assert repeated[0] == repeated[1]
    with Session(stack.engine) as session:
        row = session.exec(select(IntakeMessage).where(IntakeMessage.message_id == joined_id)).one()
        assert (first.json()["case_id"], True) == (row.case_id, row.joined)
        audit = session.exec(
            select(AuditEvent).where(
                AuditEvent.idempotency_key == f"intake:{joined_id}:message_joined"
            )
        ).one()
        assert "Any news" not in str(audit.detail) and audit.detail["text_chars"] == 9
        assert audit.detail["signalled"] is True


async def test_bad_messages_get_problem_answers(stack: ApprovalsStack) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60, auth=CHANNEL_BOT) as http:
        good = _message("C-1001", "Where is my order O-5008?")
        for body, field in [
            ({**good, "channel": "fax"}, "channel"),
            ({**good, "text": "   "}, "text"),
            ({**good, "sender": "nobody@example.org"}, "sender"),
            ({**good, "sender": "no.such.person"}, "sender"),
        ]:
            refused = await http.post("/messages", json=body)
            assert 422 == refused.status_code, refused.text
            assert refused.headers["content-type"].startswith("application/problem+json")
            fields = [error["field"] for error in refused.json().get("errors", [])]
            assert field in fields or refused.json().get("field") == field, refused.text
        schema = (await http.get("/openapi.json")).json()
        declared = schema["paths"]["/messages"]["post"]["responses"]
        assert {"200", "201", "422"} <= set(declared)
        assert "application/problem+json" in declared["422"]["content"]


async def test_two_messages_of_one_conversation_sent_at_once_open_one_case(
    stack: ApprovalsStack,
) -> None:
    joined_correctly = 0
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60, auth=CHANNEL_BOT) as http:
        for _ in range(RACES):
            body = _message("C-1002", "get me a real person now")
            answers = await asyncio.gather(
                http.post("/messages", json=body),
                http.post("/messages", json={**body, "text": "hello? anyone there?"}),
            )
            acks = [answer.json() for answer in answers]
            stack.started.extend({ack["case_id"] for ack in acks if "case_id" in ack})
            statuses = sorted(answer.status_code for answer in answers)
            if (
                [200, 201] == statuses
                and acks[0]["case_id"] == acks[1]["case_id"]
                and sorted(ack["joined"] for ack in acks) == [False, True]
            ):
                joined_correctly += 1
            else:
                print("race", statuses, acks)
    print(f"races joined correctly: {joined_correctly}/{RACES}")
    assert RACES == joined_correctly
