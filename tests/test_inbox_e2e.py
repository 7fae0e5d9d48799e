"""The approvers' inbox end to end: real dev server, real refund workflow and activities, real API.

Two refund cases wait with different SLAs: a high-risk one opened through the API (team lead,
then finance; 48 h per level) and, after it, a medium one started with a 2-second SLA, which is
overdue and escalated a moment later. The team lead's inbox lists the overdue one first with a
negative time left; finance's lists neither until the team lead approves the high-risk one, which
then moves to finance (level 2). Finance delegates to a person, whose own inbox then holds it,
and that person's approval completes it; the team lead's approval completes the other. The CLI
reads the same inbox. Visibility is eventually consistent: every listing is polled, bounded.

The CLI's output for people is checked against a mocked API at the end.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from activities.intelligence import EmbeddedModels
from starter.cli import create_cli
from tests.approvals_stack import ApprovalsStack, approvals_stack, eventually, short_sla_policy
from tests.auth_helpers import AsCaller, token

HIGH_RISK_MESSAGE = "My order O-5004 is late and still not here. I want a refund please."
MEDIUM_MESSAGE = "Hello, my order O-5003 arrived broken. I want a refund please."
HOUR = 3_600.0


@pytest.fixture(scope="module")
def models() -> EmbeddedModels:
    return EmbeddedModels.load()


@pytest.fixture
async def stack(dev_env: Any, tmp_path: Path, models: EmbeddedModels) -> AsyncIterator[Any]:
    async with approvals_stack(dev_env, tmp_path, models) as running:
        yield running


async def inbox(http: httpx.AsyncClient, **params: str) -> dict[str, Any]:
    response = await http.get("/approvals", params=params)
    assert 200 == response.status_code, response.text
    body: dict[str, Any] = response.json()
    return body


def ids(listing: dict[str, Any]) -> list[str]:
    return [item["case_id"] for item in listing["items"]]


def only(listing: dict[str, Any], case_ids: set[str]) -> list[str]:
    """The listing's cases among `case_ids` (the dev server is shared with other tests)."""
    return [case_id for case_id in ids(listing) if case_id in case_ids]


