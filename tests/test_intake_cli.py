"""`podium message` sends what the user typed to the intake (`POST /messages`) and says which
case the message opened or joined (the API itself: tests/test_intake_e2e.py)."""

from __future__ import annotations

import json

import httpx

from tests.test_cli import RecordingApi


def _ack(**extra: object) -> dict[str, object]:
    return {
        "case_id": "order_inquiry-msg-1",
        "process": "order_inquiry",
        "joined": False,
        "intent": "order_status",
        "confidence": 0.93,
        **extra,
    }


def test_message_posts_the_message_and_names_the_case_it_opened() -> None:
    api = RecordingApi(lambda request: httpx.Response(201, json=_ack()))
    result = api.run(
        "message",
        "--sender",
        "C-1001",
        "--conversation",
        "conv-7",
        "--text",
        "where is my order O-5008?",
        "--channel",
        "email",
        "--attachment",
        "doc-1",
    )
    assert 0 == result.exit_code, result.output
    [request] = api.requests
    assert ("POST", "/messages") == (request.method, request.url.path)
    assert {
        "channel": "email",
        "sender": "C-1001",
        "conversation_id": "conv-7",
        "text": "where is my order O-5008?",
        "attachments": ["doc-1"],
    } == json.loads(request.content)
    assert "Opened case order_inquiry-msg-1 (order_inquiry)" in result.stdout
    assert "order_status (0.93)" in result.stdout


def test_a_joined_message_and_a_handoff_reason_are_said() -> None:
    ack = _ack(joined=True, process="handoff", reason="low confidence")
    api = RecordingApi(lambda request: httpx.Response(200, json=ack))
    result = api.run("message", "--sender", "C-1001", "--conversation", "c", "--text", "hm")
    assert 0 == result.exit_code, result.output
    assert "Joined case order_inquiry-msg-1 (handoff)" in result.stdout
    assert "to a person: low confidence" in result.stdout
    [request] = api.requests
    assert "chat" == json.loads(request.content)["channel"]  # the default channel


def test_a_refused_message_fails_with_the_problem() -> None:
    problem = {
        "type": "urn:podium:problem:invalid-request",
        "title": "Invalid request",
        "status": 422,
        "detail": "channel: Input should be 'email', 'chat', 'web' or 'voice'",
    }
    api = RecordingApi(lambda request: httpx.Response(422, json=problem))
    result = api.run(
        "message", "--sender", "C-1001", "--conversation", "c", "--text", "x", "--channel", "fax"
    )
    assert 0 != result.exit_code
    assert "channel" in result.output
