"""Approval gate: the reusable human-in-the-loop step every Podium process asks people through.

A process picks an `ApprovalPolicy` (per process and risk level, fixed on the case input), opens
the gate with what is asked and who asked, and awaits `run()`. The policy's levels decide in
turn: each needs `quorum` distinct people holding one of its roles, named by it (`approvers`; a
`$slot` there is a person the process names when it opens the gate, such as the requester's
manager from the directory) or delegated to; a rejection at any level ends the gate. Four-eyes
(on by default) keeps the requester out and makes every approval, within and across levels, come
from a different person.

Decisions reach the gate through the process's update (validated with `validate()` first, so bad
ones never reach history) or signal (`accept()` refuses them; the process audits the refusal).
Who decides comes from the decision token: an update's validator checks it with the worker's
key (`verify_now`) and the handler reads the checked token (`token_identity`), so an update
handler never waits for an activity; a signal's is checked by the `verify_decision` local
activity (`authenticate`).
- approve: counts towards the level's quorum; the last level's quorum approves the gate;
- reject (a reason is required): closes the gate, rejected;
- request_changes (a lower amount): approves that lower amount; later approvals are for it;
- delegate (to a named person, with a reason): that person may decide at this level without
  holding the role.
Every decision carries a decision id: the same id again returns the first result.

Admission (`admit`, the update validators' check): a decision update is accepted only while the
case is quiet, its gate parked at `run()`'s wait since an earlier workflow task and no decision
signal being checked. Otherwise the validator rejects it (nothing enters history) as `CaseBusy`
and the sender retries a moment later (the Podium client does). The reason is replay: when an
update is accepted in the same workflow task in which an activity or timer resolved, the SDK
delivers the two in separate activations while the case runs and in one activation, update
first, when it replays, so the case's commands come back in another order and the case can no
longer be replayed (a nondeterminism error at its next worker restart or cache eviction). A
retry of a decision the gate has answered, sent while the case is busy (as it is once the gate
has closed and the process carries the decision out), is rejected as `DecisionRecorded`, the
first result as its detail, so late duplicates never reach history either.

Timers, per level (one `wait_condition` timeout at a time, no polling): a reminder at each
fraction of the SLA in `reminders`; at the SLA, `escalate` hands the decision to the next level
(at the last level: escalated, the same roles keep deciding) and `backup` adds the level's backup
roles; at the final deadline the gate expires and reports the policy's default action.

Side effects are the gate's own small, named steps: notices through the `notify_approvers`
activity (idempotency key case + level + kind + index), audit records and status changes through
the process's hooks, search attributes for the approvers' inbox (`PodiumAwaitingRoles`,
`PodiumApprovalLevel`, `PodiumSlaDueAt`, ...) and metrics (`podium_approval_*`). State changes
happen at once in the message handler; their side effects follow in `run()`'s loop.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RawValue, RetryPolicy, SearchAttributeUpdate
from temporalio.exceptions import ActivityError, ApplicationError

from workflows.contracts import search_attributes as sa

with workflow.unsafe.imports_passed_through():
    from activities.types import ApprovalNoticeKind, NotifyApproversInput, NotifyApproversResult
    from workflows.contracts.approval import (
        CASE_BUSY,
        DECISION_RECORDED,
        DECRYPTED_METADATA,
        PERSON_SLOT,
        ApprovalAction,
        ApprovalDecisionInput,
        ApprovalDecisionRecord,
        ApprovalDecisionResult,
        ApprovalLevel,
        ApprovalPolicy,
        ApprovalRequest,
        BreachAction,
        DefaultAction,
        GateStatus,
        VerifyDecisionInput,
        VerifyDecisionResult,
        check_decision_now,
        decision_digest,
    )

__all__ = [
    "DECISION_CHECK_TIMEOUT",
    "NOTIFY_RETRY",
    "NOTIFY_TIMEOUT",
    "ApprovalGate",
    "GateHooks",
    "GateOutcome",
    "decision_from",
    "identity",
]

NOTIFY_TIMEOUT = timedelta(seconds=30)
# A notice that cannot be delivered must not hold the case: bounded, then audited and skipped.
NOTIFY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=1),
    maximum_attempts=8,
)
# The decision token check: a local activity in the worker that holds the key.
# Patch of every process that takes decisions by update: its validators check decision tokens
# (`verify_now`) and its handlers read them (`token_identity`); a signal's token is checked by
# the `verify_decision` activity. Cases started before it check them with the local activity,
# as they did (a local activity's result replays at its marker, not where it first resolved:
# with racing messages in the same workflow task, such a case could not always be replayed).
PATCH_CHECKED_ON_ACCEPTANCE = "decisions-checked-on-acceptance"
DECISION_CHECK_TIMEOUT = timedelta(seconds=10)
DECISION_CHECK_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200), maximum_interval=timedelta(seconds=2)
)
USER_PREFIX = "user:"
DEADLINE_ACTOR = "policy:deadline"

_VOTES = (ApprovalAction.APPROVE, ApprovalAction.REQUEST_CHANGES, ApprovalAction.REJECT)


def identity(name: str) -> str:
    """How people and roles are compared: trimmed, case-insensitive."""
    return name.strip().casefold()


@dataclass(frozen=True)
class GateHooks:
    """What the gate asks of its process.

    `audit(action, actor=..., **detail)` records an audit event; `changed()` refreshes what the
    process shows (current details); `escalated(reason)` lets the process mark the case
    (ticket, status) when an SLA passes.
    """

    audit: Callable[..., Awaitable[None]]
    changed: Callable[[], None] = lambda: None
    escalated: Callable[[str], Awaitable[None]] | None = None


@dataclass(frozen=True)
class GateOutcome:
    status: GateStatus
    decided_by: str
    amount_cents: int | None
    closing: ApprovalDecisionRecord | None = None
    default_action: DefaultAction | None = None
    approve_limit_cents: int | None = None

    @property
    def approved_by_default(self) -> bool:
        """Expired with `approve_within_limit` and an amount at or under the limit."""
        return (
            self.status == GateStatus.EXPIRED
            and self.default_action == DefaultAction.APPROVE_WITHIN_LIMIT
            and self.amount_cents is not None
            and self.approve_limit_cents is not None
            and self.amount_cents <= self.approve_limit_cents
        )


@dataclass
class _Point:
    """The next moment the gate must act on by itself."""

    at: datetime
    kind: str  # "reminder" | "sla" | "deadline"
    summary: str
    index: int = 0


@dataclass
class _Event:
    """A state change whose side effects (audit, notices, attributes) are still to happen."""

    kind: str  # "decision" | "refused"
    record: ApprovalDecisionRecord | None = None
    started_level: int | None = None
    refused: ApprovalDecisionInput | None = None
    reason: str = ""
    via: str = ""
    notice_index: int = 1
    result: ApprovalDecisionResult | None = None  # as things stood right after the decision


@dataclass
class _Seen:
    fingerprint: tuple[Any, ...]
    record: ApprovalDecisionRecord


@dataclass
class _LevelState:
    breached: bool = False
    delegations: int = 0
    reminders_sent: set[int] = field(default_factory=set)


def decision_from(raw: RawValue) -> tuple[ApprovalDecisionInput, bool]:
    """The decision in a signal's or update's payload, and whether it reached the case
    encrypted (the worker's codec marks what it decrypted). Raises ValueError when the payload
    is not a decision."""
    try:
        decision = workflow.payload_converter().from_payload(raw.payload, ApprovalDecisionInput)
    except Exception as err:
        raise ValueError(f"not an approval decision: {err}") from None
    return decision, DECRYPTED_METADATA in raw.payload.metadata


def _fingerprint(decision: ApprovalDecisionInput) -> tuple[Any, ...]:
    return (
        decision.request_id,
        decision.resolved_action,
        identity(decision.approver),
        decision.new_amount_cents,
        identity(decision.delegate_to or ""),
    )


class ApprovalGate:
    def __init__(self, *, process: str, hooks: GateHooks) -> None:
        self.process = process
        self.request: ApprovalRequest | None = None
        self.results: dict[str, ApprovalDecisionResult] = {}
        self._subject = ""
        self._hooks = hooks
        self._events: list[_Event] = []
        self._seen: dict[str, _Seen] = {}
        self._levels: dict[int, _LevelState] = {}
        self._approved_by: dict[str, str] = {}  # identity -> level name
        self._voted_at: dict[int, set[str]] = {}  # level -> identities
        self._closing: ApprovalDecisionRecord | None = None
        self._people: dict[int, list[str]] = {}  # level -> the people it names, slots filled
        # Admission: the history length of the workflow task in which `run()` last parked (None
        # while it works) and the decision signals whose tokens are being checked.
        self._parked_at: int | None = None
        self._checking = 0

    # --- state --------------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self.request is not None and self.request.status == GateStatus.OPEN

    @property
    def policy(self) -> ApprovalPolicy:
        assert self.request is not None
        return self.request.policy

    @property
    def level(self) -> ApprovalLevel:
        assert self.request is not None
        return self.request.policy.levels[self.request.level - 1]

    @property
    def closing(self) -> ApprovalDecisionRecord | None:
        """The decision that closed the gate (approved or rejected), if one did."""
        return self._closing

    def waiting_for(self) -> list[str]:
        """Roles that may decide now, then `user:<name>` for the people the level names and
        for delegates."""
        if not self.is_open:
            return []
        assert self.request is not None
        return [
            *self.request.awaiting_roles,
            *(USER_PREFIX + name for name in self.request.awaiting_people),
            *(USER_PREFIX + name for name in self.request.delegates),
        ]

    def open_request(
        self,
        *,
        request_id: str,
        now: datetime,
        policy: ApprovalPolicy,
        requested_by: str,
        recommendation: str,
        reasons: list[str],
        subject: str,
        amount_cents: int | None = None,
        people: Mapping[str, str] | None = None,
    ) -> ApprovalRequest:
        """Open the gate. `people` fills the policy's `$slot` approvers by slot name (without
        the `$`); a slot left unfilled raises ValueError before anything changes."""
        if self.request is not None:
            raise RuntimeError("the approval gate is already open")
        named = {
            index: _fill(level.approvers, people or {})
            for index, level in enumerate(policy.levels, start=1)
        }
        first = policy.levels[0]
        deadline_at = now + policy.deadline
        self._subject = subject
        self.request = ApprovalRequest(
            request_id=request_id,
            requested_at=now,
            requested_by=requested_by.strip(),
            sla_due_at=min(now + first.sla, deadline_at),
            deadline_at=deadline_at,
            recommendation=recommendation,
            reasons=reasons,
            policy=policy,
            level=1,
            level_name=first.name,
            level_started_at=now,
            awaiting_roles=list(first.approver_roles),
            awaiting_people=list(named[1]),
            amount_cents=amount_cents,
            original_amount_cents=amount_cents,
        )
        self._people = named
        self._levels[1] = _LevelState()
        return self.request

    # --- decisions ----------------------------------------------------------------------------

    def validate(self, decision: ApprovalDecisionInput, decision_id: str | None = None) -> bool:
        """Raise ValueError with a reason a person can act on when the decision can't apply.

        Returns True when `decision_id` was already accepted for this same decision: a retry,
        which answers with the first result and changes nothing.
        """
        request = self.request
        if request is None:
            raise ValueError("no approval is pending for this case")
        key = decision_id or decision.decision_id
        if key is not None and key in self._seen:
            if self._seen[key].fingerprint != _fingerprint(decision):
                raise ValueError(f"decision id '{key}' was already used for a different decision")
            return True
        if request.status != GateStatus.OPEN:
            by = f" by {self._closing.approver}" if self._closing else ""
            raise ValueError(
                f"approval {request.request_id} was already decided ({request.status.value}{by})"
            )
        if decision.request_id != request.request_id:
            raise ValueError(
                f"unknown approval request '{decision.request_id}'; "
                f"the pending request is '{request.request_id}'"
            )
        approver = identity(decision.approver)
        if not approver:
            raise ValueError("an approver is required")
        action = decision.resolved_action
        self._check_payload(decision, action)
        if self.policy.four_eyes and approver == identity(request.requested_by):
            raise ValueError(
                f"four-eyes: '{decision.approver.strip()}' requested this and may not decide it"
            )
        if action in _VOTES:
            if approver in self._voted_at.get(request.level, set()):
                raise ValueError(
                    f"'{decision.approver.strip()}' has already decided at level "
                    f"{request.level} '{request.level_name}'"
                )
            if self.policy.four_eyes and approver in self._approved_by:
                raise ValueError(
                    f"four-eyes: '{decision.approver.strip()}' already approved at level "
                    f"'{self._approved_by[approver]}'; another person must decide at level "
                    f"'{request.level_name}'"
                )
        if not self._entitled(decision):
            if not request.awaiting_people:
                raise ValueError(
                    f"'{decision.approver.strip()}' lacks a role for level {request.level} "
                    f"'{request.level_name}' (needs one of: {', '.join(request.awaiting_roles)})"
                )
            raise ValueError(
                f"'{decision.approver.strip()}' may not decide at level {request.level} "
                f"'{request.level_name}' (it names {', '.join(request.awaiting_people)}"
                + (
                    f"; or a role of: {', '.join(request.awaiting_roles)}"
                    if request.awaiting_roles
                    else ""
                )
                + ")"
            )
        if action == ApprovalAction.DELEGATE:
            self._check_delegate(decision)
        return False

    def admit(self, decision: ApprovalDecisionInput, decision_id: str | None = None) -> None:
        """An update validator's check: `validate`, then whether the case may take the update
        in this workflow task (see the module's Admission). Raises ValueError when the decision
        cannot apply and `ApplicationError` `CaseBusy` for a moment the sender retries; a retry
        of a decision the gate has answered is taken (its first result is the answer) when the
        case is quiet and rejected as `DecisionRecorded`, that result as the detail, when not."""
        retry = self.validate(decision, decision_id)
        busy = self.busy()
        if retry and busy is not None:
            key = decision_id or decision.decision_id or ""
            if key in self.results:
                raise ApplicationError(
                    f"decision '{key}' was already recorded",
                    self.results[key],
                    type=DECISION_RECORDED,
                    non_retryable=True,
                )
            raise ApplicationError(
                f"decision '{key}' is being carried out: retry to read its result",
                type=CASE_BUSY,
            )
        if busy is not None:
            raise ApplicationError(busy, type=CASE_BUSY)

    def busy(self) -> str | None:
        """Why the case cannot take a decision update in this workflow task, if it cannot."""
        if self._checking:
            return "the case is checking a decision signal: retry in a moment"
        if self._parked_at is None:
            return "the case is carrying out a step: retry in a moment"
        if self._parked_at >= workflow.info().get_current_history_length():
            return "the case has just resumed: retry in a moment"
        return None

    def _check_payload(self, decision: ApprovalDecisionInput, action: ApprovalAction) -> None:
        assert self.request is not None
        if action == ApprovalAction.REJECT and not (decision.reason or "").strip():
            raise ValueError("a reason is required to reject")
        if action == ApprovalAction.REQUEST_CHANGES:
            current = self.request.amount_cents
            new = decision.new_amount_cents
            if new is None or new <= 0 or (current is not None and new >= current):
                limit = f" lower than the current {current} cents" if current is not None else ""
                raise ValueError(f"request_changes needs a positive new_amount_cents{limit}")
        if action == ApprovalAction.DELEGATE:
            if not (decision.delegate_to or "").strip():
                raise ValueError("delegate needs delegate_to: the person who decides instead")
            if not (decision.reason or "").strip():
                raise ValueError("a reason is required to delegate")

    def _check_delegate(self, decision: ApprovalDecisionInput) -> None:
        assert self.request is not None and decision.delegate_to is not None
        to = identity(decision.delegate_to)
        if to == identity(decision.approver):
            raise ValueError("one cannot delegate to oneself")
        if self.policy.four_eyes and to == identity(self.request.requested_by):
            raise ValueError(
                f"four-eyes: cannot delegate to the requester '{decision.delegate_to}'"
            )
        if to in {identity(name) for name in self.request.delegates}:
            raise ValueError(f"'{decision.delegate_to.strip()}' is already a delegate")

    def _entitled(self, decision: ApprovalDecisionInput) -> bool:
        assert self.request is not None
        roles = {identity(role) for role in decision.approver_roles}
        if roles & {identity(role) for role in self.request.awaiting_roles}:
            return True
        people = [*self.request.awaiting_people, *self.request.delegates]
        return identity(decision.approver) in {identity(name) for name in people}

    def accept(
        self, decision: ApprovalDecisionInput, *, now: datetime, decision_id: str, via: str
    ) -> ApprovalDecisionRecord:
        """Apply a decision (after `validate`); returns its record, the first one on a retry."""
        if self.validate(decision, decision_id):
            return self._seen[decision_id].record
        request = self.request
        assert request is not None
        action = decision.resolved_action
        approver = identity(decision.approver)
        record = ApprovalDecisionRecord(
            decision_id=decision_id,
            request_id=request.request_id,
            action=action,
            approver=decision.approver.strip(),
            approver_roles=[role.strip() for role in decision.approver_roles],
            level=request.level,
            level_name=request.level_name,
            as_delegate=not (
                {identity(r) for r in decision.approver_roles}
                & {identity(r) for r in request.awaiting_roles}
            )
            and approver not in {identity(name) for name in request.awaiting_people},
            comment=decision.comment,
            reason=decision.reason,
            new_amount_cents=decision.new_amount_cents,
            delegate_to=decision.delegate_to.strip() if decision.delegate_to else None,
            decided_at=now,
            via=via,
        )
        self._seen[decision_id] = _Seen(_fingerprint(decision), record)
        request.decisions.append(record)
        event = _Event(kind="decision", record=record, via=via)
        if action == ApprovalAction.DELEGATE:
            assert record.delegate_to is not None
            request.delegates.append(record.delegate_to)
            self._levels[request.level].delegations += 1
            event.notice_index = self._levels[request.level].delegations
        elif action == ApprovalAction.REJECT:
            self._voted_at.setdefault(request.level, set()).add(approver)
            request.status = GateStatus.REJECTED
            self._closing = record
        else:
            self._voted_at.setdefault(request.level, set()).add(approver)
            self._approved_by[approver] = request.level_name
            request.approvals.append(record.approver)
            if action == ApprovalAction.REQUEST_CHANGES:
                request.amount_cents = decision.new_amount_cents
            if len(request.approvals) >= self.level.quorum:
                if request.level == len(request.policy.levels):
                    request.status = GateStatus.APPROVED
                    self._closing = record
                else:
                    self._start_level(request.level + 1, now)
                    event.started_level = request.level
        if self._closing is not record:
            event.result = self._result(record)
        self._events.append(event)
        return record

    async def authenticate(
        self, decision: ApprovalDecisionInput, *, encrypted: bool, local: bool = True
    ) -> ApprovalDecisionInput:
        """The decision as its verified credential says: who decides and in which roles come
        from the decision token (checked by the `verify_decision` activity in the worker, which
        holds the key), never from the payload. Raises ValueError with the reason it is refused.
        For signals (`local=False` on cases under `PATCH_CHECKED_ON_ACCEPTANCE`: an activity,
        ordered in history, so racing messages replay as they ran), and as a local activity for
        the cases started before that patch."""
        verify = workflow.execute_local_activity if local else workflow.execute_activity
        self._checking += 1  # decision updates wait (Admission)
        try:
            verified: VerifyDecisionResult = await verify(
                "verify_decision",
                self._verify_input(decision, encrypted=encrypted),
                result_type=VerifyDecisionResult,
                start_to_close_timeout=DECISION_CHECK_TIMEOUT,
                retry_policy=DECISION_CHECK_RETRY,
                summary="Verify the decision token",
            )
        finally:
            self._checking -= 1
        return _as_verified(decision, verified)

    def verify_now(
        self, decision: ApprovalDecisionInput, *, encrypted: bool
    ) -> ApprovalDecisionInput:
        """`authenticate` for an update's validator: the worker's key checks the token at once
        (validators never run on replay, so neither the key nor the clock touches history).
        Raises ValueError with the reason the decision is refused: Temporal rejects the update
        and nothing of it enters the case."""
        verdict = check_decision_now(self._verify_input(decision, encrypted=encrypted))
        if not verdict.valid:
            workflow.logger.warning("decision update refused: %s", verdict.reason)
        return _as_verified(decision, verdict)

    @staticmethod
    def token_identity(decision: ApprovalDecisionInput) -> ApprovalDecisionInput:
        """In an update handler whose validator ran `verify_now`: the decision with who decides
        read from its (already checked) token. Deterministic: the same payload gives the same
        identity on every replay."""
        claims = _token_claims(decision.credential or "")
        subject = str(claims.get("sub", "")).strip()
        roles = claims.get("roles") or []
        if not subject or not isinstance(roles, list):
            raise ValueError("decision refused: the decision token names no one")
        return _as_verified(
            decision,
            VerifyDecisionResult(valid=True, subject=subject, roles=[str(r) for r in roles]),
        )

    @staticmethod
    def _verify_input(decision: ApprovalDecisionInput, *, encrypted: bool) -> VerifyDecisionInput:
        if not decision.credential:
            raise ValueError(
                "the decision has no decision token: who decides must come from a verified "
                "credential (the Podium API, CLI or inbox), not from the payload"
            )
        return VerifyDecisionInput(
            credential=decision.credential,
            digest=decision_digest(workflow.info().workflow_id, decision),
            encrypted=encrypted,
        )

    def refuse(self, decision: ApprovalDecisionInput, reason: str, *, via: str) -> None:
        """Note a decision that could not apply: an invalid signal, or a decision whose
        credential does not hold (audited when the gate drains its events)."""
        if self.request is not None:
            self.request.refused.append(f"{decision.approver.strip() or '(anonymous)'}: {reason}")
        self._events.append(_Event(kind="refused", refused=decision, reason=reason, via=via))

    def _start_level(self, level: int, now: datetime) -> None:
        request = self.request
        assert request is not None
        spec = request.policy.levels[level - 1]
        request.level = level
        request.level_name = spec.name
        request.level_started_at = now
        request.sla_due_at = min(now + spec.sla, request.deadline_at)
        request.awaiting_roles = list(spec.approver_roles)
        request.awaiting_people = list(self._people.get(level, []))
        request.delegates = []
        request.approvals = []
        self._levels[level] = _LevelState()

    # --- waiting ------------------------------------------------------------------------------

    async def run(self) -> GateOutcome:
        """Wait for the decision, reminding and escalating on the way; the gate's whole life."""
        request = self.request
        hooks = self._hooks
        if request is None:
            raise RuntimeError("the approval gate was never opened")
        self._upsert()
        await self._notify(ApprovalNoticeKind.REQUEST, 1)
        hooks.changed()
        while True:
            await self.drain()
            if request.status != GateStatus.OPEN:
                break
            point = self._next_point()
            wait = point.at - workflow.now()
            if wait > timedelta(0):
                self._parked_at = workflow.info().get_current_history_length()
                try:
                    await workflow.wait_condition(
                        self._has_news, timeout=wait, timeout_summary=point.summary
                    )
                    continue
                except TimeoutError:
                    # A decision in the same activation as the timer wins over the timer.
                    if self._has_news():
                        continue
                finally:
                    self._parked_at = None
            await self._on_point(point)
        return self._outcome()

    def _has_news(self) -> bool:
        return bool(self._events)

    def _next_point(self) -> _Point:
        request = self.request
        assert request is not None
        spec = self.level
        state = self._levels[request.level]
        points: list[_Point] = []
        if not state.breached:
            for index, fraction in enumerate(spec.reminders, start=1):
                at = request.level_started_at + spec.sla * fraction
                if index not in state.reminders_sent and at < request.sla_due_at:
                    points.append(_Point(at, "reminder", f"{spec.name} reminder {index}", index))
                    break
            if request.sla_due_at < request.deadline_at:
                points.append(_Point(request.sla_due_at, "sla", f"{spec.name} approval SLA"))
        points.append(_Point(request.deadline_at, "deadline", "approval deadline"))
        return min(points, key=lambda point: point.at)

    async def _on_point(self, point: _Point) -> None:
        if point.kind == "reminder":
            await self._remind(point.index)
        elif point.kind == "sla":
            await self._breach()
        else:
            await self._expire()

    async def _remind(self, index: int) -> None:
        request = self.request
        assert request is not None
        self._levels[request.level].reminders_sent.add(index)
        request.reminders_sent.append(f"{request.level}:{index}")
        self._count("podium_approval_reminders", "Approval reminders sent")
        await self._notify(ApprovalNoticeKind.REMINDER, index)
        await self._hooks.audit(
            "approval_reminder_sent",
            request_id=request.request_id,
            level=request.level,
            level_name=request.level_name,
            index=index,
            waiting_for=self.waiting_for(),
            sla_due_at=request.sla_due_at.isoformat(),
        )

    async def _breach(self) -> None:
        request = self.request
        assert request is not None
        spec = self.level
        breached = request.level_name
        self._levels[request.level].breached = True
        request.escalated = True
        self._count("podium_approval_escalations", "Approval SLAs breached (escalations)")
        if spec.on_breach == BreachAction.BACKUP:
            for role in spec.backup_roles:
                if role not in request.awaiting_roles:
                    request.awaiting_roles.append(role)
            kind, mode, to = ApprovalNoticeKind.BACKUP, "backup", breached
        elif request.level < len(request.policy.levels):
            self._start_level(request.level + 1, workflow.now())
            kind, mode, to = ApprovalNoticeKind.ESCALATION, "next_level", request.level_name
        else:
            kind, mode, to = ApprovalNoticeKind.ESCALATION, "last_level", breached
        self._upsert()
        await self._notify(kind, 1)
        reason = f"approval SLA of level '{breached}' passed with no decision"
        await self._hooks.audit(
            "approval_escalated",
            request_id=request.request_id,
            mode=mode,
            from_level=breached,
            to_level=to,
            waiting_for=self.waiting_for(),
            sla_due_at=request.sla_due_at.isoformat(),
            reason=reason,
        )
        if self._hooks.escalated is not None:
            await self._hooks.escalated(reason)
        self._hooks.changed()

    async def _expire(self) -> None:
        request = self.request
        assert request is not None
        request.status = GateStatus.EXPIRED
        request.default_action = request.policy.default_action
        self._count("podium_approval_expiries", "Approvals that reached their final deadline")
        self._upsert()
        await self._hooks.audit(
            "approval_expired",
            actor=DEADLINE_ACTOR,
            request_id=request.request_id,
            level=request.level,
            level_name=request.level_name,
            default_action=request.default_action.value,
            deadline_at=request.deadline_at.isoformat(),
        )
        self._hooks.changed()

    def _outcome(self) -> GateOutcome:
        request = self.request
        assert request is not None
        closing = self._closing
        if closing is not None:
            latency = (closing.decided_at - request.requested_at).total_seconds()
            workflow.metric_meter().create_histogram_float(
                "podium_approval_latency_seconds",
                "Time from an approval request to the decision that closed it",
                "s",
            ).record(latency, self._tags({"decision": request.status.value}))
        return GateOutcome(
            status=request.status,
            decided_by=closing.approver if closing is not None else DEADLINE_ACTOR,
            amount_cents=request.amount_cents,
            closing=closing,
            default_action=request.default_action,
            approve_limit_cents=request.policy.approve_limit_cents,
        )

    # --- side effects -------------------------------------------------------------------------

    async def drain(self) -> None:
        """Carry out the side effects of the decisions (and refusals) received so far."""
        hooks = self._hooks
        while self._events:
            event = self._events.pop(0)
            if event.kind == "refused":
                assert event.refused is not None
                decision = event.refused
                # The name is the sender's claim, never verified: the audit says so.
                await hooks.audit(
                    "approval_signal_refused",
                    actor=f"unverified:{decision.approver.strip() or '(anonymous)'}",
                    request_id=decision.request_id,
                    decision_id=decision.decision_id,
                    decision=decision.action.value if decision.action else None,
                    reason=event.reason,
                    via=event.via,
                )
                hooks.changed()
                continue
            record = event.record
            assert record is not None
            detail = record.model_dump(mode="json", exclude={"approver", "action"})
            await hooks.audit(
                "approval_delegated"
                if record.action == ApprovalAction.DELEGATE
                else "approval_decided",
                actor=record.approver,
                decision=record.action.value,
                **detail,
            )
            self._upsert()
            if record.action == ApprovalAction.DELEGATE:
                await self._notify(
                    ApprovalNoticeKind.DELEGATION,
                    event.notice_index,
                    users=[record.delegate_to or ""],
                    level=record.level,
                )
            if event.started_level is not None:
                await self._notify(ApprovalNoticeKind.REQUEST, 1, level=event.started_level)
            if event.result is not None:
                # Answers the decision's update; the closing decision is answered by `settle`.
                self.results[record.decision_id] = event.result
            hooks.changed()

    def _result(self, record: ApprovalDecisionRecord, **extra: Any) -> ApprovalDecisionResult:
        request = self.request
        assert request is not None
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
            waiting_for=self.waiting_for(),
            amount_cents=request.amount_cents,
            **extra,
        )

    def settle(
        self, outcome: str | None = None, effects: dict[str, str] | None = None
    ) -> ApprovalDecisionResult | None:
        """Record the closing decision's result once the process has carried it out: the
        process's `outcome` and what it did (`effects`, e.g. `{"refund_id": ...}`)."""
        closing = self._closing
        if closing is None:
            return None
        result = self._result(closing, outcome=outcome, effects=effects or {})
        self.results[closing.decision_id] = result
        return result

    async def _notify(
        self,
        kind: ApprovalNoticeKind,
        index: int,
        *,
        users: list[str] | None = None,
        level: int | None = None,
    ) -> None:
        request = self.request
        assert request is not None
        level = level or request.level
        spec = request.policy.levels[level - 1]
        roles = list(request.awaiting_roles if level == request.level else spec.approver_roles)
        named = list(
            request.awaiting_people if level == request.level else self._people.get(level, [])
        )
        info = workflow.info()
        notice = NotifyApproversInput(
            idempotency_key=(
                f"{info.workflow_id}:approval:{request.request_id}:{level}:{kind.value}:{index}"
            ),
            case_id=info.workflow_id,
            workflow_id=info.workflow_id,
            namespace=info.namespace,
            process=self.process,
            kind=kind,
            index=index,
            request_id=request.request_id,
            level=level,
            level_name=spec.name,
            roles=[] if users else roles,
            users=users if users is not None else [*named, *request.delegates],
            subject=self._subject,
            amount_cents=request.amount_cents,
            due_at=request.sla_due_at,
            deadline_at=request.deadline_at,
        )
        try:
            await workflow.execute_activity(
                "notify_approvers",
                notice,
                result_type=NotifyApproversResult,
                start_to_close_timeout=NOTIFY_TIMEOUT,
                retry_policy=NOTIFY_RETRY,
                summary=f"Notify approvers: {kind.value} ({spec.name})",
            )
        except ActivityError as err:
            # People still see the case in their inbox (search attributes); note and go on.
            workflow.logger.warning("approver notice failed: %s", err.cause or err)
            await self._hooks.audit(
                "approval_notice_failed",
                idempotency_key=notice.idempotency_key,
                kind=kind.value,
                error=str(err.cause or err),
            )

    def _upsert(self) -> None:
        request = self.request
        assert request is not None
        is_open = request.status == GateStatus.OPEN
        updates: list[SearchAttributeUpdate[Any]] = [
            sa.PROCESS.value_set(self.process),
            sa.AWAITING_APPROVAL.value_set(is_open),
            sa.ESCALATED.value_set(request.escalated),
            sa.APPROVAL_LEVEL.value_set(request.level),
            sa.AWAITING_ROLES.value_set(self.waiting_for())
            if is_open
            else sa.AWAITING_ROLES.value_unset(),
        ]
        if is_open:
            updates.append(sa.SLA_DUE_AT.value_set(request.sla_due_at))
        if request.amount_cents is not None:
            updates.append(sa.AMOUNT.value_set(request.amount_cents / 100))
        workflow.upsert_search_attributes(updates)

    # --- metrics ------------------------------------------------------------------------------

    def _tags(self, extra: dict[str, str] | None = None) -> dict[str, str | int | float | bool]:
        assert self.request is not None
        tags: dict[str, str | int | float | bool] = {
            "process": self.process,
            "level": self.request.level_name,
        }
        tags.update(extra or {})
        return tags

    def _count(self, name: str, description: str) -> None:
        workflow.metric_meter().create_counter(name, description).add(1, self._tags())

    # --- what people read ---------------------------------------------------------------------

    def describe(self) -> list[str]:
        """Markdown lines for the case's current details."""
        request = self.request
        if request is None:
            return []
        levels = request.policy.levels
        lines: list[str] = []
        if request.status == GateStatus.OPEN:
            spec = self.level
            lines.append(
                f"**Approval {request.request_id}:** level {request.level}/{len(levels)} "
                f"`{request.level_name}` · {len(request.approvals)}/{spec.quorum} approvals · "
                f"waiting for {', '.join(self.waiting_for())} · SLA due "
                f"{_stamp(request.sla_due_at)} · deadline {_stamp(request.deadline_at)}"
                + (" · **escalated**" if request.escalated else "")
            )
            who = (
                f"a holder of `{request.awaiting_roles[0]}`"
                if request.awaiting_roles
                else f"`{request.awaiting_people[0]}`"
                if request.awaiting_people
                else "a delegate"
            )
            lines.append(
                "Decide in the approvals inbox (`/inbox`) or with `podium approve CASE` (or "
                f"reject / request-changes / delegate) as {who}: a decision carries a decision "
                "token from the Podium API; a signal that only names an approver is refused and "
                "audited"
            )
        else:
            lines.append(f"**Approval {request.request_id}:** {request.status.value}")
            if request.default_action is not None:
                lines.append(f"No decision before the deadline: default `{request.default_action}`")
        for record in request.decisions:
            lines.append("- " + _describe_record(record))
        for refusal in request.refused[-3:]:
            lines.append(f"- refused: {refusal}")
        return lines


