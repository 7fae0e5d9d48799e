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
