"""The Python client other services import to open, inspect and decide refund cases.

`PodiumClient` wraps a Temporal client and the settings. It speaks to the refund workflow by its
string names (`"refund"`, update `"decide"`, query `"get_state"`) so the starter never imports
workflow code, and it turns Temporal's errors into Podium's own exception tree:

    PodiumError
    ├── CaseNotFound          no refund case with that id
    ├── ApprovalNotFound      the case never asked anyone for approval
    ├── CaseClosed            the case has finished; it takes no more decisions
    ├── IdempotencyConflict   the idempotency key was used for a different request
    ├── DecisionRefused       the case refused the decision (carries its reason)
    ├── InvalidRequest        the request is malformed (carries the field)
    └── TemporalUnavailable   Temporal or the worker did not answer in time

Case ids are `refund-<idempotency key>`; a retry with the same key and the same request returns
the existing case instead of opening a second one.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
import uuid
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Self, TypeVar
from urllib.parse import quote

import structlog
from pydantic import BaseModel, Field, StringConstraints, ValidationError, model_validator
from temporalio.client import (
    Client,
    WorkflowExecution,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowQueryRejectedError,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from core.settings import Settings
from core.temporal import connect
from starter.documents import DOCUMENT_ID_PATTERN, AttachmentUpload, DocumentRef, DocumentUploads
from starter.policy import case_policy
from workflows import search_attributes as sa
from workflows.types import (
    ApprovalAction,
    ApprovalDecisionInput,
    ApprovalDecisionResult,
    ApprovalLevel,
    ApprovalPolicy,
    ApprovalRequest,
    BreachAction,
    CaseStatus,
    DefaultAction,
    GateStatus,
    RefundCaseInput,
    RefundCaseResult,
    RefundCaseState,
    RefundOutcome,
    RefundPolicy,
    RiskLevel,
)

__all__ = [
    "AiAssessment",
    "ApprovalNotFound",
    "ApprovalView",
    "CaseClosed",
    "CaseNotFound",
    "CaseRef",
    "CaseView",
    "DecisionRefused",
    "IdempotencyConflict",
    "Inbox",
    "InboxItem",
    "InvalidRequest",
    "PendingApproval",
    "PodiumClient",
    "PodiumError",
    "RefundRequest",
    "TemporalUnavailable",
    "approval_policies_from_settings",
    "case_id_for_key",
    "policy_from_settings",
    "validate_idempotency_key",
]

log = structlog.get_logger()

WORKFLOW_TYPE = "refund"
PROCESS = "refund"
CASE_ID_PREFIX = "refund-"
IDEMPOTENCY_KEY_PATTERN = r"^[A-Za-z0-9._:-]{1,100}$"
MEMO_REQUEST_HASH = "request_sha256"
DETAILS_MESSAGE_LIMIT = 500

# A query needs a worker; without one the server holds it until the deadline, so keep it short.
QUERY_TIMEOUT = timedelta(seconds=5)
# `decide` answers once the decision has been carried out (refund issued, reply sent).
UPDATE_TIMEOUT = timedelta(seconds=60)
RPC_TIMEOUT = timedelta(seconds=10)
HEALTH_TIMEOUT = timedelta(seconds=2)
# Visibility cannot ORDER BY a custom attribute, so pending approvals are sorted here.
PENDING_SCAN_LIMIT = 10_000
# How the approval gate names a person a decision was delegated to, in PodiumAwaitingRoles.
USER_PREFIX = "user:"

_KEY_RE = re.compile(IDEMPOTENCY_KEY_PATTERN)
ROLE_PATTERN = r"^[A-Za-z0-9._:@-]{1,100}$"
_ROLE_RE = re.compile(ROLE_PATTERN)
# A person as a delegation names them: anything but quotes, backslashes and control characters
# (the name goes into a visibility query as a double-quoted literal).
APPROVER_PATTERN = r'^[^"\\\x00-\x1f\x7f]{1,128}$'
_APPROVER_RE = re.compile(APPROVER_PATTERN)
PROCESS_PATTERN = r"^[a-z][a-z0-9_-]{0,63}$"
_PROCESS_RE = re.compile(PROCESS_PATTERN)
INBOX_LIMIT_MAX = 1_000
_T = TypeVar("_T")
_E = TypeVar("_E", bound=StrEnum)


# --- errors -------------------------------------------------------------------------------------


class PodiumError(Exception):
    """Base of every error the Podium client raises."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class CaseNotFound(PodiumError):
    def __init__(self, case_id: str) -> None:
        super().__init__(f"no refund case with id '{case_id}'")
        self.case_id = case_id


