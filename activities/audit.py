"""The audit activity: one append-only, hash-chained row per decision and side effect of a case.

The chain itself (sequence, hashes, the lock that makes appends take turns) is
`core.audit_chain`. Workflows that predate the `model`, `confidence` and `policy_version` fields
pass them inside `detail` (`model`, `confidence`, `policy`): they are lifted from there, so every
case gets them without a workflow change.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.engine import Engine
from temporalio import activity

from activities.types import AuditEventInput, AuditEventResult
from core.audit_chain import AuditRecord, append_event, policy_version_of

__all__ = ["AuditActivities"]

# The columns' sizes (core.db.AuditEvent).
MAX_MODEL = 200
MAX_POLICY_VERSION = 64


class AuditActivities:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @activity.defn(name="record_audit_event")
    def record_audit_event(self, input: AuditEventInput) -> AuditEventResult:
        detail = input.detail
        result = append_event(
            self._engine,
            AuditRecord(
                idempotency_key=input.idempotency_key,
                case_id=input.case_id,
                process=input.process,
                action=input.action,
                actor=input.actor,
                detail=detail,
                occurred_at=input.occurred_at,
                policy_version=input.policy_version or _policy_version(detail),
                model=input.model or _model(detail),
                confidence=input.confidence
                if input.confidence is not None
                else _confidence(detail),
            ),
        )
        return AuditEventResult(event_id=result.event_id, created=result.created, seq=result.seq)


def _model(detail: Mapping[str, Any]) -> str | None:
    value = detail.get("model")
    return value[:MAX_MODEL] if isinstance(value, str) and value else None


def _confidence(detail: Mapping[str, Any]) -> float | None:
    value = detail.get("confidence")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _policy_version(detail: Mapping[str, Any]) -> str | None:
    version = detail.get("policy_version")
    if isinstance(version, str) and version:
        return version[:MAX_POLICY_VERSION]
    policy = detail.get("policy")
    return policy_version_of(policy) if isinstance(policy, Mapping) else None
