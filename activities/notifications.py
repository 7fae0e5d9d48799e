"""Activities that reach people: replies to customers, escalation notices and approver notices.

Each message is written to the outbox table under an idempotency key (so a retry never writes
twice) and logged as a structured event; channel adapters deliver from the outbox.

Approver notices (`notify_approvers`: a new request, a reminder, an escalation, a delegation)
also go out at once through a pluggable `ApprovalNotifier`: the structured log by default, or an
HTTP webhook (`PODIUM_APPROVAL_WEBHOOK_URL`) through one pooled `httpx.AsyncClient`. The webhook
client never retries by itself: Temporal does. A 4xx answer is a non-retryable failure; 408, 429
and 5xx are retryable, after `Retry-After` when the receiver says so. Every webhook call carries
the notice's idempotency key (header `Idempotency-Key`) so the receiver can drop repeats.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, Protocol
from urllib.parse import quote

import httpx
import structlog
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.types import (
    ApprovalNoticeKind,
    NotifyApproversInput,
    NotifyApproversResult,
    NotifyEscalationInput,
    NotifyEscalationResult,
    SendReplyInput,
    SendReplyResult,
)
from core.db import Customer, Message
from core.settings import Settings

__all__ = [
    "ApprovalNotifier",
    "LogNotifier",
    "NotificationActivities",
    "WebhookNotifier",
    "approval_notifier",
    "case_link",
]

log = structlog.get_logger()

ESCALATION_RECIPIENT = "refund-escalations"
WEBHOOK_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
# Honour a receiver's Retry-After, within reason: Temporal's retry policy bounds the rest.
MAX_RETRY_AFTER = timedelta(minutes=10)

_HEADLINES = {
    ApprovalNoticeKind.REQUEST: "Approval needed",
    ApprovalNoticeKind.REMINDER: "Reminder: approval still needed",
    ApprovalNoticeKind.ESCALATION: "Escalated: approval overdue",
    ApprovalNoticeKind.BACKUP: "Backup approvers: approval overdue",
    ApprovalNoticeKind.DELEGATION: "Delegated to you: approval needed",
    ApprovalNoticeKind.SLA_RISK: "At risk: approval SLA passes soon",
}


def case_link(ui_base_url: str, namespace: str, workflow_id: str) -> str:
    """The case in the Temporal UI."""
    return (
        f"{ui_base_url.rstrip('/')}/namespaces/{quote(namespace, safe='')}"
        f"/workflows/{quote(workflow_id, safe='')}"
    )


class ApprovalNotifier(Protocol):
    """Delivers one approver notice; raises ApplicationError when it cannot (Temporal retries)."""

    channel: str
    ui_base_url: str

    async def send(self, notice: NotifyApproversInput, text: str, link: str) -> None: ...

    async def aclose(self) -> None: ...


class LogNotifier:
    """The default channel: one structured log event per notice."""

    channel = "log"

    def __init__(self, ui_base_url: str) -> None:
        self.ui_base_url = ui_base_url

    async def send(self, notice: NotifyApproversInput, text: str, link: str) -> None:
        log.info(
            "approver_notice",
            idempotency_key=notice.idempotency_key,
            case_id=notice.case_id,
            process=notice.process,
            kind=notice.kind.value,
            index=notice.index,
            level=notice.level_name,
            roles=notice.roles,
            users=notice.users,
            due_at=notice.due_at.isoformat() if notice.due_at else None,
            link=link,
            text=text,
        )

    async def aclose(self) -> None:
        return None


class WebhookNotifier:
    """POSTs each notice as JSON to one URL through a pooled client (the URL is never logged)."""

    channel = "webhook"

    def __init__(
        self,
        url: str,
        ui_base_url: str,
        *,
        timeout: httpx.Timeout = WEBHOOK_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.ui_base_url = ui_base_url
        self._url = url
        self._client = httpx.AsyncClient(
            timeout=timeout,
            # Retries are Temporal's: the transport makes exactly one attempt.
            transport=transport or httpx.AsyncHTTPTransport(retries=0),
            follow_redirects=False,
            headers={"User-Agent": "podium-approvals"},
        )

    async def send(self, notice: NotifyApproversInput, text: str, link: str) -> None:
        payload: dict[str, Any] = {
            **notice.model_dump(mode="json"),
            "text": text,
            "link": link,
        }
        try:
            response = await self._client.post(
                self._url, json=payload, headers={"Idempotency-Key": notice.idempotency_key}
            )
        except httpx.TransportError as err:
            # Unreachable, reset or timed out: worth another attempt.
            raise ApplicationError(
                f"approval webhook unreachable ({type(err).__name__})", type="WebhookUnavailable"
            ) from None
        status = response.status_code
        if status < 300:
            return
        if status in (408, 429) or status >= 500:
            raise ApplicationError(
                f"approval webhook answered {status}",
                type="WebhookUnavailable",
                next_retry_delay=retry_after(response),
            )
        raise ApplicationError(
            f"approval webhook refused the notice with {status}",
            type="WebhookRejected",
            non_retryable=True,
        )

    async def aclose(self) -> None:
        await self._client.aclose()


def retry_after(response: httpx.Response, *, now: datetime | None = None) -> timedelta | None:
    """The response's Retry-After (seconds or an HTTP date), capped; None when absent or bad."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    value = value.strip()
    try:
        delay = timedelta(seconds=float(value))
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        delay = when - (now or datetime.now(UTC))
    return max(timedelta(0), min(delay, MAX_RETRY_AFTER))