class CaseClosed(PodiumError):
    def __init__(self, case_id: str, status: str) -> None:
        super().__init__(f"case '{case_id}' is closed ({status}) and takes no more decisions")
        self.case_id = case_id
        self.status = status


class IdempotencyConflict(PodiumError):
    def __init__(self, case_id: str) -> None:
        super().__init__(
            f"the idempotency key of case '{case_id}' was already used for a different request"
        )
        self.case_id = case_id


class DecisionRefused(PodiumError):
    """The case refused the decision; `message` is its reason."""

    def __init__(self, case_id: str, reason: str) -> None:
        super().__init__(reason)
        self.case_id = case_id


class InvalidRequest(PodiumError):
    def __init__(self, message: str, *, field: str | None = None, location: str = "body") -> None:
        super().__init__(message)
        self.field = field
        self.location = location


class ApprovalNotFound(PodiumError):
    def __init__(self, case_id: str) -> None:
        super().__init__(f"case '{case_id}' has not asked anyone for approval")
        self.case_id = case_id


class TemporalUnavailable(PodiumError):
    """Temporal could not be reached, or the case's worker could not answer in time."""


# --- models -------------------------------------------------------------------------------------

_Channel = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=32)]
_CustomerId = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
_OrderId = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
_Message = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=5_000)]
_Person = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128)]


class RefundRequest(BaseModel):
    """A customer's refund request as a channel sends it; the policy is added by Podium."""

    channel: _Channel = Field(default="web", examples=["email"])
    customer_id: _CustomerId = Field(examples=["C-1002"])
    order_id: _OrderId | None = Field(default=None, examples=["O-5004"])
    message: _Message = Field(examples=["My blender arrived broken, I want my money back."])
    requested_by: _Person | None = Field(
        default=None,
        description="Who asks on the customer's behalf (four-eyes keeps them from approving); "
        "default: the customer's channel identity",
    )
    attachment: AttachmentUpload | None = Field(
        default=None,
        description="A receipt image (PNG or JPEG, up to 10 MB), stored before the case starts; "
        "the case carries only its id",
    )
    attachment_id: str | None = Field(
        default=None,
        pattern=DOCUMENT_ID_PATTERN,
        description="A document stored earlier (POST /documents), instead of `attachment`",
    )

    @model_validator(mode="after")
    def _one_attachment(self) -> Self:
        if self.attachment is not None and self.attachment_id is not None:
            raise ValueError("send either 'attachment' or 'attachment_id', not both")
        return self

    def sha256(self) -> str:
        """Hash of the canonical JSON of the request: what an idempotent retry must repeat.
        An attachment counts by the sha256 of its bytes, not by its base64 text."""
        fields = self.model_dump(mode="json", exclude={"attachment"})
        # Hashes stay as they were before these fields existed.
        for name in ("requested_by", "attachment_id"):
            if fields[name] is None:
                del fields[name]
        if self.attachment is not None:
            fields["attachment_sha256"] = self.attachment.sha256()
        canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class CaseRef(BaseModel):
    case_id: str
    created: bool = Field(description="False when the idempotency key matched an existing case")
    ui_url: str = Field(description="The case in the Temporal UI")


class CaseView(BaseModel):
    case_id: str
    workflow_status: str = Field(
        description="Temporal execution status: running, completed, failed, terminated, ..."
    )
    status: CaseStatus | None = None
    outcome: RefundOutcome | None = None
    started_at: datetime
    closed_at: datetime | None = None
    summary: str | None = None
    state: RefundCaseState | None = Field(
        default=None, description="The case's own view (get_state); absent if no worker answered"
    )
    result: RefundCaseResult | None = None
    ui_url: str


class PendingApproval(BaseModel):
    case_id: str
    customer_id: str | None = None
    tier: str | None = None
    intent: str | None = None
    amount: float | None = Field(default=None, description="Dollars")
    sla_due_at: datetime | None = Field(default=None, description="Due time of the current level")
    escalated: bool = False
    level: int | None = Field(default=None, description="1-based approval level deciding now")
    awaiting_roles: list[str] = Field(
        default_factory=list, description="Roles that may decide now, and user:<delegate>"
    )
    started_at: datetime


