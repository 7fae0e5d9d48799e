"""`make bench`'s baseline: a bare workflow running a refund case's steps as plain activities.

`bench_shaped` calls the same real activities as a refund case, in the same order, with the same
kind of inputs (and idempotency keys), and nothing else: no search attributes, no current
details, no approval gate, no state to publish. Audit events are plain activities, as a bare
Temporal workflow would write them.

- automatic (the policy file auto-approves): open_ticket, triage_request, audit, lookup_order,
  evaluate_policy, audit, issue_refund, audit, update_ticket, draft_reply, send_reply, audit;
- a person decides: ... evaluate_policy, audit, update_ticket, audit, notify_approvers, then
  waits for its `decide` update (checked by the same `verify_decision` local activity; it
  answers once the decision is verified and recorded), audit, issue_refund, audit,
  update_ticket, draft_reply, send_reply, audit.

    python -m bench.shaped     # its worker: `worker.run` with this one process registered

The worker is Podium's own entry point (`worker.run`) with a registry holding only this
workflow: the same settings, activities (and models), thread pool, sandbox, payload codec and
decision key as Podium's worker.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from temporalio import workflow
from temporalio.common import RawValue, RetryPolicy
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.types import (
        ApprovalNoticeKind,
        AuditEventInput,
        AuditEventResult,
        DraftReplyInput,
        DraftReplyResult,
        IssueRefundInput,
        IssueRefundResult,
        LookupOrderInput,
        LookupOrderResult,
        NotifyApproversInput,
        NotifyApproversResult,
        OpenTicketInput,
        SendReplyInput,
        SendReplyResult,
        TicketResult,
        TicketStatus,
        TriageInput,
        TriageResult,
        UpdateTicketInput,
    )
    from bench.shaped_types import (
        ShapedDecisionResult,
        ShapedInput,
        ShapedResult,
        ShapedState,
    )
    from workflows.components.approval import decision_from
    from workflows.contracts.approval import (
        VerifyDecisionInput,
        VerifyDecisionResult,
        decision_digest,
    )
    from workflows.contracts.policy import (
        AutonomyDecision,
        EvaluatePolicyInput,
        PolicyEvaluation,
        PolicyFacts,
    )

if TYPE_CHECKING:
    from workflows.registry import Registry

__all__ = ["ACTIVITIES", "ShapedWorkflow", "shaped_registry"]

TIMEOUT = timedelta(seconds=30)
MODEL_TIMEOUT = timedelta(seconds=60)
RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=10,
)
DECISION_CHECK_TIMEOUT = timedelta(seconds=10)
REQUEST_ID = "approval-1"
ACTIVITIES = (
    "open_ticket",
    "triage_request",
    "lookup_order",
    "evaluate_policy",
    "update_ticket",
    "issue_refund",
    "draft_reply",
    "send_reply",
    "record_audit_event",
    "notify_approvers",
    "verify_decision",
)


@workflow.defn(name="bench_shaped")
class ShapedWorkflow:
    @workflow.init
    def __init__(self, input: ShapedInput) -> None:
        self._case_id = workflow.info().workflow_id
        self._parked = False
        self._decided_by: str | None = None
        self._seq = 0
        self._activities = 0

    @workflow.query(name="parked")
    def parked(self) -> bool:
        return self._parked and self._decided_by is None

    @workflow.update(name="decide")
    async def decide(self, raw: RawValue) -> ShapedDecisionResult:
        decision, encrypted = decision_from(raw)
        verified: VerifyDecisionResult = await workflow.execute_local_activity(
            "verify_decision",
            VerifyDecisionInput(
                credential=decision.credential or "",
                digest=decision_digest(self._case_id, decision),
                encrypted=encrypted,
            ),
            result_type=VerifyDecisionResult,
            start_to_close_timeout=DECISION_CHECK_TIMEOUT,
        )
        if not verified.valid or self._decided_by is not None:
            raise ApplicationError(verified.reason or "already decided", non_retryable=True)
        self._decided_by = verified.subject
        return ShapedDecisionResult(
            decision_id=decision.decision_id or "", approver=verified.subject
        )

    @decide.validator
    def validate_decide(self, raw: RawValue) -> None:
        decision_from(raw)
        if not self._parked:
            raise ValueError("no approval is pending for this case")
        if self._decided_by is not None:
            raise ValueError("the approval was already decided")

    @workflow.run
    async def run(self, input: ShapedInput) -> ShapedResult:
        case = self._case_id
        await self._call(
            "open_ticket",
            OpenTicketInput(
                idempotency_key=f"{case}:ticket",
                case_id=case,
                customer_id=input.customer_id,
                order_id=input.order_id,
                subject=f"Refund request via {input.channel}",
                channel=input.channel,
            ),
            TicketResult,
        )
        triage: TriageResult = await self._call(
            "triage_request",
            TriageInput(case_id=case, text=input.message, channel=input.channel),
            TriageResult,
            MODEL_TIMEOUT,
        )
        await self._audit("triaged", intent=triage.intent.value, model=triage.model)
        lookup: LookupOrderResult = await self._call(
            "lookup_order",
            LookupOrderInput(customer_id=input.customer_id, order_id=input.order_id),
            LookupOrderResult,
        )
        order, customer = lookup.order, lookup.customer
        if order is None or customer is None:
            raise ApplicationError(f"order {input.order_id} not found", non_retryable=True)
        limit = input.auto_refund_limit
        evaluation: PolicyEvaluation = await self._call(
            "evaluate_policy",
            EvaluatePolicyInput(
                facts=PolicyFacts(
                    amount=order.amount_cents / 100,
                    customer_tier=customer.tier.value,
                    customer_standing=customer.standing.value,
                    channel=input.channel,
                    intent=triage.intent.value,
                    intent_confidence=triage.intent_confidence,
                    sentiment=triage.sentiment.value,
                    risk="low" if order.amount_cents <= limit * 100 else "medium",
                    eligible=True,
                    within_return_window=True,
                    needs_human=triage.needs_human,
                ),
                policy=input.policy_document,
                policy_digest=input.policy_digest,
            ),
            PolicyEvaluation,
        )
        await self._audit("assessed", decision=evaluation.decision.value, rule=evaluation.rule)
        decided_by = "policy"
        if evaluation.decision == AutonomyDecision.HUMAN:
            await self._call(
                "update_ticket",
                UpdateTicketInput(
                    case_id=case, status=TicketStatus.AWAITING_APPROVAL, note="Awaiting approval"
                ),
                TicketResult,
            )
            await self._audit("approval_requested", request_id=REQUEST_ID)
            now = workflow.now()
            await self._call(
                "notify_approvers",
                NotifyApproversInput(
                    idempotency_key=f"{case}:approval:1:request:1",
                    case_id=case,
                    workflow_id=case,
                    namespace=workflow.info().namespace,
                    process="bench_shaped",
                    kind=ApprovalNoticeKind.REQUEST,
                    request_id=REQUEST_ID,
                    level=1,
                    level_name="team_lead",
                    roles=["team_lead"],
                    subject=f"Refund for order {order.order_id}",
                    amount_cents=order.amount_cents,
                    due_at=now + timedelta(hours=48),
                    deadline_at=now + timedelta(days=7),
                ),
                NotifyApproversResult,
            )
            self._parked = True
            await workflow.wait_condition(lambda: self._decided_by is not None)
            decided_by = self._decided_by or ""
            await self._audit("approval_decided", actor=decided_by)
        elif evaluation.decision != AutonomyDecision.AUTO_APPROVE:
            raise ApplicationError(f"unexpected policy decision {evaluation.decision}")
        refund: IssueRefundResult = await self._call(
            "issue_refund",
            IssueRefundInput(
                idempotency_key=f"{case}:refund",
                case_id=case,
                order_id=order.order_id,
                customer_id=input.customer_id,
                amount_cents=order.amount_cents,
                currency=order.currency,
                reason=evaluation.explanation,
            ),
            IssueRefundResult,
        )
        await self._audit("refund_issued", refund_id=refund.refund_id)
        await self._call(
            "update_ticket",
            UpdateTicketInput(case_id=case, status=TicketStatus.RESOLVED, note="Outcome: refunded"),
            TicketResult,
        )
        draft: DraftReplyResult = await self._call(
            "draft_reply",
            DraftReplyInput(
                case_id=case,
                template="refund_approved",
                customer_name=customer.name,
                order_id=order.order_id,
                amount_cents=refund.amount_cents,
                currency=order.currency,
            ),
            DraftReplyResult,
            MODEL_TIMEOUT,
        )
        await self._call(
            "send_reply",
            SendReplyInput(
                idempotency_key=f"{case}:reply",
                case_id=case,
                customer_id=input.customer_id,
                channel=input.channel,
                text=draft.text,
            ),
            SendReplyResult,
        )
        await self._audit("case_closed", refund_id=refund.refund_id)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return ShapedResult(
            case_id=case,
            refund_id=refund.refund_id,
            decided_by=decided_by,
            activities=self._activities,
        )

    async def _call(
        self, name: str, arg: Any, result_type: type, timeout: timedelta = TIMEOUT
    ) -> Any:
        self._activities += 1
        return await workflow.execute_activity(
            name,
            arg,
            result_type=result_type,
            start_to_close_timeout=timeout,
            retry_policy=RETRY,
        )

    async def _audit(self, action: str, *, actor: str = "podium", **detail: Any) -> None:
        self._seq += 1
        await self._call(
            "record_audit_event",
            AuditEventInput(
                idempotency_key=f"{self._case_id}:audit:{self._seq}",
                case_id=self._case_id,
                process="bench_shaped",
                action=action,
                actor=actor,
                detail=detail,
                occurred_at=workflow.now(),
            ),
            AuditEventResult,
        )


def main() -> None:
    """Podium's worker entry point with only `bench_shaped` registered."""
    import asyncio

    from bench.shaped import shaped_registry as registry
    from core.logging import configure_logging
    from core.settings import Settings
    from worker import run

    # `registry` from the module, not from `__main__` (`python -m bench.shaped`): the worker
    # then treats its workflow module as it treats a process's (shared code), like for like.
    settings = Settings()
    configure_logging(settings.log_level, settings.log_json)
    asyncio.run(run(settings, processes=registry()))


def shaped_registry() -> Registry:
    """A registry with `bench_shaped` alone (its worker checks the same activities exist)."""
    from workflows.registry import Process, Registry

    def unused(*_: Any) -> Any:
        raise NotImplementedError("bench_shaped is started by the benchmark directly")

    return Registry(
        [
            Process(
                name="bench_shaped",
                title="Benchmark baseline: a refund case's steps as plain activities",
                workflow=ShapedWorkflow,
                request=ShapedInput,
                input=ShapedInput,
                state=ShapedState,
                result=ShapedResult,
                prepare=unused,
                describe=unused,
                approval_card=unused,
                activities=ACTIVITIES,
            )
        ]
    )


if __name__ == "__main__":
    main()
