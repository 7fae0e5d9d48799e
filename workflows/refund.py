"""Refund process (CX): a customer asks for their money back.

Steps: open a ticket -> triage the message (intent, sentiment, order ids) -> look up the order
and customer -> eligibility rules -> decision: refund automatically when policy allows (eligible,
amount at or under the limit, customer in good standing, a clear refund request), refuse at once
when the order was already refunded, otherwise ask people through the approval gate
(`workflows.components.approval`) with the approval policy of the assessed risk level -> issue
the refund idempotently (the approved amount, which an approver may have lowered) -> update the
ticket -> draft and send the reply -> audit every decision.

Every case ends in one outcome: `auto_resolved`, `approved`, `rejected`, `escalated_expired`
(no decision before the deadline, denied) or `needs_human` (unknown customer or order, a refund
the system of record refused, or a deadline whose default action hands the case to a person).

Messages:
- update `decide` (ApprovalDecisionInput -> ApprovalDecisionResult): a person's decision
  (approve, reject, request_changes, delegate); the validator refuses, before history, a decision
  with no approval pending, a stale request id, a closed gate, a missing approver or reason, an
  amount that is not lower, a caller without a role of the current level (and not a delegate),
  the requester (four-eyes) and a second decision by the same person. The same decision id again
  answers with the first result. A decision that closes the gate answers once it has been
  carried out; one that leaves it open (quorum or levels to go, a delegation) answers at once.
- signal `approval_decision` (ApprovalDecisionInput): the same decision for the Temporal UI and
  fire-and-forget callers; refused signals are logged, audited and noted, not applied.
- query `get_state` -> RefundCaseState.

Timers (the gate's, per level of the policy): reminders at fractions of the level's SLA; the SLA
escalates (next level, or backup roles; ticket marked); the final deadline (default 7 days)
applies the policy's default action: deny, handoff or approve within a limit.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

from workflows import search_attributes as sa
from workflows.components.approval import DEADLINE_ACTOR, ApprovalGate, GateHooks, GateOutcome
from workflows.refund_rules import assess_refund, format_amount

with workflow.unsafe.imports_passed_through():
    from activities.types import (
        AuditEventInput,
        AuditEventResult,
        DraftReplyInput,
        DraftReplyResult,
        IssueRefundInput,
        IssueRefundResult,
        LookupOrderInput,
        LookupOrderResult,
        OpenTicketInput,
        SendReplyInput,
        SendReplyResult,
        TicketResult,
        TicketStatus,
        TriageInput,
        TriageResult,
        UpdateTicketInput,
    )
    from workflows.types import (
        ApprovalDecisionInput,
        ApprovalDecisionResult,
        CaseStatus,
        DefaultAction,
        GateStatus,
        RefundAssessment,
        RefundCaseInput,
        RefundCaseResult,
        RefundCaseState,
        RefundOutcome,
    )

__all__ = ["PROCESS", "RefundWorkflow"]

PROCESS = "refund"
APPROVAL_REQUEST_ID = "approval-1"
SYSTEM_ACTOR = "podium"
POLICY_ACTOR = "policy"

# Activity options: systems of record answer fast; models may be slower.
SYSTEM_TIMEOUT = timedelta(seconds=30)
MODEL_TIMEOUT = timedelta(seconds=60)
SYSTEM_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=10,
)
MODEL_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=5,
)

REPLY_TEMPLATES = {
    RefundOutcome.AUTO_RESOLVED: "refund_approved",
    RefundOutcome.APPROVED: "refund_approved",
    RefundOutcome.REJECTED: "refund_rejected",
    RefundOutcome.ESCALATED_EXPIRED: "refund_expired",
    RefundOutcome.NEEDS_HUMAN: "needs_human",
}
TICKET_STATUS = {
    RefundOutcome.AUTO_RESOLVED: TicketStatus.RESOLVED,
    RefundOutcome.APPROVED: TicketStatus.RESOLVED,
    RefundOutcome.REJECTED: TicketStatus.CLOSED,
    RefundOutcome.ESCALATED_EXPIRED: TicketStatus.NEEDS_HUMAN,
    RefundOutcome.NEEDS_HUMAN: TicketStatus.NEEDS_HUMAN,
}


@workflow.defn(name="refund")
class RefundWorkflow:
    @workflow.init
    def __init__(self, input: RefundCaseInput) -> None:
        self._input = input
        self._case_id = workflow.info().workflow_id
        self._state = RefundCaseState(
            case_id=self._case_id,
            status=CaseStatus.RECEIVED,
            customer_id=input.customer_id,
            order_id=input.order_id,
        )
        self._gate = ApprovalGate(
            process=PROCESS,
            hooks=GateHooks(audit=self._audit, changed=self._publish, escalated=self._escalate),
        )
        self._audit_seq = 0
        self._customer_name = input.customer_id
        self._currency = "USD"

    # --- messages -------------------------------------------------------------------------------

    @workflow.query(name="get_state")
    def get_state(self) -> RefundCaseState:
        return self._state

    @workflow.update(name="decide")
    async def decide(self, decision: ApprovalDecisionInput) -> ApprovalDecisionResult:
        decision_id = _decision_id(decision)
        try:
            self._gate.accept(decision, now=workflow.now(), decision_id=decision_id, via="update")
        except ValueError as err:
            # Only a race with another decision in the same activation gets here.
            raise ApplicationError(str(err), type="DecisionRefused", non_retryable=True) from None
        # Answer once the decision has been recorded (and, if it closed the gate, carried out).
        await workflow.wait_condition(lambda: decision_id in self._gate.results)
        return self._gate.results[decision_id]

    @decide.validator
    def validate_decide(self, decision: ApprovalDecisionInput) -> None:
        self._gate.validate(decision, _decision_id(decision))

    @workflow.signal(name="approval_decision")
    def approval_decision(self, decision: ApprovalDecisionInput) -> None:
        decision_id = decision.decision_id or f"signal-{workflow.uuid4()}"
        try:
            self._gate.accept(decision, now=workflow.now(), decision_id=decision_id, via="signal")
        except ValueError as err:
            workflow.logger.warning("approval signal refused: %s", err)
            self._gate.refuse(decision, str(err), via="signal")
            self._state.notes.append(f"refused approval signal from '{decision.approver}': {err}")

    # --- the process ----------------------------------------------------------------------------

    @workflow.run
    async def run(self, input: RefundCaseInput) -> RefundCaseResult:
        workflow.upsert_search_attributes(
            [
                sa.PROCESS.value_set(PROCESS),
                sa.STATUS.value_set(CaseStatus.RECEIVED.value),
                sa.CUSTOMER_ID.value_set(input.customer_id),
                sa.AWAITING_APPROVAL.value_set(False),
            ]
        )
        self._publish()

        ticket = await workflow.execute_activity(
            "open_ticket",
            OpenTicketInput(
                idempotency_key=f"{self._case_id}:ticket",
                case_id=self._case_id,
                customer_id=input.customer_id,
                order_id=input.order_id,
                subject=f"Refund request via {input.channel}",
                channel=input.channel,
            ),
            result_type=TicketResult,
            start_to_close_timeout=SYSTEM_TIMEOUT,
            retry_policy=SYSTEM_RETRY,
            summary="Open a ticket for the case",
        )
        self._state.ticket_id = ticket.ticket_id

        triage = await workflow.execute_activity(
            "triage_request",
            TriageInput(case_id=self._case_id, text=input.message, channel=input.channel),
            result_type=TriageResult,
            start_to_close_timeout=MODEL_TIMEOUT,
            retry_policy=MODEL_RETRY,
            summary="Triage: intent, sentiment and order ids",
        )
        self._state.status = CaseStatus.TRIAGED
        self._state.intent = triage.intent
        self._state.intent_confidence = triage.intent_confidence
        self._state.sentiment = triage.sentiment
        workflow.upsert_search_attributes(
            [
                sa.STATUS.value_set(CaseStatus.TRIAGED.value),
                sa.INTENT.value_set(triage.intent.value),
            ]
        )
        await self._audit(
            "triaged",
            model=triage.model,
            intent=triage.intent.value,
            confidence=round(triage.intent_confidence, 4),
            sentiment=triage.sentiment.value,
            order_ids=triage.order_ids,
        )

        order_id = input.order_id or (triage.order_ids[0] if triage.order_ids else None)
        self._state.order_id = order_id
        lookup = await workflow.execute_activity(
            "lookup_order",
            LookupOrderInput(customer_id=input.customer_id, order_id=order_id),
            result_type=LookupOrderResult,
            start_to_close_timeout=SYSTEM_TIMEOUT,
            retry_policy=SYSTEM_RETRY,
            summary=f"Look up order {order_id or '(none given)'}",
        )
        if lookup.customer is not None:
            self._customer_name = lookup.customer.name
            self._state.customer_tier = lookup.customer.tier
            workflow.upsert_search_attributes(
                [sa.CUSTOMER_TIER.value_set(lookup.customer.tier.value)]
            )
        if lookup.problem or lookup.customer is None or lookup.order is None:
            reason = lookup.problem or "the order could not be found"
            await self._audit("order_lookup_failed", reason=reason)
            return await self._finish(RefundOutcome.NEEDS_HUMAN, POLICY_ACTOR, [reason])

        order = lookup.order
        self._currency = order.currency
        self._state.amount_cents = order.amount_cents
        workflow.upsert_search_attributes([sa.AMOUNT.value_set(order.amount_cents / 100)])

        assessment = assess_refund(
            order=order,
            customer=lookup.customer,
            intent=triage.intent,
            intent_confidence=triage.intent_confidence,
            policy=input.policy,
            now=workflow.now(),
        )
        self._state.assessment = assessment
        await self._audit(
            "assessed",
            eligible=assessment.eligible,
            automatic=assessment.automatic,
            risk=assessment.risk.value,
            recommendation=assessment.recommendation,
            reasons=assessment.reasons,
            amount_cents=assessment.amount_cents,
            policy=input.policy.model_dump(mode="json"),
        )

        if assessment.automatic_rejection:
            return await self._finish(RefundOutcome.REJECTED, POLICY_ACTOR, assessment.reasons)
        if assessment.automatic:
            return await self._finish(
                RefundOutcome.AUTO_RESOLVED, POLICY_ACTOR, assessment.reasons, refund=True
            )
        return await self._ask_people(assessment)

    async def _ask_people(self, assessment: RefundAssessment) -> RefundCaseResult:
        policy = self._input.policy.approval_for(assessment.risk)
        reasons = assessment.reasons
        amount = format_amount(assessment.amount_cents, self._currency)
        request = self._gate.open(
            request_id=APPROVAL_REQUEST_ID,
            now=workflow.now(),
            policy=policy,
            requested_by=self._input.requester,
            recommendation=assessment.recommendation,
            reasons=reasons,
            subject=(
                f"Refund of {amount} for order {self._state.order_id} "
                f"(customer {self._input.customer_id}, {assessment.risk.value} risk); "
                f"Podium recommends {assessment.recommendation}"
            ),
            amount_cents=assessment.amount_cents,
        )
        self._state.approval = request
        self._state.status = CaseStatus.AWAITING_APPROVAL
        workflow.upsert_search_attributes([sa.STATUS.value_set(CaseStatus.AWAITING_APPROVAL.value)])
        self._publish()
        await self._update_ticket(
            TicketStatus.AWAITING_APPROVAL,
            f"Awaiting approval ({request.request_id}, level {request.level_name}); Podium "
            f"recommends {assessment.recommendation}: " + "; ".join(reasons),
        )
        await self._audit(
            "approval_requested",
            request_id=request.request_id,
            risk=assessment.risk.value,
            recommendation=assessment.recommendation,
            requested_by=request.requested_by,
            levels=[level.name for level in policy.levels],
            sla_due_at=request.sla_due_at.isoformat(),
            deadline_at=request.deadline_at.isoformat(),
            default_action=policy.default_action.value,
        )

        outcome = await self._gate.run()
        self._state.status = CaseStatus.RESOLVING
        return await self._apply(outcome, reasons)

    async def _apply(self, outcome: GateOutcome, reasons: list[str]) -> RefundCaseResult:
        """Carry out what the gate concluded."""
        if outcome.status == GateStatus.REJECTED:
            closing = outcome.closing
            why = (closing.reason if closing else None) or "rejected by the approver"
            return await self._finish(RefundOutcome.REJECTED, outcome.decided_by, [*reasons, why])
        if outcome.status == GateStatus.APPROVED:
            return await self._finish(
                RefundOutcome.APPROVED,
                outcome.decided_by,
                [*reasons, *self._amount_note(outcome)],
                refund=True,
                refund_cents=outcome.amount_cents,
            )
        # Expired: the policy's default action, recorded as such.
        if outcome.approved_by_default:
            limit = format_amount(outcome.approve_limit_cents or 0, self._currency)
            return await self._finish(
                RefundOutcome.APPROVED,
                DEADLINE_ACTOR,
                [
                    *reasons,
                    *self._amount_note(outcome),
                    f"no decision before the deadline: approved by default within {limit}",
                ],
                refund=True,
                refund_cents=outcome.amount_cents,
            )
        if outcome.default_action == DefaultAction.HANDOFF:
            return await self._finish(
                RefundOutcome.NEEDS_HUMAN,
                DEADLINE_ACTOR,
                [*reasons, "no decision before the deadline: handed off to a person"],
            )
        why = "no decision before the deadline: denied by default"
        if outcome.default_action == DefaultAction.APPROVE_WITHIN_LIMIT:
            limit = format_amount(outcome.approve_limit_cents or 0, self._currency)
            why = f"no decision before the deadline: over the default approval limit of {limit}"
        return await self._finish(RefundOutcome.ESCALATED_EXPIRED, DEADLINE_ACTOR, [*reasons, why])

    def _amount_note(self, outcome: GateOutcome) -> list[str]:
        original = self._state.amount_cents
        if outcome.amount_cents is None or original is None or outcome.amount_cents >= original:
            return []
        return [
            f"approved for {format_amount(outcome.amount_cents, self._currency)} "
            f"instead of {format_amount(original, self._currency)}"
        ]

    async def _escalate(self, reason: str) -> None:
        self._state.status = CaseStatus.ESCALATED
        workflow.upsert_search_attributes([sa.STATUS.value_set(CaseStatus.ESCALATED.value)])
        self._publish()
        await self._update_ticket(TicketStatus.ESCALATED, f"Escalated: {reason}", escalated=True)

    async def _finish(
        self,
        outcome: RefundOutcome,
        decided_by: str,
        reasons: list[str],
        *,
        refund: bool = False,
        refund_cents: int | None = None,
    ) -> RefundCaseResult:
        if refund:
            outcome, reasons = await self._issue_refund(
                outcome, reasons, refund_cents or self._state.amount_cents
            )
        # The outcome is settled here; what follows tells the ticket and the customer.
        self._state.outcome = outcome
        self._state.decision = self._gate.settle(outcome=outcome, refund_id=self._state.refund_id)

        await self._update_ticket(TICKET_STATUS[outcome], f"Outcome: {outcome.value}")
        draft = await workflow.execute_activity(
            "draft_reply",
            DraftReplyInput(
                case_id=self._case_id,
                template=REPLY_TEMPLATES[outcome],
                customer_name=self._customer_name,
                order_id=self._state.order_id,
                amount_cents=self._state.refund_amount_cents or self._state.amount_cents,
                currency=self._currency,
                reason=reasons[-1] if reasons else None,
            ),
            result_type=DraftReplyResult,
            start_to_close_timeout=MODEL_TIMEOUT,
            retry_policy=MODEL_RETRY,
            summary=f"Draft the customer reply ({REPLY_TEMPLATES[outcome]})",
        )
        self._state.reply = draft.text
        sent = await workflow.execute_activity(
            "send_reply",
            SendReplyInput(
                idempotency_key=f"{self._case_id}:reply",
                case_id=self._case_id,
                customer_id=self._input.customer_id,
                channel=self._input.channel,
                text=draft.text,
            ),
            result_type=SendReplyResult,
            start_to_close_timeout=SYSTEM_TIMEOUT,
            retry_policy=SYSTEM_RETRY,
            summary="Send the reply to the customer",
        )
        # Refused signals that arrived after the gate closed still get their audit record.
        await self._gate.drain()
        await self._audit(
            "case_closed",
            actor=decided_by,
            outcome=outcome.value,
            refund_id=self._state.refund_id,
            reasons=reasons,
            reply_message_id=sent.message_id,
            reply_model=draft.model,
        )

        self._state.status = CaseStatus.COMPLETED
        workflow.upsert_search_attributes(
            [
                sa.OUTCOME.value_set(outcome.value),
                sa.STATUS.value_set(CaseStatus.COMPLETED.value),
                sa.AWAITING_APPROVAL.value_set(False),
            ]
        )
        self._publish()
        # Let an in-flight `decide` update return its answer before the run completes.
        await workflow.wait_condition(workflow.all_handlers_finished)
        return RefundCaseResult(
            case_id=self._case_id,
            outcome=outcome,
            amount_cents=self._state.amount_cents,
            refund_amount_cents=self._state.refund_amount_cents,
            refund_id=self._state.refund_id,
            decided_by=decided_by,
            reasons=reasons,
            reply=draft.text,
        )

    async def _issue_refund(
        self, outcome: RefundOutcome, reasons: list[str], amount_cents: int | None
    ) -> tuple[RefundOutcome, list[str]]:
        assert self._state.order_id is not None and amount_cents is not None
        try:
            refund = await workflow.execute_activity(
                "issue_refund",
                IssueRefundInput(
                    idempotency_key=f"{self._case_id}:refund",
                    case_id=self._case_id,
                    order_id=self._state.order_id,
                    customer_id=self._input.customer_id,
                    amount_cents=amount_cents,
                    currency=self._currency,
                    reason="; ".join(reasons),
                ),
                result_type=IssueRefundResult,
                start_to_close_timeout=SYSTEM_TIMEOUT,
                retry_policy=SYSTEM_RETRY,
                summary=f"Issue refund of {format_amount(amount_cents, self._currency)}",
            )
        except ActivityError as err:
            cause = err.cause
            if isinstance(cause, ApplicationError) and cause.non_retryable:
                # The system of record refused (e.g. refunded meanwhile by another case).
                await self._audit("refund_refused", reason=cause.message)
                return RefundOutcome.NEEDS_HUMAN, [*reasons, f"refund refused: {cause.message}"]
            raise
        self._state.refund_id = refund.refund_id
        self._state.refund_amount_cents = refund.amount_cents
        await self._audit(
            "refund_issued",
            refund_id=refund.refund_id,
            amount_cents=refund.amount_cents,
            created=refund.created,
        )
        return outcome, reasons

    # --- helpers --------------------------------------------------------------------------------

    async def _update_ticket(
        self, status: TicketStatus, note: str, *, escalated: bool | None = None
    ) -> None:
        await workflow.execute_activity(
            "update_ticket",
            UpdateTicketInput(case_id=self._case_id, status=status, note=note, escalated=escalated),
            result_type=TicketResult,
            start_to_close_timeout=SYSTEM_TIMEOUT,
            retry_policy=SYSTEM_RETRY,
            summary=f"Ticket -> {status.value}",
        )

    async def _audit(self, action: str, *, actor: str = SYSTEM_ACTOR, **detail: Any) -> None:
        self._audit_seq += 1
        await workflow.execute_activity(
            "record_audit_event",
            AuditEventInput(
                idempotency_key=f"{self._case_id}:audit:{self._audit_seq}",
                case_id=self._case_id,
                process=PROCESS,
                action=action,
                actor=actor,
                detail=detail,
                occurred_at=workflow.now(),
            ),
            result_type=AuditEventResult,
            start_to_close_timeout=SYSTEM_TIMEOUT,
            retry_policy=SYSTEM_RETRY,
            summary=f"Audit: {action}",
        )
        self._publish()

    def _publish(self) -> None:
        """Write the case's current details: what an operator reads first in the Temporal UI."""
        s = self._state
        lines = [
            f"**Status:** {s.status.value}"
            + (f" · **Outcome:** {s.outcome.value}" if s.outcome else "")
        ]
        if s.intent is not None:
            lines.append(
                f"**Intent:** {s.intent.value} ({(s.intent_confidence or 0):.2f})"
                f" · **Sentiment:** {s.sentiment.value if s.sentiment else '-'}"
            )
        if s.order_id:
            amount = format_amount(s.amount_cents, self._currency) if s.amount_cents else "-"
            tier = s.customer_tier.value if s.customer_tier else "-"
            lines.append(f"**Order:** {s.order_id} · {amount} · customer {s.customer_id} ({tier})")
        if s.assessment is not None:
            lines.append(
                f"**Assessment:** recommend {s.assessment.recommendation}, "
                f"risk {s.assessment.risk.value}"
            )
            lines.extend(f"- {reason}" for reason in s.assessment.reasons)
        lines.extend(self._gate.describe())
        if s.decision is not None and s.outcome is not None:
            lines.append(f"**Decided by:** {s.decision.approver} ({s.outcome.value})")
        if s.refund_id:
            refunded = s.refund_amount_cents
            lines.append(
                f"**Refund:** {s.refund_id}"
                + (f" · {format_amount(refunded, self._currency)}" if refunded else "")
            )
        # The UI renders `$...$` as math: escape dollar signs.
        workflow.set_current_details("\n\n".join(lines).replace("$", "\\$"))


def _decision_id(decision: ApprovalDecisionInput) -> str:
    """The caller's idempotency key, else the update's own id (retries reuse it)."""
    if decision.decision_id:
        return decision.decision_id
    update = workflow.current_update_info()
    assert update is not None, "only updates carry an update id"
    return f"update-{update.id}"
