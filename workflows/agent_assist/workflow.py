"""Agent assist (CX): a tool-calling assistant answers a customer's question about their orders.

Steps: open the transcript with the customer's question (the system prompt is
`config/prompts/agent_assist.md`) -> the agent loop (`workflows.components.agent`): the model
looks things up and acts through the allowlisted tools, bounded by `AgentLimits` -> the outcome
and the answer, audited.

Tools (the input's `tools` may narrow the allowlist; anything else the model asks for is
refused, audited and told to the model):
- `lookup_order_status` (read-only) and `create_ticket_note` (safe) run at once;
- `issue_goodwill_credit` (risky) runs only once a person approved it through the approval
  gate, with the input's `approval` policy (default: a team lead, 4-hour SLA with a reminder at
  half time, 24-hour deadline, then denied). An approver may lower the amount
  (request_changes); that amount is what is credited.

Every case ends in one outcome: `completed` (the model answered), `step_limit`,
`budget_exhausted` (tokens or spend) or `needs_human` (the model failed, or no chat model is
configured: `tasks.agent` in the models file).

History holds references only: the conversation lives in the `agent_transcripts` table and the
workflow carries the transcript id, its write count and the running totals. When Temporal
suggests it (or after `limits.continue_after_steps` model turns) the case continues as new with
that checkpoint, between steps and never with an approval pending.

Messages:
- update `decide` (ApprovalDecisionInput -> ApprovalDecisionResult): a person's decision on the
  pending tool call (`request_id` `tool-<step>-<n>`, see `get_state`); the gate's validator
  refuses, before history, a decision with nothing pending, a stale request id, the requester
  (four-eyes), a caller without the level's role. A closing decision answers once the tool ran.
  Who decides comes from the decision's verified token (patch `signed-decisions`, as in the
  refund process); a decision whose token does not hold is refused and audited.
- query `get_state` -> AgentAssistState.

Timers: the approval gate's (reminders, SLA escalation, deadline), per risky tool call.
"""

from __future__ import annotations

from typing import Any

from temporalio import workflow
from temporalio.common import RawValue
from temporalio.exceptions import ApplicationError

from workflows.components.agent import AgentHooks, AgentLoop, AgentLoopResult, ToolSpec
from workflows.components.approval import PATCH_CHECKED_ON_ACCEPTANCE, decision_from
from workflows.components.audit import record_audit
from workflows.contracts import search_attributes as sa

with workflow.unsafe.imports_passed_through():
    from activities.agent_types import (
        CreateTicketNoteArgs,
        CreateTicketNoteResult,
        IssueGoodwillCreditArgs,
        IssueGoodwillCreditResult,
        LookupOrderStatusArgs,
        LookupOrderStatusResult,
    )
    from workflows.agent_assist.types import (
        AgentAssistInput,
        AgentAssistResult,
        AgentAssistResume,
        AgentAssistState,
        AgentAssistStatus,
    )
    from workflows.components.agent_types import AgentOutcome
    from workflows.contracts.approval import ApprovalDecisionInput, ApprovalDecisionResult

__all__ = ["PROCESS", "TOOLS", "AgentAssistWorkflow"]

PROCESS = "agent_assist"
PATCH_SIGNED_DECISIONS = "signed-decisions"
PROMPT = "agent_assist"
SYSTEM_ACTOR = "podium"

TOOLS: dict[str, ToolSpec] = {
    "lookup_order_status": ToolSpec(
        activity="lookup_order_status",
        description="Look up the status, dates and amount of one of the customer's orders.",
        arguments=LookupOrderStatusArgs,
        result=LookupOrderStatusResult,
    ),
    "create_ticket_note": ToolSpec(
        activity="create_ticket_note",
        description="Add an internal note for colleagues to the case's ticket.",
        arguments=CreateTicketNoteArgs,
        result=CreateTicketNoteResult,
    ),
    "issue_goodwill_credit": ToolSpec(
        activity="issue_goodwill_credit",
        description=(
            "Credit the customer's account as a goodwill gesture (at most $50). A person "
            "approves it first; it may be denied."
        ),
        arguments=IssueGoodwillCreditArgs,
        result=IssueGoodwillCreditResult,
        risky=True,
        amount_field="amount_cents",
    ),
}


