"""The approval gate's contract: policies, requests, decisions and their results.

Shared by every process that asks people (`workflows.components.approval`), the starter, the
inbox and tests. Pure pydantic that imports nothing of Podium's: safe under the sandbox's
passthrough. A process adds its own result to a closing decision through `outcome` and
`effects`; nothing here names a process.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Self

from pydantic import BaseModel, Field, field_validator, model_validator

__all__ = [
    "CASE_BUSY",
    "DECISION_RECORDED",
    "DECISION_TOKEN_AUDIENCE",
    "DECRYPTED_METADATA",
    "PERSON_SLOT",
    "ApprovalAction",
    "ApprovalDecisionInput",
    "ApprovalDecisionRecord",
    "ApprovalDecisionResult",
    "ApprovalLevel",
    "ApprovalPolicy",
    "ApprovalRequest",
    "BreachAction",
    "DefaultAction",
    "GateStatus",
    "VerifyDecisionInput",
    "VerifyDecisionResult",
    "check_decision_now",
    "decision_digest",
    "install_decision_check",
]

# The `aud` of a decision token: a token minted for anything else is refused.
DECISION_TOKEN_AUDIENCE = "podium-decision"
# Why a decision update's validator rejected it without refusing the decision: the case could
# not take it in that workflow task (the sender retries a moment later), or the decision was
# already recorded and answered (the first result is the error's detail).
CASE_BUSY = "CaseBusy"
DECISION_RECORDED = "DecisionRecorded"
# The worker's codec marks decrypted payloads with this metadata key (`core.codec` spells it too).
DECRYPTED_METADATA = "podium-decrypted"


class ApprovalAction(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"
    REQUEST_CHANGES = "request_changes"
    DELEGATE = "delegate"


class BreachAction(StrEnum):
    """What happens when a level's SLA passes with no decision."""

    ESCALATE = "escalate"  # the next level decides (or, at the last level, escalated and waiting)
    BACKUP = "backup"  # the level's backup roles may decide as well


class DefaultAction(StrEnum):
    """What the gate does when the final deadline passes with no decision."""

    DENY = "deny"
    HANDOFF = "handoff"  # a person takes the case over outside the gate
    APPROVE_WITHIN_LIMIT = "approve_within_limit"  # approve if at or under `approve_limit_cents`


class GateStatus(StrEnum):
    OPEN = "open"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"


