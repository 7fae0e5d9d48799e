"""Activities that reach people: replies to customers and escalation notices to approvers.

Each message is written to the outbox table under an idempotency key (so a retry never sends
twice) and logged as a structured event; channel adapters deliver from the outbox.
"""

from __future__ import annotations

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select
from temporalio import activity

from activities.types import (
    NotifyEscalationInput,
    NotifyEscalationResult,
    SendReplyInput,
    SendReplyResult,
)
from core.db import Customer, Message

__all__ = ["NotificationActivities"]

ESCALATION_RECIPIENT = "refund-escalations"


class NotificationActivities:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

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
