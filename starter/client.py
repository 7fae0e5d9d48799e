"""The Python client other services import to open, inspect and decide Podium's cases.

`PodiumClient` wraps a Temporal client, the settings and the process registry
(`workflows.registry`): `start(process, request)` opens a case of any registered process, and
the case routes (read, decide, inbox) work for every one. It speaks to workflows by their
string names (the process name, update `"decide"`, query `"get_state"`) and turns Temporal's
errors into Podium's own exception tree:

    PodiumError
    ├── CaseNotFound          no case with that id
    ├── ProcessNotFound       no process with that name
    ├── ApprovalNotFound      the case never asked anyone for approval
    ├── CaseClosed            the case has finished; it takes no more decisions
    ├── IdempotencyConflict   the idempotency key was used for a different request
    ├── DecisionRefused       the case refused the decision (carries its reason)
    ├── CodeNotAwaited        the case is not waiting for a verification code
    │   └── VerificationLocked    ... because wrong codes locked it
    ├── NotTheEmployee        only the employee whose password it is enters its code
    ├── TooManyAttempts       the case takes no more stored code attempts
    ├── InvalidRequest        the request is malformed (carries the fields)
    └── TemporalUnavailable   Temporal or the worker did not answer in time

Case ids are `<process prefix><idempotency key>` (`refund-<key>`); a retry with the same key and
the same request returns the existing case instead of opening a second one.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
import time
import uuid
from collections.abc import Awaitable, Mapping
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

import structlog
from pydantic import BaseModel, Field, SerializeAsAny, ValidationError
from sqlalchemy.exc import SQLAlchemyError
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
    Priority,
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from activities.identity import AttemptsExhausted, UnknownVerification
from activities.policy import PolicyVersions
from activities.types import EmployeeInfo
from core import metrics
from core.decision_tokens import DecisionKey
from core.priority import (
    PRIORITY_FILE_STEM,
    PriorityChoice,
    PriorityFacts,
    PriorityPolicy,
    choose_priority,
    load_priority_policy,
)
from core.settings import Settings
from core.temporal import connect
from starter.documents import DocumentRef, DocumentUploads
from starter.verification import CodeAttempts
from workflows.access_request.types import EmployeeTerminatedInput
from workflows.contracts import search_attributes as sa
from workflows.contracts.approval import (
    DECISION_RECORDED,
    ApprovalAction,
    ApprovalDecisionInput,
    ApprovalDecisionResult,
    ApprovalRequest,
    GateStatus,
    decision_digest,
)
from workflows.contracts.case import AiView, CaseContext, CaseState, Fact
from workflows.contracts.documents import AttachmentUpload
from workflows.password_reset.rules import is_the_employee
from workflows.password_reset.types import (
    CodeAttemptInput,
    CodeAttemptResult,
    PasswordResetStatus,
)
from workflows.registry import PROCESSES, Process, Registry, UnknownProcess

if TYPE_CHECKING:  # the intake imports this module
    from starter.intake import Intake, MessageAck

__all__ = [
    "ApprovalNotFound",
    "ApprovalView",
    "CaseClosed",
    "CaseNotFound",
    "CaseRef",
    "CaseView",
    "CodeEntryResult",
    "CodeNotAwaited",
    "CodeOutcome",
    "DecisionRefused",
    "IdempotencyConflict",
    "Inbox",
    "InboxItem",
    "InvalidRequest",
    "NotTheEmployee",
    "PendingApproval",
    "PodiumClient",
    "PodiumError",
    "ProcessInfo",
    "ProcessNotFound",
    "TemporalUnavailable",
    "TerminationRef",
    "TooManyAttempts",
    "VerificationLocked",
    "case_id_for_key",
    "load_process_policy",
    "parse_policy_as",
    "request_sha256",
    "validate_idempotency_key",
]

log = structlog.get_logger()

IDEMPOTENCY_KEY_PATTERN = r"^[A-Za-z0-9._:-]{1,100}$"
MEMO_REQUEST_HASH = "request_sha256"
# Every case's status before its workflow runs (the process's own statuses follow).
RECEIVED = "received"

# A query needs a worker; without one the server holds it until the deadline, so keep it short.
QUERY_TIMEOUT = timedelta(seconds=5)
# `get_case(wait=...)`: the longest a caller may wait for an outcome, and how often it looks.
MAX_CASE_WAIT = timedelta(seconds=60)
CASE_WAIT_POLL_S = 0.25
# A decision reads which approval the case waits for first: worth waiting longer for than a
# status read when many decisions arrive at once and the worker is busy with them.
DECISION_QUERY_TIMEOUT = timedelta(seconds=15)
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


# --- errors -------------------------------------------------------------------------------------


class PodiumError(Exception):
    """Base of every error the Podium client raises."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class CaseNotFound(PodiumError):
    def __init__(self, case_id: str) -> None:
        super().__init__(f"no case with id '{case_id}'")
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


class CodeNotAwaited(PodiumError):
    """The case takes no verification code now (not a process that asks for one, not sent
    yet, already verified, expired); nothing was checked and nothing counts."""

    def __init__(self, case_id: str, reason: str) -> None:
        super().__init__(reason)
        self.case_id = case_id


class VerificationLocked(CodeNotAwaited):
    """Too many wrong codes locked the case: a person of the IT service desk takes it over."""

    def __init__(self, case_id: str) -> None:
        super().__init__(
            case_id,
            f"case '{case_id}' is locked after too many wrong codes and takes no more; the IT "
            "service desk verifies the employee another way",
        )


