"""A small process defined outside `workflows/` (`equipment_loan`), for `tests/test_registry.py`:
an employee asks to borrow equipment; the shared approval gate asks a team lead; an approval
registers the loan through the process's own activity. Its own module, importing only the SDK
and Podium's contracts and components, as a process package would: the workflow sandbox loads
it for every case.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import BaseModel, Field
from temporalio import activity, workflow

from workflows.components.approval import ApprovalGate, GateHooks
from workflows.components.audit import record_audit
from workflows.contracts import search_attributes as sa
from workflows.contracts.approval import (
    ApprovalDecisionInput,
    ApprovalDecisionResult,
    ApprovalLevel,
    ApprovalPolicy,
    GateStatus,
)
from workflows.contracts.case import ApprovalCard, CaseContext, CaseState, CaseText, Fact
from workflows.registry import Process

__all__ = ["LOAN", "PROCESS", "register_loan"]

PROCESS = "equipment_loan"


class LoanRequest(BaseModel):
    employee: str = Field(min_length=1, max_length=64)
    item: str = Field(min_length=1, max_length=100)
    value_cents: int = Field(gt=0, le=1_000_000)


class LoanInput(BaseModel):
    employee: str
    item: str
    value_cents: int
    requested_by: str
    approval: ApprovalPolicy


class LoanState(CaseState):
    employee: str
    item: str
    loan_id: str | None = None


class LoanResult(BaseModel):
    case_id: str
    outcome: str
    loan_id: str | None = None


class RegisterLoanInput(BaseModel):
    case_id: str
    item: str


class RegisterLoanResult(BaseModel):
    loan_id: str


@activity.defn(name="register_loan")
async def register_loan(input: RegisterLoanInput) -> RegisterLoanResult:
    return RegisterLoanResult(loan_id=f"L-{input.case_id[-8:]}")


@workflow.defn(name=PROCESS)
class EquipmentLoanWorkflow:
    @workflow.init
    def __init__(self, input: LoanInput) -> None:
        self._case_id = workflow.info().workflow_id
        self._state = LoanState(
            case_id=self._case_id, status="received", employee=input.employee, item=input.item
        )
        self._gate = ApprovalGate(process=PROCESS, hooks=GateHooks(audit=self._audit))
        self._seq = 0

    @workflow.query(name="get_state")
    def get_state(self) -> LoanState:
        return self._state.model_copy(update={"approval": self._gate.request})

    @workflow.update(name="decide")
    async def decide(self, decision: ApprovalDecisionInput) -> ApprovalDecisionResult:
        decision_id = decision.decision_id or "update"
        self._gate.accept(decision, now=workflow.now(), decision_id=decision_id, via="update")
        await workflow.wait_condition(lambda: decision_id in self._gate.results)
        return self._gate.results[decision_id]

    @decide.validator
    def validate_decide(self, decision: ApprovalDecisionInput) -> None:
        self._gate.validate(decision, decision.decision_id)

    @workflow.run
    async def run(self, input: LoanInput) -> LoanResult:
        workflow.upsert_search_attributes([sa.PROCESS.value_set(PROCESS)])
        self._gate.open_request(
            request_id="approval-1",
            now=workflow.now(),
            policy=input.approval,
            requested_by=input.requested_by,
            recommendation="approve",
            reasons=[f"{input.employee} asks to borrow {input.item}"],
            subject=f"Loan of {input.item} to {input.employee}",
            amount_cents=input.value_cents,
        )
        self._state.status = "awaiting_approval"
        outcome = await self._gate.run()
        effects: dict[str, str] = {}
        if outcome.status == GateStatus.APPROVED:
            loan = await workflow.execute_activity(
                register_loan,
                RegisterLoanInput(case_id=self._case_id, item=input.item),
                start_to_close_timeout=timedelta(seconds=10),
            )
            self._state.loan_id = loan.loan_id
            effects = {"loan_id": loan.loan_id}
        self._state.outcome = "lent" if effects else "refused"
        self._state.status = "completed"
        self._state.decision = self._gate.settle(outcome=self._state.outcome, effects=effects)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return LoanResult(
            case_id=self._case_id, outcome=self._state.outcome, loan_id=self._state.loan_id
        )

    async def _audit(self, action: str, *, actor: str = "podium", **detail: Any) -> None:
        self._seq += 1
        await record_audit(
            case_id=self._case_id,
            process=PROCESS,
            seq=self._seq,
            action=action,
            actor=actor,
            detail=detail,
        )


def prepare(request: LoanRequest, context: CaseContext) -> LoanInput:
    level = ApprovalLevel(name="team_lead", approver_roles=["team_lead"], sla=timedelta(hours=8))
    return LoanInput(
        **request.model_dump(),
        requested_by=context.requested_by,
        approval=ApprovalPolicy(levels=[level], deadline=timedelta(days=2)),
    )


def describe(request: LoanRequest) -> CaseText:
    return CaseText(
        summary=f"Loan of {request.item} to {request.employee}",
        details=f"**Item:** {request.item}",
    )


def approval_card(case_input: LoanInput | None, state: LoanState) -> ApprovalCard:
    return ApprovalCard(
        amount_cents=case_input.value_cents if case_input else None,
        facts=[Fact(label="Employee", value=state.employee), Fact(label="Item", value=state.item)],
    )


LOAN = Process(
    name=PROCESS,
    title="Equipment loan: an employee borrows a laptop or a phone",
    workflow=EquipmentLoanWorkflow,
    request=LoanRequest,
    input=LoanInput,
    state=LoanState,
    result=LoanResult,
    prepare=prepare,
    describe=describe,
    approval_card=approval_card,
    activities=("register_loan", "record_audit_event", "notify_approvers"),
)
