"""`record_outcome`: the row a case writes at its close (`core.outcomes`), once."""

from __future__ import annotations

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session
from temporalio import activity

from core.db import CaseOutcome
from workflows.contracts.outcomes import CaseOutcomeInput, CaseOutcomeResult

__all__ = ["OutcomeActivities"]


class OutcomeActivities:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @activity.defn(name="record_outcome")
    def record_outcome(self, input: CaseOutcomeInput) -> CaseOutcomeResult:
        """Insert the case's outcome row; a retry (the row is there) writes nothing."""
        row = CaseOutcome(
            case_id=input.case_id,
            run_id=input.run_id,
            process=input.process,
            channel=input.channel,
            outcome=input.outcome,
            automated=input.automated,
            people=list(input.people),
            sla_met=None if input.automated else not input.escalated,
            started_at=input.started_at,
            closed_at=input.closed_at,
            resolution_s=max(0.0, (input.closed_at - input.started_at).total_seconds()),
            model_cost_usd=input.model_cost_usd,
            policy_version=input.policy_version,
        )
        with Session(self._engine) as session:
            if session.get(CaseOutcome, input.case_id) is not None:
                return CaseOutcomeResult(created=False)
            session.add(row)
            try:
                session.commit()
            except IntegrityError:  # a concurrent attempt won: its row stands
                session.rollback()
                return CaseOutcomeResult(created=False)
        return CaseOutcomeResult(created=True)
