"""Delayed-order inquiry (CX): a customer asks where their order is; Podium answers from the
carrier's tracking, makes good on a late parcel within policy, and keeps watching it.

Steps: open a ticket -> triage the message (sentiment, order id) -> look the order up (value,
promised date, earlier inquiries about it; nothing personal) -> track the parcel at the carrier
(`track_shipment`: HTTP connector, Temporal's retries, a per-provider circuit breaker) -> the
policy (`policies/order_inquiry.yaml`, fixed on the case when it starts): on time, answer with
the estimated date; late within the grace, the new date; late beyond it, a goodwill credit
within the automatic limit (`issue_goodwill_credit`, once per case); delivered already, say so;
high value, repeat complaints, an angry message, an exception asked for, a carrier problem or
a credit over the limit: a person through the approval gate (`workflows.components.approval`;
approve credits the proposed amount, or less with request_changes; reject answers with the date
only) -> draft the reply (`draft_reply`) and send it (`send_reply`) -> audit every step.

Then the case keeps watching the parcel: it subscribes to the carrier's events
(`watch_shipment`, which reads the parcel once subscribed: one delivered since the case's look
closes the case at once, patch `order-inquiry-parcel-read-on-watch`) and sleeps on a durable
timer until the date it gave plus `followup_slack`; then it tracks again, and when the parcel
slipped it writes to the customer with the new date (at most `max_followups` times, then a
person takes the ticket). The carrier's delivered event closes the case: the carrier signs its
webhook (HMAC, shared secret), the API checks the signature and signals `carrier_event` to the
case. No delivery within `watch_limit`: a person takes the ticket.

A carrier outage: each tracking call is retried for up to `CARRIER_BUDGET`, fast-failing while
the connector's circuit is open; then the case waits `carrier_retry_after` on a durable timer and
tries again, `carrier_retry_rounds` times, before a person answers (`carrier_unavailable`). In
the watch, a failed check is tried again at the next round.

Messages:
- update `decide` (ApprovalDecisionInput -> ApprovalDecisionResult): a person's decision, with a
  decision token the validator verifies; admitted only while the gate is quiet
  (`ApprovalGate.admit`). A closing decision answers once it has been carried out.
- signal `carrier_event` (CarrierEvent): a carrier's event on the case's parcel; a delivery
  closes the case. Events of another parcel, and repeats, are ignored (noted).
- signal `customer_message` (CustomerMessage): the customer wrote again in the conversation (the
  intake joined the message to the case). Issues no command: the message's reference (id,
  channel, intent, when; not its text) joins the state and the current details, and the case's
  next audit event names it (`customer_wrote_again`). A repeated message id is ignored.
- query `get_state` -> OrderInquiryState.

Timers: carrier outage rounds; the gate's reminders, SLA and deadline; the follow-up check at
the date given plus the slack; the watch limit.
Search attributes: PodiumProcess, PodiumStatus, PodiumOutcome, PodiumCustomerId, PodiumIntent,
PodiumAmount (order value, dollars), PodiumCustomerTier, PodiumPolicyVersion, PodiumEscalated
(handed to a person) and the gate's PodiumAwaitingApproval / PodiumAwaitingRoles /
PodiumSlaDueAt.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RawValue, RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

from workflows.components.approval import ApprovalGate, GateHooks, decision_from
from workflows.components.audit import record_audit
from workflows.components.messages import describe_messages, join_message
from workflows.contracts import search_attributes as sa

with workflow.unsafe.imports_passed_through():
    from activities.agent_types import (
        IssueGoodwillCreditArgs,
        IssueGoodwillCreditInput,
        IssueGoodwillCreditResult,
        ToolContext,
    )
    from activities.types import (
        DraftReplyInput,
        DraftReplyResult,
        Intent,
        OpenTicketInput,
        SendReplyInput,
        SendReplyResult,
        Sentiment,
        TicketResult,
        TicketStatus,
        TriageInput,
        TriageResult,
        UpdateTicketInput,
    )
    from workflows.contracts.approval import (
        ApprovalDecisionInput,
        ApprovalDecisionResult,
        DefaultAction,
        GateStatus,
    )
    from workflows.contracts.carrier import (
        CarrierEvent,
        ShipmentStatus,
        ShipmentTracking,
        TrackShipmentInput,
        WatchShipmentInput,
        WatchShipmentResult,
    )
    from workflows.contracts.messages import CustomerMessage
    from workflows.contracts.orders import InquiryOrder, LookupInquiryOrderInput
    from workflows.order_inquiry.rules import assess_inquiry, format_amount, slipped
    from workflows.order_inquiry.types import (
        AUTOMATED,
        OrderInquiryDecision,
        OrderInquiryInput,
        OrderInquiryOutcome,
        OrderInquiryResult,
        OrderInquiryState,
        OrderInquiryStatus,
        Route,
    )

__all__ = ["PROCESS", "OrderInquiryWorkflow"]

PROCESS = "order_inquiry"
SYSTEM_ACTOR = "podium"
POLICY_ACTOR = "policy"
APPROVAL_REQUEST_ID = "approval-1"
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
# One carrier call: the connector's own timeout is 5 s.
CARRIER_TIMEOUT = timedelta(seconds=15)
# How long one round of tracking keeps retrying (an open circuit says when to try again).
CARRIER_BUDGET = timedelta(minutes=5)
CARRIER_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=60),
    non_retryable_error_types=["CarrierRejected"],
)
# Earlier inquiries about the same order count from this far back.
REPEAT_WINDOW = timedelta(days=30)
# A parcel that slipped and has no new estimate is checked again after this long.
NO_ESTIMATE_RECHECK = timedelta(days=1)
# Patch: a parcel `watch_shipment` reports delivered (between the case's look and its
# subscription) closes the case then; before it, the next follow-up check found it.
PARCEL_READ_ON_WATCH = "order-inquiry-parcel-read-on-watch"
TEMPLATES = {
    OrderInquiryOutcome.ON_TIME: "order_on_time",
    OrderInquiryOutcome.LATE_ANSWERED: "order_late",
    OrderInquiryOutcome.CREDIT_ISSUED: "order_late_credit",
    OrderInquiryOutcome.CREDIT_APPROVED: "order_late_credit",
    OrderInquiryOutcome.ANSWERED_AFTER_REVIEW: "order_late",
    OrderInquiryOutcome.CREDIT_REJECTED: "order_late",
    OrderInquiryOutcome.APPROVAL_EXPIRED: "order_late",
    OrderInquiryOutcome.DELIVERED: "order_delivered",
    OrderInquiryOutcome.CARRIER_UNAVAILABLE: "order_checking",
    OrderInquiryOutcome.ORDER_NOT_FOUND: "needs_human",
}
# Outcomes after which a person carries on (the ticket says so); the case stops there.
HANDED_OFF = {OrderInquiryOutcome.CARRIER_UNAVAILABLE, OrderInquiryOutcome.ORDER_NOT_FOUND}


@workflow.defn(name=PROCESS)
class OrderInquiryWorkflow:
    @workflow.init
    def __init__(self, input: OrderInquiryInput) -> None:
        self._input = input
        self._case_id = workflow.info().workflow_id
        self._state = OrderInquiryState(
            case_id=self._case_id,
            status=OrderInquiryStatus.RECEIVED,
            customer_id=input.customer_id,
            order_id=input.order_id,
        )
        self._gate = ApprovalGate(
            process=PROCESS, hooks=GateHooks(audit=self._audit, changed=self._publish)
        )
        self._audit_seq = 0
        self._currency = "USD"
        self._shown_status: str | None = None
        self._events_seen: set[str] = set()
        self._pending_events: list[CarrierEvent] = []
        self._delivered_event: CarrierEvent | None = None
        self._unaudited_messages: list[str] = []

    # --- messages -------------------------------------------------------------------------------

    @workflow.query(name="get_state")
    def get_state(self) -> OrderInquiryState:
        return self._state.model_copy(update={"approval": self._gate.request})

    @workflow.update(name="decide")
    async def decide(self, raw: RawValue) -> ApprovalDecisionResult:
        decision, _ = decision_from(raw)
        decision_id = _decision_id(decision)
        try:
            decision = self._gate.token_identity(decision)
            self._gate.accept(decision, now=workflow.now(), decision_id=decision_id, via="update")
        except ValueError as err:
            self._gate.refuse(decision, str(err), via="update")
            self._publish()
            raise ApplicationError(str(err), type="DecisionRefused", non_retryable=True) from None
        # Answer once the decision has been recorded (and, if it closed the gate, carried out).
        await workflow.wait_condition(lambda: decision_id in self._gate.results)
        return self._gate.results[decision_id]

    @decide.validator
    def validate_decide(self, raw: RawValue) -> None:
        decision, encrypted = decision_from(raw)
        decision = self._gate.verify_now(decision, encrypted=encrypted)
        self._gate.admit(decision, _decision_id(decision))

    @workflow.signal(name="carrier_event")
    def carrier_event(self, event: CarrierEvent) -> None:
        if event.event_id in self._events_seen:
            return
        self._events_seen.add(event.event_id)
        tracking = self._state.tracking
        if tracking is None or tracking.tracking_number is None:
            self._pending_events.append(event)  # sorted out once the parcel is known
            return
        self._take_event(event, tracking.tracking_number)

    @workflow.signal(name="customer_message")
    def customer_message(self, message: CustomerMessage) -> None:
        # No command here (no upsert either: `_show`, not `_publish`): recorded histories replay.
        joined = join_message(self._state.customer_messages, message, received_at=workflow.now())
        if joined is not None:
            self._unaudited_messages.append(joined.message_id)
            self._show()

    def _take_event(self, event: CarrierEvent, tracking_number: str) -> None:
        if event.tracking_number != tracking_number:
            self._state.notes.append(f"ignored a carrier event for parcel {event.tracking_number}")
            return
        if event.status == ShipmentStatus.DELIVERED and self._delivered_event is None:
            self._delivered_event = event
            self._state.delivered_at = event.occurred_at
        elif event.estimated_delivery is not None:
            self._state.notes.append(
                f"carrier: {event.status.value}, expected {event.estimated_delivery.date()}"
            )
        self._publish()

    # --- the process ----------------------------------------------------------------------------

    @workflow.run
    async def run(self, input: OrderInquiryInput) -> OrderInquiryResult:
        state = self._state
        policy = input.policy
        workflow.upsert_search_attributes(
            [
                sa.PROCESS.value_set(PROCESS),
                sa.CUSTOMER_ID.value_set(sa.customer_id_attribute(input.customer_id)),
                sa.AWAITING_APPROVAL.value_set(False),
                *([sa.POLICY_VERSION.value_set(policy.digest)] if policy.digest else []),
            ]
        )
        self._publish()
        await self._audit(
            "inquiry_received",
            actor=input.requested_by,
            channel=input.channel,
            order_id=input.order_id,
            exception_requested=input.exception_requested,
            policy_version=policy.digest,
        )
        ticket = await workflow.execute_activity(
            "open_ticket",
            OpenTicketInput(
                idempotency_key=f"{self._case_id}:ticket",
                case_id=self._case_id,
                customer_id=input.customer_id,
                order_id=input.order_id,
                subject=f"Delayed order inquiry via {input.channel}",
                channel=input.channel,
            ),
            result_type=TicketResult,
            start_to_close_timeout=SYSTEM_TIMEOUT,
            retry_policy=SYSTEM_RETRY,
            summary="Open a ticket for the case",
        )
        self._state.notes.append(f"ticket {ticket.ticket_id}")

        triage = await self._triage(input)
        order_id = input.order_id or (triage.order_ids[0] if triage.order_ids else None)
        state.order_id = order_id
        order: InquiryOrder = await workflow.execute_activity(
            "lookup_inquiry_order",
            LookupInquiryOrderInput(
                case_id=self._case_id,
                customer_id=input.customer_id,
                order_id=order_id,
                since=workflow.now() - REPEAT_WINDOW,
            ),
            result_type=InquiryOrder,
            start_to_close_timeout=SYSTEM_TIMEOUT,
            retry_policy=SYSTEM_RETRY,
            summary=f"Look up order {order_id or '(none given)'}",
        )
        if not order.found or order.order_id is None:
            reason = order.problem or "the order could not be found"
            await self._audit("order_lookup_failed", reason=reason)
            return await self._hand_off(OrderInquiryOutcome.ORDER_NOT_FOUND, [reason])
        self._currency = order.currency
        state.amount_cents = order.amount_cents
        workflow.upsert_search_attributes(
            [
                sa.AMOUNT.value_set(order.amount_cents / 100),
                *([sa.CUSTOMER_TIER.value_set(order.customer_tier)] if order.customer_tier else []),
            ]
        )
        await self._audit(
            "order_found",
            order_id=order.order_id,
            amount_cents=order.amount_cents,
            status=order.status,
            promised_by=_iso(order.promised_by),
            earlier_inquiries=order.earlier_inquiries,
        )

        tracking = await self._track_with_patience(order.order_id)
        if tracking is None:
            return await self._hand_off(
                OrderInquiryOutcome.CARRIER_UNAVAILABLE,
                ["the carrier could not be reached; a person answers"],
            )
        if not tracking.found:
            await self._audit("parcel_not_found", order_id=order.order_id)
            return await self._hand_off(
                OrderInquiryOutcome.ORDER_NOT_FOUND,
                [f"the carrier knows no parcel for order {order.order_id}"],
            )
        assert tracking.tracking_number is not None
        for event in self._pending_events:
            self._take_event(event, tracking.tracking_number)
        self._pending_events.clear()

        decision = assess_inquiry(
            order=order,
            tracking=tracking,
            policy=policy,
            now=workflow.now(),
            sentiment_score=triage.sentiment_score,
            exception_requested=input.exception_requested,
        )
        state.assessment = decision
        await self._audit(
            "assessed",
            route=decision.route.value,
            late_days=decision.late_days,
            credit_cents=decision.credit_cents,
            reasons=decision.reasons,
            policy_version=policy.digest,
        )
        outcome, decided_by, reasons = await self._decide(decision)
        await self._answer(outcome, decided_by, reasons)
        if outcome == OrderInquiryOutcome.DELIVERED:
            state.delivered_at = state.delivered_at or tracking.delivered_at
            return await self._close(outcome, decided_by, "answered", reasons)
        closed_by = await self._watch(tracking)
        return await self._close(outcome, decided_by, closed_by, reasons)

    # --- deciding -------------------------------------------------------------------------------

    async def _decide(
        self, decision: OrderInquiryDecision
    ) -> tuple[OrderInquiryOutcome, str, list[str]]:
        reasons = list(decision.reasons)
        if decision.route == Route.DELIVERED:
            return OrderInquiryOutcome.DELIVERED, POLICY_ACTOR, reasons
        if decision.route == Route.ON_TIME:
            return OrderInquiryOutcome.ON_TIME, POLICY_ACTOR, reasons
        if decision.route == Route.LATE:
            return OrderInquiryOutcome.LATE_ANSWERED, POLICY_ACTOR, reasons
        if decision.route == Route.CREDIT:
            await self._credit(decision.credit_cents, reasons, approved_by=None)
            return OrderInquiryOutcome.CREDIT_ISSUED, POLICY_ACTOR, reasons
        return await self._ask_person(decision, reasons)

    async def _ask_person(
        self, decision: OrderInquiryDecision, reasons: list[str]
    ) -> tuple[OrderInquiryOutcome, str, list[str]]:
        state = self._state
        credit = decision.credit_cents
        proposal = (
            f"a goodwill credit of {format_amount(credit, self._currency)}"
            if credit
            else "the answer with the carrier's date, no credit"
        )
        request = self._gate.open_request(
            request_id=APPROVAL_REQUEST_ID,
            now=workflow.now(),
            policy=self._input.policy.approval,
            requested_by=self._input.requested_by,
            recommendation="approve",
            reasons=reasons,
            subject=(
                f"Delayed order {state.order_id} (customer {self._input.customer_id}, "
                f"late {decision.late_days} days): approve {proposal}"
            ),
            amount_cents=credit or None,
        )
        state.status = OrderInquiryStatus.AWAITING_APPROVAL
        self._publish()
        await self._update_ticket(
            TicketStatus.AWAITING_APPROVAL, "Awaiting approval: " + "; ".join(reasons)
        )
        await self._audit(
            "approval_requested",
            request_id=request.request_id,
            credit_cents=credit,
            levels=[level.name for level in request.policy.levels],
            reasons=reasons,
        )
        outcome = await self._gate.run()
        state.status = OrderInquiryStatus.ANSWERING
        self._publish()
        if outcome.status == GateStatus.APPROVED:
            amount = outcome.amount_cents if outcome.amount_cents is not None else credit
            if amount:
                await self._credit(amount, reasons, approved_by=outcome.decided_by)
                return OrderInquiryOutcome.CREDIT_APPROVED, outcome.decided_by, reasons
            return OrderInquiryOutcome.ANSWERED_AFTER_REVIEW, outcome.decided_by, reasons
        if outcome.status == GateStatus.REJECTED:
            closing = outcome.closing
            why = (closing.reason if closing else None) or "rejected by the approver"
            return OrderInquiryOutcome.CREDIT_REJECTED, outcome.decided_by, [*reasons, why]
        if outcome.approved_by_default and credit:
            await self._credit(credit, reasons, approved_by=outcome.decided_by)
            return OrderInquiryOutcome.CREDIT_APPROVED, outcome.decided_by, reasons
        action = outcome.default_action or DefaultAction.DENY
        why = f"no decision before the deadline ({action.value}): the date only"
        return OrderInquiryOutcome.APPROVAL_EXPIRED, outcome.decided_by, [*reasons, why]

    async def _credit(
        self, amount_cents: int, reasons: list[str], *, approved_by: str | None
    ) -> None:
        state = self._state
        credit: IssueGoodwillCreditResult = await workflow.execute_activity(
            "issue_goodwill_credit",
            IssueGoodwillCreditInput(
                context=ToolContext(
                    case_id=self._case_id,
                    workflow_id=self._case_id,
                    customer_id=self._input.customer_id,
                    idempotency_key=f"{self._case_id}:credit",
                    approved_by=approved_by,
                ),
                arguments=IssueGoodwillCreditArgs(
                    amount_cents=amount_cents,
                    reason=f"late delivery of order {state.order_id}",
                    order_id=state.order_id,
                ),
            ),
            result_type=IssueGoodwillCreditResult,
            start_to_close_timeout=SYSTEM_TIMEOUT,
            retry_policy=SYSTEM_RETRY,
            summary=f"Goodwill credit of {format_amount(amount_cents, self._currency)}",
        )
        state.credit_id = credit.credit_id
        state.credit_cents = credit.amount_cents
        await self._audit(
            "credit_issued",
            actor=approved_by or POLICY_ACTOR,
            credit_id=credit.credit_id,
            amount_cents=credit.amount_cents,
            created=credit.created,
        )

    # --- answering ------------------------------------------------------------------------------

    async def _answer(
        self, outcome: OrderInquiryOutcome, decided_by: str, reasons: list[str]
    ) -> None:
        state = self._state
        state.outcome = outcome.value
        state.reason = reasons[-1] if reasons else None
        effects = {"credit_id": state.credit_id} if state.credit_id else {}
        if self._gate.request is not None:
            state.decision = self._gate.settle(outcome=outcome.value, effects=effects)
        tracking = state.tracking
        if tracking is not None and tracking.status != ShipmentStatus.DELIVERED:
            state.promised_delivery = tracking.estimated_delivery
        await self._reply(TEMPLATES[outcome], "reply", _eta_text(state.promised_delivery))
        workflow.upsert_search_attributes([sa.OUTCOME.value_set(outcome.value)])
        await self._audit(
            "answered",
            actor=decided_by,
            outcome=outcome.value,
            automated=outcome in AUTOMATED,
            promised_delivery=_iso(state.promised_delivery),
            credit_id=state.credit_id,
        )

    async def _reply(self, template: str, step: str, eta: str | None) -> None:
        state = self._state
        draft: DraftReplyResult = await workflow.execute_activity(
            "draft_reply",
            DraftReplyInput(
                case_id=self._case_id,
                template=template,
                customer_name="",  # the greeting stays generic: no name in the case's history
                order_id=state.order_id,
                amount_cents=state.credit_cents,
                currency=self._currency,
                reason=eta,  # the order templates show it as the expected delivery date
            ),
            result_type=DraftReplyResult,
            start_to_close_timeout=MODEL_TIMEOUT,
            retry_policy=MODEL_RETRY,
            summary=f"Draft the customer reply ({template})",
        )
        sent: SendReplyResult = await workflow.execute_activity(
            "send_reply",
            SendReplyInput(
                idempotency_key=f"{self._case_id}:{step}",
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
        await self._audit("reply_sent", template=template, message_id=sent.message_id, step=step)

    # --- watching -------------------------------------------------------------------------------

    async def _watch(self, tracking: ShipmentTracking) -> str:
        """Follow the parcel until it is delivered: `delivered`, `handed_off` or `watch_ended`."""
        state = self._state
        policy = self._input.policy
        assert tracking.tracking_number is not None
        state.status = OrderInquiryStatus.WATCHING
        self._publish()
        await self._update_ticket(TicketStatus.OPEN, "Answered; watching the parcel")
        seen: ShipmentTracking | None = None
        try:
            watched: WatchShipmentResult = await workflow.execute_activity(
                "watch_shipment",
                WatchShipmentInput(case_id=self._case_id, tracking_number=tracking.tracking_number),
                result_type=WatchShipmentResult,
                start_to_close_timeout=CARRIER_TIMEOUT,
                schedule_to_close_timeout=CARRIER_BUDGET,
                retry_policy=CARRIER_RETRY,
                summary=f"Subscribe to the carrier's events on {tracking.tracking_number}",
            )
            await self._audit("parcel_watched", subscribed=watched.subscribed)
            seen = watched.tracking
        except ActivityError as err:
            # The follow-up checks still run: only the early news of a delivery is lost.
            state.notes.append(f"no carrier subscription ({_why(err)}); checks continue")
        if (
            seen is not None
            and seen.status == ShipmentStatus.DELIVERED
            and self._delivered_event is None
            and workflow.patched(PARCEL_READ_ON_WATCH)
        ):
            # Delivered between the case's look and its subscription: no event will come.
            return await self._delivered(seen, "subscription")
        watch_until = workflow.now() + policy.watch_limit
        while self._delivered_event is None:
            now = workflow.now()
            given = state.promised_delivery or now
            check_at = min(
                max(given + policy.followup_slack, now + timedelta(minutes=1)), watch_until
            )
            try:
                await workflow.wait_condition(
                    lambda: self._delivered_event is not None,
                    timeout=check_at - now,
                    timeout_summary="follow-up: check the parcel again",
                )
                break
            except TimeoutError:
                pass
            if workflow.now() >= watch_until:
                await self._audit("watch_ended", follow_ups=state.follow_ups)
                await self._update_ticket(
                    TicketStatus.NEEDS_HUMAN,
                    f"Not delivered within {policy.watch_limit.days} days: a person follows up",
                    escalated=True,
                )
                workflow.upsert_search_attributes([sa.ESCALATED.value_set(True)])
                return "watch_ended"
            latest = await self._track(state.order_id or "", tracking.tracking_number)
            if latest is None:
                state.notes.append("the carrier could not be reached at a follow-up check")
                state.promised_delivery = workflow.now() + policy.carrier_retry_after
                continue
            if latest.status == ShipmentStatus.DELIVERED:
                return await self._delivered(latest, "tracking")
            if not slipped(state.promised_delivery, latest, workflow.now()):
                state.promised_delivery = latest.estimated_delivery
                continue
            if state.follow_ups >= policy.max_followups:
                await self._audit("follow_ups_exhausted", follow_ups=state.follow_ups)
                await self._update_ticket(
                    TicketStatus.NEEDS_HUMAN,
                    f"Slipped again after {state.follow_ups} follow-ups: a person follows up",
                    escalated=True,
                )
                workflow.upsert_search_attributes([sa.ESCALATED.value_set(True)])
                return "handed_off"
            state.follow_ups += 1
            previous = state.promised_delivery
            now = workflow.now()
            new_date = latest.estimated_delivery
            if new_date is None or new_date <= now:
                new_date = now + NO_ESTIMATE_RECHECK
            state.promised_delivery = new_date
            await self._audit(
                "delivery_slipped",
                given=_iso(previous),
                expected=_iso(latest.estimated_delivery),
                follow_up=state.follow_ups,
            )
            await self._reply("order_slipped", f"followup:{state.follow_ups}", _eta_text(new_date))
        event = self._delivered_event
        assert event is not None
        await self._audit(
            "delivered",
            source="carrier_webhook",
            event_id=event.event_id,
            delivered_at=event.occurred_at.isoformat(),
        )
        return "delivered"

    async def _delivered(self, seen: ShipmentTracking, source: str) -> str:
        """The carrier reports the parcel delivered (`source`: what the case read it from)."""
        self._state.tracking = seen
        self._state.delivered_at = seen.delivered_at or workflow.now()
        await self._audit("delivered", source=source, delivered_at=_iso(self._state.delivered_at))
        return "delivered"

    # --- the carrier ----------------------------------------------------------------------------

    async def _track(self, order_id: str, tracking_number: str | None) -> ShipmentTracking | None:
        """One round of tracking (retried within `CARRIER_BUDGET`); None when the carrier
        stayed unavailable."""
        try:
            tracking: ShipmentTracking = await workflow.execute_activity(
                "track_shipment",
                TrackShipmentInput(
                    case_id=self._case_id, order_id=order_id, tracking_number=tracking_number
                ),
                result_type=ShipmentTracking,
                start_to_close_timeout=CARRIER_TIMEOUT,
                schedule_to_close_timeout=CARRIER_BUDGET,
                retry_policy=CARRIER_RETRY,
                summary=f"Track the parcel of order {order_id}",
            )
        except ActivityError as err:
            await self._audit("carrier_unavailable", error=_why(err))
            return None
        self._state.tracking = tracking
        self._publish()
        await self._audit(
            "tracked",
            carrier=tracking.carrier,
            found=tracking.found,
            tracking_number=tracking.tracking_number,
            status=tracking.status.value,
            estimated_delivery=_iso(tracking.estimated_delivery),
        )
        return tracking

    async def _track_with_patience(self, order_id: str) -> ShipmentTracking | None:
        """Track; through an outage, wait `carrier_retry_after` and try again, some rounds."""
        state = self._state
        policy = self._input.policy
        state.status = OrderInquiryStatus.TRACKING
        self._publish()
        for round_ in range(policy.carrier_retry_rounds + 1):
            tracking = await self._track(order_id, None)
            if tracking is not None:
                return tracking
            if round_ == policy.carrier_retry_rounds:
                break
            state.status = OrderInquiryStatus.WAITING_FOR_CARRIER
            state.notes.append(
                f"carrier unavailable: trying again in {policy.carrier_retry_after} "
                f"(round {round_ + 1} of {policy.carrier_retry_rounds})"
            )
            self._publish()
            await workflow.sleep(policy.carrier_retry_after, summary="wait out the carrier outage")
            state.status = OrderInquiryStatus.TRACKING
        return None

    # --- closing --------------------------------------------------------------------------------

    async def _hand_off(
        self, outcome: OrderInquiryOutcome, reasons: list[str]
    ) -> OrderInquiryResult:
        """A person carries on: the ticket says why, the customer hears that someone will."""
        workflow.upsert_search_attributes([sa.ESCALATED.value_set(True)])
        await self._update_ticket(
            TicketStatus.NEEDS_HUMAN, f"{outcome.value}: " + "; ".join(reasons), escalated=True
        )
        await self._answer(outcome, POLICY_ACTOR, reasons)
        return await self._close(outcome, POLICY_ACTOR, "handed_off", reasons)

    async def _close(
        self,
        outcome: OrderInquiryOutcome,
        decided_by: str,
        closed_by: str,
        reasons: list[str],
    ) -> OrderInquiryResult:
        state = self._state
        if closed_by in ("delivered", "answered"):
            await self._update_ticket(TicketStatus.RESOLVED, f"Closed: {closed_by}")
        await self._gate.drain()
        await self._audit(
            "case_closed",
            actor=decided_by,
            outcome=outcome.value,
            closed_by=closed_by,
            follow_ups=state.follow_ups,
            delivered_at=_iso(state.delivered_at),
        )
        state.status = OrderInquiryStatus.COMPLETED
        self._publish()
        await workflow.wait_condition(workflow.all_handlers_finished)
        assessment = state.assessment
        return OrderInquiryResult(
            case_id=self._case_id,
            outcome=outcome,
            automated=outcome in AUTOMATED,
            decided_by=decided_by,
            late_days=assessment.late_days if assessment else 0,
            credit_cents=state.credit_cents,
            credit_id=state.credit_id,
            follow_ups=state.follow_ups,
            delivered_at=state.delivered_at,
            closed_by=closed_by,
            reasons=reasons,
        )

    # --- helpers --------------------------------------------------------------------------------

    async def _triage(self, input: OrderInquiryInput) -> TriageResult:
        """Sentiment and order ids; a model outage leaves a neutral reading (the carrier and
        the order decide the answer, not the model)."""
        try:
            triage: TriageResult = await workflow.execute_activity(
                "triage_request",
                TriageInput(case_id=self._case_id, text=input.message, channel=input.channel),
                result_type=TriageResult,
                start_to_close_timeout=MODEL_TIMEOUT,
                retry_policy=MODEL_RETRY,
                summary="Triage: sentiment and order ids",
            )
        except ActivityError as err:
            self._state.notes.append(f"no model read the message ({_why(err)})")
            await self._audit("triage_unavailable", reason=_why(err))
            return TriageResult(
                intent=Intent.ORDER_STATUS,
                intent_confidence=0.0,
                sentiment=Sentiment.NEUTRAL,
                sentiment_score=0.0,
                model="none",
            )
        workflow.upsert_search_attributes([sa.INTENT.value_set(triage.intent.value)])
        await self._audit(
            "triaged",
            model=triage.model,
            intent=triage.intent.value,
            sentiment=triage.sentiment.value,
            sentiment_score=round(triage.sentiment_score, 3),
            order_ids=triage.order_ids,
        )
        return triage

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
        if self._unaudited_messages:  # the customer wrote again since the last event
            detail["customer_wrote_again"] = self._unaudited_messages
            self._unaudited_messages = []
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
        """Status (search attribute, on change) and the current details of the Temporal UI."""
        s = self._state
        if s.status != self._shown_status:
            self._shown_status = s.status
            workflow.upsert_search_attributes([sa.STATUS.value_set(s.status.value)])
        self._show()

    def _show(self) -> None:
        """The current details of the Temporal UI (no command: a signal handler may call it)."""
        s = self._state
        lines = [
            f"**Status:** {s.status.value}" + (f" · **Outcome:** {s.outcome}" if s.outcome else "")
        ]
        if s.order_id:
            amount = format_amount(s.amount_cents, self._currency) if s.amount_cents else "-"
            lines.append(f"**Order:** {s.order_id} · {amount} · customer {s.customer_id}")
        t = s.tracking
        if t is not None:
            lines.append(
                f"**Parcel:** {t.tracking_number or '-'} ({t.carrier}) · {t.status.value} · "
                f"expected {_eta_text(t.estimated_delivery) or '-'}"
                + (f" · last scan {t.last_event}" if t.last_event else "")
            )
        if s.assessment is not None:
            a = s.assessment
            lines.append(f"**Policy:** {a.route.value}, late {a.late_days} days")
            lines.extend(f"- {reason}" for reason in a.reasons)
        lines.extend(self._gate.describe())
        if s.credit_id:
            lines.append(
                f"**Credit:** {s.credit_id} · {format_amount(s.credit_cents or 0, self._currency)}"
            )
        if s.status == OrderInquiryStatus.WATCHING:
            lines.append(
                f"**Watching:** next check after {_eta_text(s.promised_delivery) or '-'} · "
                f"follow-ups {s.follow_ups}/{self._input.policy.max_followups}"
            )
        if s.delivered_at:
            lines.append(f"**Delivered:** {s.delivered_at:%Y-%m-%d %H:%M UTC}")
        lines.extend(describe_messages(s.customer_messages))
        # The UI renders `$...$` as math: escape dollar signs.
        workflow.set_current_details("\n\n".join(lines).replace("$", "\\$"))


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _eta_text(value: datetime | None) -> str | None:
    return f"{value:%A %d %B %Y}" if value is not None else None


def _why(err: ActivityError) -> str:
    cause = err.cause
    if isinstance(cause, ApplicationError):
        return f"{cause.type or 'error'}: {cause.message}"
    return str(cause or err)


def _decision_id(decision: ApprovalDecisionInput) -> str:
    """The caller's idempotency key, else the update's own id (retries reuse it)."""
    if decision.decision_id:
        return decision.decision_id
    update = workflow.current_update_info()
    assert update is not None, "only updates carry an update id"
    return f"update-{update.id}"