def _fill(approvers: list[str], people: Mapping[str, str]) -> list[str]:
    """A level's named approvers with its `$slot`s filled from `people`."""
    named: list[str] = []
    for entry in approvers:
        name = entry.strip()
        if name.startswith(PERSON_SLOT):
            slot = name.removeprefix(PERSON_SLOT)
            filled = (people.get(slot) or "").strip()
            if not filled:
                raise ValueError(f"approver slot '{name}' names no one: the process must fill it")
            name = filled
        if identity(name) not in {identity(n) for n in named}:
            named.append(name)
    return named


def _describe_record(record: ApprovalDecisionRecord) -> str:
    roles = ", ".join(record.approver_roles) or "no role"
    who = f"{record.approver} ({'delegate' if record.as_delegate else roles})"
    what = record.action.value.replace("_", " ")
    if record.action == ApprovalAction.REQUEST_CHANGES and record.new_amount_cents is not None:
        what += f" to {record.new_amount_cents / 100:,.2f}"
    if record.action == ApprovalAction.DELEGATE:
        what += f" to {record.delegate_to}"
    why = record.reason or record.comment
    return (
        f"{_stamp(record.decided_at)} · level {record.level} `{record.level_name}` · "
        f"**{what}** by {who}" + (f": {why}" if why else "")
    )


def _stamp(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC")


def _as_verified(
    decision: ApprovalDecisionInput, verified: VerifyDecisionResult
) -> ApprovalDecisionInput:
    if not verified.valid:
        raise ValueError(f"decision refused: {verified.reason}")
    return decision.model_copy(
        update={"approver": verified.subject, "approver_roles": verified.roles, "credential": None}
    )


def _token_claims(token: str) -> dict[str, Any]:
    """The claims of a JWT, unchecked (the validator checked them): its middle segment."""
    try:
        segment = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (IndexError, ValueError) as err:
        raise ValueError(f"decision refused: the decision token is not readable ({err})") from None
    if not isinstance(claims, dict):
        raise ValueError("decision refused: the decision token is not readable")
    return claims