def _positive_duration(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError("must be a positive duration")
    return value


# An entry of `ApprovalLevel.approvers` that starts with this names a person the process
# supplies when it opens the gate (`$manager`: the requester's manager from the directory).
PERSON_SLOT = "$"


class ApprovalLevel(BaseModel):
    """One stage of an approval: `quorum` distinct people holding one of `approver_roles`, or
    named in `approvers`."""

    name: str = Field(min_length=1, max_length=64, examples=["team_lead"])
    approver_roles: list[str] = Field(default_factory=list, examples=[["team_lead"]])
    approvers: list[str] = Field(
        default_factory=list,
        max_length=20,
        description="People who may decide at this level by name, roles or not; `$slot` is a "
        "person the process names when it opens the gate (e.g. `$manager`)",
        examples=[["$manager"]],
    )
    quorum: int = Field(default=1, ge=1, le=20)
    sla: timedelta = Field(default=timedelta(hours=48))
    reminders: list[float] = Field(
        default_factory=list, description="Fractions of the SLA at which to remind, e.g. [0.5, 0.9]"
    )
    on_breach: BreachAction = BreachAction.ESCALATE
    backup_roles: list[str] = Field(default_factory=list)

    @field_validator("sla")
    @classmethod
    def _sla_positive(cls, value: timedelta) -> timedelta:
        return _positive_duration(value)

    @field_validator("reminders")
    @classmethod
    def _reminders_within_sla(cls, value: list[float]) -> list[float]:
        if any(not 0.0 < point < 1.0 for point in value):
            raise ValueError("reminders are fractions of the SLA, strictly between 0 and 1")
        return sorted(set(value))

    @model_validator(mode="after")
    def _backup_needs_roles(self) -> Self:
        if not self.approver_roles and not self.approvers:
            raise ValueError("a level needs approver_roles or approvers")
        if any(not name.strip() or name.strip() == PERSON_SLOT for name in self.approvers):
            raise ValueError("approvers are names or $slots, never blank")
        if self.on_breach == BreachAction.BACKUP and not self.backup_roles:
            raise ValueError("on_breach 'backup' needs backup_roles")
        return self


class ApprovalPolicy(BaseModel):
    """How a process asks people: ordered levels, a final deadline and its default action.

    Every level must approve in turn (a rejection at any level ends the gate). Fixed per case
    when it starts: history keeps it, so a policy change never alters a running case.
    """

    levels: list[ApprovalLevel] = Field(min_length=1, max_length=10)
    deadline: timedelta = Field(default=timedelta(days=7))
    default_action: DefaultAction = DefaultAction.DENY
    approve_limit_cents: int | None = Field(default=None, ge=0)
    four_eyes: bool = Field(
        default=True,
        description="The requester may not decide, and nobody approves twice across levels",
    )

    @field_validator("deadline")
    @classmethod
    def _deadline_positive(cls, value: timedelta) -> timedelta:
        return _positive_duration(value)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        names = [level.name for level in self.levels]
        if len(set(names)) != len(names):
            raise ValueError("level names must be unique")
        if (
            self.default_action == DefaultAction.APPROVE_WITHIN_LIMIT
            and self.approve_limit_cents is None
        ):
            raise ValueError("default_action 'approve_within_limit' needs approve_limit_cents")
        return self


class ApprovalDecisionRecord(BaseModel):
    """One accepted decision: who, in which role, at which level, when, and why."""

    decision_id: str
    request_id: str
    action: ApprovalAction
    approver: str
    approver_roles: list[str] = Field(default_factory=list)
    level: int = Field(description="1-based level the decision was made at")
    level_name: str
    as_delegate: bool = False
    comment: str | None = None
    reason: str | None = None
    new_amount_cents: int | None = None
    delegate_to: str | None = None
    decided_at: datetime
    via: str = Field(description="'update' or 'signal'")


class ApprovalRequest(BaseModel):
    """The gate's state: what is asked, of whom, until when, and what has been decided."""

    request_id: str
    requested_at: datetime
    requested_by: str
    sla_due_at: datetime = Field(description="When the current level's SLA passes")
    deadline_at: datetime
    recommendation: str
    reasons: list[str]
    escalated: bool = False
    status: GateStatus = GateStatus.OPEN
    policy: ApprovalPolicy
    level: int = Field(default=1, description="1-based index of the level deciding now")
    level_name: str
    level_started_at: datetime
    awaiting_roles: list[str] = Field(description="Roles that may decide now")
    awaiting_people: list[str] = Field(
        default_factory=list, description="People the level names who may decide now"
    )
    delegates: list[str] = Field(default_factory=list, description="People who may decide now")
    amount_cents: int | None = Field(default=None, description="What would be approved now")
    original_amount_cents: int | None = None
    approvals: list[str] = Field(
        default_factory=list, description="Who has approved at the current level"
    )
    decisions: list[ApprovalDecisionRecord] = Field(default_factory=list)
    reminders_sent: list[str] = Field(default_factory=list, description="'<level>:<index>'")
    refused: list[str] = Field(default_factory=list, description="Refused signals, with reasons")
    default_action: DefaultAction | None = Field(
        default=None, description="Set when the deadline passed and the default was applied"
    )


class ApprovalDecisionInput(BaseModel):
    """A person's decision on a pending approval (update `decide`, signal `approval_decision`).

    `action` says what they decide; older callers (and the Temporal UI's simple signal) may send
    `approve: true|false` instead, which maps to approve/reject (a legacy rejection's `comment`
    serves as its reason). `decision_id` makes retries safe: the same id returns the first
    result; without one, the update id (or a workflow-generated id for a signal) is used.
    """

    request_id: str = Field(min_length=1, max_length=200)
    decision_id: str | None = Field(default=None, min_length=1, max_length=200)
    action: ApprovalAction | None = None
    approve: bool | None = None
    approver: str = Field(default="", max_length=128, description="Who decided; required")
    approver_roles: list[str] = Field(default_factory=list, max_length=20)
    comment: str | None = Field(default=None, max_length=2_000)
    reason: str | None = Field(default=None, max_length=2_000)
    new_amount_cents: int | None = Field(default=None, description="request_changes: lower amount")
    delegate_to: str | None = Field(default=None, max_length=128)
    credential: str | None = Field(
        default=None,
        max_length=4_096,
        description="A decision token (the Podium API mints it for the verified caller): who "
        "decides and in which roles come from it, never from `approver`/`approver_roles`",
    )

    @model_validator(mode="after")
    def _resolve_action(self) -> Self:
        if self.action is None:
            if self.approve is None:
                raise ValueError("either 'action' or 'approve' is required")
            self.action = ApprovalAction.APPROVE if self.approve else ApprovalAction.REJECT
            if not self.approve and not self.reason:
                self.reason = self.comment
        elif self.approve is not None and self.approve != (self.action == ApprovalAction.APPROVE):
            raise ValueError(f"'approve: {str(self.approve).lower()}' contradicts '{self.action}'")
        return self

    @property
    def resolved_action(self) -> ApprovalAction:
        assert self.action is not None  # set by the validator
        return self.action


class ApprovalDecisionResult(BaseModel):
    """What a decision led to. `gate` is `open` while more approvals are needed; once the
    decision closes the gate, `outcome` is the case's outcome after it has been carried out."""

    request_id: str
    decision_id: str | None = None
    action: ApprovalAction = ApprovalAction.APPROVE
    approved: bool = Field(description="True when this decision approved (possibly less)")
    approver: str
    decided_at: datetime
    level: int = 1
    level_name: str = ""
    gate: GateStatus = GateStatus.APPROVED
    waiting_for: list[str] = Field(
        default_factory=list, description="Roles (and user:<name>) that may decide next"
    )
    amount_cents: int | None = None
    outcome: str | None = Field(
        default=None, description="The case's outcome, once the closing decision was carried out"
    )
    effects: dict[str, str] = Field(
        default_factory=dict,
        description="What the process did on the closing decision, by name (e.g. refund_id)",
    )


def decision_digest(case_id: str, decision: ApprovalDecisionInput) -> str:
    """What a decision token vouches for: the case and every field that shapes the decision
    (not who decides: that is the token's subject). A token never carries over to another
    case, request, decision id, action, amount, delegate or reason."""
    fields = {
        "case_id": case_id,
        "request_id": decision.request_id,
        "decision_id": decision.decision_id,
        "action": decision.resolved_action.value,
        "comment": decision.comment,
        "reason": decision.reason,
        "new_amount_cents": decision.new_amount_cents,
        "delegate_to": decision.delegate_to,
    }
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class VerifyDecisionInput(BaseModel):
    """A decision's credential to check (activity `verify_decision`, outside the sandbox)."""

    credential: str = Field(max_length=4_096)
    digest: str = Field(description="`decision_digest` of the decision as the case received it")
    encrypted: bool = Field(description="Whether the decision reached the case encrypted")


class VerifyDecisionResult(BaseModel):
    valid: bool
    subject: str = ""
    roles: list[str] = Field(default_factory=list)
    reason: str = Field(default="", description="Why the credential was refused")


# The worker's decision check (`activities.decisions.DecisionVerifier.check`), installed when the
# worker builds its verifier: update validators call it (`check_decision_now`) so a decision is
# verified before Temporal accepts it into history. Validators never run on replay, so the
# wall clock and the key it uses never reach a case's history. One key per worker process.
_decision_check: list[Callable[[VerifyDecisionInput], VerifyDecisionResult]] = []


def install_decision_check(check: Callable[[VerifyDecisionInput], VerifyDecisionResult]) -> None:
    """Make `check` the one update validators of this process call (replaces an earlier one)."""
    _decision_check[:] = [check]


def check_decision_now(input: VerifyDecisionInput) -> VerifyDecisionResult:
    """The installed check's verdict; refused when this process installed none (fail closed)."""
    if not _decision_check:
        return VerifyDecisionResult(
            valid=False, reason="this worker holds no decision key to check the decision with"
        )
    return _decision_check[0](input)