class InboxItem(BaseModel):
    """One approval an approver may decide now, as Temporal visibility sees it."""

    case_id: str
    process: str | None = None
    level: int | None = Field(default=None, description="1-based approval level deciding now")
    amount: float | None = Field(default=None, description="Dollars")
    customer_id: str | None = None
    tier: str | None = Field(default=None, description="Customer tier")
    intent: str | None = None
    sla_due_at: datetime | None = Field(default=None, description="Due time of the current level")
    time_left_s: float | None = Field(
        default=None, description="Seconds until the SLA is due at `as_of`; negative: overdue"
    )
    overdue: bool = False
    escalated: bool = False
    awaiting_roles: list[str] = Field(
        default_factory=list, description="Roles that may decide now, and user:<delegate>"
    )
    started_at: datetime


class Inbox(BaseModel):
    """What a role (or a person delegated to) may decide now, the most urgent SLA first."""

    as_of: datetime = Field(description="The moment `time_left_s` is counted from")
    role: str | None = None
    approver: str | None = None
    process: str | None = None
    items: list[InboxItem]
    truncated: bool = Field(
        default=False,
        description="More approvals matched than were scanned; the most urgent scanned are shown",
    )


class AiAssessment(BaseModel):
    """What Podium concluded before asking people, and how sure the triage model was."""

    recommendation: str | None = Field(default=None, description="'approve' or 'reject'")
    risk: RiskLevel | None = None
    eligible: bool | None = None
    intent: str | None = None
    intent_confidence: float | None = Field(default=None, ge=0, le=1)
    sentiment: str | None = None
    reasons: list[str] = Field(default_factory=list)


class ApprovalView(BaseModel):
    """One approval as an approver reads it: the case, the request, the AI's view, decisions."""

    case_id: str
    process: str = PROCESS
    workflow_status: str
    status: CaseStatus | None = None
    outcome: RefundOutcome | None = None
    pending: bool = Field(description="True while the case waits for a decision")
    summary: str | None = Field(default=None, description="The case's one-line summary")
    message: str | None = Field(default=None, description="What the customer wrote")
    channel: str | None = None
    customer_id: str
    customer_tier: str | None = None
    order_id: str | None = None
    amount_cents: int | None = Field(default=None, description="The order's amount")
    request: ApprovalRequest = Field(
        description="The approval request: level, roles, SLA, deadline, reasons, decisions so far"
    )
    levels: list[str] = Field(description="Names of the policy's levels, in order")
    waiting_for: list[str] = Field(
        default_factory=list, description="Roles (and user:<name>) that may decide now"
    )
    time_left_s: float | None = Field(
        default=None, description="Seconds until the SLA is due at `as_of`; negative: overdue"
    )
    overdue: bool = False
    ai: AiAssessment
    decision: ApprovalDecisionResult | None = Field(
        default=None, description="The decision that closed the approval, once it has"
    )
    as_of: datetime
    ui_url: str


# --- helpers ------------------------------------------------------------------------------------


def validate_idempotency_key(key: str) -> str:
    if not _KEY_RE.fullmatch(key):
        raise InvalidRequest(
            "must be 1-100 characters of letters, digits, '.', '_', ':' or '-'",
            field="Idempotency-Key",
            location="header",
        )
    return key


def case_id_for_key(key: str) -> str:
    return CASE_ID_PREFIX + validate_idempotency_key(key)


def approval_policies_from_settings(settings: Settings) -> dict[RiskLevel, ApprovalPolicy]:
    """Medium risk: `team_lead`; high risk: `team_lead` then `finance` (settings' SLAs)."""

    def level(name: str, roles: list[str], quorum: int = 1) -> ApprovalLevel:
        on_breach = BreachAction(settings.approval_on_breach)
        return ApprovalLevel(
            name=name,
            approver_roles=roles,
            quorum=quorum,
            sla=timedelta(hours=settings.approval_sla_hours),
            reminders=settings.approval_reminders,
            on_breach=on_breach,
            backup_roles=settings.approval_backup_roles if on_breach == BreachAction.BACKUP else [],
        )

    limit = settings.approval_default_limit

    def policy(*levels: ApprovalLevel) -> ApprovalPolicy:
        return ApprovalPolicy(
            levels=list(levels),
            deadline=timedelta(hours=settings.approval_deadline_hours),
            default_action=DefaultAction(settings.approval_default_action),
            approve_limit_cents=round(limit * 100) if limit is not None else None,
            four_eyes=settings.approval_four_eyes,
        )

    team_lead = level("team_lead", settings.approval_team_lead_roles)
    finance = level("finance", settings.approval_finance_roles, settings.approval_finance_quorum)
    return {RiskLevel.MEDIUM: policy(team_lead), RiskLevel.HIGH: policy(team_lead, finance)}


