"""Access termination (EX): the directory says an employee left, and everything Podium granted
them that they still hold is revoked, also what finished access requests granted (a grant with
no expiry ends its case; nothing else would ever revoke it).

Steps: list the grants Podium recorded for the employee (`list_employee_grants`: every grant of
`grant_access`, by the employee's directory id) -> for each grant Podium added and nothing has
revoked yet, `revoke_grant`: the grant's record is claimed for this case (a running access
request revoking the same grant on the same termination finds the claim and writes nothing,
and the other way round), then the membership is removed only if the employee still holds it:
at most one SCIM write per grant, also under retries -> audit every revocation -> close.

One case per employee: its id is `access_termination-<user name>` (the starter derives it), so
a repeated termination finds the first case and revokes nothing twice; a second case (after the
first left retention) finds every grant revoked and writes nothing.

Messages: query `get_state` -> AccessTerminationState. No signal or update: it asks nobody.
Timers: none (the activities' retries only).
Search attributes: PodiumProcess, PodiumStatus, PodiumOutcome, PodiumCustomerId (the employee's
user name) and PodiumEscalated (a grant that could not be revoked).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

from workflows.components.audit import record_audit
from workflows.contracts import search_attributes as sa

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel

    from workflows.access_termination.types import (
        AccessTerminationInput,
        AccessTerminationOutcome,
        AccessTerminationResult,
        AccessTerminationState,
        AccessTerminationStatus,
        RevokedGrant,
    )
    from workflows.contracts.access import (
        EmployeeGrant,
        GrantState,
        ListEmployeeGrantsInput,
        ListEmployeeGrantsResult,
        RevokeGrantInput,
        RevokeGrantResult,
    )

__all__ = ["PROCESS", "AccessTerminationWorkflow"]

PROCESS = "access_termination"
DIRECTORY_ACTOR = "directory"
DIRECTORY_TIMEOUT = timedelta(seconds=30)
# The directory may be briefly down or rate limiting; a grant still being written by its own
# case (`GrantInFlight`) is waited for the same way, a few minutes at most.
DIRECTORY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=10,
    non_retryable_error_types=["ScimRejected", "InvalidId"],
)
_R = TypeVar("_R", bound="BaseModel")


@workflow.defn(name=PROCESS)
class AccessTerminationWorkflow:
    @workflow.init
    def __init__(self, input: AccessTerminationInput) -> None:
        self._input = input
        self._case_id = workflow.info().workflow_id
        self._state = AccessTerminationState(
            case_id=self._case_id, status=AccessTerminationStatus.LISTING, employee=input.employee
        )
        self._audit_seq = 0
        self._shown_status: str | None = None

    @workflow.query(name="get_state")
    def get_state(self) -> AccessTerminationState:
        return self._state

    @workflow.run
    async def run(self, input: AccessTerminationInput) -> AccessTerminationResult:
        workflow.upsert_search_attributes(
            [
                sa.PROCESS.value_set(PROCESS),
                sa.CUSTOMER_ID.value_set(sa.customer_id_attribute(input.employee)),
            ]
        )
        self._publish()
        await self._audit(
            "employee_terminated",
            actor=input.requested_by,
            employee=input.employee,
            reason=input.reason,
        )
        try:
            listed = await self._directory(
                "list_employee_grants",
                ListEmployeeGrantsInput(user_name=input.employee),
                ListEmployeeGrantsResult,
                f"List what Podium granted {input.employee}",
            )
        except ActivityError as err:
            return await self._finish(
                AccessTerminationOutcome.DIRECTORY_UNAVAILABLE,
                f"the directory failed at list_employee_grants ({_kind(err)})",
                escalated=True,
            )
        if listed.user_id is None:
            return await self._finish(
                AccessTerminationOutcome.UNKNOWN_EMPLOYEE,
                f"the directory has no user '{input.employee}'",
            )
        held = [grant for grant in listed.grants if _revocable(grant)]
        await self._audit(
            "employee_grants_listed",
            grants=len(listed.grants),
            held=[f"{grant.group} ({grant.case_id})" for grant in held],
        )
        self._state.status = AccessTerminationStatus.REVOKING
        self._publish()
        for grant in held:
            await self._revoke(grant)
        grants = self._state.grants
        removed = sum(1 for g in grants if g.state == GrantState.REMOVED)
        failed = [g for g in grants if g.state is None]
        if failed:
            return await self._finish(
                AccessTerminationOutcome.INCOMPLETE,
                f"{len(failed)} grant(s) could not be revoked: a person takes them over",
                escalated=True,
            )
        if removed:
            return await self._finish(
                AccessTerminationOutcome.REVOKED,
                f"{removed} membership(s) removed ({input.reason})",
            )
        return await self._finish(
            AccessTerminationOutcome.NOTHING_HELD,
            "the employee holds nothing Podium granted",
        )

    async def _revoke(self, grant: EmployeeGrant) -> None:
        line = RevokedGrant(case_id=grant.case_id, group=grant.group)
        self._state.grants.append(line)
        try:
            done = await self._directory(
                "revoke_grant",
                RevokeGrantInput(
                    grant_key=grant.grant_key,
                    case_id=self._case_id,
                    reason=f"employee terminated: {self._input.reason}"[:200],
                ),
                RevokeGrantResult,
                f"Remove {self._input.employee} from {grant.group}",
            )
        except ActivityError as err:
            line.reason = f"the directory failed ({_kind(err)})"
            await self._audit(
                "access_revocation_failed",
                group=grant.group,
                grant_case=grant.case_id,
                error=_kind(err),
            )
            self._publish()
            return
        line.state = done.state
        line.revoked_by = done.revoked_by
        await self._audit(
            "access_revoked",
            group=grant.group,
            grant_case=grant.case_id,
            removed=done.state == GrantState.REMOVED,
            state=done.state.value,
            revoked_by=done.revoked_by,
        )
        self._publish()

    async def _finish(
        self, outcome: AccessTerminationOutcome, reason: str, *, escalated: bool = False
    ) -> AccessTerminationResult:
        state = self._state
        state.outcome = outcome.value
        state.reason = reason
        state.status = AccessTerminationStatus.COMPLETED
        removed = sum(1 for g in state.grants if g.state == GrantState.REMOVED)
        if escalated:
            workflow.upsert_search_attributes([sa.ESCALATED.value_set(True)])
        await self._audit(
            "termination_finished", outcome=outcome.value, reason=reason, removed=removed
        )
        workflow.upsert_search_attributes([sa.OUTCOME.value_set(outcome.value)])
        self._publish()
        return AccessTerminationResult(
            case_id=self._case_id,
            outcome=outcome,
            removed=removed,
            grants=list(state.grants),
            finished_at=workflow.now(),
            reason=reason,
        )

    async def _directory(self, name: str, arg: BaseModel, result: type[_R], summary: str) -> _R:
        done: _R = await workflow.execute_activity(
            name,
            arg,
            result_type=result,
            start_to_close_timeout=DIRECTORY_TIMEOUT,
            retry_policy=DIRECTORY_RETRY,
            summary=summary,
        )
        return done

    async def _audit(self, action: str, *, actor: str = DIRECTORY_ACTOR, **detail: Any) -> None:
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
        s = self._state
        if s.status != self._shown_status:
            self._shown_status = s.status
            workflow.upsert_search_attributes([sa.STATUS.value_set(s.status)])
        lines = [
            f"**Status:** {s.status}" + (f" · **Outcome:** {s.outcome}" if s.outcome else ""),
            f"**Employee:** {s.employee}",
        ]
        lines += [
            f"- `{g.group}` (granted by {g.case_id}): "
            + (g.state.value if g.state else f"not revoked: {g.reason}")
            for g in s.grants
        ]
        if s.reason and s.outcome:
            lines.append(f"**Why:** {s.reason}")
        workflow.set_current_details("\n\n".join(lines).replace("$", "\\$"))


def _revocable(grant: EmployeeGrant) -> bool:
    """Podium added it and it is not revoked yet: held, or being written by its own case."""
    return (
        not grant.was_member
        and grant.status in ("pending", "granted")
        and (grant.revoked_by is None)
    )


def _kind(err: ActivityError) -> str:
    cause = err.cause
    return cause.type if isinstance(cause, ApplicationError) and cause.type else "Failure"