def approval_notifier(settings: Settings) -> ApprovalNotifier:
    """The webhook channel when `PODIUM_APPROVAL_WEBHOOK_URL` is set, else the log channel."""
    if settings.approval_webhook_url:
        return WebhookNotifier(
            settings.approval_webhook_url,
            settings.ui_base_url,
            timeout=httpx.Timeout(settings.approval_webhook_timeout_s, connect=5.0),
        )
    return LogNotifier(settings.ui_base_url)


def _notice_text(notice: NotifyApproversInput, link: str) -> str:
    headline = _HEADLINES[notice.kind]
    if notice.kind == ApprovalNoticeKind.REMINDER:
        headline += f" (reminder {notice.index})"
    who = ", ".join([*notice.roles, *(f"user:{name}" for name in notice.users)]) or "-"
    due = notice.due_at.strftime("%Y-%m-%d %H:%M UTC") if notice.due_at else "-"
    return (
        f"[Podium] {headline} — {notice.process} case {notice.case_id}, level {notice.level} "
        f"'{notice.level_name}': {notice.subject}. Who may decide: {who}. Due {due}. "
        f"Open: {link}"
    )


class NotificationActivities:
    def __init__(self, engine: Engine, approvals: ApprovalNotifier | None = None) -> None:
        self._engine = engine
        # Without a notifier (tests, tools): the log channel, linking to the default UI address
        # (`model_construct` takes the defaults without reading the environment).
        self._approvals = approvals or LogNotifier(Settings.model_construct().ui_base_url)

    def _write(self, message: Message) -> tuple[Message, bool]:
        with Session(self._engine) as session:
            session.add(message)
            try:
                session.commit()
            except IntegrityError:
                session.rollback()
                existing = session.exec(
                    select(Message).where(Message.idempotency_key == message.idempotency_key)
                ).first()
                if existing is None:
                    raise
                return existing, False
            session.refresh(message)
            return message, True

    @activity.defn(name="send_reply")
    def send_reply(self, input: SendReplyInput) -> SendReplyResult:
        with Session(self._engine) as session:
            customer = session.get(Customer, input.customer_id)
            recipient = customer.email if customer else input.customer_id
        message, created = self._write(
            Message(
                idempotency_key=input.idempotency_key,
                case_id=input.case_id,
                kind="customer_reply",
                channel=input.channel,
                recipient=recipient,
                body=input.text,
            )
        )
        activity.logger.info("customer reply queued (case %s, created=%s)", input.case_id, created)
        return SendReplyResult(message_id=f"M-{message.id}", created=created)

    @activity.defn(name="notify_escalation")
    def notify_escalation(self, input: NotifyEscalationInput) -> NotifyEscalationResult:
        body = (
            f"Case {input.case_id} breached its approval SLA (waiting since "
            f"{input.waiting_since.isoformat()}): {input.reason}"
        )
        _, created = self._write(
            Message(
                idempotency_key=input.idempotency_key,
                case_id=input.case_id,
                kind="escalation",
                channel="log",
                recipient=ESCALATION_RECIPIENT,
                body=body,
            )
        )
        activity.logger.warning("approval escalated (case %s)", input.case_id)
        return NotifyEscalationResult(notified=created, channel="log")

    @activity.defn(name="notify_approvers")
    async def notify_approvers(self, input: NotifyApproversInput) -> NotifyApproversResult:
        """Write the notice to the outbox (once per key), then deliver it on the channel.

        Delivery happens on every attempt, even when the outbox row already exists: the row
        may be from an attempt whose delivery failed. Receivers dedupe on the idempotency key.
        """
        channel = self._approvals
        link = case_link(channel.ui_base_url, input.namespace, input.workflow_id)
        text = _notice_text(input, link)
        recipients = [*input.roles, *(f"user:{name}" for name in input.users)]
        # The database call blocks: keep it off the event loop.
        message, created = await asyncio.to_thread(
            self._write,
            Message(
                idempotency_key=input.idempotency_key,
                case_id=input.case_id,
                kind=f"approval_{input.kind.value}",
                channel=channel.channel,
                recipient=",".join(recipients),
                body=text,
            ),
        )
        await channel.send(input, text, link)
        return NotifyApproversResult(
            message_id=f"M-{message.id}", created=created, channel=channel.channel, link=link
        )