def policy_from_settings(settings: Settings) -> RefundPolicy:
    return RefundPolicy(
        auto_refund_limit_cents=round(settings.auto_refund_limit * 100),
        return_window_days=settings.return_window_days,
        min_intent_confidence=settings.min_intent_confidence,
        approvals=approval_policies_from_settings(settings),
    )


def _summary(request: RefundRequest) -> str:
    order = f" for order {request.order_id}" if request.order_id else ""
    return f"Refund request from {request.customer_id}{order} via {request.channel}"


def _details(request: RefundRequest) -> str:
    message = request.message
    if len(message) > DETAILS_MESSAGE_LIMIT:
        message = message[:DETAILS_MESSAGE_LIMIT].rstrip() + "…"
    # The UI renders `$...$` as math: escape dollar signs.
    quoted = "\n".join(f"> {line}" for line in message.replace("$", "\\$").splitlines())
    return (
        f"**Channel:** {request.channel}  \n"
        f"**Customer:** {request.customer_id}  \n"
        f"**Order:** {request.order_id or '—'}\n\n"
        f"**Message:**\n\n{quoted}\n"
    )


def _status_name(status: WorkflowExecutionStatus | None) -> str:
    return status.name.lower() if status else "unknown"


def _enum_or_none(enum: type[_E], value: str | None) -> _E | None:
    try:
        return enum(value) if value is not None else None
    except ValueError:
        return None


def _is_unreachable(err: BaseException) -> bool:
    if isinstance(err, RPCError):
        return err.status in (
            RPCStatusCode.UNAVAILABLE,
            RPCStatusCode.DEADLINE_EXCEEDED,
            RPCStatusCode.CANCELLED,
        )
    # A lazily connected client reports a refused connection as a RuntimeError.
    return isinstance(err, RuntimeError) and str(err).startswith("Failed client connect")


async def _bounded(awaitable: Awaitable[_T], timeout: timedelta) -> _T:
    async with asyncio.timeout(timeout.total_seconds()):
        return await awaitable


# --- the client ---------------------------------------------------------------------------------


