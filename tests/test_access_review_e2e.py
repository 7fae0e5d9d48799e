"""Access reviews end to end: the HTTP API, the real Temporal dev server, the production worker
wiring (`build_activities`: the directory through `PODIUM_SCIM_URL` / `PODIUM_SCIM_TOKEN`, the
repository's catalogue and policy file) and the embedded SCIM service on a loopback port.

A cycle is opened through the API (`POST /cases/access_review`, as `podium start access_review`
does; the Temporal Schedule opens the monthly ones), each manager finds the review of their
report's sensitive access in the inbox by name (`user:<manager>`), reads the card and decides
through the API with no approval role: a reject removes the membership from the directory, an
approve keeps it, and the cycle counts both.

The same stack takes a termination (`POST /employees/{user_name}/termination`): everything
Podium granted the employee is removed, once, and a repeated termination finds the same case.
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

pytestmark = pytest.mark.timeout(240)

TOKEN = "e2e-scim-token"
SERVICE = AsCaller("directory-sync@example.com", roles=("service",))
ANA_MANAGER = AsCaller("maria.chen", roles=("agent",))  # reads cases; no approval role at all
BEN_MANAGER = AsCaller("sofia.rossi", roles=("agent",))


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


def _scim(url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"})


async def _ids(http: httpx.AsyncClient, resource: str, attribute: str, value: str) -> str:
    found = await http.get(f"/{resource}", params={"filter": f'{attribute} eq "{value}"'})
    (item,) = found.json()["Resources"]
    return str(item["id"])


async def _add(scim: str, group: str, user_name: str) -> None:
    """A membership held before the cycle (as an earlier approved access request leaves it)."""
    async with _scim(scim) as http:
        group_id = await _ids(http, "Groups", "displayName", group)
        user_id = await _ids(http, "Users", "userName", user_name)
        added = await http.patch(
            f"/Groups/{group_id}",
            json={
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "add", "path": "members", "value": [{"value": user_id}]}],
            },
        )
        assert added.status_code in (200, 204), added.text


async def _members(scim: str, group: str) -> list[str]:
    async with _scim(scim) as http:
        found = await http.get("/Groups", params={"filter": f'displayName eq "{group}"'})
        (resource,) = found.json()["Resources"]
        names = []
        for member in resource.get("members") or []:
            user = await http.get(f"/Users/{member['value']}")
            names.append(str(user.json()["userName"]))
        return sorted(names)


async def _review_in_inbox(http: httpx.AsyncClient, manager: str, cycle_id: str) -> dict[str, Any]:
    """The one review of `cycle_id` in the manager's inbox, found by name."""

    def mine(response: httpx.Response) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = response.json()["items"]
        return [item for item in items if str(item["case_id"]).startswith(f"{cycle_id}-")]

    inbox = await eventually(
        lambda: http.get("/approvals", params={"approver": manager, "process": "access_review"}),
        lambda response: len(mine(response)) == 1,
        timeout=60,
    )
    found = mine(inbox)
    assert 1 == len(found), inbox.text
    return found[0]


