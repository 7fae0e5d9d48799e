"""Human handoff (CX and EX): a case only a person can handle reaches the inbox with a summary,
the detected intent and sentiment and a suggested reply; the person answers it or re-routes it
to another registered process.

Steps: triage the message (`triage_request`: intent, sentiment) and brief the person
(`brief_handoff`: a summary and a suggested reply from the knowledge base, with its source, or
an acknowledgement) -> the approval gate puts the case in the inbox of `policy.inbox`
(`support_agent`) -> approve: the person's comment is the reply (the suggested reply when they
write none), sent through `send_reply` (`answered`); reject with reason `route:<process>`: a
case of that process opens with the message (`route_case`, its request built by
`policy.routes`) (`rerouted`); reject with another reason: closed, nothing sent (`closed`); no
one by the deadline: `expired`, escalated. Every step is audited (the reply by message id, never
its text).

Messages:
- update `decide` (ApprovalDecisionInput -> ApprovalDecisionResult): the person's answer on
  `handoff-1`; its validator checks the decision token, that a route names a process of the
  policy, and admits it through `ApprovalGate.admit` while the case is quiet.
- signal `customer_message` (CustomerMessage): the customer wrote again in the conversation
  (the intake joined the message to the case). Issues no command: the message (its id, channel,
  intent, when and its words, which the person answering needs and the case already holds of
  the first message) joins the state, so the inbox card and the current details show it, and
  the case's next audit event names it by id (`customer_wrote_again`). A repeated message id is
  ignored.
- query `get_state` -> HandoffState.

Timers: the gate's reminders, SLA and deadline.
Search attributes: PodiumProcess, PodiumStatus, PodiumOutcome, PodiumCustomerId (a pseudonym
when it is personal data), PodiumIntent, PodiumPolicyVersion, PodiumEscalated (expired) and the
gate's PodiumAwaitingApproval / PodiumAwaitingRoles / PodiumSlaDueAt while it waits.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RawValue, RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

from workflows.components.approval import ApprovalGate, GateHooks, decision_from
from workflows.components.audit import record_audit
from workflows.components.messages import describe_messages, join_message
from workflows.contracts import search_attributes as sa

with workflow.unsafe.imports_passed_through():
    from activities.types import SendReplyInput, SendReplyResult, TriageInput, TriageResult
    from workflows.contracts.approval import (
        ApprovalAction,
        ApprovalDecisionInput,
        ApprovalDecisionResult,
        GateStatus,
    )
    from workflows.contracts.knowledge import (
        BriefHandoffInput,
        BriefHandoffResult,
        RouteCaseInput,
        RouteCaseResult,
    )
    from workflows.contracts.messages import CustomerMessage
    from workflows.handoff.types import (
        ROUTE_PREFIX,
        HandoffInput,
        HandoffOutcome,
        HandoffResult,
        HandoffState,
        HandoffStatus,
    )

__all__ = ["PROCESS", "HandoffWorkflow", "route_of"]

PROCESS = "handoff"
SYSTEM_ACTOR = "podium"
REQUEST_ID = "handoff-1"
STEP_TIMEOUT = timedelta(seconds=60)
STEP_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=5,
)
REPLY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=1),
    maximum_attempts=10,
)
ROUTE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=10,
    non_retryable_error_types=["RouteRefused", "RoutingUnavailable"],
)


def route_of(decision: ApprovalDecisionInput) -> str | None:
    """The process a rejection re-routes to (`route:<process>`), or None."""
    if decision.resolved_action != ApprovalAction.REJECT:
        return None
    return _route_in(decision.reason)


@workflow.defn(name=PROCESS)
class HandoffWorkflow:
    @workflow.init
    def __init__(self, input: HandoffInput) -> None:
        self._input = input
        self._case_id = workflow.info().workflow_id
        self._state = HandoffState(
            case_id=self._case_id,
            status=HandoffStatus.BRIEFING,
            customer_id=input.customer_id,
            handoff_reason=input.reason,
            routes=sorted(input.policy.routes),
        )
        self._gate = ApprovalGate(
            process=PROCESS, hooks=GateHooks(audit=self._audit, changed=self._publish)
        )
        self._audit_seq = 0
        self._shown_status: str | None = None
        self._unaudited_messages: list[str] = []

    # --- messages -------------------------------------------------------------------------------

    @workflow.query(name="get_state")
    def get_state(self) -> HandoffState:
        return self._state.model_copy(update={"approval": self._gate.request})

    @workflow.update(name="decide")
    async def decide(self, raw: RawValue) -> ApprovalDecisionResult:
        decision, _ = decision_from(raw)
        decision_id = _decision_id(decision)
        try:
            decision = self._gate.token_identity(decision)
            self._check_route(decision)
            self._gate.accept(decision, now=workflow.now(), decision_id=decision_id, via="update")
        except ValueError as err:
            self._gate.refuse(decision, str(err), via="update")
            self._publish()
            raise ApplicationError(str(err), type="DecisionRefused", non_retryable=True) from None
        await workflow.wait_condition(lambda: decision_id in self._gate.results)
        return self._gate.results[decision_id]

    @decide.validator
    def validate_decide(self, raw: RawValue) -> None:
        decision, encrypted = decision_from(raw)
        decision = self._gate.verify_now(decision, encrypted=encrypted)
        self._check_route(decision)
        self._gate.admit(decision, _decision_id(decision))

    @workflow.signal(name="customer_message")
    def customer_message(self, message: CustomerMessage) -> None:
        # No command here (no upsert either: `_show`, not `_publish`): recorded histories replay.
        joined = join_message(
            self._state.customer_messages, message, received_at=workflow.now(), keep_text=True
        )
        if joined is not None:
            self._unaudited_messages.append(joined.message_id)
            self._show()

    def _check_route(self, decision: ApprovalDecisionInput) -> None:
        target = route_of(decision)
        if target is not None and target not in self._input.policy.routes:
            raise ValueError(
                f"'{target}' is not a process this case may be routed to; routes: "
                + ", ".join(sorted(self._input.policy.routes))
            )

    # --- the process ----------------------------------------------------------------------------

    @workflow.run
    async def run(self, input: HandoffInput) -> HandoffResult:
        state = self._state
        workflow.upsert_search_attributes(
            [
                sa.PROCESS.value_set(PROCESS),
                sa.CUSTOMER_ID.value_set(sa.customer_id_attribute(input.customer_id)),
                sa.AWAITING_APPROVAL.value_set(False),
            ]
        )
        if input.policy.digest:
            workflow.upsert_search_attributes([sa.POLICY_VERSION.value_set(input.policy.digest)])
        self._publish()
        await self._audit(
            "handoff_requested",
            actor=input.requested_by,
            customer_id=input.customer_id,
            channel=input.channel,
            reason=input.reason,
            policy_version=input.policy.digest,
        )
        try:
            triage: TriageResult | None = await workflow.execute_activity(
                "triage_request",
                TriageInput(case_id=self._case_id, text=input.message, channel=input.channel),
                result_type=TriageResult,
                start_to_close_timeout=STEP_TIMEOUT,
                retry_policy=STEP_RETRY,
                summary="Detect intent and sentiment",
            )
        except ActivityError:
            triage = None  # the person reads the message without them
        if triage is not None:
            state.intent = triage.intent.value
            state.intent_confidence = triage.intent_confidence
            state.sentiment = triage.sentiment.value
            workflow.upsert_search_attributes([sa.INTENT.value_set(triage.intent.value)])
        briefed: BriefHandoffResult = await workflow.execute_activity(
            "brief_handoff",
            BriefHandoffInput(case_id=self._case_id, message=input.message),
            result_type=BriefHandoffResult,
            start_to_close_timeout=STEP_TIMEOUT,
            retry_policy=STEP_RETRY,
            summary="Summarise and suggest a reply",
        )
        state.summary = briefed.summary
        state.suggested_reply = briefed.suggested_reply
        state.sources = briefed.sources
        await self._audit(
            "handoff_briefed",
            intent=state.intent,
            intent_confidence=state.intent_confidence,
            sentiment=state.sentiment,
            sources=[hit.doc_id for hit in briefed.sources],
            model=briefed.model,
        )
        return await self._ask()

    async def _ask(self) -> HandoffResult:
        state = self._state
        policy = self._input.policy
        reasons = [
            f"handed to a person: {self._input.reason}",
            f"intent {state.intent or 'unknown'}, sentiment {state.sentiment or 'unknown'}",
            "approve sends your comment as the reply (the suggested reply without one); "
            f"reject with reason '{ROUTE_PREFIX}<process>' re-routes it",
        ]
        self._gate.open_request(
            request_id=REQUEST_ID,
            now=workflow.now(),
            policy=policy.inbox,
            requested_by=self._input.requested_by,
            recommendation="approve",
            reasons=reasons,
            subject=f"Handoff from {self._input.customer_id}",
        )
        state.status = HandoffStatus.AWAITING_PERSON
        await self._audit(
            "approval_requested",
            request_id=REQUEST_ID,
            levels=[level.name for level in policy.inbox.levels],
            reasons=reasons,
        )
        self._publish()
        outcome = await self._gate.run()
        closing = self._gate.closing
        if outcome.status == GateStatus.APPROVED and closing is not None:
            text = (closing.comment or "").strip() or state.suggested_reply or ""
            await self._reply(text, closing.approver, own=bool((closing.comment or "").strip()))
            return await self._finish(
                HandoffOutcome.ANSWERED, f"answered by {closing.approver}", closing.approver
            )
        if outcome.status == GateStatus.REJECTED and closing is not None:
            target = _route_in(closing.reason)
            if target is not None:
                return await self._route(target, closing.approver)
            return await self._finish(
                HandoffOutcome.CLOSED, closing.reason or "closed", closing.approver
            )
        workflow.upsert_search_attributes([sa.ESCALATED.value_set(True)])
        return await self._finish(HandoffOutcome.EXPIRED, "nobody took the case in time", None)

    async def _reply(self, text: str, person: str, *, own: bool) -> None:
        self._state.status = HandoffStatus.REPLYING
        self._publish()
        sent: SendReplyResult = await workflow.execute_activity(
            "send_reply",
            SendReplyInput(
                idempotency_key=f"{self._case_id}:reply:1",
                case_id=self._case_id,
                customer_id=self._input.customer_id,
                channel=self._input.channel,
                text=text,
            ),
            result_type=SendReplyResult,
            start_to_close_timeout=STEP_TIMEOUT,
            retry_policy=REPLY_RETRY,
            summary="Send the person's reply",
        )
        self._state.reply_message_id = sent.message_id
        await self._audit(
            "reply_sent",
            actor=person,
            message_id=sent.message_id,
            channel=self._input.channel,
            written_by="person" if own else "suggested",
        )

    async def _route(self, target: str, person: str) -> HandoffResult:
        state = self._state
        state.status = HandoffStatus.ROUTING
        self._publish()
        case = {
            "message": self._input.message,
            "customer_id": self._input.customer_id,
            "channel": self._input.channel,
        }
        fields = self._input.policy.routes[target]
        try:
            opened: RouteCaseResult = await workflow.execute_activity(
                "route_case",
                RouteCaseInput(
                    idempotency_key=f"{self._case_id}:route:1",
                    process=target,
                    request={field: case[source] for field, source in fields.items()},
                    requested_by=person,
                ),
                result_type=RouteCaseResult,
                start_to_close_timeout=STEP_TIMEOUT,
                retry_policy=ROUTE_RETRY,
                summary=f"Open a {target} case with the message",
            )
        except ActivityError as err:
            cause = err.cause
            kind = cause.type if isinstance(cause, ApplicationError) and cause.type else "Failure"
            await self._audit("route_failed", actor=person, process=target, error=kind)
            workflow.upsert_search_attributes([sa.ESCALATED.value_set(True)])
            return await self._finish(
                HandoffOutcome.ROUTE_FAILED, f"{target} refused the case ({kind})", person
            )
        state.routed_to = opened.case_id
        await self._audit(
            "case_rerouted",
            actor=person,
            process=target,
            routed_case_id=opened.case_id,
            created=opened.created,
        )
        return await self._finish(HandoffOutcome.REROUTED, f"re-routed to {target}", person)

    async def _finish(
        self, outcome: HandoffOutcome, reason: str, handled_by: str | None
    ) -> HandoffResult:
        state = self._state
        state.outcome = outcome.value
        state.reason = reason
        state.status = HandoffStatus.COMPLETED
        effects = {
            key: value
            for key, value in (
                ("message_id", state.reply_message_id),
                ("routed_to", state.routed_to),
            )
            if value
        }
        state.decision = self._gate.settle(outcome=outcome.value, effects=effects)
        await self._audit("handoff_finished", outcome=outcome.value, reason=reason)
        workflow.upsert_search_attributes([sa.OUTCOME.value_set(outcome.value)])
        self._publish()
        await workflow.wait_condition(workflow.all_handlers_finished)
        return HandoffResult(
            case_id=self._case_id,
            outcome=outcome,
            handled_by=handled_by,
            reply_message_id=state.reply_message_id,
            routed_to=state.routed_to,
            reason=reason,
        )

    # --- helpers --------------------------------------------------------------------------------

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

    def _publish(self) -> None:
        """Status (search attribute, on change) and the current details of the Temporal UI."""
        s = self._state
        if s.status != self._shown_status:
            self._shown_status = s.status
            workflow.upsert_search_attributes([sa.STATUS.value_set(s.status)])
        self._show()

    def _show(self) -> None:
        """The current details of the Temporal UI (no command: a signal handler may call it)."""
        s = self._state
        lines = [
            f"**Status:** {s.status}" + (f" · **Outcome:** {s.outcome}" if s.outcome else ""),
            f"**Why a person:** {s.handoff_reason}",
        ]
        if s.intent:
            lines.append(
                f"**Intent:** {s.intent} ({s.intent_confidence or 0:.2f}) · "
                f"**Sentiment:** {s.sentiment}"
            )
        if s.summary:
            lines.append(f"**Summary:** {s.summary}")
        if s.suggested_reply:
            sources = ", ".join(f"{hit.doc_id} {hit.title}" for hit in s.sources)
            lines.append(
                f"**Suggested reply:** {s.suggested_reply}"
                + (f" (from {sources})" if sources else "")
            )
        lines.extend(describe_messages(s.customer_messages))
        lines.extend(self._gate.describe())
        if s.reply_message_id:
            lines.append(f"**Reply:** sent ({s.reply_message_id})")
        if s.routed_to:
            lines.append(f"**Re-routed to:** {s.routed_to}")
        if s.reason and s.outcome:
            lines.append(f"**Why:** {s.reason}")
        workflow.set_current_details("\n\n".join(lines).replace("$", "\\$"))


def _route_in(reason: str | None) -> str | None:
    text = (reason or "").strip()
    if not text.lower().startswith(ROUTE_PREFIX):
        return None
    rest = text[len(ROUTE_PREFIX) :].strip()
    return rest.split()[0] if rest else ""


def _decision_id(decision: ApprovalDecisionInput) -> str:
    """The caller's idempotency key, else the update's own id (retries reuse it)."""
    if decision.decision_id:
        return decision.decision_id
    update = workflow.current_update_info()
    assert update is not None, "only updates carry an update id"
    return f"update-{update.id}"
