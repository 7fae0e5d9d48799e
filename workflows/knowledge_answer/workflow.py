"""Knowledge answer (CX and EX): a question (returns, delivery, leave, expenses, ...) is answered
from the knowledge base, the reply citing its sources; a person checks the answer when retrieval
is unsure.

Steps: search the knowledge base (`search_knowledge`: the documents found, best first, a
confidence and the passages of the best one that answer) -> confidence at or above the policy's
`min_confidence`: the answer and its sources are sent (`send_reply`), outcome `answered` ->
below it (or nothing found): the approval gate asks `review` (policy: `support_agent`) to check
the suggested answer; approve sends it (`answered_after_review`), reject sends nothing
(`not_answered`), no decision by the deadline sends nothing (`review_expired`, escalated).
Every step is audited (document ids, titles and scores; never the document text).

Messages:
- update `decide` (ApprovalDecisionInput -> ApprovalDecisionResult): a person's decision on
  `review-1`, admitted by `ApprovalGate.admit` while the case is quiet and applied with a
  decision token the validator checks; answers once a closing decision has been carried out.
- signal `customer_message` (CustomerMessage): the customer wrote again in the conversation
  (the intake joined the message to the case), e.g. while a person reviews the answer. Issues
  no command: the message's reference (id, channel, intent, when; not its text) joins the state,
  the current details and the reviewer's card, and the case's next audit event names it
  (`customer_wrote_again`). A repeated message id is ignored.
- query `get_state` -> KnowledgeAnswerState.

Timers: the gate's reminders, SLA and deadline.
Search attributes: PodiumProcess, PodiumStatus, PodiumOutcome, PodiumCustomerId (a pseudonym
when it is personal data), PodiumPolicyVersion, PodiumIntent (`knowledge_question`),
PodiumEscalated (review expired) and the gate's PodiumAwaitingApproval / PodiumAwaitingRoles /
PodiumSlaDueAt while a person is asked.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RawValue, RetryPolicy
from temporalio.exceptions import ApplicationError

from workflows.components.approval import ApprovalGate, GateHooks, decision_from
from workflows.components.audit import record_audit
from workflows.components.messages import describe_messages, join_message
from workflows.contracts import search_attributes as sa

with workflow.unsafe.imports_passed_through():
    from activities.types import SendReplyInput, SendReplyResult
    from workflows.contracts.approval import (
        ApprovalDecisionInput,
        ApprovalDecisionResult,
        GateStatus,
    )
    from workflows.contracts.knowledge import SearchKnowledgeInput, SearchKnowledgeResult
    from workflows.contracts.messages import CustomerMessage
    from workflows.knowledge_answer.types import (
        KnowledgeAnswerInput,
        KnowledgeAnswerOutcome,
        KnowledgeAnswerResult,
        KnowledgeAnswerState,
        KnowledgeAnswerStatus,
    )

__all__ = ["PROCESS", "KnowledgeAnswerWorkflow", "reply_with_sources"]

PROCESS = "knowledge_answer"
INTENT = "knowledge_question"
SYSTEM_ACTOR = "podium"
REVIEW_REQUEST = "review-1"
SEARCH_TIMEOUT = timedelta(seconds=30)
SEARCH_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=5,
)
REPLY_TIMEOUT = timedelta(seconds=30)
REPLY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=1),
    maximum_attempts=10,
)


def reply_with_sources(answer: str, found: SearchKnowledgeResult) -> str:
    """The reply: the answer, then the documents it comes from, by id and title."""
    sources = "; ".join(f"[{hit.doc_id}] {hit.title}" for hit in found.hits[:1])
    return f"{answer}\n\nSource: {sources}" if sources else answer


@workflow.defn(name=PROCESS)
class KnowledgeAnswerWorkflow:
    @workflow.init
    def __init__(self, input: KnowledgeAnswerInput) -> None:
        self._input = input
        self._case_id = workflow.info().workflow_id
        self._state = KnowledgeAnswerState(
            case_id=self._case_id,
            status=KnowledgeAnswerStatus.SEARCHING,
            customer_id=input.customer_id,
            min_confidence=input.policy.min_confidence,
        )
        self._gate = ApprovalGate(
            process=PROCESS, hooks=GateHooks(audit=self._audit, changed=self._publish)
        )
        self._audit_seq = 0
        self._shown_status: str | None = None
        self._unaudited_messages: list[str] = []

    # --- messages -------------------------------------------------------------------------------

    @workflow.query(name="get_state")
    def get_state(self) -> KnowledgeAnswerState:
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
        await workflow.wait_condition(lambda: decision_id in self._gate.results)
        return self._gate.results[decision_id]

    @decide.validator
    def validate_decide(self, raw: RawValue) -> None:
        decision, encrypted = decision_from(raw)
        decision = self._gate.verify_now(decision, encrypted=encrypted)
        self._gate.admit(decision, _decision_id(decision))

    @workflow.signal(name="customer_message")
    def customer_message(self, message: CustomerMessage) -> None:
        # No command here (no upsert either: `_show`, not `_publish`): recorded histories replay.
        joined = join_message(self._state.customer_messages, message, received_at=workflow.now())
        if joined is not None:
            self._unaudited_messages.append(joined.message_id)
            self._show()

    # --- the process ----------------------------------------------------------------------------

    @workflow.run
    async def run(self, input: KnowledgeAnswerInput) -> KnowledgeAnswerResult:
        state = self._state
        policy = input.policy
        workflow.upsert_search_attributes(
            [
                sa.PROCESS.value_set(PROCESS),
                sa.CUSTOMER_ID.value_set(sa.customer_id_attribute(input.customer_id)),
                sa.INTENT.value_set(INTENT),
                sa.AWAITING_APPROVAL.value_set(False),
            ]
        )
        if policy.digest:
            workflow.upsert_search_attributes([sa.POLICY_VERSION.value_set(policy.digest)])
        self._publish()
        await self._audit(
            "question_received",
            actor=input.requested_by,
            customer_id=input.customer_id,
            channel=input.channel,
            policy_version=policy.digest,
        )
        found: SearchKnowledgeResult = await workflow.execute_activity(
            "search_knowledge",
            SearchKnowledgeInput(
                case_id=self._case_id, question=input.question, top_k=policy.top_k
            ),
            result_type=SearchKnowledgeResult,
            start_to_close_timeout=SEARCH_TIMEOUT,
            retry_policy=SEARCH_RETRY,
            summary="Search the knowledge base",
        )
        state.hits = found.hits
        state.confidence = found.confidence
        state.suggested_answer = found.answer or None
        sure = bool(found.hits) and found.confidence >= policy.min_confidence
        await self._audit(
            "knowledge_searched",
            sources=[
                {"doc_id": hit.doc_id, "title": hit.title, "score": hit.score} for hit in found.hits
            ],
            confidence=found.confidence,
            min_confidence=policy.min_confidence,
            index_version=found.index_version,
            model=found.model,
            sure=sure,
        )
        self._publish()
        if sure:
            await self._reply(reply_with_sources(found.answer, found))
            return await self._finish(
                KnowledgeAnswerOutcome.ANSWERED,
                f"confidence {found.confidence:.2f} >= {policy.min_confidence:.2f}",
                found,
            )
        return await self._review(found)

    async def _review(self, found: SearchKnowledgeResult) -> KnowledgeAnswerResult:
        policy = self._input.policy
        reasons = [
            f"retrieval is unsure: confidence {found.confidence:.2f} below "
            f"{policy.min_confidence:.2f}"
            if found.hits
            else "no document of the knowledge base matches the question",
            "approve sends the suggested answer with its source; reject sends nothing",
        ]
        self._gate.open_request(
            request_id=REVIEW_REQUEST,
            now=workflow.now(),
            policy=policy.review,
            requested_by=self._input.requested_by,
            recommendation="approve" if found.hits else "reject",
            reasons=reasons,
            subject=f"Knowledge answer for {self._input.customer_id}",
        )
        self._state.status = KnowledgeAnswerStatus.AWAITING_REVIEW
        await self._audit(
            "approval_requested",
            request_id=REVIEW_REQUEST,
            levels=[level.name for level in policy.review.levels],
            reasons=reasons,
        )
        self._publish()
        outcome = await self._gate.run()
        if outcome.status == GateStatus.APPROVED and found.answer:
            await self._reply(reply_with_sources(found.answer, found))
            return await self._finish(
                KnowledgeAnswerOutcome.ANSWERED_AFTER_REVIEW,
                f"checked by {outcome.decided_by}",
                found,
            )
        if outcome.status in (GateStatus.APPROVED, GateStatus.REJECTED):
            closing = self._gate.closing
            why = (closing.reason if closing is not None else None) or "no answer to send"
            return await self._finish(KnowledgeAnswerOutcome.NOT_ANSWERED, why, found)
        workflow.upsert_search_attributes([sa.ESCALATED.value_set(True)])
        return await self._finish(
            KnowledgeAnswerOutcome.REVIEW_EXPIRED, "nobody checked the answer in time", found
        )

    async def _reply(self, text: str) -> None:
        self._state.status = KnowledgeAnswerStatus.REPLYING
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
            start_to_close_timeout=REPLY_TIMEOUT,
            retry_policy=REPLY_RETRY,
            summary="Send the answer with its sources",
        )
        self._state.reply = text
        self._state.reply_message_id = sent.message_id
        await self._audit("reply_sent", message_id=sent.message_id, channel=self._input.channel)

    async def _finish(
        self, outcome: KnowledgeAnswerOutcome, reason: str, found: SearchKnowledgeResult
    ) -> KnowledgeAnswerResult:
        state = self._state
        state.outcome = outcome.value
        state.reason = reason
        state.status = KnowledgeAnswerStatus.COMPLETED
        sources = [hit.doc_id for hit in found.hits[:1]] if state.reply else []
        if self._gate.request is not None:
            effects = {"message_id": state.reply_message_id} if state.reply_message_id else {}
            state.decision = self._gate.settle(outcome=outcome.value, effects=effects)
        await self._audit(
            "question_finished", outcome=outcome.value, reason=reason, sources=sources
        )
        workflow.upsert_search_attributes([sa.OUTCOME.value_set(outcome.value)])
        self._publish()
        await workflow.wait_condition(workflow.all_handlers_finished)
        return KnowledgeAnswerResult(
            case_id=self._case_id,
            outcome=outcome,
            automated=outcome == KnowledgeAnswerOutcome.ANSWERED,
            confidence=found.confidence,
            sources=sources,
            reply_message_id=state.reply_message_id,
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
        lines = [f"**Status:** {s.status}" + (f" · **Outcome:** {s.outcome}" if s.outcome else "")]
        if s.confidence is not None:
            lines.append(
                f"**Confidence:** {s.confidence:.2f} (answers alone from {s.min_confidence:.2f})"
            )
            lines.append(
                "**Sources:** "
                + (
                    ", ".join(f"{hit.doc_id} {hit.title} ({hit.score:.2f})" for hit in s.hits)
                    or "none found"
                )
            )
        lines.extend(describe_messages(s.customer_messages))
        lines.extend(self._gate.describe())
        if s.reply_message_id:
            lines.append(f"**Reply:** sent ({s.reply_message_id})")
        if s.reason and s.outcome:
            lines.append(f"**Why:** {s.reason}")
        workflow.set_current_details("\n\n".join(lines).replace("$", "\\$"))


def _decision_id(decision: ApprovalDecisionInput) -> str:
    """The caller's idempotency key, else the update's own id (retries reuse it)."""
    if decision.decision_id:
        return decision.decision_id
    update = workflow.current_update_info()
    assert update is not None, "only updates carry an update id"
    return f"update-{update.id}"
