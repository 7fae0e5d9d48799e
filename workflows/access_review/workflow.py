"""Access review (EX): every month (the policy's schedule) each manager confirms or revokes the
sensitive access their reports hold, through the same approvals inbox; a review nobody answers
by its deadline revokes the access, or keeps it when the policy says so.

One workflow type, two kinds of case:
- a cycle (`review` None; started by the Temporal Schedule `podium-access-review`, by
  `podium reviews run-now` or `POST /cases/access_review`): lists, from the SCIM directory, who
  holds the access levels the policy reviews (the catalogue's `sensitive` levels by default,
  `list_access_reviews`), then starts one child case per membership and waits for all of them;
  its result counts the outcomes and names the managers with nothing to review.
- a review (`review` set, id `<cycle id>-<n>`): one membership (a person, an application's
  level, its directory group), one approval gate whose level names the reviewer by name
  (`$reviewer`: the person's manager from the directory, else the application's owner, never
  the person), so `PodiumAwaitingRoles = "user:<manager>"` puts it in the manager's inbox and the
  manager decides with the same signed `decide` update as every approval: approve confirms
  (nothing written), reject (a reason required) revokes: one SCIM write, `revoke_membership`,
  which checks membership before removing and records the removal under the case's key, so a
  retry never writes twice. At the deadline the policy's `on_deadline` applies (revoke or keep).

Why one case per membership rather than one per manager or per cycle: the approval gate, the
inbox, the API and the CLI decide one pending approval per case, so each membership gets its
own confirm/revoke with its own audit trail and no new decision shape; each history stays small
(about 60 events), a manager's inbox lists one line per person and access, and a large cycle's
history grows by a few events per review (start and completion of a child), not by every
reminder and decision of every review.

Messages (a review):
- update `decide` (ApprovalDecisionInput -> ApprovalDecisionResult): the reviewer's decision;
  its validator verifies the decision token and refuses the person whose access it is.
- query `get_state` -> AccessReviewState (a cycle: its reviews and their outcomes).

Timers: the gate's reminders (50% and 85% of 14 days) and its deadline (14 days); none in a
cycle, which waits for its reviews.
Search attributes: PodiumProcess, PodiumStatus, PodiumOutcome, PodiumPolicyVersion, and on a
review PodiumCustomerId (the member's user name), PodiumEscalated (no reviewer, directory down)
and the gate's PodiumAwaitingApproval / PodiumAwaitingRoles (`user:<manager>`) / PodiumSlaDueAt.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RawValue, RetryPolicy, SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import ActivityError, ApplicationError, ChildWorkflowError

from workflows.components.approval import ApprovalGate, GateHooks, decision_from
from workflows.components.audit import record_audit
from workflows.contracts import search_attributes as sa

with workflow.unsafe.imports_passed_through():
    from workflows.access_review.rules import (
        outcome_of,
        reviewer_for,
        revokes,
        same_person,
        tally,
    )
    from workflows.access_review.types import (
        AccessReviewInput,
        AccessReviewOutcome,
        AccessReviewResult,
        AccessReviewState,
        AccessReviewStatus,
        ReviewLine,
    )
    from workflows.contracts.access import (
        ListAccessReviewsInput,
        ListAccessReviewsResult,
        NotifyEmployeeInput,
        NotifyEmployeeResult,
        ReviewItem,
        RevokeMembershipInput,
        RevokeMembershipResult,
    )
    from workflows.contracts.approval import ApprovalDecisionInput, ApprovalDecisionResult

__all__ = ["PROCESS", "AccessReviewWorkflow"]

PROCESS = "access_review"
REQUEST_ID = "review-1"
DIRECTORY_TIMEOUT = timedelta(minutes=2)  # a listing reads every reviewed group and its members
DIRECTORY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=10,
    non_retryable_error_types=["ScimRejected", "InvalidId", "InvalidCatalogue"],
)
NOTICE_TIMEOUT = timedelta(seconds=30)
NOTICE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=5,
    non_retryable_error_types=["NoAddressOnFile", "ScimRejected", "InvalidId"],
)
SHOWN_REVIEWS = 25  # lines of a cycle's current details


@workflow.defn(name=PROCESS)
class AccessReviewWorkflow:
    @workflow.init
    def __init__(self, input: AccessReviewInput) -> None:
        self._input = input
        self._case_id = workflow.info().workflow_id
        self._state = AccessReviewState(
            case_id=self._case_id,
            status=AccessReviewStatus.LISTING,
            cycle_id=input.cycle_id,
            review=input.review,
            policy_version=input.policy_version,
            on_deadline=input.policy.on_deadline,
        )
        self._gate = ApprovalGate(
            process=PROCESS, hooks=GateHooks(audit=self._audit, changed=self._publish)
        )
        self._deciding = False
        self._closed = False
        self._removed = 0  # a cycle: memberships its reviews removed
        self._audit_seq = 0
        self._shown_status: str | None = None

    # --- messages -------------------------------------------------------------------------------

    @workflow.query(name="get_state")
    def get_state(self) -> AccessReviewState:
        return self._state.model_copy(update={"approval": self._gate.request})

    @workflow.update(name="decide")
    async def decide(self, raw: RawValue) -> ApprovalDecisionResult:
        decision, _ = decision_from(raw)
        decision_id = _decision_id(decision)
        gate = self._gate
        try:
            decision = gate.token_identity(decision)
            self._refuse_the_member(decision.approver)
            gate.accept(decision, now=workflow.now(), decision_id=decision_id, via="update")
        except ValueError as err:
            gate.refuse(decision, str(err), via="update")
            self._publish()
            raise ApplicationError(str(err), type="DecisionRefused", non_retryable=True) from None
        # Answer once the decision is recorded (and, if it closed the review, carried out).
        await workflow.wait_condition(lambda: decision_id in gate.results or self._closed)
        if decision_id not in gate.results:
            raise ApplicationError(
                f"case {self._case_id} closed before the decision was carried out",
                type="DecisionRefused",
                non_retryable=True,
            )
        return gate.results[decision_id]

    @decide.validator
    def validate_decide(self, raw: RawValue) -> None:
        decision, encrypted = decision_from(raw)
        decision = self._gate.verify_now(decision, encrypted=encrypted)
        if not self._deciding:
            raise ValueError(f"case {self._case_id} is not waiting for a review")
        self._refuse_the_member(decision.approver)
        self._gate.admit(decision, _decision_id(decision))

    def _refuse_the_member(self, approver: str) -> None:
        item = self._input.review
        if item is not None and same_person(approver, item.user_name):
            raise ValueError(
                f"four-eyes: '{approver.strip()}' holds this access and may not review it"
            )

    # --- the process ----------------------------------------------------------------------------

    @workflow.run
    async def run(self, input: AccessReviewInput) -> AccessReviewResult:
        workflow.upsert_search_attributes(
            [
                sa.PROCESS.value_set(PROCESS),
                sa.AWAITING_APPROVAL.value_set(False),
                sa.POLICY_VERSION.value_set(input.policy_version),
            ]
        )
        if input.review is None:
            return await self._cycle(input)
        return await self._review(input, input.review)

    # --- a cycle --------------------------------------------------------------------------------

    async def _cycle(self, input: AccessReviewInput) -> AccessReviewResult:
        state = self._state
        policy = input.policy
        self._publish()
        await self._audit(
            "access_review_cycle_started",
            actor=input.requested_by,
            reviewed=[level.value for level in policy.reviewed],
            on_deadline=policy.on_deadline.value,
            deadline=str(policy.approval.deadline),
            policy_version=input.policy_version,
        )
        try:
            listed: ListAccessReviewsResult = await workflow.execute_activity(
                "list_access_reviews",
                ListAccessReviewsInput(approvals=policy.reviewed),
                result_type=ListAccessReviewsResult,
                start_to_close_timeout=DIRECTORY_TIMEOUT,
                retry_policy=DIRECTORY_RETRY,
                summary="List who holds the reviewed access (directory, catalogue)",
            )
        except ActivityError as err:
            return await self._directory_failed("list_access_reviews", err)
        state.catalogue_version = listed.catalogue_version
        state.catalogue_digest = listed.catalogue_digest
        reviewed_managers = {item.manager for item in listed.items if item.manager}
        state.managers_without_reviews = [m for m in listed.managers if m not in reviewed_managers]
        state.reviews = [
            ReviewLine(
                case_id=f"{self._case_id}-{index}",
                employee=item.user_name,
                application=item.application_title,
                access_level=item.access_level,
                reviewer=reviewer_for(item),
            )
            for index, item in enumerate(listed.items, start=1)
        ]
        await self._audit(
            "access_reviews_listed",
            groups=listed.groups,
            missing_groups=listed.missing_groups,
            reviews=len(state.reviews),
            reviewers=sorted({line.reviewer for line in state.reviews if line.reviewer}),
            managers_without_reviews=state.managers_without_reviews,
            catalogue_version=listed.catalogue_version,
            catalogue_digest=listed.catalogue_digest,
        )
        if not state.reviews:
            return await self._finish_cycle(
                AccessReviewOutcome.NOTHING_TO_REVIEW,
                "nobody holds the reviewed access: no review asked",
            )
        state.status = AccessReviewStatus.REVIEWING
        self._publish()
        await asyncio.gather(
            *(
                self._run_review(line, item)
                for line, item in zip(state.reviews, listed.items, strict=True)
            )
        )
        counts = tally([line.outcome for line in state.reviews])
        return await self._finish_cycle(
            AccessReviewOutcome.CYCLE_COMPLETED,
            ", ".join(f"{n} {outcome}" for outcome, n in counts.items()),
        )

    async def _run_review(self, line: ReviewLine, item: ReviewItem) -> None:
        review = self._input.model_copy(update={"review": item, "cycle_id": self._case_id})
        try:
            result: AccessReviewResult = await workflow.execute_child_workflow(
                PROCESS,
                review,
                id=line.case_id,
                result_type=AccessReviewResult,
                search_attributes=TypedSearchAttributes(
                    [
                        SearchAttributePair(sa.PROCESS, PROCESS),
                        SearchAttributePair(
                            sa.CUSTOMER_ID, sa.customer_id_attribute(item.user_name)
                        ),
                    ]
                ),
                static_summary=f"Access review: {item.user_name} holds {item.application_title} "
                f"({item.access_level}); reviewer {line.reviewer or '-'}",
            )
            line.outcome = result.outcome.value
            self._removed += result.removed
        except ChildWorkflowError as err:
            line.outcome = "failed"
            await self._audit("access_review_failed", review=line.case_id, error=str(err.cause))
        self._publish()

    async def _finish_cycle(self, outcome: AccessReviewOutcome, reason: str) -> AccessReviewResult:
        state = self._state
        counts = tally([line.outcome for line in state.reviews])
        await self._audit(
            "access_review_cycle_finished",
            outcome=outcome.value,
            reviews=len(state.reviews),
            counts=counts,
            removed=self._removed,
        )
        self._complete(outcome, reason)
        return AccessReviewResult(
            case_id=self._case_id,
            outcome=outcome,
            reviews=len(state.reviews),
            counts=counts,
            removed=self._removed,
            managers_without_reviews=state.managers_without_reviews,
            policy_version=self._input.policy_version,
            reason=reason,
        )

    # --- one review -----------------------------------------------------------------------------

    async def _review(self, input: AccessReviewInput, item: ReviewItem) -> AccessReviewResult:
        state = self._state
        reviewer = reviewer_for(item)
        state.reviewer = reviewer
        workflow.upsert_search_attributes(
            [sa.CUSTOMER_ID.value_set(sa.customer_id_attribute(item.user_name))]
        )
        self._publish()
        await self._audit(
            "access_review_opened",
            actor=input.requested_by,
            cycle_id=input.cycle_id,
            employee=item.user_name,
            application=item.application,
            access_level=item.access_level,
            group=item.group,
            manager=item.manager,
            reviewer=reviewer,
            on_deadline=input.policy.on_deadline.value,
        )
        if reviewer is None:
            workflow.upsert_search_attributes([sa.ESCALATED.value_set(True)])
            return await self._finish_review(
                AccessReviewOutcome.NO_REVIEWER,
                f"nobody but {item.user_name} could review this access: a person takes it",
            )
        on_deadline = input.policy.on_deadline
        request = self._gate.open_request(
            request_id=REQUEST_ID,
            now=workflow.now(),
            policy=input.policy.approval,
            requested_by=input.requested_by,
            recommendation="review",
            reasons=[
                f"{item.user_name} ({item.title or '-'}, {item.department or '-'}) holds "
                f"{item.application_title} {item.access_level} (group {item.group})",
                "approve keeps the access; reject (with a reason) revokes it",
                f"no answer by the deadline: the policy {on_deadline.value}s it",
            ],
            subject=f"Access review: {item.user_name}, {item.application_title} "
            f"({item.access_level})",
            people={"reviewer": reviewer},
        )
        state.deadline_at = request.deadline_at
        self._deciding = True
        state.status = AccessReviewStatus.AWAITING_REVIEW
        self._publish()
        gated = await self._gate.run()
        self._deciding = False
        outcome = outcome_of(gated.status, on_deadline)
        closing = self._gate.closing
        if closing is not None:
            why = (
                closing.reason
                or closing.comment
                or ("confirmed" if outcome == AccessReviewOutcome.CONFIRMED else "revoked")
            ) + f" ({closing.approver})"
        else:
            why = f"no answer by {_stamp(request.deadline_at)}: the policy {on_deadline.value}s"
        if revokes(outcome):
            failed = await self._revoke(item, why)
            if failed is not None:
                return failed
        else:
            await self._audit("access_confirmed" if closing else "access_kept", reason=why)
        effects = {"group": item.group, "removed": str(state.removed).lower()}
        state.decision = self._gate.settle(outcome=outcome.value, effects=effects)
        return await self._finish_review(outcome, why)

    async def _revoke(self, item: ReviewItem, why: str) -> AccessReviewResult | None:
        state = self._state
        state.status = AccessReviewStatus.REVOKING
        self._publish()
        try:
            done: RevokeMembershipResult = await workflow.execute_activity(
                "revoke_membership",
                RevokeMembershipInput(
                    idempotency_key=f"{self._case_id}:revoke",
                    case_id=self._case_id,
                    user_id=item.user_id,
                    group_id=item.group_id,
                    group=item.group,
                    reason=why[:200],
                ),
                result_type=RevokeMembershipResult,
                start_to_close_timeout=DIRECTORY_TIMEOUT,
                retry_policy=DIRECTORY_RETRY,
                summary=f"Remove {item.user_name} from {item.group}",
            )
        except ActivityError as err:
            return await self._directory_failed("revoke_membership", err)
        state.removed = done.removed
        state.revoked_at = workflow.now()
        await self._audit("access_revoked", group=item.group, removed=done.removed, reason=why)
        if done.removed:
            await self._tell(
                item,
                f"Your {item.application_title} access ({item.access_level}) was removed by "
                "the periodic access review. Ask for it again if you still need it.",
            )
        return None

    async def _tell(self, item: ReviewItem, text: str) -> None:
        try:
            sent: NotifyEmployeeResult = await workflow.execute_activity(
                "notify_employee",
                NotifyEmployeeInput(
                    idempotency_key=f"{self._case_id}:revoked",
                    case_id=self._case_id,
                    user_id=item.user_id,
                    kind="access_review_revoked",
                    text=text,
                ),
                result_type=NotifyEmployeeResult,
                start_to_close_timeout=NOTICE_TIMEOUT,
                retry_policy=NOTICE_RETRY,
                summary=f"Notify {item.user_name}: access removed",
            )
        except ActivityError as err:
            # The removal stands; the notice is noted as failed and the review goes on.
            await self._audit("employee_notice_failed", error=_kind(err))
            return
        await self._audit("employee_notified", kind="access_review_revoked", sent_to=sent.sent_to)

    async def _finish_review(self, outcome: AccessReviewOutcome, reason: str) -> AccessReviewResult:
        state = self._state
        await self._audit(
            "access_review_finished",
            outcome=outcome.value,
            removed=state.removed,
            reason=reason,
        )
        self._complete(outcome, reason)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return AccessReviewResult(
            case_id=self._case_id,
            outcome=outcome,
            removed=int(state.removed),
            policy_version=self._input.policy_version,
            reason=reason,
        )

    async def _directory_failed(self, step: str, err: ActivityError) -> AccessReviewResult:
        kind = _kind(err)
        await self._audit("directory_failed", step=step, error=kind)
        workflow.upsert_search_attributes([sa.ESCALATED.value_set(True)])
        reason = f"the directory failed at {step} ({kind}): a person takes it from here"
        if self._input.review is None:
            return await self._finish_cycle(AccessReviewOutcome.DIRECTORY_UNAVAILABLE, reason)
        return await self._finish_review(AccessReviewOutcome.DIRECTORY_UNAVAILABLE, reason)

    # --- helpers --------------------------------------------------------------------------------

    def _complete(self, outcome: AccessReviewOutcome, reason: str) -> None:
        state = self._state
        state.outcome = outcome.value
        state.reason = reason
        state.status = AccessReviewStatus.COMPLETED
        self._closed = True
        workflow.upsert_search_attributes([sa.OUTCOME.value_set(outcome.value)])
        self._publish()

    async def _audit(self, action: str, *, actor: str = "podium", **detail: Any) -> None:
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
        """Status (search attribute, on change) and the current details of the Temporal UI."""
        s = self._state
        if s.status != self._shown_status:
            self._shown_status = s.status
            workflow.upsert_search_attributes([sa.STATUS.value_set(s.status)])
        lines = [f"**Status:** {s.status}" + (f" · **Outcome:** {s.outcome}" if s.outcome else "")]
        item = s.review
        if item is None:
            lines.append(
                f"**Access review cycle** · policy `{s.policy_version}` · no answer: "
                f"**{s.on_deadline.value}**"
                + (
                    f" · catalogue {s.catalogue_version} (`{s.catalogue_digest}`)"
                    if s.catalogue_digest
                    else ""
                )
            )
            if s.reviews:
                counts = tally([line.outcome for line in s.reviews])
                lines.append(
                    f"**Reviews:** {len(s.reviews)} · "
                    + ", ".join(f"{n} {outcome}" for outcome, n in counts.items())
                )
                for line in s.reviews[:SHOWN_REVIEWS]:
                    lines.append(
                        f"- `{line.case_id}` · {line.employee} · {line.application} "
                        f"({line.access_level}) · reviewer {line.reviewer or '-'} · "
                        f"{line.outcome or 'open'}"
                    )
                if len(s.reviews) > SHOWN_REVIEWS:
                    lines.append(f"- ... and {len(s.reviews) - SHOWN_REVIEWS} more")
            if s.managers_without_reviews:
                lines.append(
                    "**Managers with nothing to review:** " + ", ".join(s.managers_without_reviews)
                )
        else:
            lines += [
                f"**Employee:** {item.user_name} · {item.title or '-'} · {item.department or '-'}"
                f" · manager {item.manager or '-'}",
                f"**Access:** {item.application_title} ({item.access_level}) · group "
                f"`{item.group}`",
                f"**Reviewer:** {s.reviewer or '-'} · cycle `{s.cycle_id or '-'}` · no answer by "
                f"the deadline: **{s.on_deadline.value}**",
            ]
            lines.extend(self._gate.describe())
            if s.revoked_at is not None:
                lines.append(
                    f"**Revoked:** {_stamp(s.revoked_at)}"
                    + ("" if s.removed else " (already gone: nothing written)")
                )
        if s.reason and s.outcome:
            lines.append(f"**Why:** {s.reason}")
        # The UI renders `$...$` as math: escape dollar signs.
        workflow.set_current_details("\n\n".join(lines).replace("$", "\\$"))


def _stamp(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC")


def _kind(err: ActivityError) -> str:
    cause = err.cause
    return cause.type if isinstance(cause, ApplicationError) and cause.type else "Failure"


def _decision_id(decision: ApprovalDecisionInput) -> str:
    """The caller's idempotency key, else the update's own id (retries reuse it)."""
    if decision.decision_id:
        return decision.decision_id
    update = workflow.current_update_info()
    assert update is not None, "only updates carry an update id"
    return f"update-{update.id}"