class NotTheEmployee(PodiumError):
    """Only the employee whose password the case resets may enter its code, signed in as
    themselves (`workflows.password_reset.rules.is_the_employee`)."""

    def __init__(self, case_id: str, caller: str) -> None:
        super().__init__(
            f"'{caller}' may not enter the code of case '{case_id}': only the employee whose "
            "password it resets may, signed in as themselves"
        )
        self.case_id = case_id


class TooManyAttempts(PodiumError):
    def __init__(self, case_id: str) -> None:
        super().__init__(f"case '{case_id}' has taken all the code attempts it accepts")
        self.case_id = case_id


class InvalidRequest(PodiumError):
    """`field` names the first wrong field; `errors` lists every one (pydantic's shape)."""

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        location: str = "body",
        errors: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.field = field
        self.location = location
        self.errors = errors or []


class ProcessNotFound(PodiumError):
    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(f"no process named '{name}'; known: {', '.join(known)}")
        self.name = name


def _invalid(err: ValidationError) -> InvalidRequest:
    details = err.errors(include_url=False, include_context=False)
    paths = [".".join(str(part) for part in error["loc"]) for error in details]
    message = "; ".join(
        f"{path or 'body'}: {error['msg']}" for path, error in zip(paths, details, strict=True)
    )
    errors: list[dict[str, Any]] = [dict(error) for error in details]
    return InvalidRequest(message, field=paths[0] or None, errors=errors)


class ApprovalNotFound(PodiumError):
    def __init__(self, case_id: str) -> None:
        super().__init__(f"case '{case_id}' has not asked anyone for approval")
        self.case_id = case_id


class TemporalUnavailable(PodiumError):
    """Temporal could not be reached, or the case's worker could not answer in time.

    `decision_id`: set when a decision was sent and may still be applied; retrying with it
    returns that decision's result instead of deciding again."""

    def __init__(self, message: str, *, decision_id: str | None = None) -> None:
        super().__init__(message)
        self.decision_id = decision_id


# --- models -------------------------------------------------------------------------------------


class ProcessInfo(BaseModel):
    """A process callers can open cases of (`POST /cases/{name}`)."""

    name: str
    title: str
    case_id_prefix: str
    policy: str | None = Field(default=None, description="Its policy file in policies/, if any")
    input_schema: dict[str, Any] = Field(description="JSON schema of the request body")


class CaseRef(BaseModel):
    case_id: str
    process: str | None = None
    created: bool = Field(description="False when the idempotency key matched an existing case")
    ui_url: str = Field(description="The case in the Temporal UI")


class CaseView(BaseModel):
    case_id: str
    workflow_status: str = Field(
        description="Temporal execution status: running, completed, failed, terminated, ..."
    )
    process: str | None = None
    status: str | None = None
    outcome: str | None = None
    started_at: datetime
    closed_at: datetime | None = None
    summary: str | None = None
    state: SerializeAsAny[CaseState] | None = Field(
        default=None,
        description="The case's own view (get_state, the process's state model); absent if no "
        "worker answered",
    )
    result: SerializeAsAny[BaseModel] | None = Field(
        default=None, description="The process's result, once completed (when no worker answered)"
    )
    ui_url: str


class CodeOutcome(StrEnum):
    VERIFIED = "verified"  # the right code: the case goes on
    WRONG_CODE = "wrong_code"  # counts towards the lock; `attempts_left` more may be tried
    EXPIRED = "expired"  # the code's lifetime had passed: no wrong code counted
    LOCKED = "locked"  # this wrong code was the last one allowed: the case is locked


class CodeEntryResult(BaseModel):
    """What the case answered to a code an employee entered."""

    case_id: str
    outcome: CodeOutcome
    verified: bool
    attempts: int = Field(description="Wrong codes so far")
    attempts_left: int = Field(description="Wrong codes the case still takes before it locks")
    status: str = Field(description="The case's status after the check")


class PendingApproval(BaseModel):
    case_id: str
    process: str | None = None
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


class ApprovalView(BaseModel):
    """One approval as an approver reads it: the case, the request, the AI's view, decisions."""

    case_id: str
    process: str
    title: str = Field(default="", description="The process's title")
    workflow_status: str
    status: str | None = None
    outcome: str | None = None
    pending: bool = Field(description="True while the case waits for a decision")
    summary: str | None = Field(default=None, description="The case's one-line summary")
    message: str | None = Field(default=None, description="What the requester wrote")
    channel: str | None = None
    customer_id: str | None = None
    customer_tier: str | None = None
    order_id: str | None = None
    amount_cents: int | None = Field(default=None, description="The amount at stake")
    facts: list[Fact] = Field(
        default_factory=list, description="The process's own facts, in reading order"
    )
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
    ai: AiView
    decision: ApprovalDecisionResult | None = Field(
        default=None, description="The decision that closed the approval, once it has"
    )
    as_of: datetime
    ui_url: str


class TerminationRef(BaseModel):
    """A termination: the employee's access termination case, and the running access requests
    told (signal `employee_terminated`)."""

    case: CaseRef
    running_cases: list[str] = Field(default_factory=list)


# --- helpers ------------------------------------------------------------------------------------


def validate_idempotency_key(key: str) -> str:
    if not _KEY_RE.fullmatch(key):
        raise InvalidRequest(
            "must be 1-100 characters of letters, digits, '.', '_', ':' or '-'",
            field="Idempotency-Key",
            location="header",
        )
    return key


def case_id_for_key(key: str, process: Process) -> str:
    return process.case_id_prefix + validate_idempotency_key(key)


