"""Password reset (EX): an employee who lost their password gets a new one, after proving who
they are; a low-risk reset runs end to end with no person, a sensitive one waits for a person.

Steps: look the employee up in the directory (SCIM: active? which groups?) -> refuse unknown and
inactive accounts (nothing is sent) -> send a one-time code to the address on file (never an
address from the request) -> wait for the right code, at most `policy.max_attempts` wrong ones
and `policy.code_ttl` (10 minutes); then the code's text leaves the outbox (patch
`password-reset-retire-code`) -> members of a privileged group (`admins`, `finance`) wait
for an `it_security` approval through the approval gate; a case locked by wrong codes goes to
the IT service desk through the gate (a person verifies the employee another way and approves,
or refuses) -> reset in the directory (a temporary password sent to the address on file) ->
outcome. Every step is audited.

Secrets never enter history: the code is drawn, stored as a salted HMAC and compared inside
the identity activities; the employee's entry point stores what was typed
(`activities.identity.record_code_attempt`) and this case receives only the attempt's id. The
temporary password exists only inside the `reset_password` activity.

Messages:
- update `enter_code` (CodeAttemptInput -> CodeAttemptResult): an attempt to check, one at a
  time; the validator refuses, before history, an attempt while the case is not waiting for a
  code. Wrong codes count towards the lock; an expired code does not.
- update `decide` (ApprovalDecisionInput -> ApprovalDecisionResult): a person's decision on the
  pending approval (`approval-1` for a privileged account, `review-1` for a locked case),
  applied only with a decision token the worker verifies (`verify_decision`); four-eyes keeps
  out the requester and the employee whose account it is. A closing decision answers once it
  has been carried out.
- query `get_state` -> PasswordResetState.

A directory that stays unreachable past the retries (or refuses a call) ends the case as
`directory_unavailable`, escalated for a person, with the step audited (its error type only:
a directory's detail could echo what was sent).

The policy (code lifetime, wrong codes allowed, privileged groups, who approves) is the one the
case started with: `policies/password_reset.yaml` as the platform read it, its digest audited
with the request and set as PodiumPolicyVersion (patch `password-reset-policy-file`).

Timers: the code's lifetime (`policy.code_ttl`); the gate's reminders, SLA and deadline.
Search attributes: PodiumProcess, PodiumStatus, PodiumOutcome, PodiumCustomerId (the user name,
or its pseudonym when it is personal data), PodiumEscalated (locked), PodiumPolicyVersion, and
the gate's PodiumAwaitingApproval / PodiumAwaitingRoles / PodiumSlaDueAt while a person is asked.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RawValue, RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

from workflows.components.approval import (
    PATCH_CHECKED_ON_ACCEPTANCE,
    ApprovalGate,
    GateHooks,
    decision_from,
    identity,
)
from workflows.components.audit import record_audit
from workflows.contracts import search_attributes as sa

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel

    from activities.types import (
        CheckVerificationCodeInput,
        CheckVerificationCodeResult,
        EmployeeInfo,
        LookupEmployeeInput,
        LookupEmployeeResult,
        ResetPasswordInput,
        ResetPasswordResult,
        RetireVerificationCodeInput,
        RetireVerificationCodeResult,
        SendVerificationCodeInput,
        SendVerificationCodeResult,
    )
    from workflows.contracts.approval import (
        ApprovalDecisionInput,
        ApprovalDecisionResult,
        ApprovalPolicy,
        GateStatus,
    )
    from workflows.password_reset.rules import privileged_groups_of, why_not_eligible
    from workflows.password_reset.types import (
        CodeAttemptInput,
        CodeAttemptResult,
        PasswordResetInput,
        PasswordResetOutcome,
        PasswordResetResult,
        PasswordResetState,
        PasswordResetStatus,
    )

__all__ = ["PROCESS", "PasswordResetWorkflow"]

PROCESS = "password_reset"
SYSTEM_ACTOR = "podium"
DIRECTORY_TIMEOUT = timedelta(seconds=30)
# The directory may be briefly down or rate limiting (429 with Retry-After): retry, bounded.
DIRECTORY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=10,
    non_retryable_error_types=["ScimRejected", "NoAddressOnFile", "InvalidId"],
)
CODE_CHECK_TIMEOUT = timedelta(seconds=10)
CODE_CHECK_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=500),
    maximum_interval=timedelta(seconds=5),
    maximum_attempts=5,
)
WRONG = {"wrong_code", "unknown_attempt", "used"}
# Cases whose policy came from `policies/password_reset.yaml` show its digest as
# PodiumPolicyVersion (earlier cases never set it).
PATCH_POLICY_FILE = "password-reset-policy-file"
# Cases that take the code's text out of the outbox once it is used, expired or locked out.
PATCH_RETIRE_CODE = "password-reset-retire-code"
_R = TypeVar("_R", bound="BaseModel")
_APPROVED = {GateStatus.APPROVED}


@workflow.defn(name=PROCESS)
class PasswordResetWorkflow:
    @workflow.init
    def __init__(self, input: PasswordResetInput) -> None:
        self._input = input
        self._case_id = workflow.info().workflow_id
        self._state = PasswordResetState(
            case_id=self._case_id,
            status=PasswordResetStatus.LOOKING_UP,
            user_name=input.user_name,
        )
        self._gate = ApprovalGate(
            process=PROCESS, hooks=GateHooks(audit=self._audit, changed=self._publish)
        )
        self._audit_seq = 0
        self._accepting_codes = False
        self._checks = asyncio.Lock()  # one code check at a time, in arrival order
        self._checked_on_acceptance = False  # set in run(): patch PATCH_CHECKED_ON_ACCEPTANCE
        self._shown_status: str | None = None

    # --- messages -------------------------------------------------------------------------------

    @workflow.query(name="get_state")
    def get_state(self) -> PasswordResetState:
        return self._state.model_copy(update={"approval": self._gate.request})

    @workflow.update(name="enter_code")
    async def enter_code(self, attempt: CodeAttemptInput) -> CodeAttemptResult:
        async with self._checks:
            state = self._state
            policy = self._input.policy
            if not self._accepting_codes:
                # Accepted while another check locked the case, or just as the code expired.
                return self._attempt_result(False, "not_waiting")
            check = await workflow.execute_activity(
                "check_verification_code",
                CheckVerificationCodeInput(case_id=self._case_id, attempt_id=attempt.attempt_id),
                result_type=CheckVerificationCodeResult,
                start_to_close_timeout=CODE_CHECK_TIMEOUT,
                retry_policy=CODE_CHECK_RETRY,
                summary="Check the code entered",
            )
            wrong = state.attempts + (0 if check.valid or check.reason not in WRONG else 1)
            # Audited before the case moves on, so the trail reads in the order things happened.
            await self._audit(
                "verification_code_checked",
                actor=f"employee:{self._input.user_name}",
                attempt_id=attempt.attempt_id,
                result=check.reason,
                wrong_codes=wrong,
                max_attempts=policy.max_attempts,
            )
            state.attempts = wrong
            if check.valid:
                state.verified = True
                self._accepting_codes = False
            elif wrong >= policy.max_attempts:
                self._accepting_codes = False
                state.status = PasswordResetStatus.LOCKED
            self._publish()
            return self._attempt_result(check.valid, check.reason)

    @enter_code.validator
    def validate_enter_code(self, attempt: CodeAttemptInput) -> None:
        if not self._accepting_codes:
            raise ValueError(
                f"case {self._case_id} is not waiting for a code (status "
                f"{self._state.status}{'' if not self._state.verified else ', verified'})"
            )

    def _attempt_result(self, verified: bool, reason: str) -> CodeAttemptResult:
        attempts = self._state.attempts
        return CodeAttemptResult(
            verified=verified,
            reason=reason,
            attempts=attempts,
            attempts_left=max(0, self._input.policy.max_attempts - attempts),
            status=self._state.status,
        )

    @workflow.update(name="decide")
    async def decide(self, raw: RawValue) -> ApprovalDecisionResult:
        decision, encrypted = decision_from(raw)
        decision_id = _decision_id(decision)
        try:
            if self._checked_on_acceptance:
                decision = self._gate.token_identity(decision)
            else:
                decision = await self._gate.authenticate(decision, encrypted=encrypted)
            self._refuse_the_employee(decision.approver)
            self._gate.accept(decision, now=workflow.now(), decision_id=decision_id, via="update")
        except ValueError as err:
            # A credential that does not hold (audited), or a race with another decision.
            self._gate.refuse(decision, str(err), via="update")
            self._publish()
            raise ApplicationError(str(err), type="DecisionRefused", non_retryable=True) from None
        # Answer once the decision has been recorded (and, if it closed the gate, carried out).
        await workflow.wait_condition(lambda: decision_id in self._gate.results)
        return self._gate.results[decision_id]

    @decide.validator
    def validate_decide(self, raw: RawValue) -> None:
        decision, encrypted = decision_from(raw)
        if self._checked_on_acceptance:
            decision = self._gate.verify_now(decision, encrypted=encrypted)
        self._refuse_the_employee(decision.approver)
        self._gate.admit(decision, _decision_id(decision))

    def _refuse_the_employee(self, approver: str) -> None:
        """Four-eyes for the account itself: whoever asked is kept out by the gate; the person
        whose password it is (their user name, or an address whose local part it is) too."""
        employee = self._state.employee
        if employee is None:
            return
        who = identity(approver)
        account = identity(employee.user_name)
        if who == account or who.partition("@")[0] == account.partition("@")[0]:
            raise ValueError(
                f"four-eyes: '{approver.strip()}' is the account being reset and may not decide"
            )

    # --- the process ----------------------------------------------------------------------------

    @workflow.run
    async def run(self, input: PasswordResetInput) -> PasswordResetResult:
        # False only when replaying a case whose `decide` handler checked tokens itself.
        self._checked_on_acceptance = workflow.patched(PATCH_CHECKED_ON_ACCEPTANCE)
        try:
            return await self._process(input)
        except _DirectoryFailed as failed:
            # A person takes it from here: the case says where it stopped.
            workflow.upsert_search_attributes([sa.ESCALATED.value_set(True)])
            return await self._finish(PasswordResetOutcome.DIRECTORY_UNAVAILABLE, failed.reason)

    async def _process(self, input: PasswordResetInput) -> PasswordResetResult:
        state = self._state
        workflow.upsert_search_attributes(
            [
                sa.PROCESS.value_set(PROCESS),
                sa.CUSTOMER_ID.value_set(sa.customer_id_attribute(input.user_name)),
                sa.AWAITING_APPROVAL.value_set(False),
            ]
        )
        digest = input.policy.digest
        if digest and workflow.patched(PATCH_POLICY_FILE):
            workflow.upsert_search_attributes([sa.POLICY_VERSION.value_set(digest)])
        self._publish()
        await self._audit(
            "reset_requested",
            actor=input.requested_by,
            user_name=input.user_name,
            channel=input.channel,
            reason=input.reason,
            policy_version=digest,
        )
        found = await self._directory(
            "lookup_employee",
            LookupEmployeeInput(user_name=input.user_name),
            LookupEmployeeResult,
            f"Look up {input.user_name} in the directory",
        )
        employee = found.employee
        state.employee = employee
        refusal = why_not_eligible(employee, input.user_name)
        if employee is None or refusal is not None:
            outcome = (
                PasswordResetOutcome.UNKNOWN_EMPLOYEE
                if employee is None
                else PasswordResetOutcome.INACTIVE_EMPLOYEE
            )
            await self._audit("reset_refused", outcome=outcome.value, reason=refusal)
            return await self._finish(outcome, refusal or outcome.value)

        privileged = privileged_groups_of(employee, input.policy.privileged_groups)
        state.privileged = bool(privileged)
        await self._audit(
            "employee_found",
            user_id=employee.user_id,
            title=employee.title,
            department=employee.department,
            manager=employee.manager_user_name,
            groups=employee.groups,
            privileged_groups=privileged,
        )

        if not await self._verify(employee):
            if state.status != PasswordResetStatus.LOCKED:
                reason = f"no right code within {_minutes(input.policy.code_ttl)}"
                await self._audit("verification_expired", wrong_codes=state.attempts)
                return await self._finish(PasswordResetOutcome.CODE_EXPIRED, reason)
            return await self._review_locked(employee)

        if privileged:
            return await self._privileged_approval(employee, privileged)
        await self._reset(employee)
        return await self._finish(
            PasswordResetOutcome.RESET, "identity verified by a one-time code; not privileged"
        )

    async def _verify(self, employee: EmployeeInfo) -> bool:
        """Send the code and wait for the right one: True when verified; False when the code
        expired or the wrong codes locked the case (`status` says which)."""
        state = self._state
        policy = self._input.policy
        expires_at = workflow.now() + policy.code_ttl
        sent = await self._directory(
            "send_verification_code",
            SendVerificationCodeInput(
                idempotency_key=f"{self._case_id}:code:1",
                case_id=self._case_id,
                user_id=employee.user_id,
                expires_at=expires_at,
            ),
            SendVerificationCodeResult,
            "Send a one-time code to the address on file",
        )
        state.code_sent_to = sent.sent_to
        state.code_expires_at = expires_at
        state.status = PasswordResetStatus.AWAITING_CODE
        self._accepting_codes = True
        self._publish()
        await self._audit(
            "verification_code_sent",
            sent_to=sent.sent_to,
            message_id=sent.message_id,
            expires_at=expires_at.isoformat(),
        )
        try:
            await workflow.wait_condition(
                lambda: state.verified or state.status == PasswordResetStatus.LOCKED,
                timeout=policy.code_ttl,
                timeout_summary="verification code expires",
            )
        except TimeoutError:
            self._accepting_codes = False
            # A check already under way finishes first: its answer stands.
            await workflow.wait_condition(lambda: not self._checks.locked())
        self._accepting_codes = False
        if workflow.patched(PATCH_RETIRE_CODE):
            await self._retire_code()
        if state.verified:
            await self._audit("identity_verified", method="one_time_code")
        return state.verified

    async def _retire_code(self) -> None:
        """The case takes no more codes: the code's text leaves the outbox. Housekeeping that
        never fails the case: the code is spent or expired either way."""
        state = self._state
        reason = (
            "verified"
            if state.verified
            else "locked"
            if state.status == PasswordResetStatus.LOCKED
            else "expired"
        )
        try:
            await workflow.execute_activity(
                "retire_verification_code",
                RetireVerificationCodeInput(case_id=self._case_id, reason=reason),
                result_type=RetireVerificationCodeResult,
                start_to_close_timeout=CODE_CHECK_TIMEOUT,
                retry_policy=CODE_CHECK_RETRY,
                summary="Take the code's text out of the outbox",
            )
        except ActivityError:
            workflow.logger.warning("verification code not retired", extra={"reason": reason})

    async def _privileged_approval(
        self, employee: EmployeeInfo, privileged: list[str]
    ) -> PasswordResetResult:
        reasons = [
            f"{employee.user_name} is a member of {', '.join(privileged)}: a privileged "
            "account's reset always needs a person's approval",
            "identity verified by a one-time code sent to the address on file",
        ]
        status = await self._ask(
            "approval-1", self._input.policy.privileged_approval, "approve", reasons, employee
        )
        if status in _APPROVED:
            await self._reset(employee)
            return await self._finish(
                PasswordResetOutcome.RESET_AFTER_APPROVAL, "privileged account; approved"
            )
        if status == GateStatus.REJECTED:
            closing = self._gate.closing
            why = closing.reason if closing is not None else None
            return await self._finish(PasswordResetOutcome.REJECTED, why or "rejected")
        return await self._finish(
            PasswordResetOutcome.APPROVAL_EXPIRED, "no decision before the approval deadline"
        )

    async def _review_locked(self, employee: EmployeeInfo) -> PasswordResetResult:
        state = self._state
        workflow.upsert_search_attributes([sa.ESCALATED.value_set(True)])
        await self._audit(
            "verification_locked", wrong_codes=state.attempts, handed_to="it_service_desk"
        )
        reasons = [
            f"{state.attempts} wrong codes: the case is locked and no code is accepted any more",
            "verify the employee another way (call back, video, in person) before approving",
        ]
        if state.privileged:
            reasons.append("privileged account")
        status = await self._ask(
            "review-1", self._input.policy.locked_review, "reject", reasons, employee
        )
        if status in _APPROVED:
            await self._reset(employee)
            return await self._finish(
                PasswordResetOutcome.RESET_AFTER_REVIEW, "locked; a person verified and approved"
            )
        closing = self._gate.closing
        why = (closing.reason if closing is not None else None) or "locked; not approved"
        return await self._finish(PasswordResetOutcome.LOCKED, why)

    async def _ask(
        self,
        request_id: str,
        policy: ApprovalPolicy,
        recommendation: str,
        reasons: list[str],
        employee: EmployeeInfo,
    ) -> GateStatus:
        self._gate.open_request(
            request_id=request_id,
            now=workflow.now(),
            policy=policy,
            requested_by=self._input.requested_by,
            recommendation=recommendation,
            reasons=reasons,
            subject=f"Password reset for {employee.user_name} ({employee.department or '-'})",
        )
        self._state.status = PasswordResetStatus.AWAITING_APPROVAL
        await self._audit(
            "approval_requested",
            request_id=request_id,
            levels=[level.name for level in policy.levels],
            reasons=reasons,
        )
        self._publish()
        outcome = await self._gate.run()
        return outcome.status

    async def _reset(self, employee: EmployeeInfo) -> None:
        self._state.status = PasswordResetStatus.RESETTING
        self._publish()
        done = await self._directory(
            "reset_password",
            ResetPasswordInput(
                idempotency_key=f"{self._case_id}:reset:1",
                case_id=self._case_id,
                user_id=employee.user_id,
            ),
            ResetPasswordResult,
            f"Reset the password of {employee.user_name} in the directory",
        )
        self._state.reset_at = done.reset_at
        await self._audit(
            "password_reset",
            user_id=employee.user_id,
            delivered_to=done.delivered_to,
            scim_version=done.scim_version,
        )

    async def _finish(self, outcome: PasswordResetOutcome, reason: str) -> PasswordResetResult:
        state = self._state
        state.outcome = outcome.value
        state.reason = reason
        state.status = PasswordResetStatus.COMPLETED
        automated = outcome == PasswordResetOutcome.RESET
        effects = {"reset_at": state.reset_at.isoformat()} if state.reset_at else {}
        if self._gate.request is not None:
            state.decision = self._gate.settle(outcome=outcome.value, effects=effects)
        await self._audit(
            "reset_finished",
            outcome=outcome.value,
            reason=reason,
            automated=automated,
            verified=state.verified,
            wrong_codes=state.attempts,
        )
        workflow.upsert_search_attributes([sa.OUTCOME.value_set(outcome.value)])
        self._publish()
        # Let an in-flight update return its answer before the run completes.
        await workflow.wait_condition(workflow.all_handlers_finished)
        return PasswordResetResult(
            case_id=self._case_id,
            outcome=outcome,
            automated=automated,
            verified=state.verified,
            privileged=state.privileged,
            attempts=state.attempts,
            reset_at=state.reset_at,
            reason=reason,
        )

    # --- helpers --------------------------------------------------------------------------------

    async def _directory(self, name: str, arg: BaseModel, result: type[_R], summary: str) -> _R:
        """An identity activity; when the directory fails for good (retries spent, or a
        refusal), the case is audited and handed to a person (`_DirectoryFailed`)."""
        try:
            done: _R = await workflow.execute_activity(
                name,
                arg,
                result_type=result,
                start_to_close_timeout=DIRECTORY_TIMEOUT,
                retry_policy=DIRECTORY_RETRY,
                summary=summary,
            )
            return done
        except ActivityError as err:
            cause = err.cause
            kind = cause.type if isinstance(cause, ApplicationError) and cause.type else "Failure"
            await self._audit("directory_failed", step=name, error=kind)
            raise _DirectoryFailed(f"the directory failed at {name} ({kind})") from None

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
        """Status (search attribute, on change) and the current details of the Temporal UI."""
        s = self._state
        if s.status != self._shown_status:
            self._shown_status = s.status
            workflow.upsert_search_attributes([sa.STATUS.value_set(s.status)])
        employee = s.employee
        who = (
            f"{employee.display_name or employee.user_name} · {employee.title or '-'} · "
            f"{employee.department or '-'} · groups {', '.join(employee.groups) or '-'}"
            if employee
            else s.user_name
        )
        lines = [
            f"**Status:** {s.status}" + (f" · **Outcome:** {s.outcome}" if s.outcome else ""),
            f"**Employee:** {who}" + (" · **privileged**" if s.privileged else ""),
        ]
        if s.code_sent_to:
            lines.append(
                f"**Verification:** code sent to {s.code_sent_to}, expires "
                f"{s.code_expires_at:%H:%M UTC} · wrong codes {s.attempts}/"
                f"{self._input.policy.max_attempts}" + (" · **verified**" if s.verified else "")
            )
        lines.extend(self._gate.describe())
        if s.reset_at:
            lines.append(f"**Reset:** {s.reset_at:%Y-%m-%d %H:%M UTC} (temporary password sent)")
        if s.reason and s.outcome:
            lines.append(f"**Why:** {s.reason}")
        # The UI renders `$...$` as math: escape dollar signs.
        workflow.set_current_details("\n\n".join(lines).replace("$", "\\$"))


class _DirectoryFailed(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _minutes(value: timedelta) -> str:
    return f"{value.total_seconds() / 60:g} minutes"


def _decision_id(decision: ApprovalDecisionInput) -> str:
    """The caller's idempotency key, else the update's own id (retries reuse it)."""
    if decision.decision_id:
        return decision.decision_id
    update = workflow.current_update_info()
    assert update is not None, "only updates carry an update id"
    return f"update-{update.id}"