@pytest.mark.e2e
@pytest.mark.timeout(120)
async def test_inbox_lists_by_sla_for_the_right_people_and_decisions_complete_the_cases(
    stack: ApprovalsStack,
) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60, auth=AsCaller()) as http:
        created = await http.post(
            "/cases/refund",
            json={
                "channel": "email",
                "customer_id": "C-1002",
                "order_id": "O-5004",
                "message": HIGH_RISK_MESSAGE,
            },
            headers={"Idempotency-Key": uuid.uuid4().hex},
        )
        assert 201 == created.status_code, created.text
        high = created.json()["case_id"]
        stack.started.append(high)
        # Started second, due first: two seconds of SLA.
        medium = await stack.start_case(
            customer_id="C-1002",
            order_id="O-5003",
            message=MEDIUM_MESSAGE,
            policy=short_sla_policy(stack.settings, timedelta(seconds=2)),
            summary="Refund request from C-1002 for order O-5003 via email",
        )
        ours = {high, medium}

        # The team lead's inbox: both, the overdue (escalated) one first.
        def settled(listing: dict[str, Any]) -> bool:
            by_id = {item["case_id"]: item for item in listing["items"]}
            return ours <= set(by_id) and by_id[medium]["escalated"]

        lead = await eventually(lambda: inbox(http, role="team_lead"), settled, timeout=30)
        assert [medium, high] == only(lead, ours), lead
        by_id = {item["case_id"]: item for item in lead["items"]}
        overdue, waiting = by_id[medium], by_id[high]
        assert overdue["overdue"] is True and overdue["time_left_s"] < 0
        assert overdue["escalated"] is True
        assert 47 * HOUR < waiting["time_left_s"] <= 48 * HOUR
        assert waiting["overdue"] is False and waiting["escalated"] is False
        as_of = datetime.fromisoformat(lead["as_of"])
        due = datetime.fromisoformat(waiting["sla_due_at"])
        assert abs((due - as_of).total_seconds() - waiting["time_left_s"]) < 0.01
        assert {"refund"} == {overdue["process"], waiting["process"]}
        assert 1 == waiting["level"]
        assert 1299.0 == waiting["amount"] and 349.0 == overdue["amount"]
        assert "standard" == waiting["tier"] and "refund_request" == waiting["intent"]
        assert ["team_lead"] == waiting["awaiting_roles"]
        # The whole list is in SLA order, whatever else waits on the shared server.
        dues = [item["sla_due_at"] for item in lead["items"]]
        assert sorted(dues) == dues
        # Nothing of ours for finance, nor for a person nobody delegated to; `process` filters.
        assert [] == only(await inbox(http, role="finance"), ours)
        assert [] == only(await inbox(http, approver="dana@example.com"), ours)
        assert [] == only(await inbox(http, role="team_lead", process="onboarding"), ours)
        assert [medium, high] == only(await inbox(http, role="team_lead", process="refund"), ours)

        # One approval in full: the request, the AI's view, no decisions yet.
        view = (await http.get(f"/approvals/{high}")).json()
        assert view["pending"] is True
        assert ["team_lead", "finance"] == view["levels"]
        assert ["team_lead"] == view["waiting_for"]
        assert 1 == view["request"]["level"] and "team_lead" == view["request"]["level_name"]
        assert HIGH_RISK_MESSAGE == view["message"]
        assert "Refund request from C-1002 for order O-5004 via email" == view["summary"]
        assert 129_900 == view["amount_cents"] and "O-5004" == view["order_id"]
        ai = view["ai"]
        assert ("approve", "high", "refund_request") == (
            ai["recommendation"],
            ai["risk"],
            ai["intent"],
        )
        assert 0.5 <= ai["intent_confidence"] <= 1.0
        assert any("over the automatic limit" in reason for reason in ai["reasons"])
        assert [] == view["request"]["decisions"]
        assert 47 * HOUR < view["time_left_s"] <= 48 * HOUR

        # The CLI reads the same inbox (in a thread: this loop serves the API).
        runner = CliRunner()
        env = {
            "PODIUM_API_URL": stack.base_url,
            "PODIUM_TOKEN": token("lead@example.com", ["team_lead"]),
        }
        cli = await asyncio.to_thread(
            runner.invoke, create_cli(), ["inbox", "--role", "team_lead", "--json"], env=env
        )
        assert 0 == cli.exit_code, cli.output
        assert [medium, high] == only(json.loads(cli.stdout), ours)
        table = await asyncio.to_thread(
            runner.invoke, create_cli(), ["inbox", "--role", "team_lead"], env=env
        )
        assert 0 == table.exit_code, table.output
        rows = {line.split()[0]: line for line in table.stdout.splitlines()[1:]}
        assert "overdue" in rows[medium] and "yes" in rows[medium]
        assert "47h" in rows[high] or "1d 23h" in rows[high]

        # The team lead approves the high-risk case: it moves to finance, level 2.
        first = await http.post(
            f"/cases/{high}/approve", json={"approver": "lead@example.com", "roles": ["team_lead"]}
        )
        assert 200 == first.status_code, first.text
        assert ("open", ["finance"]) == (first.json()["gate"], first.json()["waiting_for"])
        finance = await eventually(
            lambda: inbox(http, role="finance"), lambda listing: high in ids(listing)
        )
        assert [high] == only(finance, ours)
        assert 2 == next(i for i in finance["items"] if i["case_id"] == high)["level"]
        lead = await eventually(
            lambda: inbox(http, role="team_lead"), lambda listing: high not in ids(listing)
        )
        assert [medium] == only(lead, ours)

        # Finance delegates to Dana: her own inbox holds it, by name.
        delegated = await http.post(
            f"/cases/{high}/delegate",
            json={
                "approver": "fin@example.com",
                "roles": ["finance"],
                "to": "dana@example.com",
                "reason": "on leave",
            },
        )
        assert 200 == delegated.status_code, delegated.text
        dana = await eventually(
            lambda: inbox(http, approver="dana@example.com"), lambda listing: high in ids(listing)
        )
        assert [high] == only(dana, ours)
        listed = next(i for i in dana["items"] if i["case_id"] == high)
        assert ["finance", "user:dana@example.com"] == listed["awaiting_roles"]

        # Decisions through the API complete both cases.
        done = await http.post(f"/cases/{high}/approve", json={"approver": "dana@example.com"})
        assert 200 == done.status_code, done.text
        assert ("approved", "approved") == (done.json()["gate"], done.json()["outcome"])
        assert done.json()["effects"]["refund_id"]
        other = await http.post(
            f"/cases/{medium}/approve",
            json={"approver": "lead2@example.com", "roles": ["team_lead"]},
        )
        assert 200 == other.status_code, other.text
        assert "approved" == other.json()["outcome"]

        for role in ("team_lead", "finance"):
            listing = await eventually(
                lambda role=role: inbox(http, role=role),
                lambda listing: not only(listing, ours),
            )
            assert [] == only(listing, ours), role
        closed = (await http.get(f"/approvals/{high}")).json()
        assert closed["pending"] is False and "approved" == closed["outcome"]
        assert closed["time_left_s"] is None and [] == closed["waiting_for"]
        assert ["approve", "delegate", "approve"] == [
            d["action"] for d in closed["request"]["decisions"]
        ]
        assert "dana@example.com" == closed["decision"]["approver"]
        for case_id in ours:
            final = (await http.get(f"/cases/{case_id}")).json()
            assert ("completed", "approved") == (final["workflow_status"], final["outcome"])


