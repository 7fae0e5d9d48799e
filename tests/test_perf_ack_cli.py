"""`podium approve --no-wait` asks the API for the acknowledgement (`?ack=recorded`) and says
the outcome follows; without it the command waits for the outcome as before."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx

from tests.test_cli import CASE_ID, RecordingApi


def _recorded(**extra: Any) -> dict[str, Any]:
    return {
        "request_id": "approval-1",
        "decision_id": "d-1",
        "action": "approve",
        "approved": True,
        "approver": "alice",
        "decided_at": datetime.now(UTC).isoformat(),
        "level": 1,
        "level_name": "team_lead",
        "gate": "approved",
        "waiting_for": [],
        "amount_cents": 12_000,
        "outcome": None,
        "effects": {},
        **extra,
    }


def test_no_wait_asks_for_the_recorded_acknowledgement() -> None:
    api = RecordingApi(lambda request: httpx.Response(200, json=_recorded()))
    result = api.run("approve", CASE_ID, "--decision-id", "d-1", "--no-wait")
    assert 0 == result.exit_code, result.output
    [request] = api.requests
    assert f"/cases/{CASE_ID}/approve" == request.url.path
    assert "recorded" == request.url.params.get("ack")
    assert "recorded, the outcome follows" in result.stdout


def test_wait_is_the_default_and_sends_no_ack() -> None:
    answer = _recorded(outcome="approved", effects={"refund_id": "R-1"})
    api = RecordingApi(lambda request: httpx.Response(200, json=answer))
    result = api.run("reject", CASE_ID, "--reason", "late", "--json")
    assert 0 == result.exit_code, result.output
    [request] = api.requests
    assert "ack" not in request.url.params
    assert "approved" == json.loads(result.stdout)["outcome"]


def test_status_wait_long_polls_the_case_view() -> None:
    """`podium status CASE --wait 30` asks the API to answer once the case has an outcome
    (`GET /cases/{id}?wait=30`); without it, at once."""
    view = {"case_id": CASE_ID, "status": "completed", "outcome": "approved"}
    api = RecordingApi(lambda request: httpx.Response(200, json=view))
    waited = api.run("status", CASE_ID, "--wait", "30", "--json")
    at_once = api.run("status", CASE_ID, "--json")
    too_long = api.run("status", CASE_ID, "--wait", "61", "--json")
    assert 0 == waited.exit_code, waited.output
    assert 0 == at_once.exit_code, at_once.output
    assert 0 != too_long.exit_code
    first, second = api.requests
    assert (f"/cases/{CASE_ID}", 30.0) == (first.url.path, float(first.url.params["wait"]))
    assert "wait" not in second.url.params
    assert "approved" == json.loads(waited.stdout)["outcome"]
