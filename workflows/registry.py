"""The process registry: one entry per business process, and the only place that names them.

The worker registers every entry's workflow and checks that it has the activities the entry
needs; the HTTP API, the Python client, the CLI (through the API), the approvals inbox, the
replay tests and the history recorder read the same entries. Adding a process is its package
under `workflows/` (workflow, rules, payload types, `starting.py`), its policy file in
`policies/` when it has one, and one `Process(...)` below.

Each entry says:
- `name`: the workflow type, the value of `PodiumProcess` and the API's `/cases/{name}`;
- `title`: one line for people (`GET /processes`, `podium processes`);
- `workflow`, `request`, `input`, `state`, `result`: the workflow class, what a caller sends,
  what the workflow receives, what `get_state` answers (a `CaseState`) and what it returns;
- `prepare(request, context) -> input`: the platform's part of a new case (verified caller,
  policy file, the operator's settings);
- `describe(request) -> CaseText`: the Temporal UI's summary and details of a new case;
- `approval_card(input, state) -> ApprovalCard`: how a pending approval reads in the inbox;
- `case_id_prefix`, `policy` (the stem of `policies/<policy>.yaml`, or None), `activities`
  (the activity names its workflow calls);
- `policy_model`: the model its policy file is read as, when that is not the autonomy policy
  (`workflows.contracts.policy.PolicyDocument`);
- `case_key(request) -> str`: when set, the case's id is `case_id_prefix + case_key(request)`
  whatever idempotency key the caller sends, and a repeated request returns the first case
  (one case per subject, e.g. per terminated employee).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from workflows.access_request import starting as access_request
from workflows.access_request.types import (
    AccessRequestInput,
    AccessRequestResult,
    AccessRequestState,
)
from workflows.access_request.workflow import AccessRequestWorkflow
from workflows.access_review import starting as access_review
from workflows.access_review.types import (
    AccessReviewInput,
    AccessReviewPolicyFile,
    AccessReviewResult,
    AccessReviewState,
)
from workflows.access_review.workflow import AccessReviewWorkflow
from workflows.access_termination import starting as access_termination
from workflows.access_termination.types import (
    AccessTerminationInput,
    AccessTerminationResult,
    AccessTerminationState,
)
from workflows.access_termination.workflow import AccessTerminationWorkflow
from workflows.agent_assist import starting as agent_assist
from workflows.agent_assist.types import AgentAssistInput, AgentAssistResult, AgentAssistState
from workflows.agent_assist.workflow import AgentAssistWorkflow
from workflows.contracts.case import ApprovalCard, CaseContext, CaseState, CaseText
from workflows.handoff import starting as handoff
from workflows.handoff.types import HandoffInput, HandoffPolicyFile, HandoffResult, HandoffState
from workflows.handoff.workflow import HandoffWorkflow
from workflows.knowledge_answer import starting as knowledge_answer
from workflows.knowledge_answer.types import (
    KnowledgeAnswerInput,
    KnowledgeAnswerPolicyFile,
    KnowledgeAnswerResult,
    KnowledgeAnswerState,
)
from workflows.knowledge_answer.workflow import KnowledgeAnswerWorkflow
from workflows.order_inquiry import starting as order_inquiry
from workflows.order_inquiry.types import (
    OrderInquiryInput,
    OrderInquiryPolicyFile,
    OrderInquiryResult,
    OrderInquiryState,
)
from workflows.order_inquiry.workflow import OrderInquiryWorkflow
from workflows.password_reset import starting as password_reset
from workflows.password_reset.types import (
    PasswordResetInput,
    PasswordResetPolicyFile,
    PasswordResetResult,
    PasswordResetState,
)
from workflows.password_reset.workflow import PasswordResetWorkflow
from workflows.refund import starting as refund
from workflows.refund.types import RefundCaseInput, RefundCaseResult, RefundCaseState
from workflows.refund.workflow import RefundWorkflow

__all__ = ["PROCESSES", "Process", "Registry", "UnknownProcess"]

NAME_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
_NAME_RE = re.compile(NAME_PATTERN)


@dataclass(frozen=True)
class Process:
    name: str
    title: str
    workflow: type
    request: type[BaseModel]
    input: type[BaseModel]
    state: type[CaseState]
    result: type[BaseModel]
    prepare: Callable[[Any, CaseContext], BaseModel]
    describe: Callable[[Any], CaseText]
    approval_card: Callable[[Any, Any], ApprovalCard]
    activities: tuple[str, ...]
    case_id_prefix: str = ""
    policy: str | None = None
    policy_model: type[BaseModel] | None = None
    case_key: Callable[[Any], str] | None = None

    def __post_init__(self) -> None:
        if not _NAME_RE.fullmatch(self.name):
            raise ValueError(f"process name '{self.name}' must match {NAME_PATTERN}")
        defined = getattr(self.workflow, "__temporal_workflow_definition", None)
        if defined is not None and defined.name != self.name:
            raise ValueError(
                f"process '{self.name}' registers workflow type '{defined.name}': they must match"
            )
        if not self.case_id_prefix:
            object.__setattr__(self, "case_id_prefix", f"{self.name}-")


class UnknownProcess(LookupError):
    def __init__(self, name: str, known: Iterable[str]) -> None:
        super().__init__(f"no process named '{name}'; known: {', '.join(known)}")
        self.name = name


class Registry:
    """The processes a worker runs and a starter opens, by name, in registration order."""

    def __init__(self, processes: Iterable[Process]) -> None:
        self._by_name: dict[str, Process] = {}
        for process in processes:
            if process.name in self._by_name:
                raise ValueError(f"process '{process.name}' is registered twice")
            self._by_name[process.name] = process

    def __iter__(self) -> Iterator[Process]:
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    @property
    def names(self) -> list[str]:
        return list(self._by_name)

    def get(self, name: str) -> Process:
        try:
            return self._by_name[name]
        except KeyError:
            raise UnknownProcess(name, self._by_name) from None

    def with_process(self, process: Process) -> Registry:
        """This registry plus one more process (a new registry; this one is unchanged)."""
        return Registry([*self, process])

    @property
    def workflows(self) -> list[type]:
        return [process.workflow for process in self]

    @property
    def activity_names(self) -> set[str]:
        return {name for process in self for name in process.activities}


# Activities every process that asks people or keeps an audit trail calls.
_GATE_AND_AUDIT = ("record_audit_event", "notify_approvers", "verify_decision")

PROCESSES = Registry(
    [
        Process(
            name="refund",
            title="Refund: a customer asks for their money back",
            workflow=RefundWorkflow,
            request=refund.RefundRequest,
            input=RefundCaseInput,
            state=RefundCaseState,
            result=RefundCaseResult,
            prepare=refund.prepare,
            describe=refund.describe,
            approval_card=refund.approval_card,
            policy="refund",
            activities=(
                "open_ticket",
                "triage_request",
                "read_document",
                "lookup_order",
                "evaluate_policy",
                "update_ticket",
                "issue_refund",
                "draft_reply",
                "send_reply",
                *_GATE_AND_AUDIT,
            ),
        ),
        Process(
            name="agent_assist",
            title="Agent assist: a tool-calling assistant answers a customer's question",
            workflow=AgentAssistWorkflow,
            request=agent_assist.AgentAssistRequest,
            input=AgentAssistInput,
            state=AgentAssistState,
            result=AgentAssistResult,
            prepare=agent_assist.prepare,
            describe=agent_assist.describe,
            approval_card=agent_assist.approval_card,
            activities=(
                "store_transcript",
                "agent_next_step",
                "append_tool_result",
                "lookup_order_status",
                "create_ticket_note",
                "issue_goodwill_credit",
                *_GATE_AND_AUDIT,
            ),
        ),
        Process(
            name="order_inquiry",
            title="Delayed order: where is my parcel, with goodwill when it is late",
            workflow=OrderInquiryWorkflow,
            request=order_inquiry.OrderInquiryRequest,
            input=OrderInquiryInput,
            state=OrderInquiryState,
            result=OrderInquiryResult,
            prepare=order_inquiry.prepare,
            describe=order_inquiry.describe,
            approval_card=order_inquiry.approval_card,
            policy="order_inquiry",
            policy_model=OrderInquiryPolicyFile,
            activities=(
                "open_ticket",
                "triage_request",
                "lookup_inquiry_order",
                "track_shipment",
                "watch_shipment",
                "issue_goodwill_credit",
                "update_ticket",
                "draft_reply",
                "send_reply",
                *_GATE_AND_AUDIT,
            ),
        ),
        Process(
            name="password_reset",
            title="Password reset: an employee gets a new password after proving who they are",
            workflow=PasswordResetWorkflow,
            request=password_reset.PasswordResetRequest,
            input=PasswordResetInput,
            state=PasswordResetState,
            result=PasswordResetResult,
            prepare=password_reset.prepare,
            describe=password_reset.describe,
            approval_card=password_reset.approval_card,
            policy="password_reset",
            policy_model=PasswordResetPolicyFile,
            activities=(
                "lookup_employee",
                "send_verification_code",
                "check_verification_code",
                "retire_verification_code",
                "reset_password",
                *_GATE_AND_AUDIT,
            ),
        ),
        Process(
            name="access_request",
            title="Access request: an employee gets access to an application, approved by name",
            workflow=AccessRequestWorkflow,
            request=access_request.AccessRequestRequest,
            input=AccessRequestInput,
            state=AccessRequestState,
            result=AccessRequestResult,
            prepare=access_request.prepare,
            describe=access_request.describe,
            approval_card=access_request.approval_card,
            policy="access_request",
            activities=(
                "open_ticket",
                "lookup_employee",
                "lookup_entitlement",
                "evaluate_policy",
                "grant_access",
                "update_ticket",
                "notify_employee",
                "revoke_access",
                *_GATE_AND_AUDIT,
            ),
        ),
        Process(
            name="access_review",
            title="Access review: managers confirm or revoke the sensitive access of their reports",
            workflow=AccessReviewWorkflow,
            request=access_review.AccessReviewRequest,
            input=AccessReviewInput,
            state=AccessReviewState,
            result=AccessReviewResult,
            prepare=access_review.prepare,
            describe=access_review.describe,
            approval_card=access_review.approval_card,
            policy="access_review",
            policy_model=AccessReviewPolicyFile,
            activities=(
                "list_access_reviews",
                "revoke_membership",
                "notify_employee",
                *_GATE_AND_AUDIT,
            ),
        ),
        Process(
            name="access_termination",
            title="Access termination: an employee who left loses every access Podium granted",
            workflow=AccessTerminationWorkflow,
            request=access_termination.AccessTerminationRequest,
            input=AccessTerminationInput,
            state=AccessTerminationState,
            result=AccessTerminationResult,
            prepare=access_termination.prepare,
            describe=access_termination.describe,
            approval_card=access_termination.approval_card,
            case_key=access_termination.case_key,
            activities=("list_employee_grants", "revoke_grant", "record_audit_event"),
        ),
        Process(
            name="knowledge_answer",
            title="Knowledge answer: a question answered from the knowledge base, sources cited",
            workflow=KnowledgeAnswerWorkflow,
            request=knowledge_answer.KnowledgeAnswerRequest,
            input=KnowledgeAnswerInput,
            state=KnowledgeAnswerState,
            result=KnowledgeAnswerResult,
            prepare=knowledge_answer.prepare,
            describe=knowledge_answer.describe,
            approval_card=knowledge_answer.approval_card,
            policy="knowledge_answer",
            policy_model=KnowledgeAnswerPolicyFile,
            activities=("search_knowledge", "send_reply", *_GATE_AND_AUDIT),
        ),
        Process(
            name="handoff",
            title="Handoff: a person answers a case only a person can handle, or re-routes it",
            workflow=HandoffWorkflow,
            request=handoff.HandoffRequest,
            input=HandoffInput,
            state=HandoffState,
            result=HandoffResult,
            prepare=handoff.prepare,
            describe=handoff.describe,
            approval_card=handoff.approval_card,
            policy="handoff",
            policy_model=HandoffPolicyFile,
            activities=(
                "triage_request",
                "brief_handoff",
                "send_reply",
                "route_case",
                *_GATE_AND_AUDIT,
            ),
        ),
    ]
)
