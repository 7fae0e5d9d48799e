"""Refund process (CX): a customer asks for their money back.

Steps: open a ticket -> triage the message (intent, sentiment, order ids) -> read the attached
receipt, if any (OCR by id: the image stays in the document store, never in history) -> look up
the order (the case's order id, else the message's, else the receipt's) and customer ->
eligibility rules -> decision: refund automatically when policy allows (eligible, amount at or
under the limit, customer in good standing, a clear refund request that a model was sure of, a
receipt that matches the order), refuse at once when the order was already refunded, otherwise
ask people through the approval gate
(`workflows.components.approval`) with the approval policy of the assessed risk level -> issue
the refund idempotently (the approved amount, which an approver may have lowered) -> update the
ticket -> draft and send the reply -> audit every decision.

Model spend: the cost and tokens every model activity reports add up on the case (state,
result, search attribute `PodiumModelCostUsd`); the reply is drafted on the route of the
assessed risk.

Versioning: patch `refund-receipt-ocr` guards what receipt OCR added (the receipt read and its
audit record, the needs-human hold, the cost search attribute, the draft's risk): cases started
before it replay exactly as they ran.

Policy as code (patch `refund-policy-v1`): a case started with a policy file (by its digest,
`policy_digest`, once the starter stores policy versions; before, the whole `policy_document`)
has its autonomy decided by the file's ordered rules, evaluated in the `evaluate_policy`
activity over the case facts (the eligibility facts still come from the refund rules):
auto-approve, auto-reject, or a person through the named approval chain. The version is
stamped on the case (search attribute `PodiumPolicyVersion`, audit `detail.policy_version`) and
the matching rule's explanation goes to the audit trail, the approver and the current details.

A model outage never fails a case: triage retries with backoff for up to 15 minutes, then
(patch `refund-triage-handoff`) the case goes on without a model's reading, audited as
`triage_unavailable`, and a person decides it (a hold on the approval card).

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
- update `record_decision` (the same input and result): the same decision, validated and
  exactly-once alike, answered as soon as it is verified and recorded, before it is carried
  out (`outcome` unset until then: read `get_state` or await the result).
- signal `approval_decision` (ApprovalDecisionInput): the same decision for the Temporal UI and
  fire-and-forget callers; refused signals are logged, audited and noted, not applied.
- Identity (patch `signed-decisions`): a decision applies only with a decision token the worker
  accepts (it holds the key; `core.decision_tokens`): who decides and in which roles come from
  the token, bound to this case and this exact decision; a decision without one, with a forged
  or expired one, or sent unencrypted while the deployment encrypts is refused whatever
  approver the payload names. An update's token is checked by its validator (patch
  `decisions-checked-on-acceptance`: refused before history, the handler awaits no activity);
  a signal's by the `verify_decision` local activity (refused, audited and noted).
- query `get_state` -> RefundCaseState.

Timers (the gate's, per level of the policy): reminders at fractions of the level's SLA; the SLA
escalates (next level, or backup roles; ticket marked); the final deadline (default 7 days)
applies the policy's default action: deny, handoff or approve within a limit.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RawValue, RetryPolicy, SearchAttributeUpdate
from temporalio.exceptions import ActivityError, ApplicationError

from workflows.components.approval import (
    DEADLINE_ACTOR,
    PATCH_CHECKED_ON_ACCEPTANCE,
    ApprovalGate,
    GateHooks,
    GateOutcome,
    decision_from,
)
from workflows.components.audit import record_audit
from workflows.contracts import search_attributes as sa
from workflows.refund.rules import assess_refund, format_amount

with workflow.unsafe.imports_passed_through():
    from activities.types import (
        DraftReplyInput,
        DraftReplyResult,
        Intent,
        IssueRefundInput,
        IssueRefundResult,
        LookupOrderInput,
        LookupOrderResult,
        OpenTicketInput,
        OrderInfo,
        ReadDocumentInput,
        ReadDocumentResult,
        SendReplyInput,
        SendReplyResult,
        Sentiment,
        TicketResult,
        TicketStatus,
        TriageInput,
        TriageResult,
        UpdateTicketInput,
    )
    from activities.types import RiskLevel as ModelRisk
    from workflows.contracts.approval import (
        ApprovalAction,
        ApprovalDecisionInput,
        ApprovalDecisionRecord,
        ApprovalDecisionResult,
        ApprovalPolicy,
        DefaultAction,
        GateStatus,
    )
    from workflows.contracts.policy import (
        AutonomyDecision,
        EvaluatePolicyInput,
        PolicyEvaluation,
        PolicyFacts,
    )
    from workflows.refund.types import (
        CaseStatus,
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
# OCR of a large phone photo on a busy CPU takes seconds, not minutes.
DOCUMENT_TIMEOUT = timedelta(minutes=2)
PATCH_RECEIPT_OCR = "refund-receipt-ocr"
PATCH_POLICY_V1 = "refund-policy-v1"
PATCH_SIGNED_DECISIONS = "signed-decisions"
PATCH_TRIAGE_HANDOFF = "refund-triage-handoff"
# A model provider's outage is waited out this long before a person takes the case.
TRIAGE_BUDGET = timedelta(minutes=15)
TRIAGE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=60),
)
NO_TRIAGE_MODEL = "none (no intent model answered)"
POLICY_TIMEOUT = timedelta(seconds=10)
MICRO_USD = 1_000_000

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
        self._receipt_ocr = False  # set in run(): patch PATCH_RECEIPT_OCR
        self._signed_decisions = False  # set in run(): patch PATCH_SIGNED_DECISIONS
        self._checked_on_acceptance = False  # set in run(): patch PATCH_CHECKED_ON_ACCEPTANCE
        self._triage_unavailable: str | None = None  # why no intent model answered
        self._cost_micro_usd = 0
        self._policy_facts: PolicyFacts | None = None

    # --- messages -------------------------------------------------------------------------------

    @workflow.query(name="get_state")
    def get_state(self) -> RefundCaseState:
        return self._state

    @workflow.update(name="decide")
    async def decide(self, raw: RawValue) -> ApprovalDecisionResult:
        decision_id, _ = await self._take_decision(raw)
        # Answer once the decision has been recorded (and, if it closed the gate, carried out).
        await workflow.wait_condition(lambda: decision_id in self._gate.results)
        return self._gate.results[decision_id]

    @decide.validator
    def validate_decide(self, raw: RawValue) -> None:
        decision, encrypted = decision_from(raw)
        if self._signed_decisions and self._checked_on_acceptance:
            decision = self._gate.verify_now(decision, encrypted=encrypted)
        self._gate.admit(decision, _decision_id(decision))

    @workflow.update(name="record_decision")
    async def record_decision(self, raw: RawValue) -> ApprovalDecisionResult:
        """`decide`, answered as soon as the decision is validated, verified and recorded (the
        update's completion is in history): `gate` says whether it closed the approval;
        `outcome` is set only when the case had already carried it out (a retry). The outcome
        follows in `get_state` and the workflow result."""
        decision_id, record = await self._take_decision(raw)
        return self._gate.results.get(decision_id) or self._acknowledgement(record)

    @record_decision.validator
    def validate_record_decision(self, raw: RawValue) -> None:
        self.validate_decide(raw)

    async def _take_decision(self, raw: RawValue) -> tuple[str, ApprovalDecisionRecord]:
        """Verify and apply a decision (a retry of one already taken applies nothing new):
        its decision id and record. A refused one is audited and raised as `DecisionRefused`."""
        decision, encrypted = decision_from(raw)
        decision_id = _decision_id(decision)
        try:
            if self._signed_decisions and self._checked_on_acceptance:
                decision = self._gate.token_identity(decision)
            elif self._signed_decisions:
                decision = await self._gate.authenticate(decision, encrypted=encrypted)
            record = self._gate.accept(
                decision, now=workflow.now(), decision_id=decision_id, via="update"
            )
        except ValueError as err:
            # A credential that does not hold (audited), or a race with another decision.
            self._gate.refuse(decision, str(err), via="update")
            self._publish()
            raise ApplicationError(str(err), type="DecisionRefused", non_retryable=True) from None
        return decision_id, record

    def _acknowledgement(self, record: ApprovalDecisionRecord) -> ApprovalDecisionResult:
        """What `record_decision` answers for a decision the gate holds but has not answered."""
        request = self._gate.request
        assert request is not None, "a decision was accepted, so a request is open"
        return ApprovalDecisionResult(
            request_id=record.request_id,
            decision_id=record.decision_id,
            action=record.action,
            approved=record.action in (ApprovalAction.APPROVE, ApprovalAction.REQUEST_CHANGES),
            approver=record.approver,
            decided_at=record.decided_at,
            level=record.level,
            level_name=record.level_name,
            gate=request.status,
            waiting_for=self._gate.waiting_for(),
            amount_cents=request.amount_cents,
        )

    @workflow.signal(name="approval_decision")
    async def approval_decision(self, raw: RawValue) -> None:
        try:
            decision, encrypted = decision_from(raw)
        except ValueError as err:
            workflow.logger.warning("approval signal refused: %s", err)
            self._state.notes.append(f"refused an approval signal: {err}")
            return
        decision_id = decision.decision_id or f"signal-{workflow.uuid4()}"
        try:
            if self._signed_decisions:
                decision = await self._gate.authenticate(
                    decision, encrypted=encrypted, local=not self._checked_on_acceptance
                )
            self._gate.accept(decision, now=workflow.now(), decision_id=decision_id, via="signal")
        except ValueError as err:
            workflow.logger.warning("approval signal refused: %s", err)
            self._gate.refuse(decision, str(err), via="signal")
            self._state.notes.append(f"refused approval signal from '{decision.approver}': {err}")
            self._publish()

    # --- the process ----------------------------------------------------------------------------

    @workflow.run
    async def run(self, input: RefundCaseInput) -> RefundCaseResult:
        # False only when replaying a case started before receipt OCR: it runs as it did.
        self._receipt_ocr = workflow.patched(PATCH_RECEIPT_OCR)
        # False only when replaying a case started before decision tokens: it trusted the
        # payload's approver. Every new case applies only decisions whose token verifies.
        self._signed_decisions = workflow.patched(PATCH_SIGNED_DECISIONS)
        # False only when replaying a case whose update handlers checked tokens themselves.
        self._checked_on_acceptance = workflow.patched(PATCH_CHECKED_ON_ACCEPTANCE)
        workflow.upsert_search_attributes(
            [
                sa.PROCESS.value_set(PROCESS),
                sa.STATUS.value_set(CaseStatus.RECEIVED.value),
                sa.CUSTOMER_ID.value_set(sa.customer_id_attribute(input.customer_id)),
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

        triage = await self._triage(input)
        self._state.status = CaseStatus.TRIAGED
        self._state.intent = triage.intent
        self._state.intent_confidence = triage.intent_confidence
        self._state.sentiment = triage.sentiment
        self._add_cost(triage.cost_usd, triage.tokens_in + triage.tokens_out)
        workflow.upsert_search_attributes(
            [
                sa.STATUS.value_set(CaseStatus.TRIAGED.value),
                sa.INTENT.value_set(triage.intent.value),
                *self._cost_attribute(),
            ]
        )
        await self._audit(
            "triaged",
            model=triage.model,
            intent=triage.intent.value,
            confidence=round(triage.intent_confidence, 4),
            sentiment=triage.sentiment.value,
            order_ids=triage.order_ids,
            needs_human=triage.needs_human,
            models_tried=triage.attempts,
            **self._policy_detail(),
        )

        receipt: ReadDocumentResult | None = None
        if self._receipt_ocr and input.attachment_id:
            receipt = await self._read_receipt(input.attachment_id)
        # Precedence: the order id the case names, then the message's, then the receipt's.
        order_id = input.order_id or (triage.order_ids[0] if triage.order_ids else None)
        if order_id is None and receipt is not None and receipt.order_id:
            order_id = receipt.order_id
            self._state.notes.append(f"order id {order_id} read from the attached receipt")
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
            holds=self._holds(triage, receipt, order) if self._receipt_ocr else (),
        )
        self._state.assessment = assessment
        evaluation: PolicyEvaluation | None = None
        if input.has_policy_file and workflow.patched(PATCH_POLICY_V1):
            evaluation = await self._evaluate_policy(assessment, triage, lookup, receipt, order)
        await self._audit(
            "assessed",
            eligible=assessment.eligible,
            automatic=assessment.automatic,
            risk=assessment.risk.value,
            recommendation=assessment.recommendation,
            reasons=assessment.reasons,
            amount_cents=assessment.amount_cents,
            policy=input.policy.model_dump(mode="json"),
            **self._policy_detail(evaluation),
        )
        # A case waiting for a person keeps this frame for days: the step results it no longer
        # reads are not kept with it (what they told the case is in its state and history).
        del ticket, triage, receipt, lookup, order

        if evaluation is not None:
            reasons = [*assessment.reasons, evaluation.explanation]
            if evaluation.decision == AutonomyDecision.AUTO_REJECT:
                return await self._finish(RefundOutcome.REJECTED, POLICY_ACTOR, reasons)
            if evaluation.decision == AutonomyDecision.AUTO_APPROVE:
                return await self._finish(
                    RefundOutcome.AUTO_RESOLVED, POLICY_ACTOR, reasons, refund=True
                )
            return await self._ask_people(assessment, evaluation.approval, reasons)
        if assessment.automatic_rejection:
            return await self._finish(RefundOutcome.REJECTED, POLICY_ACTOR, assessment.reasons)
        if assessment.automatic:
            return await self._finish(
                RefundOutcome.AUTO_RESOLVED, POLICY_ACTOR, assessment.reasons, refund=True
            )
        return await self._ask_people(assessment)

    async def _ask_people(
        self,
        assessment: RefundAssessment,
        chain: ApprovalPolicy | None = None,
        reasons: list[str] | None = None,
    ) -> RefundCaseResult:
        """`chain` and `reasons`: the policy file's approval chain and explanation, if any."""
        policy = chain or self._input.policy.approval_for(assessment.risk)
        reasons = reasons if reasons is not None else assessment.reasons
        amount = format_amount(assessment.amount_cents, self._currency)
        request = self._gate.open_request(
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
        self._state.decision = self._gate.settle(
            outcome=outcome.value,
            effects={"refund_id": self._state.refund_id} if self._state.refund_id else None,
        )

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
                risk=self._draft_risk(),
                model_chain=self._model_chain("draft"),
            ),
            result_type=DraftReplyResult,
            start_to_close_timeout=MODEL_TIMEOUT,
            retry_policy=MODEL_RETRY,
            summary=f"Draft the customer reply ({REPLY_TEMPLATES[outcome]})",
        )
        self._state.reply = draft.text
        self._add_cost(draft.cost_usd, draft.tokens_in + draft.tokens_out)
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
            model_cost_usd=self._state.model_cost_usd,
            model_tokens=self._state.model_tokens,
            **self._policy_detail(),
        )

        self._state.status = CaseStatus.COMPLETED
        workflow.upsert_search_attributes(
            [
                sa.OUTCOME.value_set(outcome.value),
                sa.STATUS.value_set(CaseStatus.COMPLETED.value),
                sa.AWAITING_APPROVAL.value_set(False),
                *self._cost_attribute(),
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
            model_cost_usd=self._state.model_cost_usd,
            model_tokens=self._state.model_tokens,
            policy_version=self._state.policy_version,
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

    # --- policy as code ---------------------------------------------------------------------------

    async def _evaluate_policy(
        self,
        assessment: RefundAssessment,
        triage: TriageResult,
        lookup: LookupOrderResult,
        receipt: ReadDocumentResult | None,
        order: OrderInfo,
    ) -> PolicyEvaluation:
        customer = lookup.customer
        facts = PolicyFacts(
            amount=order.amount_cents / 100,
            customer_tier=customer.tier.value if customer else "",
            customer_standing=customer.standing.value if customer else "",
            channel=self._input.channel,
            intent=triage.intent.value,
            intent_confidence=triage.intent_confidence,
            sentiment=triage.sentiment.value,
            risk=assessment.risk.value,
            eligible=assessment.eligible,
            late=assessment.late,
            within_return_window=assessment.within_return_window,
            already_refunded=assessment.automatic_rejection,
            receipt_mismatch=any(r.startswith("the receipt") for r in assessment.reasons),
            needs_human=triage.needs_human,
            model_cost_usd=self._state.model_cost_usd,
        )
        self._policy_facts = facts
        evaluation: PolicyEvaluation = await workflow.execute_activity(
            "evaluate_policy",
            EvaluatePolicyInput(
                facts=facts,
                policy=self._input.policy_document,
                policy_digest=self._input.policy_digest,
            ),
            result_type=PolicyEvaluation,
            start_to_close_timeout=POLICY_TIMEOUT,
            retry_policy=SYSTEM_RETRY,
            summary="Evaluate the autonomy policy",
        )
        self._state.policy_version = evaluation.policy_version
        self._state.policy_explanation = evaluation.explanation
        workflow.upsert_search_attributes([sa.POLICY_VERSION.value_set(evaluation.policy_version)])
        return evaluation

    def _model_chain(self, task: str) -> list[str] | None:
        """The models the case's policy file routes `task` to, if it overrides the route."""
        document = self._input.policy_document
        routing = (document or {}).get("model_routing") or self._input.policy_routes
        chain = routing.get(task)
        return [str(name) for name in chain] if isinstance(chain, list) and chain else None

    def _policy_detail(self, evaluation: PolicyEvaluation | None = None) -> dict[str, Any]:
        """Audit detail of a case under a policy file: nothing for the others."""
        if not self._input.has_policy_file:
            return {}
        detail: dict[str, Any] = {
            "policy_version": self._state.policy_version or self._input.policy_version
        }
        if evaluation is not None:
            detail |= {
                "policy_rule": evaluation.rule,
                "policy_decision": evaluation.decision.value,
                "approval_chain": evaluation.approval_chain,
                "explanation": evaluation.explanation,
                "facts": self._policy_facts.model_dump(mode="json") if self._policy_facts else None,
            }
        return detail

    # --- receipts and model spend ----------------------------------------------------------------

    async def _triage(self, input: RefundCaseInput) -> TriageResult:
        """Intent, sentiment and order ids. A model outage is waited out (retried with backoff
        for up to `TRIAGE_BUDGET`); past it (patch `refund-triage-handoff`) the case goes on
        without a model's reading and a person decides it: it never fails for want of one."""
        try:
            triage: TriageResult = await workflow.execute_activity(
                "triage_request",
                TriageInput(
                    case_id=self._case_id,
                    text=input.message,
                    channel=input.channel,
                    model_chain=self._model_chain("intent"),
                ),
                result_type=TriageResult,
                start_to_close_timeout=MODEL_TIMEOUT,
                schedule_to_close_timeout=TRIAGE_BUDGET,
                retry_policy=TRIAGE_RETRY,
                summary="Triage: intent, sentiment and order ids",
            )
            return triage
        except ActivityError as err:
            if not workflow.patched(PATCH_TRIAGE_HANDOFF):
                raise
            cause = err.cause
            why = cause.message if isinstance(cause, ApplicationError) else str(cause or err)
            self._triage_unavailable = why
            self._state.notes.append(f"no intent model answered ({why}): a person decides")
            await self._audit("triage_unavailable", reason=why)
            return TriageResult(
                intent=Intent.OTHER,
                intent_confidence=0.0,
                sentiment=Sentiment.NEUTRAL,
                sentiment_score=0.0,
                model=NO_TRIAGE_MODEL,
                needs_human=True,
            )

    async def _read_receipt(self, document_id: str) -> ReadDocumentResult | None:
        """OCR of the attached receipt, by id. A receipt that cannot be read is noted and
        audited; the case goes on without it (it would only have added checks)."""
        self._state.attachment_id = document_id
        try:
            receipt: ReadDocumentResult = await workflow.execute_activity(
                "read_document",
                ReadDocumentInput(
                    case_id=self._case_id, document_id=document_id, today=workflow.now().date()
                ),
                result_type=ReadDocumentResult,
                start_to_close_timeout=DOCUMENT_TIMEOUT,
                retry_policy=MODEL_RETRY,
                summary="Read the attached receipt",
            )
        except ActivityError as err:
            cause = err.cause
            why = cause.message if isinstance(cause, ApplicationError) else str(cause or err)
            self._state.notes.append(f"the attached receipt could not be read: {why}")
            await self._audit("receipt_unreadable", document_id=document_id, reason=why)
            return None
        self._state.receipt = receipt
        self._add_cost(receipt.cost_usd, receipt.tokens_in + receipt.tokens_out)
        await self._audit(
            "receipt_read",
            document_id=document_id,
            order_id=receipt.order_id,
            total_cents=receipt.total_cents,
            currency=receipt.currency,
            document_date=(
                receipt.document_date.isoformat() if receipt.document_date is not None else None
            ),
            confidence=receipt.confidence,
            model=receipt.model,
        )
        return receipt

    def _holds(
        self, triage: TriageResult, receipt: ReadDocumentResult | None, order: OrderInfo
    ) -> list[str]:
        """Reasons, beyond the refund rules, for a person to decide."""
        holds: list[str] = []
        if self._triage_unavailable is not None:
            holds.append(f"no intent model answered ({self._triage_unavailable})")
        elif triage.needs_human:
            tried = ", ".join(triage.attempts) or triage.model
            holds.append(f"no model was sure enough of the intent (tried: {tried})")
        if receipt is None:
            return holds
        if receipt.order_id and receipt.order_id != order.order_id:
            holds.append(f"the receipt is for order {receipt.order_id}, not {order.order_id}")
        if receipt.total_cents is None:
            self._state.notes.append("the attached receipt shows no total to check")
        elif receipt.currency and receipt.currency != order.currency:
            holds.append(
                f"the receipt total {format_amount(receipt.total_cents, receipt.currency)} is "
                f"in {receipt.currency}, the order in {order.currency}"
            )
        elif receipt.total_cents != order.amount_cents:
            holds.append(
                f"the receipt total {format_amount(receipt.total_cents, order.currency)} does "
                f"not match the order amount {format_amount(order.amount_cents, order.currency)}"
            )
        return holds

    def _draft_risk(self) -> ModelRisk | None:
        """The reply is drafted on the model route of the assessed risk (default: medium)."""
        assessment = self._state.assessment
        if not self._receipt_ocr or assessment is None:
            return None
        return ModelRisk(assessment.risk.value)

    def _add_cost(self, cost_usd: float, tokens: int) -> None:
        # Summed in integer micro-dollars: the activities' costs are micro-dollars / 10^6.
        self._cost_micro_usd += round(cost_usd * MICRO_USD)
        self._state.model_cost_usd = self._cost_micro_usd / MICRO_USD
        self._state.model_tokens += tokens

    def _cost_attribute(self) -> list[SearchAttributeUpdate[Any]]:
        if not self._receipt_ocr:
            return []  # a new search attribute in an old case's upsert: not what it recorded
        return [sa.MODEL_COST_USD.value_set(self._state.model_cost_usd)]

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
        await record_audit(
            case_id=self._case_id,
            process=PROCESS,
            seq=self._audit_seq,
            action=action,
            actor=actor,
            detail=detail,
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
        if s.receipt is not None:
            r = s.receipt
            total = format_amount(r.total_cents, r.currency or "USD") if r.total_cents else "-"
            lines.append(
                f"**Receipt:** order {r.order_id or '-'} · {total} · "
                f"{r.document_date.isoformat() if r.document_date else '-'} "
                f"(OCR confidence {r.confidence:.2f})"
            )
        if s.policy_explanation:
            lines.append(f"**Policy** {s.policy_version}: {s.policy_explanation}")
        if s.assessment is not None:
            lines.append(
                f"**Assessment:** recommend {s.assessment.recommendation}, "
                f"risk {s.assessment.risk.value}"
            )
            lines.extend(f"- {reason}" for reason in s.assessment.reasons)
        lines.extend(self._gate.describe())
        if s.model_tokens or s.model_cost_usd:
            lines.append(f"**Model spend:** ${s.model_cost_usd:.4f} · {s.model_tokens} tokens")
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
