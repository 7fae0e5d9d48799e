"""The `notify_approvers` activity: outbox, log channel, and the webhook against a real server.

The webhook tests run a real HTTP server on 127.0.0.1 (a thread) that answers from a script and
records what it received; the activity runs in Temporal's `ActivityEnvironment`.
"""

# STYLE.md asks for `assert expected == actual`, which ruff's SIM300 calls a Yoda condition.
from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog.testing
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.notifications import (
    LogNotifier,
    NotificationActivities,
    WebhookNotifier,
    approval_notifier,
    retry_after,
)
from activities.types import ApprovalNoticeKind, NotifyApproversInput
from core.db import Message, create_tables, make_engine
from core.settings import Settings

UI = "http://ui.test:8233"


class Receiver:
    """A real HTTP server: answers each POST with the next scripted (status, headers)."""

    def __init__(self) -> None:
        self.script: list[tuple[int, dict[str, str]]] = []
        self.received: list[tuple[dict[str, str], dict[str, Any]]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append((dict(self.headers), json.loads(body)))
                status, headers = receiver.script.pop(0) if receiver.script else (204, {})
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/approvals?token=s3cret"

    def __enter__(self) -> Receiver:
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'podium.db'}")
    create_tables(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as receiver:
        yield receiver


def notice(**overrides: Any) -> NotifyApproversInput:
    values: dict[str, Any] = {
        "idempotency_key": "refund-k1:approval:approval-1:1:reminder:2",
        "case_id": "refund-k1",
        "workflow_id": "refund-k1",
        "namespace": "default",
        "process": "refund",
        "kind": ApprovalNoticeKind.REMINDER,
        "index": 2,
        "request_id": "approval-1",
        "level": 1,
        "level_name": "team_lead",
        "roles": ["team_lead"],
        "users": ["bob"],
        "subject": "Refund of $349.00 for order O-5003",
        "amount_cents": 34_900,
        "due_at": datetime(2026, 11, 27, 9, 0, tzinfo=UTC),
    }
    values.update(overrides)
    return NotifyApproversInput(**values)


def outbox(engine: Engine) -> list[Message]:
    with Session(engine) as session:
        return list(session.exec(select(Message).order_by(Message.id)))


async def run(activities: NotificationActivities, input: NotifyApproversInput) -> Any:
    return await ActivityEnvironment().run(activities.notify_approvers, input)


async def test_log_channel_writes_the_outbox_once_and_logs_the_link(engine: Engine) -> None:
    activities = NotificationActivities(engine, LogNotifier(UI))
    with structlog.testing.capture_logs() as logs:
        first = await run(activities, notice())
        retry = await run(activities, notice())
    link = f"{UI}/namespaces/default/workflows/refund-k1"
    assert (True, False, "log", link) == (first.created, retry.created, first.channel, first.link)
    assert first.message_id == retry.message_id
    [message] = outbox(engine)
    assert ("approval_reminder", "log", "team_lead,user:bob") == (
        message.kind,
        message.channel,
        message.recipient,
    )
    assert "Reminder: approval still needed (reminder 2)" in message.body
    assert link in message.body
    logged = [entry for entry in logs if entry["event"] == "approver_notice"]
    assert 2 == len(logged)
    assert {"kind": "reminder", "link": link, "level": "team_lead"}.items() <= logged[0].items()


async def test_default_notifier_links_to_the_default_ui(engine: Engine) -> None:
    result = await run(NotificationActivities(engine), notice(namespace="ns/1"))
    assert "http://localhost:8233/namespaces/ns%2F1/workflows/refund-k1" == result.link


async def test_webhook_posts_the_notice_with_its_key(engine: Engine, receiver: Receiver) -> None:
    webhook = WebhookNotifier(receiver.url, UI)
    try:
        activities = NotificationActivities(engine, webhook)
        first = await run(activities, notice())
        # A retry after the row was written delivers again: the receiver dedupes on the key.
        retry = await run(activities, notice())
    finally:
        await webhook.aclose()
    assert ("webhook", True, False) == (first.channel, first.created, retry.created)
    assert 2 == len(receiver.received)
    headers, body = receiver.received[0]
    assert "refund-k1:approval:approval-1:1:reminder:2" == headers["Idempotency-Key"]
    assert "application/json" == headers["Content-Type"]
    assert {
        "case_id": "refund-k1",
        "kind": "reminder",
        "index": 2,
        "level_name": "team_lead",
        "roles": ["team_lead"],
        "users": ["bob"],
        "amount_cents": 34_900,
        "link": f"{UI}/namespaces/default/workflows/refund-k1",
    }.items() <= body.items()
    assert body["text"].startswith("[Podium] Reminder")
    assert 1 == len(outbox(engine))


@pytest.mark.parametrize(
    ("status", "headers", "delay"),
    [
        (503, {"Retry-After": "7"}, timedelta(seconds=7)),
        (429, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, timedelta(0)),  # in the past
        (500, {}, None),
        (408, {}, None),
    ],
)
async def test_webhook_overload_is_retryable_after_retry_after(
    engine: Engine,
    receiver: Receiver,
    status: int,
    headers: dict[str, str],
    delay: timedelta | None,
) -> None:
    receiver.script.append((status, headers))
    webhook = WebhookNotifier(receiver.url, UI)
    try:
        with pytest.raises(ApplicationError) as caught:
            await run(NotificationActivities(engine, webhook), notice())
    finally:
        await webhook.aclose()
    error = caught.value
    assert (False, "WebhookUnavailable", delay) == (
        error.non_retryable,
        error.type,
        error.next_retry_delay,
    )
    assert f"answered {status}" in error.message
    assert "s3cret" not in error.message


@pytest.mark.parametrize("status", [400, 401, 404, 410, 302])
async def test_webhook_refusal_is_not_retryable(
    engine: Engine, receiver: Receiver, status: int
) -> None:
    receiver.script.append((status, {"Location": "http://elsewhere.test/"}))
    webhook = WebhookNotifier(receiver.url, UI)
    try:
        with pytest.raises(ApplicationError) as caught:
            await run(NotificationActivities(engine, webhook), notice())
    finally:
        await webhook.aclose()
    assert (True, "WebhookRejected") == (caught.value.non_retryable, caught.value.type)
    assert 1 == len(receiver.received), "one attempt: the client itself never retries"


async def test_unreachable_webhook_is_retryable(engine: Engine) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    webhook = WebhookNotifier(f"http://127.0.0.1:{port}/hook", UI)
    try:
        with pytest.raises(ApplicationError) as caught:
            await run(NotificationActivities(engine, webhook), notice())
    finally:
        await webhook.aclose()
    assert (False, "WebhookUnavailable") == (caught.value.non_retryable, caught.value.type)
    assert "unreachable (ConnectError)" in caught.value.message


def test_settings_pick_the_channel() -> None:
    plain = Settings(_env_file=None)  # type: ignore[call-arg]
    assert isinstance(approval_notifier(plain), LogNotifier)
    hooked = plain.model_copy(
        update={"approval_webhook_url": "http://127.0.0.1:1/h", "temporal_ui_url": UI}
    )
    notifier = approval_notifier(hooked)
    assert isinstance(notifier, WebhookNotifier)
    assert UI == notifier.ui_base_url


def test_retry_after_parsing() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)

    def parsed(value: str) -> timedelta | None:
        return retry_after(httpx.Response(503, headers={"Retry-After": value}), now=now)

    assert timedelta(seconds=2.5) == parsed("2.5")
    assert timedelta(seconds=30) == parsed("Thu, 01 Jan 2026 00:00:30 GMT")
    assert timedelta(minutes=10) == parsed("86400")  # capped
    assert parsed("soon") is None
    assert retry_after(httpx.Response(503), now=now) is None
