"""Where a case's activities run and in what order: the models' task queue and priorities.

**Model calls on their own task queue** (`<task queue>-models`). Every call a case makes to a
model (intent and sentiment, OCR, drafting, knowledge search, an agent's chat turn) goes to the
models' task queue, served by the models' worker (`worker.py`, role `models` or `all`), which
polls it with a queue-wide rate limit (`PODIUM_MODEL_ACTIVITIES_PER_SECOND`, Temporal's
`max_task_queue_activities_per_second`): a provider's quota holds however many workers run, and
the case workers load no model.

**Priorities** (`policies/priority.yaml`, `core.priority`). A case starts with a priority key the
starter chose from what the request says (channel, SLA); its activities inherit it. Once the case
learns more (the customer's tier, the amount at stake: what it records in its search attributes
`PodiumCustomerTier` and `PodiumAmount`) or its SLA runs short, its next activities start with
the more urgent key the policy gives them; never a less urgent one than the case's own.

One worker interceptor does both, so no process's workflow code names a queue or a key, and a new
process is routed too. Neither the task queue nor the priority of a scheduled activity is part of
what a replay checks (an activity's type and id are): a case started before them replays with
them, and model calls it left waiting on the case queue are served there by a worker of role
`all` (the default).
"""

from __future__ import annotations

from typing import Any

from temporalio import workflow
from temporalio.common import Priority, TypedSearchAttributes
from temporalio.worker import (
    ExecuteWorkflowInput,
    Interceptor,
    StartActivityInput,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
    WorkflowOutboundInterceptor,
)

from core.priority import PriorityFacts, PriorityPolicy, choose_priority
from workflows.contracts import search_attributes as sa

__all__ = [
    "MODEL_ACTIVITIES",
    "SchedulingInterceptor",
    "case_priority_facts",
    "model_task_queue",
]

# The activities that call a model (activities/ai.py, activities/agent.py, activities/knowledge.py).
MODEL_ACTIVITIES = frozenset(
    {
        "triage_request",
        "draft_reply",
        "read_document",
        "extract_fields",
        "agent_next_step",
        "search_knowledge",
        "brief_handoff",
    }
)
_HOUR = 3600.0


def model_task_queue(task_queue: str) -> str:
    """The models' task queue beside a case task queue."""
    return f"{task_queue}-models"


class SchedulingInterceptor(Interceptor):
    """Give it to the case worker. `model_queue`: where model calls go (None: the case's own
    queue). `priority`: the policy that raises a case's activities' priority (None: they
    inherit the case's)."""

    def __init__(self, model_queue: str | None, priority: PriorityPolicy | None = None) -> None:
        self.model_queue = model_queue
        self.priority = priority
        # The workflow side is given a class, not an instance: one that knows both.
        self._inbound = type(
            "_SchedulingInbound", (_Inbound,), {"model_queue": model_queue, "policy": priority}
        )

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor] | None:
        return self._inbound


def case_priority_facts(
    policy: PriorityPolicy,
    process: str,
    case_input: Any,
    attributes: TypedSearchAttributes,
    elapsed_hours: float,
) -> PriorityFacts:
    """What the policy reads of a running case: its input's facts, overlaid with what it has
    recorded since in its search attributes (tier, amount), and the SLA it has left."""
    base = PriorityFacts.of(process, case_input, policy)
    tier, amount = attributes.get(sa.CUSTOMER_TIER), attributes.get(sa.AMOUNT)
    return base.model_copy(
        update={
            "customer_tier": tier or base.customer_tier,
            "amount_cents": round(amount * 100) if amount is not None else base.amount_cents,
            "sla_left_hours": (
                None if base.sla_left_hours is None else base.sla_left_hours - elapsed_hours
            ),
        }
    )


class _Inbound(WorkflowInboundInterceptor):
    model_queue: str | None = None
    policy: PriorityPolicy | None = None
    case_input: Any = None

    def init(self, outbound: WorkflowOutboundInterceptor) -> None:
        super().init(_Outbound(outbound, self))

    async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
        self.case_input = input.args[0] if input.args else None
        return await super().execute_workflow(input)

    def activity_priority(self) -> Priority | None:
        """A more urgent key than the case's own, when the policy now gives one."""
        if self.policy is None:
            return None
        info = workflow.info()
        own = info.priority.priority_key or self.policy.default
        elapsed = (workflow.now() - info.workflow_start_time).total_seconds() / _HOUR
        facts = case_priority_facts(
            self.policy, info.workflow_type, self.case_input, info.typed_search_attributes, elapsed
        )
        key = choose_priority(self.policy, facts).key
        return Priority(priority_key=key) if key < own else None


class _Outbound(WorkflowOutboundInterceptor):
    def __init__(self, next: WorkflowOutboundInterceptor, inbound: _Inbound) -> None:
        super().__init__(next)
        self._inbound = inbound

    def start_activity(self, input: StartActivityInput) -> workflow.ActivityHandle[Any]:
        if (
            self._inbound.model_queue is not None
            and input.activity in MODEL_ACTIVITIES
            and input.task_queue is None
        ):
            input.task_queue = self._inbound.model_queue
        if input.priority.priority_key is None:
            raised = self._inbound.activity_priority()
            if raised is not None:
                input.priority = raised
        return super().start_activity(input)
