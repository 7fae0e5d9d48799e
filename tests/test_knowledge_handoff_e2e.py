"""Knowledge answers and human handoff end to end: the HTTP API, the real Temporal dev server and
the production worker wiring (`build_activities`: the knowledge base, the embedded triage, the
notifier and the starter's own `start` for re-routing).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from activities.intelligence import EmbeddedModels
from tests.approvals_stack import ApprovalsStack, approvals_stack, eventually
from tests.auth_helpers import AsCaller

pytestmark = pytest.mark.timeout(180)

SERVICE = AsCaller("chat-bot@example.com", roles=("service",))
AGENT = AsCaller("lee.wong@example.com", roles=("support_agent",))


@pytest.fixture(scope="module")
def models() -> EmbeddedModels:
    return EmbeddedModels.load()


@pytest.fixture
async def stack(
    dev_env: Any, tmp_path: Path, models: EmbeddedModels
) -> AsyncIterator[ApprovalsStack]:
    async with approvals_stack(dev_env, tmp_path, models) as running:
        yield running


async def _open(
    http: httpx.AsyncClient, stack: ApprovalsStack, process: str, body: dict[str, str]
) -> str:
    started = await http.post(f"/cases/{process}", json=body)
    assert 201 == started.status_code, started.text
    case_id = str(started.json()["case_id"])
    stack.started.append(case_id)
    return case_id


async def test_answers_and_a_handoff_rerouted_through_the_api(stack: ApprovalsStack) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60, auth=SERVICE) as http:
        sure = await _open(
            http,
            stack,
            "knowledge_answer",
            {"question": "Can I return swimwear if I opened it?", "customer_id": "C-1001"},
        )
        handoff = await _open(
            http,
            stack,
            "handoff",
            {
                "message": "Can I return swimwear if I opened it? I want a person.",
                "customer_id": "C-1001",
            },
        )
        done = await eventually(
            lambda: http.get(f"/cases/{sure}"),
            lambda response: response.json()["workflow_status"] == "completed",
        )
        assert "answered" == done.json()["outcome"], done.text
        assert "KB-101" == done.json()["state"]["hits"][0]["doc_id"]
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60, auth=AGENT) as http:
        inbox = await eventually(
            lambda: http.get("/approvals", params={"role": "support_agent", "process": "handoff"}),
            lambda response: handoff in [item["case_id"] for item in response.json()["items"]],
        )
        assert handoff in [item["case_id"] for item in inbox.json()["items"]], inbox.text
        card = (await http.get(f"/approvals/{handoff}")).json()
        assert card["ai"]["intent"] and card["ai"]["sentiment"], card
        facts = {fact["label"]: fact["value"] for fact in card["facts"]}
        assert "KB-101" in facts["Sources"]
        refused = await http.post(f"/cases/{handoff}/reject", json={"reason": "route:refund"})
        assert refused.status_code >= 400, refused.text
        decided = await http.post(
            f"/cases/{handoff}/reject", json={"reason": "route:knowledge_answer"}
        )
        assert 200 == decided.status_code, decided.text
        assert "rerouted" == decided.json()["outcome"]
        routed = decided.json()["effects"]["routed_to"]
        stack.started.append(routed)
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60, auth=SERVICE) as http:
        answered = await eventually(
            lambda: http.get(f"/cases/{routed}"),
            lambda response: response.json()["workflow_status"] == "completed",
        )
        assert ("knowledge_answer", "answered") == (
            answered.json()["process"],
            answered.json()["outcome"],
        ), answered.text