@pytest.mark.e2e
@pytest.mark.timeout(60)
async def test_inbox_refuses_bad_filters_and_unknown_cases_as_problems(
    stack: ApprovalsStack,
) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30, auth=AsCaller()) as http:
        quote = await http.get("/approvals", params={"approver": 'x" OR "1" = "1'})
        assert 422 == quote.status_code
        assert "application/problem+json" == quote.headers["content-type"]
        assert [("approver", "query")] == [
            (e["field"], e["location"]) for e in quote.json()["errors"]
        ]
        assert 422 == (await http.get("/approvals", params={"role": "team lead"})).status_code
        assert 422 == (await http.get("/approvals", params={"process": "Refund!"})).status_code
        assert 422 == (await http.get("/approvals", params={"limit": 0})).status_code

        missing = await http.get("/approvals/refund-does-not-exist")
        assert 404 == missing.status_code
        assert "urn:podium:problem:case-not-found" == missing.json()["type"]

        # A case that never asked anyone: refunded automatically.
        created = await http.post(
            "/cases/refund",
            json={
                "channel": "email",
                "customer_id": "C-1001",
                "order_id": "O-5001",
                "message": "Hi, my order O-5001 arrived damaged, I want a refund please.",
            },
        )
        assert 201 == created.status_code, created.text
        case_id = created.json()["case_id"]
        stack.started.append(case_id)
        view = await eventually(
            lambda: http.get(f"/cases/{case_id}"),
            lambda response: response.json().get("outcome") is not None,
        )
        assert "auto_resolved" == view.json()["outcome"], view.text
        none = await http.get(f"/approvals/{case_id}")
        assert 404 == none.status_code
        assert "urn:podium:problem:approval-not-found" == none.json()["type"]


