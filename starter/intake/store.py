"""The intake's records: which case each conversation opened, and every message received.

`intake_cases` holds one row per case the intake opened, keyed by the conversation (a hash of
channel and conversation id) and a generation (1, 2, ... : a conversation whose case closed
opens the next one). The pair is unique, so of two messages racing to open a conversation's
case exactly one inserts its claim; the other reads it back and joins that case. The claimed
case id is also Temporal's workflow id, which no second case can take.

`intake_messages` holds every message with the case it opened or joined. Its text stays here
(the systems of record keep customers' messages), never in logs or audit details: those carry
hashes and lengths only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Index, UniqueConstraint, func
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, Session, SQLModel, col, select

__all__ = [
    "IntakeCase",
    "IntakeMessage",
    "IntakeStore",
    "OpenedCase",
]


def _utcnow() -> datetime:
    return datetime.now(UTC)


class IntakeCase(SQLModel, table=True):
    __tablename__ = "intake_cases"
    __table_args__ = (
        UniqueConstraint("conversation_key", "generation", name="uq_intake_cases_conversation"),
        Index("ix_intake_cases_sender_order", "sender_key", "order_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    conversation_key: str = Field(max_length=64)
    generation: int
    case_id: str = Field(max_length=200, index=True)
    process: str = Field(max_length=64)
    sender_key: str = Field(max_length=64)
    order_id: str | None = Field(default=None, max_length=64)
    opened_at: datetime = Field(default_factory=_utcnow)


class IntakeMessage(SQLModel, table=True):
    __tablename__ = "intake_messages"

    id: int | None = Field(default=None, primary_key=True)
    message_id: str = Field(max_length=64, unique=True)
    conversation_key: str = Field(max_length=64, index=True)
    case_id: str = Field(max_length=200, index=True)
    process: str = Field(max_length=64)
    joined: bool
    channel: str = Field(max_length=16)
    sender_key: str = Field(max_length=64)
    intent: str = Field(max_length=64)
    confidence: float
    reason: str | None = Field(default=None, max_length=500)
    routing_version: str = Field(max_length=64)
    text: str
    attachments: str = Field(default="", max_length=2000)
    received_at: datetime = Field(default_factory=_utcnow, index=True)


@dataclass(frozen=True)
class OpenedCase:
    case_id: str
    process: str
    generation: int
    opened_at: datetime


def _opened(row: IntakeCase) -> OpenedCase:
    opened_at = row.opened_at if row.opened_at.tzinfo else row.opened_at.replace(tzinfo=UTC)
    return OpenedCase(row.case_id, row.process, row.generation, opened_at)


class IntakeStore:
    """Blocking database work of the intake (callers run it in a thread)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        SQLModel.metadata.create_all(
            engine,
            tables=[IntakeCase.__table__, IntakeMessage.__table__],  # type: ignore[attr-defined]
        )

    def latest(self, conversation_key: str) -> OpenedCase | None:
        """The conversation's newest case (the highest generation)."""
        with Session(self._engine) as session:
            row = session.exec(
                select(IntakeCase)
                .where(IntakeCase.conversation_key == conversation_key)
                .order_by(col(IntakeCase.generation).desc())
                .limit(1)
            ).first()
            return _opened(row) if row else None

    def latest_for_order(self, sender_key: str, order_id: str) -> OpenedCase | None:
        """The newest case opened for this sender about this order, from any conversation."""
        with Session(self._engine) as session:
            row = session.exec(
                select(IntakeCase)
                .where(IntakeCase.sender_key == sender_key, IntakeCase.order_id == order_id)
                .order_by(col(IntakeCase.opened_at).desc())
                .limit(1)
            ).first()
            return _opened(row) if row else None

    def claim(
        self,
        conversation_key: str,
        generation: int,
        case_id: str,
        process: str,
        sender_key: str,
        order_id: str | None,
    ) -> bool:
        """Claim the conversation's `generation` for `case_id`: False when another message
        claimed it first."""
        with Session(self._engine) as session:
            session.add(
                IntakeCase(
                    conversation_key=conversation_key,
                    generation=generation,
                    case_id=case_id,
                    process=process,
                    sender_key=sender_key,
                    order_id=order_id,
                )
            )
            try:
                session.commit()
            except IntegrityError:
                session.rollback()
                return False
            return True

    def release(self, conversation_key: str, generation: int) -> None:
        """Drop a claim whose case could not be started, so the next message opens it."""
        with Session(self._engine) as session:
            for row in session.exec(
                select(IntakeCase).where(
                    IntakeCase.conversation_key == conversation_key,
                    IntakeCase.generation == generation,
                )
            ):
                session.delete(row)
            session.commit()

    def record(self, message: IntakeMessage) -> IntakeMessage:
        """Store a message; a message id stored before returns the first record."""
        with Session(self._engine) as session:
            session.add(message)
            try:
                session.commit()
            except IntegrityError:
                session.rollback()
                first = self.find(message.message_id)
                if first is None:
                    raise
                return first
            session.refresh(message)
            return message

    def find(self, message_id: str) -> IntakeMessage | None:
        with Session(self._engine) as session:
            return session.exec(
                select(IntakeMessage).where(IntakeMessage.message_id == message_id)
            ).first()

    def received_since(self, window: timedelta) -> int:
        """How many messages arrived within `window` (every API process's)."""
        since = _utcnow() - window
        with Session(self._engine) as session:
            count = session.exec(
                select(func.count()).where(col(IntakeMessage.received_at) >= since)
            ).one()
            return int(count)
