"""The agent-assist process through the platform, like any process of the registry: opened with
`POST /cases/agent_assist`, its risky tool call listed in the approvals inbox, opened as an
approval card and decided through the API; the credit is issued once, as the approver.

Real Temporal dev server, worker, HTTP API and systems of record; the chat model is a scripted
OpenAI-compatible server on loopback (`tests/fake_openai.py`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlmodel import Session, select

from activities.intelligence import EmbeddedModels
from activities.intelligence.config import DEFAULT_MODELS_FILE
from activities.intelligence.gateway import ModelGateway
from activities.intelligence.ledger import ModelLedger
from core.db import Credit
from tests.approvals_stack import ApprovalsStack, approvals_stack, eventually
from tests.auth_helpers import AsCaller
from tests.fake_openai import FakeOpenAI, chat_completion, tool_calls
from tests.helpers import seeded_engine

pytestmark = pytest.mark.timeout(180)

KEY_ENV = "PODIUM_TEST_AGENT_API_KEY"


@pytest.fixture(scope="module")
def models() -> EmbeddedModels:
    return EmbeddedModels.load()


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAI]:
    monkeypatch.setenv(KEY_ENV, "sk-test-agent-api")
    with FakeOpenAI(max_lifetime=150) as server:
        yield server


@pytest.fixture
async def stack(
    dev_env: Any, tmp_path: Path, models: EmbeddedModels, fake: FakeOpenAI
) -> AsyncIterator[ApprovalsStack]:
    document = yaml.safe_load(DEFAULT_MODELS_FILE.read_text())
    document["prompts_dir"] = str(DEFAULT_MODELS_FILE.parent / "prompts")
    document["models"]["chat"] = {
        "kind": "openai_compatible",
        "base_url": fake.base_url,
        "model": "chat-model",
        "api_key_env": KEY_ENV,
        "timeout_seconds": 5,
    }
    document["tasks"]["agent"] = {"model": "chat"}
    (tmp_path / "models.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    # The stack seeds its own database in tmp_path; the gateway's ledger writes there too.
    engine = seeded_engine(tmp_path / "ledger")
    gateway = ModelGateway.from_file(tmp_path / "models.yaml", models, ledger=ModelLedger(engine))
    try:
        async with approvals_stack(dev_env, tmp_path, models, gateway=gateway) as running:
            yield running
    finally:
        gateway.close()
        engine.dispose()


async def test_agent_assist_opens_through_the_api_and_its_tool_call_is_decided_in_the_inbox(
    stack: ApprovalsStack, fake: FakeOpenAI
) -> None:
    fake.enqueue(
        tool_calls(
            (
                "issue_goodwill_credit",
                {"amount_cents": 1_500, "reason": "late delivery", "order_id": "O-5003"},
            )
        ),
        chat_completion("I have credited $15.00 to your account."),
    )
    desk = AsCaller("desk@example.com", roles=("service",))
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60, auth=desk) as http:
        started = await http.post(
            "/cases/agent_assist",
            json={"customer_id": "C-1002", "message": "Where is my order O-5003? It is late."},
        )
        assert 201 == started.status_code, started.text
        case_id = started.json()["case_id"]
        stack.started.append(case_id)
        assert case_id.startswith("agent_assist-")

    lead = AsCaller("lead@example.com", roles=("team_lead",))
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60, auth=lead) as http:
        inbox = await eventually(
            lambda: http.get("/approvals", params={"role": "team_lead"}),
            lambda response: case_id in [i["case_id"] for i in response.json()["items"]],
            timeout=60,
        )
        item = next(i for i in inbox.json()["items"] if i["case_id"] == case_id)
        assert "agent_assist" == item["process"]

        card = (await http.get(f"/approvals/{case_id}")).json()
        assert ("agent_assist", True, 1_500) == (
            card["process"],
            card["pending"],
            card["amount_cents"],
        )
        assert "issue_goodwill_credit" == {f["label"]: f["value"] for f in card["facts"]}["Tool"]
        assert "desk@example.com" == card["request"]["requested_by"]

        decided = await http.post(f"/cases/{case_id}/approve", json={"decision_id": "d-1"})
        assert 200 == decided.status_code, decided.text
        assert ("approved", "lead@example.com") == (
            decided.json()["gate"],
            decided.json()["approver"],
        )
        case = await eventually(
            lambda: http.get(f"/cases/{case_id}"),
            lambda response: response.json()["workflow_status"] == "completed",
            timeout=60,
        )
        assert ("agent_assist", "completed") == (case.json()["process"], case.json()["outcome"])

    with Session(stack.engine) as session:
        credits = list(session.exec(select(Credit).where(Credit.case_id == case_id)))
    assert [(1_500, "lead@example.com")] == [(c.amount_cents, c.approved_by) for c in credits]
