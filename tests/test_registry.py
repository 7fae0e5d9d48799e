"""Adding a process is its package plus one registry entry: a small process defined in the
tests (`tests/loan_process.py`, outside `workflows/`) runs through the real worker, the HTTP API,
the inbox and a decision with no edit to the worker, starter or inbox.

The process (`equipment_loan`): an employee asks to borrow equipment; the shared approval gate
asks a team lead; an approval registers the loan through the process's own activity. The worker
gets the registry with one more entry (`PROCESSES.with_process`) and the process's activity; the
API gets the same registry. Runs against the real Temporal dev server.
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
from tests.loan_process import LOAN, PROCESS, register_loan
from workflows.registry import PROCESSES

pytestmark = pytest.mark.timeout(180)


# --- the platform, unchanged, drives it ------------------------------------------------------


@pytest.fixture(scope="module")
def models() -> EmbeddedModels:
    return EmbeddedModels.load()


@pytest.fixture
async def stack(
    dev_env: Any, tmp_path: Path, models: EmbeddedModels
) -> AsyncIterator[ApprovalsStack]:
    async with approvals_stack(
        dev_env,
        tmp_path,
        models,
        processes=PROCESSES.with_process(LOAN),
        extra_activities=[register_loan],
    ) as running:
        yield running


async def test_a_process_defined_in_a_test_runs_through_the_api_and_the_inbox(
    stack: ApprovalsStack,
) -> None:
    requester = AsCaller("desk@example.com", roles=("service",))
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60, auth=requester) as http:
        listed = (await http.get("/processes")).json()
        assert PROCESS in [process["name"] for process in listed]
        schema = next(p for p in listed if p["name"] == PROCESS)["input_schema"]
        assert {"employee", "item", "value_cents"} == set(schema["required"])

        wrong = await http.post(f"/cases/{PROCESS}", json={"employee": "eve"})
        assert 422 == wrong.status_code
        assert {"item", "value_cents"} <= {error["field"] for error in wrong.json()["errors"]}
        assert 404 == (await http.post("/cases/no_such_process", json={})).status_code

        body = {"employee": "eve", "item": "laptop", "value_cents": 150_000}
        started = await http.post(f"/cases/{PROCESS}", json=body, headers={"Idempotency-Key": "k1"})
        assert 201 == started.status_code, started.text
        case_id = started.json()["case_id"]
        stack.started.append(case_id)
        assert f"{PROCESS}-k1" == case_id
        again = await http.post(f"/cases/{PROCESS}", json=body, headers={"Idempotency-Key": "k1"})
        assert (200, case_id) == (again.status_code, again.json()["case_id"])

    lead = AsCaller("lead@example.com", roles=("team_lead",))
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60, auth=lead) as http:
        inbox = await eventually(
            lambda: http.get("/approvals", params={"role": "team_lead", "process": PROCESS}),
            lambda response: case_id in [item["case_id"] for item in response.json()["items"]],
        )
        item = next(i for i in inbox.json()["items"] if i["case_id"] == case_id)
        assert PROCESS == item["process"]

        card = (await http.get(f"/approvals/{case_id}")).json()
        assert (PROCESS, True, 150_000) == (card["process"], card["pending"], card["amount_cents"])
        assert {"Employee": "eve", "Item": "laptop"} == {
            f["label"]: f["value"] for f in card["facts"]
        }

        decided = await http.post(f"/cases/{case_id}/approve", json={"decision_id": "d-1"})
        assert 200 == decided.status_code, decided.text
        result = decided.json()
        assert ("approved", "lent") == (result["gate"], result["outcome"])
        loan_id = result["effects"]["loan_id"]

        case = await eventually(
            lambda: http.get(f"/cases/{case_id}"),
            lambda response: response.json()["workflow_status"] == "completed",
        )
        view = case.json()
        assert (PROCESS, "lent") == (view["process"], view["outcome"])
        assert loan_id == view["state"]["loan_id"]
        assert "lead@example.com" == view["state"]["decision"]["approver"]