class PodiumClient:
    """Open, inspect and decide refund cases. Safe to share across tasks."""

    def __init__(self, client: Client, settings: Settings) -> None:
        self._client = client
        self._settings = settings
        self._documents = DocumentUploads(settings)  # its database engine: on first upload

    @classmethod
    async def connect(cls, settings: Settings) -> PodiumClient:
        """Connect to Temporal as `core.temporal` configures it."""
        return cls(await connect(settings), settings)

    @property
    def temporal(self) -> Client:
        return self._client

    def ui_url(self, case_id: str) -> str:
        namespace = quote(self._client.namespace, safe="")
        workflow_id = quote(case_id, safe="")
        return f"{self._settings.ui_base_url}/namespaces/{namespace}/workflows/{workflow_id}"

    async def ping(self) -> bool:
        """True when the Temporal frontend answers its health check."""
        try:
            return await self._client.service_client.check_health(timeout=HEALTH_TIMEOUT)
        except (RPCError, RuntimeError):
            return False

    # --- opening a case -----------------------------------------------------------------------

    async def create_refund_case(
        self, request: RefundRequest, idempotency_key: str | None = None
    ) -> CaseRef:
        """Start a refund case, or return the existing one for a repeated key and request."""
        key = idempotency_key if idempotency_key is not None else uuid.uuid4().hex
        case_id = case_id_for_key(key)
        request_hash = request.sha256()
        # The document is stored before the case starts: the case carries only its id. (The
        # same bytes again, e.g. a retried request, find the document stored the first time.)
        attachment_id = request.attachment_id
        if request.attachment is not None:
            attachment_id = (await self.upload_document(request.attachment)).document_id
        elif attachment_id is not None and not await self._documents.exists(attachment_id):
            raise InvalidRequest(f"no document with id '{attachment_id}'", field="attachment_id")
        case_input = RefundCaseInput(
            channel=request.channel,
            customer_id=request.customer_id,
            order_id=request.order_id,
            message=request.message,
            requested_by=request.requested_by,
            attachment_id=attachment_id,
            **case_policy(self._settings, policy_from_settings(self._settings)),
        )
        try:
            await self._client.start_workflow(
                WORKFLOW_TYPE,
                case_input,
                id=case_id,
                task_queue=self._settings.task_queue,
                result_type=RefundCaseResult,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                memo={MEMO_REQUEST_HASH: request_hash},
                search_attributes=TypedSearchAttributes(
                    [
                        SearchAttributePair(sa.PROCESS, PROCESS),
                        SearchAttributePair(sa.CUSTOMER_ID, request.customer_id),
                        SearchAttributePair(sa.STATUS, CaseStatus.RECEIVED.value),
                    ]
                ),
                static_summary=_summary(request),
                static_details=_details(request),
                rpc_timeout=RPC_TIMEOUT,
            )
        except WorkflowAlreadyStartedError:
            description = await self._describe(case_id)
            existing_hash = await description.memo_value(MEMO_REQUEST_HASH, None)
            if description.workflow_type != WORKFLOW_TYPE or existing_hash != request_hash:
                raise IdempotencyConflict(case_id) from None
            log.info("refund_case_existing", case_id=case_id)
            return CaseRef(case_id=case_id, created=False, ui_url=self.ui_url(case_id))
        except (RPCError, RuntimeError) as err:
            raise self._translate(err, case_id) from err
        log.info(
            "refund_case_started",
            case_id=case_id,
            customer_id=request.customer_id,
            channel=request.channel,
            task_queue=self._settings.task_queue,
        )
        return CaseRef(case_id=case_id, created=True, ui_url=self.ui_url(case_id))

    async def upload_document(self, upload: AttachmentUpload) -> DocumentRef:
        """Store a receipt image; a case refers to it by the returned id."""
        document = await self._documents.save(upload)
        log.info(
            "document_stored",
            document_id=document.document_id,
            content_type=document.content_type,
            size_bytes=document.size_bytes,
            created=document.created,
        )
        return document

    def close(self) -> None:
        """Release the document store's database connections."""
        self._documents.close()

    # --- reading a case -----------------------------------------------------------------------

    async def get_case(self, case_id: str) -> CaseView:
        """The case as Temporal and the workflow see it; works while running and after close."""
        description = await self._describe(case_id)
        handle = self._handle(case_id, description.run_id)
        state: RefundCaseState | None = None
        result: RefundCaseResult | None = None
        try:
            state = await self._query_state(handle)
        except TemporalUnavailable as err:
            # No worker answered: fall back on the result and the search attributes.
            log.info("case_state_unavailable", case_id=case_id, reason=err.message)
        if state is None and description.status == WorkflowExecutionStatus.COMPLETED:
            try:
                result = await _bounded(handle.result(rpc_timeout=RPC_TIMEOUT), RPC_TIMEOUT)
            except (WorkflowFailureError, RPCError, TimeoutError) as err:
                log.info("case_result_unavailable", case_id=case_id, error=str(err))

        attributes = description.typed_search_attributes
        status = state.status if state else _enum_or_none(CaseStatus, attributes.get(sa.STATUS))
        outcome = (
            (state.outcome if state else None)
            or (result.outcome if result else None)
            or _enum_or_none(RefundOutcome, attributes.get(sa.OUTCOME))
        )
        return CaseView(
            case_id=case_id,
            workflow_status=_status_name(description.status),
            status=status,
            outcome=outcome,
            started_at=description.start_time,
            closed_at=description.close_time,
            summary=await description.static_summary(),
            state=state,
            result=result,
            ui_url=self.ui_url(case_id),
        )

    async def list_pending(
        self, min_amount: float | None = None, limit: int = 100, role: str | None = None
    ) -> list[PendingApproval]:
        """Running refund cases waiting for a person, the most urgent SLA first.

        `role` narrows the list to what that role may decide now (an approver's inbox); pass
        `user:<name>` for what was delegated to a person.
        """
        if limit < 1:
            raise InvalidRequest("must be at least 1", field="limit", location="query")
        query = (
            f'{sa.PROCESS.name} = "{PROCESS}" AND {sa.AWAITING_APPROVAL.name} = true'
            ' AND ExecutionStatus = "Running"'
        )
        if role is not None:
            if not _ROLE_RE.fullmatch(role):
                raise InvalidRequest(
                    "must be 1-100 characters of letters, digits, '.', '_', ':', '@' or '-'",
                    field="role",
                    location="query",
                )
            query += f' AND {sa.AWAITING_ROLES.name} = "{role}"'
        if min_amount is not None:
            if not (math.isfinite(min_amount) and min_amount >= 0):
                raise InvalidRequest(
                    "must be a finite amount of dollars >= 0", field="min_amount", location="query"
                )
            query += f" AND {sa.AMOUNT.name} > {float(min_amount)!r}"
        items: list[PendingApproval] = []
        try:
            async for execution in self._client.list_workflows(
                query, limit=PENDING_SCAN_LIMIT, rpc_timeout=RPC_TIMEOUT
            ):
                items.append(_pending(execution))
        except (RPCError, RuntimeError) as err:
            raise self._translate(err, None) from err
        if len(items) >= PENDING_SCAN_LIMIT:
            log.warning("pending_scan_truncated", scanned=len(items))
        far_future = datetime.max.replace(tzinfo=UTC)
        items.sort(key=lambda item: (item.sla_due_at or far_future, item.started_at))
        return items[:limit]

    async def inbox(
        self,
        role: str | None = None,
        approver: str | None = None,
        process: str | None = None,
        limit: int = 100,
    ) -> Inbox:
        """What `role`, or `approver` as a delegate, may decide now: the most urgent SLA first.

        Read from Temporal visibility alone (the gate keeps `PodiumAwaitingRoles` current), so
        it is eventually consistent: a decision shows a moment later. Without a role or an
        approver, every pending approval. Delegates are matched by the name as the delegation
        wrote it. The case still checks the decision itself (four-eyes, one vote per person).
        """
        if not 1 <= limit <= INBOX_LIMIT_MAX:
            raise InvalidRequest(
                f"must be between 1 and {INBOX_LIMIT_MAX}", field="limit", location="query"
            )
        query = f'{sa.AWAITING_APPROVAL.name} = true AND ExecutionStatus = "Running"'
        if process is not None:
            if not _PROCESS_RE.fullmatch(process):
                raise InvalidRequest(
                    "must be a process name such as 'refund'", field="process", location="query"
                )
            query += f' AND {sa.PROCESS.name} = "{process}"'
        deciders: list[str] = []
        if role is not None:
            if not _ROLE_RE.fullmatch(role):
                raise InvalidRequest(
                    "must be 1-100 characters of letters, digits, '.', '_', ':', '@' or '-'",
                    field="role",
                    location="query",
                )
            deciders.append(role)
        if approver is not None:
            approver = approver.strip()
            if not _APPROVER_RE.fullmatch(approver):
                raise InvalidRequest(
                    "must be 1-128 characters, without quotes, backslashes or control characters",
                    field="approver",
                    location="query",
                )
            deciders.append(USER_PREFIX + approver)
        if deciders:
            listed = ", ".join(f'"{who}"' for who in deciders)
            query += f" AND {sa.AWAITING_ROLES.name} IN ({listed})"
        now = datetime.now(UTC)
        items: list[InboxItem] = []
        try:
            async for execution in self._client.list_workflows(
                query, limit=PENDING_SCAN_LIMIT, rpc_timeout=RPC_TIMEOUT
            ):
                items.append(_inbox_item(execution, now))
        except (RPCError, RuntimeError) as err:
            raise self._translate(err, None) from err
        truncated = len(items) >= PENDING_SCAN_LIMIT
        if truncated:
            log.warning("inbox_scan_truncated", scanned=len(items), role=role)
        # Visibility cannot ORDER BY a custom attribute here: sort by SLA due time ourselves.
        far_future = datetime.max.replace(tzinfo=UTC)
        items.sort(key=lambda item: (item.sla_due_at or far_future, item.started_at))
        return Inbox(
            as_of=now,
            role=role,
            approver=approver,
            process=process,
            items=items[:limit],
            truncated=truncated,
        )

    async def approval(self, case_id: str) -> ApprovalView:
        """One approval: the case, the pending (or closed) request, the AI's view, decisions.

        Asks the case itself (`get_state`), so a worker must answer; the customer's message
        comes from the case's input in its history.
        """
        description = await self._describe(case_id)
        handle = self._handle(case_id, description.run_id)
        state = await self._query_state(handle)
        request = state.approval
        if request is None:
            raise ApprovalNotFound(case_id)
        case_input = await self._case_input(handle)
        running = description.status == WorkflowExecutionStatus.RUNNING
        pending = running and request.status == GateStatus.OPEN
        now = datetime.now(UTC)
        left = (request.sla_due_at - now).total_seconds() if pending else None
        assessment = state.assessment
        return ApprovalView(
            case_id=case_id,
            workflow_status=_status_name(description.status),
            status=state.status,
            outcome=state.outcome,
            pending=pending,
            summary=await description.static_summary(),
            message=case_input.message if case_input else None,
            channel=case_input.channel if case_input else None,
            customer_id=state.customer_id,
            customer_tier=state.customer_tier.value if state.customer_tier else None,
            order_id=state.order_id,
            amount_cents=state.amount_cents,
            request=request,
            levels=[level.name for level in request.policy.levels],
            waiting_for=(
                [*request.awaiting_roles, *(USER_PREFIX + name for name in request.delegates)]
                if pending
                else []
            ),
            time_left_s=left,
            overdue=left is not None and left < 0,
            ai=AiAssessment(
                recommendation=assessment.recommendation if assessment else None,
                risk=assessment.risk if assessment else None,
                eligible=assessment.eligible if assessment else None,
                intent=state.intent.value if state.intent else None,
                intent_confidence=state.intent_confidence,
                sentiment=state.sentiment.value if state.sentiment else None,
                reasons=list(assessment.reasons) if assessment else list(request.reasons),
            ),
            decision=state.decision,
            as_of=now,
            ui_url=self.ui_url(case_id),
        )

    # --- deciding -----------------------------------------------------------------------------

    async def decide(
        self,
        case_id: str,
        action: ApprovalAction | str,
        approver: str,
        *,
        roles: list[str] | None = None,
        comment: str | None = None,
        reason: str | None = None,
        new_amount_cents: int | None = None,
        delegate_to: str | None = None,
        request_id: str | None = None,
        decision_id: str | None = None,
    ) -> ApprovalDecisionResult:
        """Decide the pending approval: approve, reject, request_changes or delegate.

        Returns once the decision has been recorded; when it closes the approval, once it has
        been carried out (refund issued, customer told). `request_id` defaults to the approval
        the case waits for now; `decision_id` (default: a new uuid4) makes retries safe: the
        same id returns the first result, even after the case has closed.
        """
        approver = approver.strip()
        if not approver:
            raise InvalidRequest("an approver is required", field="approver")
        decision_id = decision_id or uuid.uuid4().hex
        try:
            decision = ApprovalDecisionInput(
                request_id=request_id or "(pending)",  # the pending request's id, looked up below
                decision_id=decision_id,
                action=ApprovalAction(action),
                approver=approver,
                approver_roles=[role.strip() for role in roles or [] if role.strip()],
                comment=comment,
                reason=reason,
                new_amount_cents=new_amount_cents,
                delegate_to=delegate_to,
            )
        except ValidationError as err:
            first = err.errors()[0]
            field = str(first["loc"][0]) if first["loc"] else None
            raise InvalidRequest(first["msg"], field=field) from None
        except ValueError as err:
            raise InvalidRequest(str(err), field="action") from None
        description = await self._describe(case_id)
        handle = self._handle(case_id, description.run_id)
        if description.status != WorkflowExecutionStatus.RUNNING:
            earlier = await self._earlier_result(handle, decision_id)
            if earlier is not None:
                return earlier
            raise CaseClosed(case_id, _status_name(description.status))
        if request_id is None:
            state = await self._query_state(handle)
            if state.approval is None:
                raise DecisionRefused(case_id, "no approval is pending for this case")
            decision = decision.model_copy(update={"request_id": state.approval.request_id})
        try:
            result: ApprovalDecisionResult = await _bounded(
                handle.execute_update("decide", decision, result_type=ApprovalDecisionResult),
                UPDATE_TIMEOUT,
            )
        except WorkflowUpdateFailedError as err:
            cause = err.cause
            reason = cause.message if isinstance(cause, ApplicationError) else str(cause)
            log.info(
                "decision_refused", case_id=case_id, request_id=decision.request_id, reason=reason
            )
            raise DecisionRefused(case_id, reason) from None
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                # The case existed a moment ago: it has finished in between.
                earlier = await self._earlier_result(handle, decision_id)
                if earlier is not None:
                    return earlier
                raise CaseClosed(case_id, "completed") from None
            raise self._translate(err, case_id) from err
        except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
            raise TemporalUnavailable(
                f"case '{case_id}' did not confirm the decision within "
                f"{int(UPDATE_TIMEOUT.total_seconds())}s; it may still be applied once the "
                f"worker picks it up: retry with decision id '{decision_id}' to find out"
            ) from None
        log.info(
            "decision_applied",
            case_id=case_id,
            request_id=decision.request_id,
            decision_id=decision_id,
            action=decision.resolved_action.value,
            approver=approver,
            gate=result.gate.value,
            outcome=result.outcome.value if result.outcome else None,
        )
        return result

    async def _earlier_result(
        self, handle: WorkflowHandle[Any, Any], decision_id: str
    ) -> ApprovalDecisionResult | None:
        """The closing decision's result on a closed case, if `decision_id` was it (a retry)."""
        try:
            state = await self._query_state(handle)
        except (TemporalUnavailable, CaseNotFound):
            return None
        decision = state.decision
        if decision is not None and decision.decision_id == decision_id:
            return decision
        return None

    # --- Temporal plumbing --------------------------------------------------------------------

    async def _case_input(self, handle: WorkflowHandle[Any, Any]) -> RefundCaseInput | None:
        """The case's input, from the first event of its history; None if it cannot be read."""
        try:
            async for event in handle.fetch_history_events(page_size=1, rpc_timeout=RPC_TIMEOUT):
                payloads = event.workflow_execution_started_event_attributes.input.payloads
                decoded = await self._client.data_converter.decode(
                    list(payloads), [RefundCaseInput]
                )
                return decoded[0] if decoded and isinstance(decoded[0], RefundCaseInput) else None
        except (RPCError, RuntimeError, ValueError, TypeError) as err:
            log.info("case_input_unavailable", case_id=handle.id, error=str(err))
        return None

    def _handle(self, case_id: str, run_id: str | None) -> WorkflowHandle[Any, RefundCaseResult]:
        return self._client.get_workflow_handle(
            case_id, run_id=run_id, result_type=RefundCaseResult
        )

    async def _describe(self, case_id: str) -> WorkflowExecutionDescription:
        try:
            description = await self._client.get_workflow_handle(case_id).describe(
                rpc_timeout=RPC_TIMEOUT
            )
        except (RPCError, RuntimeError) as err:
            raise self._translate(err, case_id) from err
        if description.workflow_type != WORKFLOW_TYPE:
            raise CaseNotFound(case_id)
        return description

    async def _query_state(self, handle: WorkflowHandle[Any, Any]) -> RefundCaseState:
        """The case's `get_state`; TemporalUnavailable when no worker can answer it."""
        case_id = handle.id
        try:
            return await _bounded(
                handle.query("get_state", result_type=RefundCaseState, rpc_timeout=QUERY_TIMEOUT),
                QUERY_TIMEOUT,
            )
        except (WorkflowQueryFailedError, WorkflowQueryRejectedError) as err:
            raise TemporalUnavailable(f"case '{case_id}' could not answer: {err}") from err
        except TimeoutError:
            raise TemporalUnavailable(
                f"case '{case_id}' did not answer within {int(QUERY_TIMEOUT.total_seconds())}s;"
                " is the worker running?"
            ) from None
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                raise CaseNotFound(case_id) from err
            # FAILED_PRECONDITION: a case closed before any worker ran it cannot be queried.
            raise TemporalUnavailable(f"case '{case_id}' could not answer: {err.message}") from err
        except RuntimeError as err:
            raise self._translate(err, case_id) from err

    def _translate(self, err: BaseException, case_id: str | None) -> PodiumError:
        if isinstance(err, RPCError) and err.status == RPCStatusCode.NOT_FOUND and case_id:
            return CaseNotFound(case_id)
        if _is_unreachable(err):
            return TemporalUnavailable(f"Temporal is not reachable: {err}")
        if isinstance(err, RPCError) and err.status == RPCStatusCode.INVALID_ARGUMENT:
            return InvalidRequest(err.message)
        # Anything else is a bug or an outage nobody planned for: let it surface as is.
        raise err


