"""The audit activity: one append-only row per decision and side effect of a case."""

from __future__ import annotations

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select
from temporalio import activity

from activities.types import AuditEventInput, AuditEventResult
from core.db import AuditEvent

__all__ = ["AuditActivities"]


class AuditActivities:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @activity.defn(name="record_audit_event")
    def record_audit_event(self, input: AuditEventInput) -> AuditEventResult:
        with Session(self._engine) as session:
            event = AuditEvent(
                idempotency_key=input.idempotency_key,
                case_id=input.case_id,
                process=input.process,
                action=input.action,
                actor=input.actor,
                detail=input.detail,
                occurred_at=input.occurred_at,
            )
            session.add(event)
            try:
                session.commit()
            except IntegrityError:
                session.rollback()
                existing = session.exec(
                    select(AuditEvent).where(AuditEvent.idempotency_key == input.idempotency_key)
                ).first()
                if existing is None or existing.id is None:
                    raise
                return AuditEventResult(event_id=existing.id, created=False)
            session.refresh(event)
            assert event.id is not None
            return AuditEventResult(event_id=event.id, created=True)