@workflow.defn(name="agent_assist")
class AgentAssistWorkflow:
    @workflow.init
    def __init__(self, input: AgentAssistInput) -> None:
        self._input = input
        self._case_id = workflow.info().workflow_id
        resume = input.resume
        self._audit_seq = resume.audit_seq if resume else 0
        allowed = input.tools if input.tools is not None else list(TOOLS)
        self._unknown_tools = sorted(set(allowed) - set(TOOLS))
        self._agent = AgentLoop(
            process=PROCESS,
            tools={name: TOOLS[name] for name in allowed if name in TOOLS},
            limits=input.limits,
            approval=input.approval,
            requested_by=input.requested_by,
            hooks=AgentHooks(audit=self._audit, changed=self._publish),
            customer_id=input.customer_id,
            prompt=PROMPT,
        )
        if resume is not None:
            self._agent.checkpoint = resume.checkpoint
            self._agent.calls = list(resume.tool_calls)
        self._state = AgentAssistState(
            case_id=self._case_id,
            customer_id=input.customer_id,
            status=AgentAssistStatus.RUNNING,
        )
        self._status: AgentAssistStatus | None = None
        self._signed_decisions = False  # set in run(): patch PATCH_SIGNED_DECISIONS
        self._checked_on_acceptance = False  # set in run(): patch PATCH_CHECKED_ON_ACCEPTANCE

    # --- messages -------------------------------------------------------------------------------

    @workflow.query(name="get_state")
    def get_state(self) -> AgentAssistState:
        return self._state.model_copy(
            update={
                "checkpoint": self._agent.checkpoint,
                "approval": self._agent.approval,
                "tool_calls": list(self._agent.calls),
            }
        )

    @workflow.update(name="decide")
    async def decide(self, raw: RawValue) -> ApprovalDecisionResult:
        decision, encrypted = decision_from(raw)
        return await self._agent.decide(
            decision,
            _decision_id(decision),
            encrypted=encrypted,
            signed=self._signed_decisions,
            checked=self._checked_on_acceptance,
        )

    @decide.validator
    def validate_decide(self, raw: RawValue) -> None:
        decision, encrypted = decision_from(raw)
        self._agent.validate_decision(
            decision,
            _decision_id(decision),
            encrypted=encrypted,
            check_token=self._signed_decisions and self._checked_on_acceptance,
        )

    # --- the process ----------------------------------------------------------------------------

    @workflow.run
    async def run(self, input: AgentAssistInput) -> AgentAssistResult:
        # False only when replaying a run started before decision tokens.
        self._signed_decisions = workflow.patched(PATCH_SIGNED_DECISIONS)
        # False only when replaying a run whose `decide` handler checked tokens itself.
        self._checked_on_acceptance = workflow.patched(PATCH_CHECKED_ON_ACCEPTANCE)
        if self._unknown_tools:
            raise ApplicationError(
                f"unknown tools {', '.join(self._unknown_tools)}; this process has: "
                f"{', '.join(TOOLS)}",
                type="InvalidInput",
                non_retryable=True,
            )
        workflow.upsert_search_attributes(
            [
                sa.PROCESS.value_set(PROCESS),
                sa.CUSTOMER_ID.value_set(sa.customer_id_attribute(input.customer_id)),
                sa.AWAITING_APPROVAL.value_set(False),
            ]
        )
        self._publish()
        if input.resume is None:
            await self._audit(
                "agent_started",
                actor=input.requested_by,
                tools=list(self._agent_tools()),
                limits=input.limits.model_dump(mode="json"),
            )
            result = await self._agent.run(goal=input.message)
        else:
            result = await self._agent.run(resume=input.resume.checkpoint)
        if result.continue_as_new:
            await workflow.wait_condition(workflow.all_handlers_finished)
            workflow.continue_as_new(
                input.model_copy(
                    update={
                        "resume": AgentAssistResume(
                            checkpoint=result.checkpoint,
                            audit_seq=self._audit_seq,
                            tool_calls=self._agent.calls[-20:],
                        )
                    }
                )
            )
        return await self._finish(result)

    async def _finish(self, result: AgentLoopResult) -> AgentAssistResult:
        outcome = result.outcome
        assert outcome is not None
        point = result.checkpoint
        self._state.outcome = outcome
        self._state.answer = result.answer
        self._state.reason = result.reason
        await self._audit(
            "agent_finished",
            actor=SYSTEM_ACTOR if outcome != AgentOutcome.COMPLETED else "agent",
            outcome=outcome.value,
            reason=result.reason,
            steps=point.steps,
            runs=point.runs,
            tokens_in=point.tokens_in,
            tokens_out=point.tokens_out,
            cost_micro_usd=point.cost_micro_usd,
            transcript_id=point.transcript.transcript_id,
        )
        workflow.upsert_search_attributes(
            [
                sa.OUTCOME.value_set(outcome.value),
                sa.MODEL_COST_USD.value_set(point.cost_usd),
            ]
        )
        self._state.status = AgentAssistStatus.COMPLETED
        self._publish()
        # Let an in-flight `decide` update return its answer before the run completes.
        await workflow.wait_condition(workflow.all_handlers_finished)
        return AgentAssistResult(
            case_id=self._case_id,
            outcome=outcome,
            answer=result.answer,
            reason=result.reason,
            checkpoint=point,
            tool_calls=list(self._agent.calls),
        )

    # --- helpers --------------------------------------------------------------------------------

    def _agent_tools(self) -> list[str]:
        allowed = self._input.tools
        return list(TOOLS) if allowed is None else [name for name in allowed if name in TOOLS]

    async def _audit(self, action: str, *, actor: str = SYSTEM_ACTOR, **detail: Any) -> None:
        self._audit_seq += 1
        await record_audit(
            case_id=self._case_id,
            process=PROCESS,
            seq=self._audit_seq,
            action=action,
            actor=actor,
            detail=detail,
        )

    def _publish(self) -> None:
        """Status (search attribute, on change) and current details, from the loop's state."""
        if self._state.status != AgentAssistStatus.COMPLETED:
            self._state.status = (
                AgentAssistStatus.AWAITING_APPROVAL
                if self._agent.awaiting_approval
                else AgentAssistStatus.RUNNING
            )
        if self._state.status != self._status:
            self._status = self._state.status
            workflow.upsert_search_attributes([sa.STATUS.value_set(self._status.value)])
        s = self._state
        lines = [
            f"**Status:** {s.status.value}"
            + (f" · **Outcome:** {s.outcome.value}" if s.outcome else "")
            + f" · customer {s.customer_id}",
            f"**Question:** {self._input.message[:300]}",
            *self._agent.describe(),
        ]
        if s.reason and s.outcome is not None:
            lines.append(f"**Why it stopped:** {s.reason}")
        if s.answer:
            lines.append(f"**Answer:** {s.answer[:1_000]}")
        # The UI renders `$...$` as math: escape dollar signs.
        workflow.set_current_details("\n\n".join(lines).replace("$", "\\$"))


def _decision_id(decision: ApprovalDecisionInput) -> str:
    """The caller's idempotency key, else the update's own id (retries reuse it)."""
    if decision.decision_id:
        return decision.decision_id
    update = workflow.current_update_info()
    assert update is not None, "only updates carry an update id"
    return f"update-{update.id}"
