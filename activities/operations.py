"""Activities of Podium's operations (`workflows/operations/`): the database of closed cases,
Temporal's visibility store, and the approvers' notice channel.

- `take_kpi_snapshot`: the KPIs of one UTC day's closed cases (`core.report` over
  `case_outcomes`, costs against `policies/roi.yaml`) as one `kpi_snapshots` row; the day is
  the key, so a second snapshot of the same day writes nothing and answers the first.
- `find_sla_risks`: the running cases with an open approval whose SLA passes between now and
  now + the lead time (`PodiumAwaitingApproval = true AND PodiumSlaDueAt ...`), read through
  the worker's own Temporal client.
- `notify_sla_risk`: one notice per case and SLA due time, on the approvers' channel (log or
  webhook, `activities/notifications.py`) and in the outbox. The outbox row is written after
  delivery: a notice already in the outbox is not sent again by a later sweep; a delivery whose
  row could not be written is repeated under the same idempotency key (receivers dedupe).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select
from temporalio import activity

from activities.notifications import ApprovalNotifier, LogNotifier, case_link
from activities.types import ApprovalNoticeKind, NotifyApproversInput
from core.db import KpiSnapshot, Message
from core.report import DEFAULT_BASELINE_FILE, build_report, load_baseline, read_outcomes
from core.settings import Settings
from workflows.contracts import search_attributes as sa
from workflows.contracts.operations import (
    FindSlaRisksInput,
    FindSlaRisksResult,
    NotifySlaRiskInput,
    NotifySlaRiskResult,
    SlaRisk,
    TakeKpiSnapshotInput,
    TakeKpiSnapshotResult,
)

__all__ = ["OperationsActivities", "sla_risk_query"]

NOTICE_KIND = f"approval_{ApprovalNoticeKind.SLA_RISK.value}"
USER_PREFIX = "user:"
VISIBILITY_TIMEOUT = timedelta(seconds=10)


def _rfc3339(at: datetime) -> str:
    at = at if at.tzinfo else at.replace(tzinfo=UTC)
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def sla_risk_query(now: datetime, due_before: datetime) -> str:
    """Running cases awaiting a decision whose SLA passes in (now, due_before)."""
    return (
        f"{sa.AWAITING_APPROVAL.name} = true AND "
        f'{sa.SLA_DUE_AT.name} > "{_rfc3339(now)}" AND '
        f'{sa.SLA_DUE_AT.name} < "{_rfc3339(due_before)}" AND '
        'ExecutionStatus = "Running"'
    )


class OperationsActivities:
    def __init__(
        self,
        engine: Engine,
        approvals: ApprovalNotifier | None = None,
        baseline_file: Path = DEFAULT_BASELINE_FILE,
    ) -> None:
        self._engine = engine
        self._approvals = approvals or LogNotifier(Settings.model_construct().ui_base_url)
        self._baseline_file = baseline_file

    def activities(self) -> list[Callable[..., Any]]:
        return [self.take_kpi_snapshot, self.find_sla_risks, self.notify_sla_risk]

    @activity.defn(name="take_kpi_snapshot")
    def take_kpi_snapshot(self, input: TakeKpiSnapshotInput) -> TakeKpiSnapshotResult:
        key = input.day.isoformat()
        with Session(self._engine) as session:
            existing = session.get(KpiSnapshot, key)
            if existing is not None:
                return _snapshot_result(input.day, existing, created=False)
        since = datetime.combine(input.day, time(), tzinfo=UTC)
        until = since + timedelta(days=1)
        baseline = load_baseline(self._baseline_file)
        rows = read_outcomes(self._engine, since, until)
        overall = build_report(rows, baseline, since=since, until=until)
        kpis = overall.overall
        row = KpiSnapshot(
            day=key,
            cases=kpis.cases,
            automated=kpis.automated,
            person_asked=kpis.person_asked,
            escalated=kpis.escalated,
            sla_met=kpis.sla_met,
            containment_rate=kpis.containment_rate,
            escalation_rate=kpis.escalation_rate,
            sla_attainment=kpis.sla_attainment,
            resolution_p50_s=kpis.resolution_p50_s,
            resolution_p95_s=kpis.resolution_p95_s,
            model_cost=kpis.model_cost,
            cost_per_case=kpis.cost_per_case,
            by_process=[line.model_dump(mode="json") for line in overall.by_process],
            baseline_version=baseline.digest or baseline.version,
        )
        with Session(self._engine) as session:
            session.add(row)
            try:
                session.commit()
            except IntegrityError:  # a concurrent snapshot of the same day won
                session.rollback()
                first = session.get(KpiSnapshot, key)
                if first is None:
                    raise
                return _snapshot_result(input.day, first, created=False)
            session.refresh(row)
            return _snapshot_result(input.day, row, created=True)

    @activity.defn(name="find_sla_risks")
    async def find_sla_risks(self, input: FindSlaRisksInput) -> FindSlaRisksResult:
        client = activity.client()
        query = sla_risk_query(input.now, input.due_before)
        risks: list[SlaRisk] = []
        truncated = False
        async for execution in client.list_workflows(
            query, limit=input.limit + 1, rpc_timeout=VISIBILITY_TIMEOUT
        ):
            if len(risks) == input.limit:
                truncated = True
                break
            attributes = execution.typed_search_attributes
            due = attributes.get(sa.SLA_DUE_AT)
            if due is None:
                continue
            waiting = list(attributes.get(sa.AWAITING_ROLES) or [])
            risks.append(
                SlaRisk(
                    case_id=execution.id,
                    process=attributes.get(sa.PROCESS) or execution.workflow_type,
                    sla_due_at=due.astimezone(UTC),
                    level=attributes.get(sa.APPROVAL_LEVEL) or 1,
                    roles=[w for w in waiting if not w.startswith(USER_PREFIX)],
                    users=[
                        w.removeprefix(USER_PREFIX) for w in waiting if w.startswith(USER_PREFIX)
                    ],
                )
            )
        risks.sort(key=lambda risk: (risk.sla_due_at, risk.case_id))
        return FindSlaRisksResult(namespace=client.namespace, risks=risks, truncated=truncated)

    @activity.defn(name="notify_sla_risk")
    async def notify_sla_risk(self, input: NotifySlaRiskInput) -> NotifySlaRiskResult:
        channel = self._approvals
        sent = await asyncio.to_thread(self._find, input.idempotency_key)
        if sent is not None:
            return NotifySlaRiskResult(
                created=False, message_id=f"M-{sent.id}", channel=sent.channel
            )
        risk = input.risk
        notice = NotifyApproversInput(
            idempotency_key=input.idempotency_key,
            case_id=risk.case_id,
            workflow_id=risk.case_id,
            namespace=input.namespace,
            process=risk.process,
            kind=ApprovalNoticeKind.SLA_RISK,
            request_id="sla-risk",
            level=risk.level,
            level_name=f"level {risk.level}",
            roles=risk.roles,
            users=risk.users,
            subject="an open approval whose SLA passes soon",
            due_at=risk.sla_due_at,
        )
        link = case_link(channel.ui_base_url, input.namespace, risk.case_id)
        who = ", ".join([*risk.roles, *(f"{USER_PREFIX}{u}" for u in risk.users)]) or "-"
        text = (
            f"[Podium] At risk: approval SLA due {risk.sla_due_at:%Y-%m-%d %H:%M UTC} — "
            f"{risk.process} case {risk.case_id}, level {risk.level}, no decision yet. "
            f"Who may decide: {who}. Open: {link}"
        )
        await channel.send(notice, text, link)
        message, created = await asyncio.to_thread(
            self._write,
            Message(
                idempotency_key=input.idempotency_key,
                case_id=risk.case_id,
                kind=NOTICE_KIND,
                channel=channel.channel,
                recipient=who,
                body=text,
            ),
        )
        return NotifySlaRiskResult(
            created=created, message_id=f"M-{message.id}", channel=channel.channel
        )

    def _find(self, key: str) -> Message | None:
        with Session(self._engine) as session:
            found = session.exec(select(Message).where(Message.idempotency_key == key)).first()
            if found is not None:
                session.expunge(found)
            return found

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
                session.expunge(existing)
                return existing, False
            session.refresh(message)
            session.expunge(message)
            return message, True


def _snapshot_result(day: date, row: KpiSnapshot, *, created: bool) -> TakeKpiSnapshotResult:
    return TakeKpiSnapshotResult(
        day=day, created=created, cases=row.cases, baseline_version=row.baseline_version
    )