def request_sha256(request: BaseModel) -> str:
    """Hash of the canonical JSON of a request: what an idempotent retry must repeat. A request
    model may define its own `sha256()` (e.g. to count an attachment by its bytes)."""
    own = getattr(request, "sha256", None)
    if callable(own):
        return str(own())
    fields = request.model_dump(mode="json", exclude_none=True)
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _status_name(status: WorkflowExecutionStatus | None) -> str:
    return status.name.lower() if status else "unknown"


# Answers of a reachable server that mean "not now": retryable, as a 503 with Retry-After.
_PUSHBACK = (RPCStatusCode.RESOURCE_EXHAUSTED, RPCStatusCode.FAILED_PRECONDITION)


def _is_unreachable(err: BaseException) -> bool:
    if isinstance(err, RPCError):
        # A connection cut mid-call (the server killed) comes back as an unknown transport error.
        return err.status in (
            RPCStatusCode.UNAVAILABLE,
            RPCStatusCode.DEADLINE_EXCEEDED,
            RPCStatusCode.CANCELLED,
        ) or (err.status == RPCStatusCode.UNKNOWN and "transport error" in err.message)
    # A lazily connected client reports a refused connection as a RuntimeError.
    return isinstance(err, RuntimeError) and str(err).startswith("Failed client connect")


# The update a process's workflow answers as soon as a decision is recorded (not carried out).
RECORD_DECISION = "record_decision"


def _acknowledges_on_record(spec: Process) -> bool:
    """Whether the process's workflow has the `record_decision` update."""
    return _has_update(spec, RECORD_DECISION)


# The update of a process that verifies people by a one-time code (an attempt id, never a code).
ENTER_CODE = "enter_code"


def _has_update(spec: Process, name: str) -> bool:
    definition = getattr(spec.workflow, "__temporal_workflow_definition", None)
    return definition is not None and name in definition.updates


def load_process_policy(spec: Process, settings: Settings) -> dict[str, Any] | None:
    """The policy file of `spec` (`<policies_dir>/<spec.policy>.yaml`), validated and with its
    digest (the short sha256 of its bytes): as the process's `policy_model` when it has one,
    else as the autonomy policy (`PolicyDocument`, whose rule engine is imported only here).
    None when the process has no policy file or policy as code is off; `PolicyError` naming
    the file and the fields when it does not load."""
    if spec.policy is None or not settings.policy_as_code:
        return None
    from core.policy import load_policy, policy_path

    path = policy_path(settings.policies_dir, spec.policy)
    if spec.policy_model is None:
        return load_policy(path).model_dump(mode="json")
    return parse_policy_as(path, spec.policy_model)


def parse_policy_as(path: Path, model: type[BaseModel]) -> dict[str, Any]:
    """A policy file read as `model`, with `digest` set from its bytes (never by the file)."""
    from core.policy import load_policy_model

    return load_policy_model(path, model).model_dump(mode="json")


def _with_priority(details: str | None, priority: PriorityChoice | None) -> str | None:
    """The case's details in the Temporal UI, with the priority it started with and why."""
    if priority is None:
        return details
    why = ", ".join(priority.reasons) or "no rule matched"
    line = f"**Priority** {priority.key} ({why}; {priority.version})"
    return f"{details}\n\n{line}" if details else line


async def _bounded(awaitable: Awaitable[_T], timeout: timedelta) -> _T:
    async with asyncio.timeout(timeout.total_seconds()):
        return await awaitable


# --- the client ---------------------------------------------------------------------------------


