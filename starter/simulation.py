"""What-if simulation of a policy file over past cases (`podium policy simulate`).

`simulate` replays the facts of past refund cases, rebuilt from the audit trail ("triaged" and
"assessed" events) in the database, through a candidate and the current policy, and reports
both side by side: automated, auto-rejected and escalated cases, who would be asked, the
model spend of those cases, and every case whose decision would change. It reads the database
directly (like `podium eval` and `podium audit`); no server is needed.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from typing import Any

import typer
from pydantic import BaseModel, Field
from sqlalchemy import func
from sqlmodel import Session, col, select

from core.db import AuditEvent, ModelCall, make_engine
from core.policy import DEFAULT_POLICY_FILE, evaluate
from workflows.contracts.policy import AutonomyDecision, PolicyDocument, PolicyFacts

__all__ = [
    "PolicySide",
    "SimulationReport",
    "case_facts",
    "show",
    "simulate",
]

MICRO_USD = 1_000_000
_STANDING = re.compile(r"customer standing is '(\w+)'")


# --- simulation ----------------------------------------------------------------------------------


class PolicySide(BaseModel):
    policy: str
    version: str
    label: str
    cases: int = 0
    auto_approve: int = 0
    auto_reject: int = 0
    human: int = 0
    by_chain: dict[str, int] = Field(default_factory=dict)
    by_first_role: dict[str, int] = Field(default_factory=dict)
    model_cost_usd: float = Field(default=0.0, description="Ledger spend of the cases")
    over_budget: int = Field(default=0, description="Cases over max_model_cost_usd_per_case")


class DecisionChange(BaseModel):
    case_id: str
    current: str
    candidate: str


class SimulationReport(BaseModel):
    current: PolicySide
    candidate: PolicySide
    changed: list[DecisionChange] = Field(default_factory=list)


def case_facts(triaged: dict[str, Any], assessed: dict[str, Any]) -> PolicyFacts:
    """A case's facts from its audit details. Cases decided under a policy file recorded their
    facts; older ones are rebuilt from the assessment (unknown facts stay empty)."""
    if isinstance(assessed.get("facts"), dict):
        return PolicyFacts.model_validate(assessed["facts"])
    reasons = [str(r) for r in assessed.get("reasons") or []]
    standing = next((m.group(1) for r in reasons if (m := _STANDING.search(r))), "good")
    return PolicyFacts(
        amount=(assessed.get("amount_cents") or 0) / 100,
        customer_standing=standing,
        intent=str(triaged.get("intent") or ""),
        intent_confidence=float(triaged.get("confidence") or 0.0),
        sentiment=str(triaged.get("sentiment") or ""),
        risk=str(assessed.get("risk") or ""),
        eligible=bool(assessed.get("eligible")),
        late=any(r.startswith(("delivered late", "late:")) for r in reasons),
        within_return_window=any("within the" in r for r in reasons),
        already_refunded=any("already been refunded" in r for r in reasons),
        receipt_mismatch=any(r.startswith("the receipt") for r in reasons),
        needs_human=bool(triaged.get("needs_human")),
    )


def _past_cases(database_url: str, process: str) -> tuple[dict[str, PolicyFacts], dict[str, float]]:
    engine = make_engine(database_url)
    try:
        with Session(engine) as session:
            rows = session.exec(
                select(AuditEvent)
                .where(AuditEvent.process == process)
                .where(col(AuditEvent.action).in_(["triaged", "assessed"]))
                .order_by(col(AuditEvent.id))
            ).all()
            costs = session.exec(
                select(ModelCall.case_id, func.sum(ModelCall.cost_micro_usd)).group_by(
                    ModelCall.case_id
                )
            ).all()
    finally:
        engine.dispose()
    details: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for row in rows:
        details[row.case_id][row.action] = row.detail
    facts = {
        case_id: case_facts(events.get("triaged", {}), events["assessed"])
        for case_id, events in details.items()
        if "assessed" in events
    }
    spend = {case_id: (total or 0) / MICRO_USD for case_id, total in costs if case_id}
    return facts, spend


def simulate(
    candidate: PolicyDocument,
    current: PolicyDocument,
    database_url: str,
    *,
    names: tuple[str, str] = ("candidate", "current"),
    process: str = DEFAULT_POLICY_FILE.stem,
) -> SimulationReport:
    """`process`: whose past cases to replay (the policy file's process; its audit trail must
    hold the "triaged" and "assessed" facts the autonomy rules read)."""
    facts, spend = _past_cases(database_url, process)
    sides = {
        "candidate": PolicySide(policy=names[0], version=candidate.digest, label=candidate.version),
        "current": PolicySide(policy=names[1], version=current.digest, label=current.version),
    }
    documents = {"candidate": candidate, "current": current}
    changed: list[DecisionChange] = []
    for case_id in sorted(facts):
        outcome: dict[str, str] = {}
        for key, side in sides.items():
            document = documents[key]
            result = evaluate(document, facts[case_id])
            side.cases += 1
            cost = spend.get(case_id, 0.0)
            side.model_cost_usd = round(side.model_cost_usd + cost, 6)
            budget = document.budget.max_model_cost_usd_per_case
            if budget is not None and cost > budget:
                side.over_budget += 1
            if result.decision == AutonomyDecision.AUTO_APPROVE:
                side.auto_approve += 1
            elif result.decision == AutonomyDecision.AUTO_REJECT:
                side.auto_reject += 1
            else:
                side.human += 1
                chain = result.approval_chain or "?"
                side.by_chain = dict(Counter(side.by_chain) + Counter([chain]))
                role = result.approval.levels[0].approver_roles[0] if result.approval else "?"
                side.by_first_role = dict(Counter(side.by_first_role) + Counter([role]))
            label = result.decision.value
            if result.approval_chain:
                label += f" ({result.approval_chain})"
            outcome[key] = f"{label} [{result.rule}]"
        if outcome["candidate"].split(" [")[0] != outcome["current"].split(" [")[0]:
            changed.append(
                DecisionChange(
                    case_id=case_id, current=outcome["current"], candidate=outcome["candidate"]
                )
            )
    return SimulationReport(current=sides["current"], candidate=sides["candidate"], changed=changed)


def show(report: SimulationReport) -> None:
    current, candidate = report.current, report.candidate

    def counts(values: dict[str, int]) -> str:
        return ", ".join(f"{k}: {v}" for k, v in sorted(values.items())) or "-"

    rows = [
        ("policy", current.policy, candidate.policy),
        (
            "version",
            f"{current.version} ({current.label})",
            f"{candidate.version} ({candidate.label})",
        ),
        ("cases", str(current.cases), str(candidate.cases)),
        ("automated", str(current.auto_approve), str(candidate.auto_approve)),
        ("auto-rejected", str(current.auto_reject), str(candidate.auto_reject)),
        ("to a person", str(current.human), str(candidate.human)),
        ("by approval chain", counts(current.by_chain), counts(candidate.by_chain)),
        ("by first approver role", counts(current.by_first_role), counts(candidate.by_first_role)),
        ("model cost (USD)", f"{current.model_cost_usd:.4f}", f"{candidate.model_cost_usd:.4f}"),
        ("over model budget", str(current.over_budget), str(candidate.over_budget)),
    ]
    width = [max(len(r[i]) for r in rows) for i in range(3)]
    typer.echo(f"{'':{width[0]}}  {'CURRENT':{width[1]}}  CANDIDATE")
    for name, left, right in rows:
        typer.echo(f"{name:{width[0]}}  {left:{width[1]}}  {right}")
    typer.echo(f"\n{len(report.changed)} case(s) would be decided differently")
    for change in report.changed:
        typer.echo(f"  {change.case_id}: {change.current} -> {change.candidate}")


# --- the commands --------------------------------------------------------------------------------
