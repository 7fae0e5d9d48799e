"""Access request end to end: the HTTP API, the real Temporal dev server, the production worker
wiring (`build_activities`: the directory through `PODIUM_SCIM_URL` / `PODIUM_SCIM_TOKEN`, the
repository's catalogue and policy file) and the embedded SCIM service on a loopback port.

Everything goes through the API: opening the case, reading it, the manager's inbox (found by
name: `user:<manager>`), the approval card and the manager's decision, which needs no role.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from activities.intelligence import EmbeddedModels
from starter.scim_server import serving
from tests.approvals_stack import ApprovalsStack, approvals_stack, eventually
from tests.auth_helpers import AsCaller

pytestmark = pytest.mark.timeout(180)

TOKEN = "e2e-scim-token"
PORTAL = AsCaller("portal@example.com", roles=("service",))
MANAGER = AsCaller("sofia.rossi", roles=("agent",))  # reads cases; no approval role at all
LEAD = AsCaller("lead@example.com", roles=("team_lead",))


@pytest.fixture(scope="module")
def models() -> EmbeddedModels:
    return EmbeddedModels.load()


@pytest.fixture
async def scim(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    async with serving(TOKEN) as (url, _):
        monkeypatch.setenv("PODIUM_SCIM_URL", url)
        monkeypatch.setenv("PODIUM_SCIM_TOKEN", TOKEN)
        yield url


@pytest.fixture
async def stack(
    dev_env: Any, tmp_path: Path, models: EmbeddedModels, scim: str
) -> AsyncIterator[ApprovalsStack]:
    async with approvals_stack(dev_env, tmp_path, models) as running:
        yield running


async def _members(scim: str, group: str) -> list[str]:
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        found = await http.get(f"{scim}/Groups", params={"filter": f'displayName eq "{group}"'})
        (resource,) = found.json()["Resources"]
        names = []
        for member in resource.get("members") or []:
            user = await http.get(f"{scim}/Users/{member['value']}")
            names.append(str(user.json()["userName"]))
        return sorted(names)


async def _open(http: httpx.AsyncClient, stack: ApprovalsStack, body: dict[str, Any]) -> str:
    started = await http.post("/cases/access_request", json=body)
    assert 201 == started.status_code, started.text
    case_id = str(started.json()["case_id"])
    stack.started.append(case_id)
    return case_id


async def test_pre_approved_access_runs_through_the_api_to_the_directory(
    stack: ApprovalsStack, scim: str
) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60, auth=PORTAL) as http:
        listed = (await http.get("/processes")).json()
        schema = next(p for p in listed if p["name"] == "access_request")["input_schema"]
        assert {"employee", "application", "access_level", "justification"} == set(
            schema["required"]
        )
        case_id = await _open(
            http,
            stack,
            {
                "employee": "ana.lima",
                "application": "github",
                "access_level": "read",
                "justification": "code reviews",
            },
        )
        case = await eventually(
            lambda: http.get(f"/cases/{case_id}"),
            lambda response: response.json()["workflow_status"] == "completed",
        )
        view = case.json()
        assert ("access_request", "granted") == (view["process"], view["outcome"])
        assert "pre_approved_standard" == view["state"]["policy_rule"]
        assert view["state"]["catalogue_digest"]
    assert ["ana.lima"] == await _members(scim, "app-github-read")


async def test_the_manager_approves_by_name_in_the_inbox(stack: ApprovalsStack, scim: str) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60, auth=PORTAL) as http:
        case_id = await _open(
            http,
            stack,
            {
                "employee": "ben.okafor",
                "application": "github",
                "access_level": "read",
                "justification": "reading the sales tooling repository",
            },
        )
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60, auth=MANAGER) as http:
        inbox = await eventually(
            lambda: http.get(
                "/approvals", params={"approver": "sofia.rossi", "process": "access_request"}
            ),
            lambda response: case_id in [item["case_id"] for item in response.json()["items"]],
        )
        assert case_id in [item["case_id"] for item in inbox.json()["items"]], inbox.text
        card = (await http.get(f"/approvals/{case_id}")).json()
        facts = {fact["label"]: fact["value"] for fact in card["facts"]}
        assert ("sofia.rossi", "app-github-read", "no") == (
            facts["Manager"],
            facts["Group"],
            facts["Sensitive"],
        )
        assert ["sofia.rossi"] == card["request"]["awaiting_people"]
        assert ["user:sofia.rossi"] == card["waiting_for"]
        assert [] == await _members(scim, "app-github-read")
    # A role is not the manager.
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60, auth=LEAD) as http:
        refused = await http.post(f"/cases/{case_id}/approve", json={"decision_id": "d-lead"})
        assert 403 == refused.status_code, refused.text
        # The problem names the person the level waits for, not a role.
        assert "it needs sofia.rossi" in refused.json()["detail"], refused.text
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60, auth=MANAGER) as http:
        decided = await http.post(f"/cases/{case_id}/approve", json={"decision_id": "d-1"})
        assert 200 == decided.status_code, decided.text
        assert ("approved", "granted_after_approval") == (
            decided.json()["gate"],
            decided.json()["outcome"],
        )
    assert ["ben.okafor"] == await _members(scim, "app-github-read")