class PodiumClient:
    """Open, inspect and decide the cases of every registered process. Safe to share across
    tasks."""

    def __init__(self, client: Client, settings: Settings, processes: Registry = PROCESSES) -> None:
        self._client = client
        self._settings = settings
        self._processes = processes
        self._documents = DocumentUploads(settings)  # its database engine: on first upload
        self._codes = CodeAttempts(settings)  # likewise, on the first code entered

    @classmethod
    async def connect(cls, settings: Settings, processes: Registry = PROCESSES) -> PodiumClient:
        """Connect to Temporal as `core.temporal` configures it."""
        return cls(await connect(settings), settings, processes)

    @property
    def registry(self) -> Registry:
        return self._processes

    @cached_property
    def _decision_key(self) -> DecisionKey:
        """Signs decisions for the verified caller (`PODIUM_DECISION_SECRET`, or the
        development key under the data folder)."""
        return DecisionKey.from_settings(self._settings)

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

    async def start(
        self,
        process: str,
        request: BaseModel | Mapping[str, Any],
        idempotency_key: str | None = None,
        *,
        requested_by: str | None = None,
    ) -> CaseRef:
        """Open a case of `process` (a name of the registry) with its request model (or a dict
        of it), or return the existing case for a repeated key and request.

        `requested_by` is the verified caller: it becomes the case's requester (four-eyes) and,
        where the request has a `requested_by` field, that field. An attachment in the request
        is stored first; the case carries only its id.
        """
        spec = self._process(process)
        body = self._request(spec, request)
        key = idempotency_key if idempotency_key is not None else uuid.uuid4().hex
        if spec.case_key is not None:
            # One case per subject (the process says which): a repeat finds the first case.
            key = spec.case_key(body)
        case_id = case_id_for_key(key, spec)
        if requested_by is not None and "requested_by" in type(body).model_fields:
            body = body.model_copy(update={"requested_by": requested_by})
        request_hash = request_sha256(body)
        body = await self._store_attachment(body)
        document = self._policy_document(spec)
        context = CaseContext(
            case_id=case_id,
            requested_by=requested_by or getattr(body, "requested_by", None) or "api",
            policy_document=document,
            policy_stored=await self._store_policy(spec, document),
            settings=self._settings.model_dump(mode="json"),
        )
        try:
            case_input = spec.prepare(body, context)
        except ValidationError as err:
            raise _invalid(err) from None
        text = spec.describe(body)
        priority = self._priority(spec, case_input)
        attributes = [
            SearchAttributePair(sa.PROCESS, spec.name),
            SearchAttributePair(sa.STATUS, RECEIVED),
        ]
        if text.customer_id:
            customer = sa.customer_id_attribute(text.customer_id)  # never personal data
            attributes.append(SearchAttributePair(sa.CUSTOMER_ID, customer))
        try:
            await self._client.start_workflow(
                spec.name,
                case_input,
                id=case_id,
                task_queue=self._settings.task_queue,
                result_type=spec.result,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                memo={MEMO_REQUEST_HASH: request_hash},
                search_attributes=TypedSearchAttributes(attributes),
                static_summary=text.summary,
                static_details=_with_priority(text.details, priority),
                priority=Priority(priority_key=priority.key) if priority else Priority.default,
                rpc_timeout=RPC_TIMEOUT,
            )
        except WorkflowAlreadyStartedError:
            description = await self._describe(case_id)
            existing_hash = await description.memo_value(MEMO_REQUEST_HASH, None)
            same_request = existing_hash == request_hash or spec.case_key is not None
            if description.workflow_type != spec.name or not same_request:
                raise IdempotencyConflict(case_id) from None
            log.info("case_existing", case_id=case_id, process=spec.name)
            return CaseRef(
                case_id=case_id, process=spec.name, created=False, ui_url=self.ui_url(case_id)
            )
        except (RPCError, RuntimeError) as err:
            raise self._translate(err, case_id) from err
        log.info(
            "case_started",
            case_id=case_id,
            process=spec.name,
            task_queue=self._settings.task_queue,
            priority=priority.key if priority else None,
            priority_reasons=priority.reasons if priority else None,
        )
        metrics.CASES_STARTED.labels(
            process=metrics.label(spec.name), channel=metrics.label(getattr(body, "channel", None))
        ).inc()
        ref = CaseRef(case_id=case_id, process=spec.name, created=True, ui_url=self.ui_url(case_id))
        return ref

    async def terminate_employee(
        self, employee: str, reason: str | None = None, *, requested_by: str | None = None
    ) -> TerminationRef:
        """The directory says `employee` left: open (or find) the employee's access
        termination case, which revokes every membership Podium granted them that they still
        hold, also from finished access requests; and tell every running access request of
        theirs (signal `employee_terminated`), which withdraws or revokes its own. A repeated
        termination returns the same case and revokes nothing twice."""
        fields = {"employee": employee} | ({"reason": reason} if reason else {})
        spec = self._process("access_termination")  # registry-ok: the termination's own
        body = self._request(spec, fields)
        ref = await self.start(spec.name, body, requested_by=requested_by)
        fields = body.model_dump()
        name = str(fields["employee"])
        notice = EmployeeTerminatedInput(user_name=name, reason=str(fields["reason"]))
        query = (
            f'{sa.PROCESS.name} = "access_request" AND '  # registry-ok: the cases it tells
            f'{sa.CUSTOMER_ID.name} = "{sa.customer_id_attribute(name)}" AND '
            'ExecutionStatus = "Running"'
        )
        told: list[str] = []
        try:
            async for execution in self._client.list_workflows(
                query, limit=PENDING_SCAN_LIMIT, rpc_timeout=RPC_TIMEOUT
            ):
                handle = self._client.get_workflow_handle(execution.id)
                try:
                    await handle.signal("employee_terminated", notice, rpc_timeout=RPC_TIMEOUT)
                except RPCError as err:
                    if err.status != RPCStatusCode.NOT_FOUND:  # finished meanwhile: nothing to do
                        raise
                    continue
                told.append(execution.id)
        except (RPCError, RuntimeError) as err:
            raise self._translate(err, ref.case_id) from err
        log.info("employee_terminated", case_id=ref.case_id, running_cases=len(told))
        return TerminationRef(case=ref, running_cases=told)

    async def send_message(
        self, message: BaseModel | Mapping[str, Any], *, requested_by: str | None = None
    ) -> MessageAck:
        """One message on any channel (`starter.intake.IncomingMessage`), triaged once and
        routed by `policies/routing.yaml`: the `MessageAck` of the case it opened or joined."""
        fields = message.model_dump() if isinstance(message, BaseModel) else message
        return await self._intake.receive(fields, requested_by=requested_by)

    @cached_property
    def _intake(self) -> Intake:
        from starter.intake import Intake

        return Intake(self, self._settings)

    async def create_refund_case(
        self, request: BaseModel | Mapping[str, Any], idempotency_key: str | None = None
    ) -> CaseRef:
        """Shortcut: `start` of the refund process with this request and key."""
        return await self.start("refund", request, idempotency_key)  # registry-ok

    def processes(self) -> list[ProcessInfo]:
        """The processes cases can be opened of, with the JSON schema of their requests."""
        return [
            ProcessInfo(
                name=spec.name,
                title=spec.title,
                case_id_prefix=spec.case_id_prefix,
                policy=spec.policy,
                input_schema=spec.request.model_json_schema(),
            )
            for spec in self._processes
        ]

    def _process(self, name: str) -> Process:
        try:
            return self._processes.get(name)
        except UnknownProcess as err:
            raise ProcessNotFound(name, self._processes.names) from err

    @staticmethod
    def _request(spec: Process, request: BaseModel | Mapping[str, Any]) -> BaseModel:
        if isinstance(request, spec.request):
            return request
        try:
            if isinstance(request, BaseModel):
                return spec.request.model_validate(request.model_dump())
            return spec.request.model_validate(dict(request))
        except ValidationError as err:
            raise _invalid(err) from None

    async def _store_attachment(self, body: BaseModel) -> BaseModel:
        """Store an inline attachment before the case starts: the case carries only its id.
        (The same bytes again, e.g. a retried request, find the document stored first.)"""
        attachment = getattr(body, "attachment", None)
        if isinstance(attachment, AttachmentUpload):
            stored = await self.upload_document(attachment)
            return body.model_copy(update={"attachment": None, "attachment_id": stored.document_id})
        attachment_id = getattr(body, "attachment_id", None)
        if isinstance(attachment_id, str) and not await self._documents.exists(attachment_id):
            raise InvalidRequest(f"no document with id '{attachment_id}'", field="attachment_id")
        return body

    def _priority(self, spec: Process, case_input: BaseModel) -> PriorityChoice | None:
        """The priority key a new case starts with (`policies/priority.yaml`); None without
        the file. A file that does not validate is logged and the case starts at the default
        priority: a case is not refused for its place in a queue (`podium policy check`)."""
        from core.policy import DEFAULT_POLICIES_DIR, PolicyError

        path = (self._settings.policies_dir or DEFAULT_POLICIES_DIR) / f"{PRIORITY_FILE_STEM}.yaml"
        try:
            stamp = path.stat().st_mtime_ns
        except OSError:
            return None
        cached = self.__dict__.get("_priority_policy")
        if cached is None or cached[0] != (path, stamp):
            try:
                cached = ((path, stamp), load_priority_policy(path))
            except PolicyError as err:
                log.error("priority_policy_invalid", path=str(path), errors=err.errors)
                cached = ((path, stamp), None)
            self.__dict__["_priority_policy"] = cached
        policy: PriorityPolicy | None = cached[1]
        if policy is None:
            return None
        return choose_priority(policy, PriorityFacts.of(spec.name, case_input, policy))

    def _policy_document(self, spec: Process) -> dict[str, Any] | None:
        """The process's policy file, validated, for a new case (None without one, or with
        PODIUM_POLICY_AS_CODE=false)."""
        return load_process_policy(spec, self._settings)

    @cached_property
    def _policy_versions(self) -> PolicyVersions:
        return PolicyVersions(self._documents.engine())

    async def _store_policy(self, spec: Process, document: dict[str, Any] | None) -> bool:
        """Store the case's policy under its digest (once per version and process), so the
        case may carry the digest alone. False when it cannot be stored: the case then
        carries the whole document, as before, and nothing is lost."""
        if document is None:
            return False
        digest = str(document.get("digest") or "")
        if self._policy_versions.known(digest):
            return True
        try:
            await asyncio.to_thread(self._policy_versions.save, spec.name, document)
        except (SQLAlchemyError, ValueError) as err:
            log.warning(
                "policy_version_not_stored",
                process=spec.name,
                policy_version=digest,
                error=type(err).__name__,
            )
            return False
        return True

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
        """Release the document and verification stores' database connections."""
        self._documents.close()
        self._codes.close()
        if "_intake" in self.__dict__:
            self._intake.close()

    # --- reading a case -----------------------------------------------------------------------

    async def get_case(self, case_id: str, wait: timedelta | None = None) -> CaseView:
        """The case as Temporal and the workflow see it; works while running and after close.

        `wait`: first wait up to that long (at most `MAX_CASE_WAIT`) for the case to reach an
        outcome (its `PodiumOutcome`, or the run closing), reading only what the server holds
        (no worker, no query) until then: the long-poll of a caller that had its decision
        acknowledged (`decide(wait=False)`) and now wants what the case did."""
        if wait is not None and wait > timedelta(0):
            await self._until_outcome(case_id, min(wait, MAX_CASE_WAIT))
        description, spec = await self._describe_case(case_id)
        handle = self._handle(case_id, description.run_id, spec)
        state: CaseState | None = None
        result: BaseModel | None = None
        try:
            state = await self._query_state(handle, spec)
        except TemporalUnavailable as err:
            # No worker answered: fall back on the result and the search attributes.
            log.info("case_state_unavailable", case_id=case_id, reason=err.message)
        if state is None and description.status == WorkflowExecutionStatus.COMPLETED:
            try:
                result = await _bounded(handle.result(rpc_timeout=RPC_TIMEOUT), RPC_TIMEOUT)
            except (WorkflowFailureError, RPCError, TimeoutError) as err:
                log.info("case_result_unavailable", case_id=case_id, error=str(err))

        attributes = description.typed_search_attributes
        status = str(state.status) if state else attributes.get(sa.STATUS)
        outcome = (
            (state.outcome if state else None)
            or (getattr(result, "outcome", None) if result else None)
            or attributes.get(sa.OUTCOME)
        )
        return CaseView(
            case_id=case_id,
            process=spec.name,
            workflow_status=_status_name(description.status),
            status=status,
            outcome=str(outcome) if outcome is not None else None,
            started_at=description.start_time,
            closed_at=description.close_time,
            summary=await description.static_summary(),
            state=state,
            result=result,
            ui_url=self.ui_url(case_id),
        )

    async def list_pending(
        self,
        min_amount: float | None = None,
        limit: int = 100,
        role: str | None = None,
        process: str | None = None,
    ) -> list[PendingApproval]:
        """Running cases waiting for a person, the most urgent SLA first.

        `role` narrows the list to what that role may decide now (an approver's inbox); pass
        `user:<name>` for what was delegated to a person. `process`: only that process's.
        """
        if limit < 1:
            raise InvalidRequest("must be at least 1", field="limit", location="query")
        query = f'{sa.AWAITING_APPROVAL.name} = true AND ExecutionStatus = "Running"'
        if process is not None:
            query += f' AND {sa.PROCESS.name} = "{self._process(process).name}"'

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
        """One approval: the case, the pending (or closed) request, the AI's view, decisions,
        as the case's process presents it (its registry entry's `approval_card`).

        Asks the case itself (`get_state`), so a worker must answer; the requester's message
        comes from the case's input in its history.
        """
        description, spec = await self._describe_case(case_id)
        handle = self._handle(case_id, description.run_id, spec)
        state = await self._query_state(handle, spec)
        request = state.approval
        if request is None:
            raise ApprovalNotFound(case_id)
        case_input = await self._case_input(handle, spec)
        card = spec.approval_card(case_input, state)
        running = description.status == WorkflowExecutionStatus.RUNNING
        pending = running and request.status == GateStatus.OPEN
        now = datetime.now(UTC)
        left = (request.sla_due_at - now).total_seconds() if pending else None
        return ApprovalView(
            case_id=case_id,
            process=spec.name,
            title=spec.title,
            workflow_status=_status_name(description.status),
            status=str(state.status),
            outcome=str(state.outcome) if state.outcome is not None else None,
            pending=pending,
            summary=await description.static_summary(),
            message=card.message,
            channel=card.channel,
            customer_id=card.customer_id,
            customer_tier=card.customer_tier,
            order_id=card.order_id,
            amount_cents=card.amount_cents,
            facts=card.facts,
            request=request,
            levels=[level.name for level in request.policy.levels],
            waiting_for=(
                [
                    *request.awaiting_roles,
                    *(USER_PREFIX + name for name in request.awaiting_people),
                    *(USER_PREFIX + name for name in request.delegates),
                ]
                if pending
                else []
            ),
            time_left_s=left,
            overdue=left is not None and left < 0,
            ai=card.ai,
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
        wait: bool = True,
    ) -> ApprovalDecisionResult:
        """Decide the pending approval: approve, reject, request_changes or delegate.

        Returns once the decision has been recorded; when it closes the approval and `wait`
        (the default), once it has been carried out (refund issued, customer told). With
        `wait=False` it returns as soon as the case has verified and recorded the decision
        (`gate` says whether it closed the approval, `outcome` follows in `get_case`), for the
        processes whose workflow answers that way (update `record_decision`; the others answer
        as with `wait`). `request_id` defaults to the approval the case waits for now;
        `decision_id` (default: a new uuid4) makes retries safe: the same id returns the first
        result, even after the case has closed, and is applied once whichever way it is sent.
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
        description, spec = await self._describe_case(case_id)
        handle = self._handle(case_id, description.run_id, spec)
        # A retry: the update this decision id sent before, if the case took it, answers (the
        # server keeps its outcome, also once the case has closed: no worker, no query).
        taken = await self._taken_update(handle, case_id, decision_id)
        settled = taken is not None and (taken.outcome is not None or taken.gate == GateStatus.OPEN)
        if taken is not None and (settled or not wait):
            return taken
        # Taken as an acknowledgement (`record_decision`) and now awaited: its outcome, through
        # an update of its own (the case answers a retry with the first result, carried out).
        update_id = decision_id if taken is None else f"{decision_id}:outcome"
        if description.status != WorkflowExecutionStatus.RUNNING:
            earlier = await self._earlier_result(handle, spec, decision_id)
            if earlier is not None:
                return earlier
            raise CaseClosed(case_id, _status_name(description.status))
        if request_id is None:
            state = await self._query_state(handle, spec, DECISION_QUERY_TIMEOUT)
            if state.approval is None:
                raise DecisionRefused(case_id, "no approval is pending for this case")
            decision = decision.model_copy(update={"request_id": state.approval.request_id})
        # The case trusts no name in the payload: it checks this token (the caller's identity
        # and roles, bound to this case and this exact decision) before applying it.
        credential = self._decision_key.mint(
            subject=approver,
            roles=list(decision.approver_roles),
            digest=decision_digest(case_id, decision),
        )
        decision = decision.model_copy(update={"credential": credential})
        update = "decide" if wait or not _acknowledges_on_record(spec) else RECORD_DECISION
        try:
            # The update id is the decision id: a retry attaches to the update the case took
            # instead of sending another. A busy case's `CaseBusy` is retried by the client's
            # `AdmissionInterceptor` (`core.admission`).
            result: ApprovalDecisionResult = await _bounded(
                handle.execute_update(
                    update, decision, id=update_id, result_type=ApprovalDecisionResult
                ),
                UPDATE_TIMEOUT,
            )
        except WorkflowUpdateFailedError as err:
            cause = err.cause
            if isinstance(cause, ApplicationError) and cause.type == DECISION_RECORDED:
                # A retry of a decision the case has answered: its first result.
                return ApprovalDecisionResult.model_validate(cause.details[0])
            reason = cause.message if isinstance(cause, ApplicationError) else str(cause)
            log.info(
                "decision_refused", case_id=case_id, request_id=decision.request_id, reason=reason
            )
            raise DecisionRefused(case_id, reason) from None
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                # The case existed a moment ago: it has finished in between.
                earlier = await self._earlier_result(handle, spec, decision_id)
                if earlier is not None:
                    return earlier
                raise CaseClosed(case_id, "completed") from None
            translated = self._translate(err, case_id)
            if isinstance(translated, TemporalUnavailable):
                translated.decision_id = decision_id  # sent: it may have been applied
            raise translated from err
        except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
            raise TemporalUnavailable(
                f"case '{case_id}' did not confirm the decision within "
                f"{int(UPDATE_TIMEOUT.total_seconds())}s; it may still be applied once the "
                f"worker picks it up: retry with decision id '{decision_id}' to find out",
                decision_id=decision_id,
            ) from None
        log.info(
            "decision_applied",
            case_id=case_id,
            request_id=decision.request_id,
            decision_id=decision_id,
            action=decision.resolved_action.value,
            approver=approver,
            gate=result.gate.value,
            outcome=result.outcome,
        )
        return result

    # --- verifying an employee -----------------------------------------------------------------

    async def enter_code(self, case_id: str, code: str, *, employee: str) -> CodeEntryResult:
        """Check a one-time code the employee entered for their password reset.

        `employee` is the verified caller (a person's credential subject): only the employee
        whose password the case resets may enter its code (`NotTheEmployee` otherwise). The code
        is stored as its salted HMAC and the case receives the attempt's id; the answer says
        whether it was right, how many wrong codes the case still takes, or that this one
        locked it. A case not waiting for a code refuses before anything is stored
        (`CodeNotAwaited`, `VerificationLocked`); a case checks one code at a time and counts
        each wrong one, so the bound on guesses is the case's own (its policy's
        `max_attempts`), plus `TooManyAttempts` on what may be stored for one case.
        """
        description, spec = await self._describe_case(case_id)
        if not _has_update(spec, ENTER_CODE):
            raise CodeNotAwaited(
                case_id, f"case '{case_id}' is a {spec.name} case: it takes no verification code"
            )
        if description.status != WorkflowExecutionStatus.RUNNING:
            raise CaseClosed(case_id, _status_name(description.status))
        handle = self._handle(case_id, description.run_id, spec)
        state = await self._query_state(handle, spec)
        holder = getattr(state, "employee", None)
        if not isinstance(holder, EmployeeInfo):
            raise CodeNotAwaited(case_id, f"case '{case_id}' has sent no verification code yet")
        if not is_the_employee(employee, holder):
            log.info("verification_code_refused", case_id=case_id, reason="not_the_employee")
            raise NotTheEmployee(case_id, employee)
        _refuse_unless_awaiting(case_id, state)
        try:
            attempt_id = await self._codes.record(case_id, code)
        except UnknownVerification:
            raise CodeNotAwaited(
                case_id, f"no verification code was sent for '{case_id}'"
            ) from None
        except AttemptsExhausted:
            raise TooManyAttempts(case_id) from None
        try:
            checked: CodeAttemptResult = await _bounded(
                handle.execute_update(
                    ENTER_CODE,
                    CodeAttemptInput(attempt_id=attempt_id),
                    result_type=CodeAttemptResult,
                ),
                UPDATE_TIMEOUT,
            )
        except WorkflowUpdateFailedError:
            # Refused before history by the validator: the case stopped waiting in between.
            _refuse_unless_awaiting(case_id, await self._query_state(handle, spec))
            raise CodeNotAwaited(case_id, f"case '{case_id}' is not waiting for a code") from None
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                raise CaseClosed(case_id, "completed") from None
            raise self._translate(err, case_id) from err
        except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
            raise TemporalUnavailable(
                f"case '{case_id}' did not check the code within "
                f"{int(UPDATE_TIMEOUT.total_seconds())}s; it may still be checked (and count): "
                "look at the case before entering it again"
            ) from None
        outcome = _code_outcome(case_id, checked)
        log.info(
            "verification_code_entered",
            case_id=case_id,
            attempt_id=attempt_id,
            outcome=outcome.value,
            attempts=checked.attempts,
        )
        return CodeEntryResult(
            case_id=case_id,
            outcome=outcome,
            verified=checked.verified,
            attempts=checked.attempts,
            attempts_left=checked.attempts_left,
            status=str(checked.status),
        )

    async def _taken_update(
        self, handle: WorkflowHandle[Any, Any], case_id: str, decision_id: str
    ) -> ApprovalDecisionResult | None:
        """The result of the decision update sent before with this decision id (its update
        id), waiting for it if it is still running; None when the case never took one.
        DecisionRefused when the case took it and refused it."""
        update = handle.get_update_handle(decision_id, result_type=ApprovalDecisionResult)
        try:
            result: ApprovalDecisionResult = await _bounded(
                update.result(rpc_timeout=RPC_TIMEOUT), UPDATE_TIMEOUT
            )
            return result
        except WorkflowUpdateFailedError as err:
            cause = err.cause
            if isinstance(cause, ApplicationError) and cause.type == DECISION_RECORDED:
                return ApprovalDecisionResult.model_validate(cause.details[0])
            reason = cause.message if isinstance(cause, ApplicationError) else str(cause)
            raise DecisionRefused(case_id, reason) from None
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                return None
            raise self._translate(err, case_id) from err
        except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
            raise TemporalUnavailable(
                f"case '{case_id}' did not finish decision '{decision_id}' within "
                f"{int(UPDATE_TIMEOUT.total_seconds())}s; retry with the same decision id",
                decision_id=decision_id,
            ) from None

    async def _earlier_result(
        self, handle: WorkflowHandle[Any, Any], spec: Process, decision_id: str
    ) -> ApprovalDecisionResult | None:
        """A retried decision's result on a closed case: the closing decision's own result, or
        for one that left the gate open (a level, a quorum vote, a delegation) its result as
        the case recorded it. None when `decision_id` was never applied."""
        try:
            state = await self._query_state(handle, spec)
        except (TemporalUnavailable, CaseNotFound):
            return None
        decision = state.decision
        if decision is not None and decision.decision_id == decision_id:
            return decision
        approval = state.approval
        records = approval.decisions if approval is not None else []
        record = next((r for r in records if r.decision_id == decision_id), None)
        if approval is None or record is None:
            return None
        # The amount at that decision: the original, as lowered by the changes up to it.
        amount = approval.original_amount_cents or approval.amount_cents
        for earlier in records:
            amount = earlier.new_amount_cents or amount
            if earlier is record:
                break
        return ApprovalDecisionResult(
            request_id=record.request_id,
            decision_id=record.decision_id,
            action=record.action,
            approved=record.action in (ApprovalAction.APPROVE, ApprovalAction.REQUEST_CHANGES),
            approver=record.approver,
            decided_at=record.decided_at,
            level=record.level,
            level_name=record.level_name,
            gate=GateStatus.OPEN,  # it did not close the gate: the closing decision is another
            amount_cents=amount,
        )

    # --- Temporal plumbing --------------------------------------------------------------------

    async def _case_input(self, handle: WorkflowHandle[Any, Any], spec: Process) -> Any:
        """The case's input, from the first event of its history; None if it cannot be read."""
        try:
            async for event in handle.fetch_history_events(page_size=1, rpc_timeout=RPC_TIMEOUT):
                payloads = event.workflow_execution_started_event_attributes.input.payloads
                decoded = await self._client.data_converter.decode(list(payloads), [spec.input])
                return decoded[0] if decoded and isinstance(decoded[0], spec.input) else None
        except (RPCError, RuntimeError, ValueError, TypeError) as err:
            log.info("case_input_unavailable", case_id=handle.id, error=str(err))
        return None

    async def _until_outcome(self, case_id: str, wait: timedelta) -> None:
        deadline = time.monotonic() + wait.total_seconds()
        while True:
            description, _ = await self._describe_case(case_id)
            if description.status != WorkflowExecutionStatus.RUNNING:
                return
            if description.typed_search_attributes.get(sa.OUTCOME):
                return
            left = deadline - time.monotonic()
            if left <= 0:
                return
            await asyncio.sleep(min(CASE_WAIT_POLL_S, left))

    def _handle(self, case_id: str, run_id: str | None, spec: Process) -> WorkflowHandle[Any, Any]:
        return self._client.get_workflow_handle(case_id, run_id=run_id, result_type=spec.result)

    async def _describe_case(self, case_id: str) -> tuple[WorkflowExecutionDescription, Process]:
        """The case's execution and its process; CaseNotFound for a workflow of no process."""
        try:
            description = await self._client.get_workflow_handle(case_id).describe(
                rpc_timeout=RPC_TIMEOUT
            )
        except (RPCError, RuntimeError) as err:
            raise self._translate(err, case_id) from err
        if description.workflow_type not in self._processes:
            raise CaseNotFound(case_id)
        return description, self._processes.get(description.workflow_type)

    async def _describe(self, case_id: str) -> WorkflowExecutionDescription:
        return (await self._describe_case(case_id))[0]

    async def _query_state(
        self,
        handle: WorkflowHandle[Any, Any],
        spec: Process,
        timeout: timedelta = QUERY_TIMEOUT,
    ) -> CaseState:
        """The case's `get_state`; TemporalUnavailable when no worker answers within
        `timeout`."""
        case_id = handle.id
        try:
            return await _bounded(
                handle.query("get_state", result_type=spec.state, rpc_timeout=timeout),
                timeout,
            )
        except (WorkflowQueryFailedError, WorkflowQueryRejectedError) as err:
            raise TemporalUnavailable(f"case '{case_id}' could not answer: {err}") from err
        except TimeoutError:
            raise TemporalUnavailable(
                f"case '{case_id}' did not answer within {int(timeout.total_seconds())}s;"
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
        if isinstance(err, RPCError) and err.status in _PUSHBACK:
            # The server pushes back (too many updates in flight on one case, a case whose
            # workflow task is failing): the request may well succeed later, so say retry.
            return TemporalUnavailable(f"Temporal cannot take this now: {err.message}")
        if isinstance(err, RPCError) and err.status == RPCStatusCode.INVALID_ARGUMENT:
            return InvalidRequest(err.message)
        # Anything else is a bug or an outage nobody planned for: let it surface as is.
        raise err


def _refuse_unless_awaiting(case_id: str, state: CaseState) -> None:
    verified = bool(getattr(state, "verified", False))
    # Locked, or already with the service desk: an unverified case asks a person only then.
    if state.status == PasswordResetStatus.LOCKED or (
        state.status == PasswordResetStatus.AWAITING_APPROVAL and not verified
    ):
        raise VerificationLocked(case_id)
    if state.status != PasswordResetStatus.AWAITING_CODE or verified:
        raise CodeNotAwaited(
            case_id, f"case '{case_id}' is not waiting for a code (status {state.status})"
        )


def _code_outcome(case_id: str, checked: CodeAttemptResult) -> CodeOutcome:
    if checked.verified:
        return CodeOutcome.VERIFIED
    if checked.reason == "not_waiting":
        # Accepted as the case stopped waiting (locked by another attempt, or just expired).
        if checked.status == PasswordResetStatus.LOCKED:
            raise VerificationLocked(case_id)
        raise CodeNotAwaited(case_id, f"case '{case_id}' stopped waiting for a code")
    if checked.reason == "expired":
        return CodeOutcome.EXPIRED
    if checked.status == PasswordResetStatus.LOCKED:
        return CodeOutcome.LOCKED
    return CodeOutcome.WRONG_CODE


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
        process=attributes.get(sa.PROCESS),
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
