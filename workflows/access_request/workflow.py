"""Access request (EX): an employee asks for access to an application at some level, with a
justification and an optional duration; standard access pre-approved for their department or
role is granted end to end, anything else waits for named people.

Steps: open a ticket -> look the employee up in the directory (SCIM: active? manager?) -> look
the access level up in the entitlement catalogue (`lookup_entitlement`: its group, whom it is
pre-approved for, sensitive or not, the longest it may last; the catalogue's digest is stamped
on the case) -> the policy file (`policies/access_request.yaml`, `evaluate_policy`) decides
autonomy over the facts (pre-approved, sensitivity, role, channel) -> an approval gate whose
first level is the employee's manager by name (from the directory, never a role) and, for
sensitive access, a second level of the application's owner by name or `it_security`; four-eyes
keeps out the requester and the employee -> provision: one group membership in the directory
(`grant_access`, exactly one SCIM write per grant, also under retries) -> update the ticket ->
notify the employee -> audit (every step).

Time-bound access (a requested duration, or the level's `max_days`): the case stays open until
the access expires, reminds the employee `reminder_before` (3 days) earlier, then revokes the
membership it added (`revoke_access`) and closes. An extension goes through the same approval
again.

Messages:
- update `decide` (ApprovalDecisionInput -> ApprovalDecisionResult): a person's decision on the
  pending approval (`approval-1`, or `extension-<n>`); its validator verifies the decision token
  (`verify_now`) and refuses the employee whose access it is; the handler reads the checked
  token and hands it to the gate, awaiting nothing first.
- update `request_extension` (ExtensionInput -> ExtensionResult): more days of an active
  time-bound access; validated before history (only while active, one at a time, within the
  level's limit); answers at once, the approval follows.
- signal `employee_terminated` (EmployeeTerminatedInput): the directory says the employee left;
  whatever the case granted is revoked and the case closes (before any grant: withdrawn).
- query `get_state` -> AccessRequestState.

Timers: the gate's reminders and deadline; the reminder before expiry; the expiry.
Search attributes: PodiumProcess, PodiumStatus, PodiumOutcome, PodiumCustomerId (the
employee's user name), PodiumPolicyVersion, PodiumEscalated, and the gate's
PodiumAwaitingApproval / PodiumAwaitingRoles (`user:<manager>`) / PodiumSlaDueAt.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RawValue, RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

from workflows.components.approval import ApprovalGate, GateHooks, decision_from
from workflows.components.audit import record_audit
from workflows.contracts import search_attributes as sa

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel

    from activities.types import (
        EmployeeInfo,
        LookupEmployeeInput,
        LookupEmployeeResult,
        OpenTicketInput,
        TicketResult,
        TicketStatus,
        UpdateTicketInput,
    )
    from workflows.access_request.rules import (
        granted_days,
        is_pre_approved,
        same_person,
        why_no_manager,
        why_not_eligible,
    )
    from workflows.access_request.types import (
        AccessRequestInput,
        AccessRequestOutcome,
        AccessRequestResult,
        AccessRequestState,
        AccessRequestStatus,
        EmployeeTerminatedInput,
        ExtensionInput,
        ExtensionResult,
    )
    from workflows.contracts.access import (
        AccessApproval,
        Entitlement,
        GrantAccessInput,
        GrantAccessResult,
        LookupEntitlementInput,
        LookupEntitlementResult,
        NotifyEmployeeInput,
        NotifyEmployeeResult,
        RevokeAccessInput,
        RevokeAccessResult,
    )
    from workflows.contracts.approval import (
        ApprovalDecisionInput,
        ApprovalDecisionResult,
        ApprovalPolicy,
        GateStatus,
    )
    from workflows.contracts.policy import (
        AutonomyDecision,
        EvaluatePolicyInput,
        PolicyEvaluation,
        PolicyFacts,
    )

__all__ = ["PROCESS", "AccessRequestWorkflow"]

PROCESS = "access_request"
SYSTEM_ACTOR = "podium"
DIRECTORY_ACTOR = "directory"
DIRECTORY_TIMEOUT = timedelta(seconds=30)
# The directory may be briefly down or rate limiting (429 with Retry-After): retry, bounded.
DIRECTORY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=10,
    non_retryable_error_types=[
        "ScimRejected",
        "InvalidId",
        "UnknownGroup",
        "NoAddressOnFile",
        "InvalidCatalogue",
    ],
)
SYSTEM_TIMEOUT = timedelta(seconds=30)
SYSTEM_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=8,
    non_retryable_error_types=["InvalidPolicy", "UnknownTicket"],
)
DEFAULT_CHAIN = "manager"  # the policy file's chain for an extension of a pre-approved grant
# An extension's approval ends with the access at the latest: never past what it extends.
MIN_EXTENSION_WINDOW = timedelta(minutes=1)
_R = TypeVar("_R", bound="BaseModel")


@workflow.defn(name=PROCESS)
class AccessRequestWorkflow:
    @workflow.init
    def __init__(self, input: AccessRequestInput) -> None:
        self._input = input
        self._case_id = workflow.info().workflow_id
        self._state = AccessRequestState(
            case_id=self._case_id,
            status=AccessRequestStatus.LOOKING_UP,
            employee_name=input.employee,
            application=input.application,
            access_level=input.access_level,
        )
        self._gate = self._new_gate()
        self._deciding = False  # a gate is running and takes decisions
        self._dropped: list[ApprovalGate] = []  # gates whose pending answers never come
        self._audit_seq = 0
        self._shown_status: str | None = None
        self._terminated: EmployeeTerminatedInput | None = None
        self._extension: ExtensionInput | None = None
        self._extension_requests = 0
        self._chain: str | None = None
        self._grant_key: str | None = None
        self._group: str | None = None

    def _new_gate(self) -> ApprovalGate:
        return ApprovalGate(
            process=PROCESS, hooks=GateHooks(audit=self._audit, changed=self._publish)
        )

    # --- messages -------------------------------------------------------------------------------

    @workflow.query(name="get_state")
    def get_state(self) -> AccessRequestState:
        return self._state.model_copy(update={"approval": self._gate.request})

    @workflow.update(name="decide")
    async def decide(self, raw: RawValue) -> ApprovalDecisionResult:
        decision, _ = decision_from(raw)
        decision_id = _decision_id(decision)
        gate = self._gate
        try:
            decision = gate.token_identity(decision)
            self._refuse_the_employee(decision.approver)
            gate.accept(decision, now=workflow.now(), decision_id=decision_id, via="update")
        except ValueError as err:
            gate.refuse(decision, str(err), via="update")
            self._publish()
            raise ApplicationError(str(err), type="DecisionRefused", non_retryable=True) from None
        # Answer once the decision has been recorded (and, if it closed the gate, carried out).
        await workflow.wait_condition(
            lambda: decision_id in gate.results or any(g is gate for g in self._dropped)
        )
        if decision_id not in gate.results:
            raise ApplicationError(
                f"case {self._case_id} closed before the decision was carried out "
                f"({self._state.outcome})",
                type="DecisionRefused",
                non_retryable=True,
            )
        return gate.results[decision_id]

    @decide.validator
    def validate_decide(self, raw: RawValue) -> None:
        decision, encrypted = decision_from(raw)
        decision = self._gate.verify_now(decision, encrypted=encrypted)
        if not self._deciding:
            raise ValueError(f"case {self._case_id} is not waiting for a decision")
        self._refuse_the_employee(decision.approver)
        self._gate.admit(decision, _decision_id(decision))

    def _refuse_the_employee(self, approver: str) -> None:
        """Four-eyes for the access itself: the requester is kept out by the gate; the employee
        who would get the access (their user name, or an address whose local part it is) too."""
        if same_person(approver, self._input.employee):
            raise ValueError(
                f"four-eyes: '{approver.strip()}' would get this access and may not decide"
            )

    @workflow.update(name="request_extension")
    def request_extension(self, extension: ExtensionInput) -> ExtensionResult:
        self._extension = extension
        self._extension_requests += 1
        self._state.status = AccessRequestStatus.EXTENSION_PENDING
        self._publish()
        return ExtensionResult(
            request_id=f"extension-{self._extension_requests}",
            status=self._state.status,
            expires_at=self._state.expires_at,
        )

    @request_extension.validator
    def validate_request_extension(self, extension: ExtensionInput) -> None:
        state = self._state
        if state.status != AccessRequestStatus.ACTIVE or state.expires_at is None:
            raise ValueError(
                f"case {self._case_id} holds no active time-bound access to extend "
                f"(status {state.status})"
            )
        if self._extension is not None or self._terminated is not None:
            raise ValueError("an extension (or a revocation) is already under way")
        limit = state.entitlement.max_days if state.entitlement else None
        if limit is not None and extension.days > limit:
            raise ValueError(f"{extension.days} days is over the {limit}-day limit of this level")

    @workflow.signal(name="employee_terminated")
    def employee_terminated(self, notice: EmployeeTerminatedInput) -> None:
        if not same_person(notice.user_name, self._input.employee):
            workflow.logger.warning(
                "termination notice for another employee ignored: %s", notice.user_name
            )
            return
        if self._terminated is None:
            self._terminated = notice

    # --- the process ----------------------------------------------------------------------------

    @workflow.run
    async def run(self, input: AccessRequestInput) -> AccessRequestResult:
        try:
            return await self._process(input)
        except _DirectoryFailed as failed:
            # A person takes it from here: the case and its ticket say where it stopped.
            workflow.upsert_search_attributes([sa.ESCALATED.value_set(True)])
            await self._ticket(TicketStatus.ESCALATED, failed.reason, escalated=True)
            return await self._finish(AccessRequestOutcome.DIRECTORY_UNAVAILABLE, failed.reason)

    async def _process(self, input: AccessRequestInput) -> AccessRequestResult:
        state = self._state
        workflow.upsert_search_attributes(
            [
                sa.PROCESS.value_set(PROCESS),
                sa.CUSTOMER_ID.value_set(sa.customer_id_attribute(input.employee)),
                sa.AWAITING_APPROVAL.value_set(False),
            ]
        )
        self._publish()
        await self._audit(
            "access_requested",
            actor=input.requested_by,
            employee=input.employee,
            application=input.application,
            access_level=input.access_level,
            duration_days=input.duration_days,
            justification=input.justification,
            channel=input.channel,
        )
        ticket = await self._system(
            "open_ticket",
            OpenTicketInput(
                idempotency_key=f"{self._case_id}:ticket",
                case_id=self._case_id,
                customer_id=input.employee,
                subject=f"Access to {input.application} ({input.access_level}) "
                f"for {input.employee}",
                channel=input.channel,
            ),
            TicketResult,
            "Open the case's ticket",
        )
        state.ticket_id = ticket.ticket_id

        found = await self._directory(
            "lookup_employee",
            LookupEmployeeInput(user_name=input.employee),
            LookupEmployeeResult,
            f"Look up {input.employee} in the directory",
        )
        employee = found.employee
        state.employee = employee
        refusal = why_not_eligible(employee, input.employee)
        if employee is None or refusal is not None:
            outcome = (
                AccessRequestOutcome.UNKNOWN_EMPLOYEE
                if employee is None
                else AccessRequestOutcome.INACTIVE_EMPLOYEE
            )
            return await self._refuse(outcome, refusal or outcome.value)
        state.manager = employee.manager_user_name
        await self._audit(
            "employee_found",
            user_id=employee.user_id,
            title=employee.title,
            department=employee.department,
            manager=employee.manager_user_name,
        )

        looked_up = await self._directory(
            "lookup_entitlement",
            LookupEntitlementInput(application=input.application, level=input.access_level),
            LookupEntitlementResult,
            f"Look up {input.application} ({input.access_level}) in the entitlement catalogue",
        )
        state.catalogue_version = looked_up.catalogue_version
        state.catalogue_digest = looked_up.catalogue_digest
        state.application_title = looked_up.application_title
        state.app_owner = looked_up.owner
        entitlement = looked_up.entitlement
        if entitlement is None:
            return await self._refuse(AccessRequestOutcome.NOT_IN_CATALOGUE, looked_up.reason)
        state.entitlement = entitlement
        state.sensitive = entitlement.approval == AccessApproval.SENSITIVE
        state.pre_approved = is_pre_approved(entitlement, employee)
        days, too_long = granted_days(input.duration_days, entitlement)
        await self._audit(
            "entitlement_found",
            group=entitlement.group,
            approval=entitlement.approval.value,
            pre_approved=state.pre_approved,
            max_days=entitlement.max_days,
            days=days,
            app_owner=looked_up.owner,
            catalogue_version=looked_up.catalogue_version,
            catalogue_digest=looked_up.catalogue_digest,
        )
        if too_long is not None:
            return await self._refuse(AccessRequestOutcome.DURATION_OVER_LIMIT, too_long)

        evaluation = await self._evaluate(employee)
        if evaluation.decision == AutonomyDecision.AUTO_REJECT:
            return await self._refuse(
                AccessRequestOutcome.REJECTED_BY_POLICY, evaluation.explanation
            )
        automated = evaluation.decision == AutonomyDecision.AUTO_APPROVE
        if not automated:
            self._chain = evaluation.approval_chain
            assert evaluation.approval is not None
            verdict = await self._approve(
                "approval-1", evaluation.approval, employee, entitlement, evaluation.explanation
            )
            if verdict is not None:
                return verdict
        if self._terminated is not None:
            return await self._withdraw()

        await self._provision(employee, entitlement, days, automated)
        if state.expires_at is None:
            outcome = (
                AccessRequestOutcome.GRANTED
                if automated
                else AccessRequestOutcome.GRANTED_AFTER_APPROVAL
            )
            return await self._finish(outcome, evaluation.explanation)
        return await self._hold_until_expiry(employee, entitlement)

    async def _evaluate(self, employee: EmployeeInfo) -> PolicyEvaluation:
        state = self._state
        facts = PolicyFacts(
            eligible=state.pre_approved,
            system_sensitivity="sensitive" if state.sensitive else "standard",
            employee_role=employee.title or "",
            channel=self._input.channel,
            risk="high" if state.sensitive else "low",
        )
        evaluation = await self._system(
            "evaluate_policy",
            EvaluatePolicyInput(facts=facts, policy=self._input.policy_document),
            PolicyEvaluation,
            "Evaluate the access policy",
        )
        state.policy_version = evaluation.policy_version
        state.policy_rule = evaluation.rule
        state.explanation = evaluation.explanation
        workflow.upsert_search_attributes([sa.POLICY_VERSION.value_set(evaluation.policy_version)])
        await self._audit(
            "policy_evaluated",
            actor="policy",
            decision=evaluation.decision.value,
            rule=evaluation.rule,
            explanation=evaluation.explanation,
            approval_chain=evaluation.approval_chain,
            policy_version=evaluation.policy_version,
            facts=facts.model_dump(
                include={"eligible", "system_sensitivity", "employee_role", "channel"}
            ),
        )
        self._publish()
        return evaluation

    async def _approve(
        self,
        request_id: str,
        policy: ApprovalPolicy,
        employee: EmployeeInfo,
        entitlement: Entitlement,
        explanation: str,
    ) -> AccessRequestResult | None:
        """Ask the named people; None when approved, else the case's result."""
        no_manager = why_no_manager(employee, self._input.requested_by)
        if no_manager is not None:
            workflow.upsert_search_attributes([sa.ESCALATED.value_set(True)])
            await self._ticket(TicketStatus.NEEDS_HUMAN, no_manager, escalated=True)
            return await self._refuse(AccessRequestOutcome.NO_APPROVER, no_manager)
        reasons = [
            explanation,
            f"justification: {self._input.justification}",
            f"duration: {self._duration_text()}",
        ]
        status = await self._ask(request_id, policy, reasons, employee, entitlement)
        if status is None:
            return await self._withdraw()
        if status == GateStatus.APPROVED:
            return None
        if status == GateStatus.REJECTED:
            closing = self._gate.closing
            why = (closing.reason if closing is not None else None) or "rejected"
            await self._ticket(TicketStatus.CLOSED, f"rejected: {why}")
            await self._tell(
                "access_rejected", f"Your request for {self._what()} was declined: {why}"
            )
            return await self._finish(AccessRequestOutcome.REJECTED, why)
        why = "no decision before the approval deadline"
        await self._ticket(TicketStatus.CLOSED, why)
        await self._tell("access_rejected", f"Your request for {self._what()} expired: {why}")
        return await self._finish(AccessRequestOutcome.APPROVAL_EXPIRED, why)

    async def _ask(
        self,
        request_id: str,
        policy: ApprovalPolicy,
        reasons: list[str],
        employee: EmployeeInfo,
        entitlement: Entitlement,
    ) -> GateStatus | None:
        """Run a gate to its end; None when the employee was terminated meanwhile."""
        manager = employee.manager_user_name or ""
        owner = self._state.app_owner or ""
        if self._gate.request is not None:
            self._gate = self._new_gate()
        self._gate.open_request(
            request_id=request_id,
            now=workflow.now(),
            policy=policy,
            requested_by=self._input.requested_by,
            recommendation="approve",
            reasons=reasons,
            subject=f"{self._what()} for {employee.user_name} ({employee.department or '-'})",
            people={"manager": manager, "app_owner": owner},
        )
        # Decisions are taken from now on; the gate carries out what they change in `run()`.
        self._deciding = True
        previous = self._state.status
        self._state.status = AccessRequestStatus.AWAITING_APPROVAL
        await self._audit(
            "approval_requested",
            request_id=request_id,
            levels=[level.name for level in policy.levels],
            manager=manager,
            app_owner=owner if len(policy.levels) > 1 else None,
            group=entitlement.group,
            reasons=reasons,
        )
        await self._ticket(TicketStatus.AWAITING_APPROVAL, f"{request_id}: waiting for {manager}")
        self._publish()
        running = asyncio.create_task(self._gate.run())
        await workflow.wait_condition(lambda: running.done() or self._terminated is not None)
        self._deciding = False
        if not running.done():
            # Left to end with the case rather than cancelled: cancelling could catch the gate
            # mid-notice, and nothing it does from here reaches a decision (`_deciding`).
            self._dropped.append(self._gate)
            workflow.upsert_search_attributes(
                [sa.AWAITING_APPROVAL.value_set(False), sa.AWAITING_ROLES.value_unset()]
            )
            return None
        if previous == AccessRequestStatus.EXTENSION_PENDING:
            self._state.status = previous
        return running.result().status

    async def _provision(
        self, employee: EmployeeInfo, entitlement: Entitlement, days: int | None, automated: bool
    ) -> None:
        state = self._state
        state.status = AccessRequestStatus.PROVISIONING
        self._publish()
        self._grant_key = f"{self._case_id}:grant:1"
        self._group = entitlement.group
        grant = await self._directory(
            "grant_access",
            GrantAccessInput(
                idempotency_key=self._grant_key,
                case_id=self._case_id,
                user_id=employee.user_id,
                group=entitlement.group,
            ),
            GrantAccessResult,
            f"Add {employee.user_name} to {entitlement.group}",
        )
        state.granted = grant.granted
        state.already_member = grant.already_member
        state.granted_at = workflow.now()
        if days is not None:
            state.expires_at = state.granted_at + timedelta(days=days)
        closing = self._gate.closing
        await self._audit(
            "access_granted",
            group=entitlement.group,
            group_id=grant.group_id,
            added=grant.granted,
            already_member=grant.already_member,
            automated=automated,
            approved_by=closing.approver if closing is not None else None,
            expires_at=state.expires_at.isoformat() if state.expires_at else None,
        )
        until = f" until {_day(state.expires_at)}" if state.expires_at else ""
        await self._ticket(
            TicketStatus.RESOLVED,
            f"granted: {employee.user_name} in {entitlement.group}{until}"
            + (
                " (automated)"
                if automated
                else f" (approved by {closing.approver})"
                if closing
                else ""
            ),
        )
        await self._tell(
            "access_granted",
            f"You now have {self._what()}{until}."
            + (" You will be reminded before it expires." if state.expires_at else ""),
        )
        if not automated:
            self._settle(AccessRequestOutcome.GRANTED_AFTER_APPROVAL.value)
        state.status = (
            AccessRequestStatus.ACTIVE if state.expires_at else AccessRequestStatus.PROVISIONING
        )
        self._publish()

    async def _hold_until_expiry(
        self, employee: EmployeeInfo, entitlement: Entitlement
    ) -> AccessRequestResult:
        """Wait for the expiry, reminding before it; take extensions; revoke at the end (or at
        once when the employee is terminated)."""
        state = self._state
        reminded_for: datetime | None = None
        while True:
            expires_at = state.expires_at
            assert expires_at is not None
            remind_at = expires_at - self._input.reminder_before
            due_reminder = reminded_for != expires_at and remind_at > workflow.now()
            point = remind_at if due_reminder else expires_at
            wait = point - workflow.now()
            if wait > timedelta(0):
                with contextlib.suppress(TimeoutError):
                    await workflow.wait_condition(
                        lambda: self._terminated is not None or self._extension is not None,
                        timeout=wait,
                        timeout_summary="expiry reminder" if due_reminder else "access expires",
                    )
            if self._terminated is not None:
                return await self._revoke_terminated()
            if self._extension is not None:
                await self._extend(employee, entitlement, self._extension)
                self._extension = None
                continue
            if workflow.now() < point:
                continue
            if due_reminder:
                reminded_for = expires_at
                state.reminders_sent += 1
                await self._tell(
                    "access_expiry_reminder",
                    f"Your {self._what()} expires on {_day(expires_at)}. Ask for an extension "
                    "before then if you still need it.",
                    key=f"reminder:{state.reminders_sent}",
                )
                await self._audit("expiry_reminder_sent", expires_at=expires_at.isoformat())
                self._publish()
                continue
            return await self._revoke_at_expiry()

    async def _extend(
        self, employee: EmployeeInfo, entitlement: Entitlement, extension: ExtensionInput
    ) -> None:
        state = self._state
        request_id = f"extension-{self._extension_requests}"
        await self._audit(
            "extension_requested",
            request_id=request_id,
            days=extension.days,
            justification=extension.justification,
            expires_at=state.expires_at.isoformat() if state.expires_at else None,
        )
        policy = self._chain_policy()
        assert state.expires_at is not None
        left = state.expires_at - workflow.now()
        if left < MIN_EXTENSION_WINDOW:
            state.extensions.append(f"{request_id}: too late")
            return
        # Never past the access it extends: undecided at expiry, the access ends.
        policy = policy.model_copy(update={"deadline": min(policy.deadline, left)})
        reasons = [
            f"extension of {extension.days} days: {extension.justification}",
            f"current access expires {_day(state.expires_at)}",
        ]
        status = await self._ask(request_id, policy, reasons, employee, entitlement)
        if status is None:
            state.extensions.append(f"{request_id}: withdrawn (terminated)")
            return
        if status == GateStatus.APPROVED:
            state.expires_at = state.expires_at + timedelta(days=extension.days)
            state.extensions.append(f"{request_id}: approved")
            await self._audit(
                "access_extended", request_id=request_id, expires_at=state.expires_at.isoformat()
            )
            await self._ticket(
                TicketStatus.RESOLVED, f"{request_id}: extended until {_day(state.expires_at)}"
            )
            await self._tell(
                "access_extended",
                f"Your {self._what()} is extended until {_day(state.expires_at)}.",
                key=request_id,
            )
            self._settle("extended")
        else:
            closing = self._gate.closing
            why = (closing.reason if closing is not None else None) or status.value
            state.extensions.append(f"{request_id}: {status.value}")
            await self._audit("extension_refused", request_id=request_id, reason=why)
            await self._tell(
                "access_extension_refused",
                f"Your extension of {self._what()} was not approved ({why}); it still expires "
                f"on {_day(state.expires_at)}.",
                key=request_id,
            )
            self._settle("extension_refused")
        state.status = AccessRequestStatus.ACTIVE
        self._publish()

    def _chain_policy(self) -> ApprovalPolicy:
        approvals = self._input.policy_document.get("approvals") or {}
        chain = self._chain if self._chain in approvals else DEFAULT_CHAIN
        return ApprovalPolicy.model_validate(approvals[chain])

    async def _revoke(self, reason: str) -> None:
        state = self._state
        state.status = AccessRequestStatus.REVOKING
        self._publish()
        assert self._grant_key is not None
        done = await self._directory(
            "revoke_access",
            RevokeAccessInput(grant_key=self._grant_key, case_id=self._case_id, reason=reason),
            RevokeAccessResult,
            f"Remove {self._input.employee} from {self._group}",
        )
        state.revoked_at = workflow.now() if done.revoked else None
        await self._audit(
            "access_revoked",
            group=self._group,
            removed=done.revoked,
            reason=reason,
            had_it_before=state.already_member,
        )

    async def _revoke_at_expiry(self) -> AccessRequestResult:
        await self._revoke("expired")
        await self._ticket(TicketStatus.CLOSED, f"revoked at expiry ({self._group})")
        await self._tell(
            "access_expired", f"Your {self._what()} expired and was removed.", key="expired"
        )
        return await self._finish(
            AccessRequestOutcome.REVOKED_AT_EXPIRY, "time-bound access revoked at expiry"
        )

    async def _revoke_terminated(self) -> AccessRequestResult:
        notice = self._terminated
        assert notice is not None
        await self._audit("employee_terminated", actor=DIRECTORY_ACTOR, reason=notice.reason)
        await self._revoke("employee terminated")
        await self._ticket(TicketStatus.CLOSED, f"revoked: {notice.reason}")
        return await self._finish(
            AccessRequestOutcome.REVOKED_TERMINATED,
            f"the employee left ({notice.reason}): everything this case granted is revoked",
        )

    async def _withdraw(self) -> AccessRequestResult:
        notice = self._terminated
        assert notice is not None
        await self._audit("employee_terminated", actor=DIRECTORY_ACTOR, reason=notice.reason)
        await self._ticket(TicketStatus.CLOSED, f"withdrawn: {notice.reason}")
        return await self._finish(
            AccessRequestOutcome.WITHDRAWN_TERMINATED,
            f"the employee left ({notice.reason}) before anything was granted",
        )

    async def _refuse(self, outcome: AccessRequestOutcome, reason: str) -> AccessRequestResult:
        await self._audit("access_refused", outcome=outcome.value, reason=reason)
        if self._state.ticket_id is not None and outcome != AccessRequestOutcome.NO_APPROVER:
            await self._ticket(TicketStatus.CLOSED, f"{outcome.value}: {reason}")
        return await self._finish(outcome, reason)

    async def _finish(self, outcome: AccessRequestOutcome, reason: str) -> AccessRequestResult:
        state = self._state
        state.outcome = outcome.value
        state.reason = reason
        state.status = AccessRequestStatus.COMPLETED
        automated = outcome == AccessRequestOutcome.GRANTED or (
            outcome == AccessRequestOutcome.REVOKED_AT_EXPIRY and self._chain is None
        )
        self._settle(outcome.value)
        self._dropped.append(self._gate)
        await self._audit(
            "access_finished",
            outcome=outcome.value,
            reason=reason,
            automated=automated,
            granted=state.granted,
            revoked=state.revoked_at is not None,
            extensions=len(state.extensions),
        )
        workflow.upsert_search_attributes([sa.OUTCOME.value_set(outcome.value)])
        self._publish()
        # Let an in-flight update return its answer before the run completes.
        await workflow.wait_condition(workflow.all_handlers_finished)
        return AccessRequestResult(
            case_id=self._case_id,
            outcome=outcome,
            automated=automated,
            granted=state.granted_at is not None,
            group=self._group if state.granted_at else None,
            granted_at=state.granted_at,
            expires_at=state.expires_at,
            revoked_at=state.revoked_at,
            extensions=len(state.extensions),
            catalogue_digest=state.catalogue_digest,
            policy_version=state.policy_version,
            reason=reason,
        )

    # --- helpers --------------------------------------------------------------------------------

    def _settle(self, outcome: str) -> None:
        """Answer the decision that closed the gate, once it has been carried out (once)."""
        closing = self._gate.closing
        if closing is None or closing.decision_id in self._gate.results:
            return
        state = self._state
        effects = {"group": self._group} if self._group and state.granted_at else {}
        if state.expires_at:
            effects["expires_at"] = state.expires_at.isoformat()
        state.decision = self._gate.settle(outcome=outcome, effects=effects)

    def _what(self) -> str:
        s = self._state
        return f"{s.application_title or s.application} access ({s.access_level})"

    def _duration_text(self) -> str:
        entitlement = self._state.entitlement
        days, _ = (
            granted_days(self._input.duration_days, entitlement) if entitlement else (None, None)
        )
        return f"{days} days" if days else "no expiry"

    async def _tell(self, kind: str, text: str, *, key: str | None = None) -> None:
        employee = self._state.employee
        if employee is None:
            return
        sent = await self._system(
            "notify_employee",
            NotifyEmployeeInput(
                idempotency_key=f"{self._case_id}:{key or kind}",
                case_id=self._case_id,
                user_id=employee.user_id,
                kind=kind,
                text=text,
            ),
            NotifyEmployeeResult,
            f"Notify {employee.user_name}: {kind}",
        )
        await self._audit("employee_notified", kind=kind, sent_to=sent.sent_to)

    async def _ticket(
        self, status: TicketStatus, note: str, *, escalated: bool | None = None
    ) -> None:
        if self._state.ticket_id is None:
            return
        await self._system(
            "update_ticket",
            UpdateTicketInput(case_id=self._case_id, status=status, note=note, escalated=escalated),
            TicketResult,
            f"Ticket: {status.value}",
        )

    async def _system(self, name: str, arg: BaseModel, result: type[_R], summary: str) -> _R:
        done: _R = await workflow.execute_activity(
            name,
            arg,
            result_type=result,
            start_to_close_timeout=SYSTEM_TIMEOUT,
            retry_policy=SYSTEM_RETRY,
            summary=summary,
        )
        return done

    async def _directory(self, name: str, arg: BaseModel, result: type[_R], summary: str) -> _R:
        """A directory or catalogue activity; when it fails for good (retries spent, or a
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
            f"{employee.department or '-'} · manager {employee.manager_user_name or '-'}"
            if employee
            else s.employee_name
        )
        lines = [
            f"**Status:** {s.status}" + (f" · **Outcome:** {s.outcome}" if s.outcome else ""),
            f"**Employee:** {who}",
            f"**Access:** {self._what()}"
            + (f" · group `{s.entitlement.group}`" if s.entitlement else "")
            + (" · **sensitive**" if s.sensitive else "")
            + (" · pre-approved" if s.pre_approved else "")
            + f" · {self._duration_text()}",
            f"**Justification:** {self._input.justification}",
        ]
        if s.catalogue_digest:
            lines.append(f"**Catalogue:** {s.catalogue_version} (`{s.catalogue_digest}`)")
        if s.policy_rule:
            lines.append(
                f"**Policy:** `{s.policy_version}` rule `{s.policy_rule}`: {s.explanation}"
            )
        lines.extend(self._gate.describe())
        if s.granted_at:
            lines.append(
                f"**Granted:** {_stamp(s.granted_at)}"
                + (" (already a member: nothing added)" if s.already_member else "")
                + (f" · **expires** {_stamp(s.expires_at)}" if s.expires_at else "")
                + (f" · reminders sent {s.reminders_sent}" if s.reminders_sent else "")
            )
        if s.extensions:
            lines.append("**Extensions:** " + "; ".join(s.extensions))
        if s.revoked_at:
            lines.append(f"**Revoked:** {_stamp(s.revoked_at)}")
        if s.reason and s.outcome:
            lines.append(f"**Why:** {s.reason}")
        # The UI renders `$...$` as math: escape dollar signs.
        workflow.set_current_details("\n\n".join(lines).replace("$", "\\$"))


class _DirectoryFailed(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _stamp(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC")


def _day(value: datetime) -> str:
    return value.strftime("%Y-%m-%d")


def _decision_id(decision: ApprovalDecisionInput) -> str:
    """The caller's idempotency key, else the update's own id (retries reuse it)."""
    if decision.decision_id:
        return decision.decision_id
    update = workflow.current_update_info()
    assert update is not None, "only updates carry an update id"
    return f"update-{update.id}"