# --- the CLI's output for people, against a mocked API ------------------------------------------


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def test_cli_inbox_prints_a_table_with_time_left_and_sends_the_filters() -> None:
    now = datetime.now(UTC)
    answer = {
        "as_of": _iso(now),
        "role": "finance",
        "approver": "bob",
        "process": None,
        "truncated": False,
        "items": [
            {
                "case_id": "refund-late",
                "process": "refund",
                "level": 2,
                "amount": 1299.0,
                "tier": "gold",
                "intent": "refund_request",
                "sla_due_at": _iso(now - timedelta(minutes=90)),
                "time_left_s": -5400.0,
                "overdue": True,
                "escalated": True,
                "awaiting_roles": ["finance"],
                "started_at": _iso(now - timedelta(days=2)),
            },
            {
                "case_id": "refund-soon",
                "process": "refund",
                "level": 1,
                "amount": 349.0,
                "tier": None,
                "intent": None,
                "sla_due_at": _iso(now + timedelta(hours=5, minutes=10, seconds=30)),
                "time_left_s": 18630.0,
                "overdue": False,
                "escalated": False,
                "awaiting_roles": ["finance", "user:bob"],
                "started_at": _iso(now),
            },
        ],
    }
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=answer)

    cli = create_cli(httpx.MockTransport(handle))
    result = CliRunner().invoke(cli, ["inbox", "--role", "finance", "--approver", "bob"])
    assert 0 == result.exit_code, result.output
    assert "/approvals" == seen[0].url.path
    assert {"role": "finance", "approver": "bob", "limit": "100"} == dict(seen[0].url.params)
    header, late, soon = result.stdout.splitlines()
    assert header.split()[:4] == ["CASE", "PROCESS", "LEVEL", "AMOUNT"]
    assert late.startswith("refund-late") and "overdue 1h 30m" in late and "yes" in late
    assert "$1,299.00" in late
    assert soon.startswith("refund-soon") and "5h 10m" in soon and "overdue" not in soon

    as_json = CliRunner().invoke(cli, ["inbox", "--json"])
    assert answer == json.loads(as_json.stdout)

    empty = create_cli(
        httpx.MockTransport(lambda _: httpx.Response(200, json={**answer, "items": []}))
    )
    assert "Nothing is waiting for finance / bob." in CliRunner().invoke(empty, ["inbox"]).stdout


def test_cli_approval_prints_the_request_recommendation_and_decisions() -> None:
    now = datetime.now(UTC)
    view = {
        "case_id": "refund-k1",
        "process": "refund",
        "workflow_status": "running",
        "status": "awaiting_approval",
        "outcome": None,
        "pending": True,
        "summary": "Refund request from C-1002 for order O-5004 via email",
        "message": "My order is late.\nRefund please.",
        "channel": "email",
        "customer_id": "C-1002",
        "customer_tier": "standard",
        "order_id": "O-5004",
        "amount_cents": 129_900,
        "levels": ["team_lead", "finance"],
        "waiting_for": ["finance"],
        "time_left_s": 3 * 3600 + 600,
        "overdue": False,
        "ai": {
            "recommendation": "approve",
            "risk": "high",
            "eligible": True,
            "intent": "refund_request",
            "intent_confidence": 0.87,
            "sentiment": "negative",
            "reasons": ["late", "amount $1,299.00 is over the automatic limit of $100.00"],
        },
        "request": {
            "request_id": "approval-1",
            "requested_by": "email:C-1002",
            "level": 2,
            "level_name": "finance",
            "status": "open",
            "escalated": False,
            "recommendation": "approve",
            "sla_due_at": _iso(now + timedelta(hours=3, minutes=10)),
            "deadline_at": _iso(now + timedelta(days=6)),
            "amount_cents": 129_900,
            "decisions": [
                {
                    "action": "approve",
                    "approver": "lead@example.com",
                    "level_name": "team_lead",
                    "decided_at": _iso(now),
                    "comment": "photos attached",
                }
            ],
        },
        "decision": None,
        "as_of": _iso(now),
        "ui_url": "http://localhost:8233/namespaces/default/workflows/refund-k1",
    }
    seen: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return httpx.Response(200, json=view)

    result = CliRunner().invoke(create_cli(httpx.MockTransport(handle)), ["approval", "refund-k1"])
    assert 0 == result.exit_code, result.output
    assert ["/approvals/refund-k1"] == seen
    out = result.stdout
    assert "Podium recommends: approve, high risk, intent refund_request (0.87)" in out
    assert "Level:" in out and "2/2 finance" in out
    assert "Waiting for:" in out and "finance" in out
    assert "(3h 10m left)" in out
    assert "Message:" in out and "My order is late. Refund please." in out
    assert "approve by lead@example.com at level team_lead" in out
    assert "photos attached" in out