def _inbox_item(execution: WorkflowExecution, now: datetime) -> InboxItem:
    attributes = execution.typed_search_attributes
    due = attributes.get(sa.SLA_DUE_AT)
    left = (due - now).total_seconds() if due is not None else None
    return InboxItem(
        case_id=execution.id,
        process=attributes.get(sa.PROCESS),
        level=attributes.get(sa.APPROVAL_LEVEL),
        amount=attributes.get(sa.AMOUNT),
        customer_id=attributes.get(sa.CUSTOMER_ID),
        tier=attributes.get(sa.CUSTOMER_TIER),
        intent=attributes.get(sa.INTENT),
        sla_due_at=due,
        time_left_s=left,
        overdue=left is not None and left < 0,
        escalated=bool(attributes.get(sa.ESCALATED)),
        awaiting_roles=list(attributes.get(sa.AWAITING_ROLES) or []),
        started_at=execution.start_time,
    )


def _pending(execution: WorkflowExecution) -> PendingApproval:
    attributes = execution.typed_search_attributes
    return PendingApproval(
        case_id=execution.id,
        customer_id=attributes.get(sa.CUSTOMER_ID),
        tier=attributes.get(sa.CUSTOMER_TIER),
        intent=attributes.get(sa.INTENT),
        amount=attributes.get(sa.AMOUNT),
        sla_due_at=attributes.get(sa.SLA_DUE_AT),
        escalated=bool(attributes.get(sa.ESCALATED)),
        level=attributes.get(sa.APPROVAL_LEVEL),
        awaiting_roles=list(attributes.get(sa.AWAITING_ROLES) or []),
        started_at=execution.start_time,
    )
