"""The Python client other services import to open, inspect and decide refund cases.

`PodiumClient` wraps a Temporal client and the settings. It speaks to the refund workflow by its
string names (`"refund"`, update `"decide"`, query `"get_state"`) so the starter never imports
workflow code, and it turns Temporal's errors into Podium's own exception tree:

    PodiumError
    ├── CaseNotFound          no refund case with that id
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
from typing import Annotated, Any, TypeVar
from urllib.parse import quote

import structlog
from pydantic import BaseModel, Field, StringConstraints, ValidationError
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
from workflows import search_attributes as sa
from workflows.types import (
    ApprovalAction,
    ApprovalDecisionInput,
    ApprovalDecisionResult,
    ApprovalLevel,
    ApprovalPolicy,
    BreachAction,
    CaseStatus,
    DefaultAction,
    RefundCaseInput,
    RefundCaseResult,
    RefundCaseState,
    RefundOutcome,
    RefundPolicy,
    RiskLevel,
)

__all__ = [
    "CaseClosed",
    "CaseNotFound",
    "CaseRef",
    "CaseView",
    "DecisionRefused",
    "IdempotencyConflict",
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

_KEY_RE = re.compile(IDEMPOTENCY_KEY_PATTERN)
ROLE_PATTERN = r"^[A-Za-z0-9._:@-]{1,100}$"
_ROLE_RE = re.compile(ROLE_PATTERN)
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

    def sha256(self) -> str:
        """Hash of the canonical JSON of the request: what an idempotent retry must repeat."""
        fields = self.model_dump(mode="json")
        if fields["requested_by"] is None:
            del fields["requested_by"]  # hashes stay as they were before the field existed
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
        case_input = RefundCaseInput(
            channel=request.channel,
            customer_id=request.customer_id,
            order_id=request.order_id,
            message=request.message,
            policy=policy_from_settings(self._settings),
            requested_by=request.requested_by,
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
