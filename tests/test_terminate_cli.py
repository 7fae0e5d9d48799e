"""`podium terminate USER`: the employee left; the command opens (or finds) their access
termination case through the API and lists the running requests it told (the API and the case
themselves: tests/test_access_termination.py, tests/test_access_review_e2e.py)."""

from __future__ import annotations

import json

import httpx

from tests.test_cli import RecordingApi


def test_terminate_posts_the_termination_and_lists_the_requests_told() -> None:
    done = {
        "case": {
            "case_id": "access_termination-ana.lima",
            "process": "access_termination",
            "created": True,
            "ui_url": "http://localhost:8233/x",
        },
        "running_cases": ["access_request-1"],
    }
    api = RecordingApi(lambda request: httpx.Response(201, json=done))
    result = api.run("terminate", "ana.lima", "--reason", "left the company")
    assert 0 == result.exit_code, result.output
    [request] = api.requests
    assert "/employees/ana.lima/termination" == request.url.path
    assert {"reason": "left the company"} == json.loads(request.content)
    assert "Opened termination case access_termination-ana.lima" in result.stdout
    assert "access_request-1" in result.stdout