async def test_a_cycle_through_the_api_revokes_on_reject_and_keeps_on_approve(
    stack: ApprovalsStack, scim: str
) -> None:
    await _add(scim, "app-github-admin", "ana.lima")  # manager maria.chen
    await _add(scim, "app-salesforce-admin", "ben.okafor")  # manager sofia.rossi
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60, auth=SERVICE) as http:
        started = await http.post("/cases/access_review", json={"note": "audit follow-up"})
        assert 201 == started.status_code, started.text
        cycle_id = str(started.json()["case_id"])
        stack.started.append(cycle_id)

    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60, auth=ANA_MANAGER) as http:
        item = await _review_in_inbox(http, "maria.chen", cycle_id)
        ana_review = str(item["case_id"])
        stack.started.append(ana_review)
        card = (await http.get(f"/approvals/{ana_review}")).json()
        facts = {fact["label"]: fact["value"] for fact in card["facts"]}
        assert ("ana.lima", "app-github-admin", "maria.chen") == (
            facts["Employee"],
            facts["Group"],
            facts["Reviewer"],
        )
        assert ["user:maria.chen"] == card["waiting_for"]
        rejected = await http.post(
            f"/cases/{ana_review}/reject",
            json={"reason": "no longer on call", "decision_id": "review-ana"},
        )
        assert 200 == rejected.status_code, rejected.text
        assert ("rejected", "revoked") == (rejected.json()["gate"], rejected.json()["outcome"])
    assert [] == await _members(scim, "app-github-admin")

    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60, auth=BEN_MANAGER) as http:
        item = await _review_in_inbox(http, "sofia.rossi", cycle_id)
        ben_review = str(item["case_id"])
        stack.started.append(ben_review)
        assert ben_review != ana_review
        approved = await http.post(f"/cases/{ben_review}/approve", json={"decision_id": "rb"})
        assert 200 == approved.status_code, approved.text
        assert ("approved", "confirmed") == (approved.json()["gate"], approved.json()["outcome"])
    assert ["ben.okafor"] == await _members(scim, "app-salesforce-admin")

    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60, auth=SERVICE) as http:
        case = await eventually(
            lambda: http.get(f"/cases/{cycle_id}"),
            lambda response: response.json()["workflow_status"] == "completed",
            timeout=60,
        )
        view = case.json()
        assert ("access_review", "cycle_completed") == (view["process"], view["outcome"])
        outcomes = {line["employee"]: line["outcome"] for line in view["state"]["reviews"]}
        assert {"ana.lima": "revoked", "ben.okafor": "confirmed"} == outcomes


async def test_a_termination_through_the_api_removes_a_finished_grant_once(
    stack: ApprovalsStack, scim: str
) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60, auth=SERVICE) as http:
        started = await http.post(
            "/cases/access_request",
            json={
                "employee": "ana.lima",
                "application": "github",
                "access_level": "read",
                "justification": "code reviews",
            },
        )
        assert 201 == started.status_code, started.text
        granted_id = str(started.json()["case_id"])
        await eventually(
            lambda: http.get(f"/cases/{granted_id}"),
            lambda response: response.json()["outcome"] == "granted",
            timeout=60,
        )
        assert ["ana.lima"] == await _members(scim, "app-github-read")
        # A sensitive request still waiting for her manager when she leaves.
        waiting = await http.post(
            "/cases/access_request",
            json={
                "employee": "ana.lima",
                "application": "github",
                "access_level": "admin",
                "justification": "on-call",
            },
        )
        assert 201 == waiting.status_code, waiting.text
        waiting_id = str(waiting.json()["case_id"])
        stack.started.append(waiting_id)
        await eventually(
            lambda: http.get(
                "/approvals", params={"approver": "maria.chen", "process": "access_request"}
            ),
            lambda response: waiting_id in [i["case_id"] for i in response.json()["items"]],
            timeout=60,
        )

        first = await http.post("/employees/ana.lima/termination", json={"reason": "left"})
        assert 201 == first.status_code, first.text
        case_id = str(first.json()["case"]["case_id"])
        stack.started.append(case_id)
        assert "access_termination-ana.lima" == case_id
        done = await eventually(
            lambda: http.get(f"/cases/{case_id}"),
            lambda response: response.json()["workflow_status"] == "completed",
            timeout=60,
        )
        assert "revoked" == done.json()["outcome"], done.text
        assert [] == await _members(scim, "app-github-read")
        assert ["app-github-read"] == [g["group"] for g in done.json()["state"]["grants"]]
        # The running request was told: it withdraws (nothing was granted yet).
        assert [waiting_id] == first.json()["running_cases"]
        withdrawn = await eventually(
            lambda: http.get(f"/cases/{waiting_id}"),
            lambda response: response.json()["workflow_status"] == "completed",
            timeout=60,
        )
        assert "withdrawn_terminated" == withdrawn.json()["outcome"], withdrawn.text

        again = await http.post("/employees/ana.lima/termination", json={"reason": "left"})
        assert 200 == again.status_code, again.text
        assert (case_id, False) == (
            again.json()["case"]["case_id"],
            again.json()["case"]["created"],
        )
