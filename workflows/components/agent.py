"""Agent loop: the reusable tool-calling step a process embeds (a model that may act, bounded).

A process builds an `AgentLoop` with its tool allowlist (name -> `ToolSpec`: the activity, the
pydantic argument model whose JSON schema the model sees, `risky`, per-tool timeout and retries),
its `AgentLimits` and the `ApprovalPolicy` for risky tools, then awaits `run(goal=...)`. Each step:

1. `agent_next_step` (activity): the model reads the transcript and answers with a final text or
   tool calls. A final text ends the loop: `completed`.
2. Each tool call, in order, is checked by the workflow before anything runs:
   - not on the allowlist (or over `max_tool_calls_per_step`): refused, audited, and the model
     is told so; nothing runs;
   - arguments that fail the tool's pydantic model: reported to the model, not run;
   - `risky`: an `ApprovalGate` (one per call, request id `tool-<step>-<n>`) asks people; the
     tool runs only once approved (with the amount an approver may have lowered); a rejection
     or an expired deadline is told to the model as a denial;
   - then the tool's activity runs with a `ToolContext` (case, customer, idempotency key
     `<transcript>:<step>:<n>`) the model cannot touch. A failure is reported to the model.
3. `append_tool_result` (activity) stores the answers; the next step reads them.

Bounded: `step_limit` when the model still calls tools at its last allowed step (those calls do
not run: nobody would read their results), `budget_exhausted` when tokens or spend reach the
limit, `needs_human` when the model fails (no chat model configured, a 4xx, retries exhausted).

History holds only references: the transcript lives in the database (`store_transcript`), and
the workflow carries an `AgentCheckpoint` (transcript id, write count, totals). When Temporal
suggests continue-as-new (or after `continue_after_steps` turns in one run) `run` returns with
`continue_as_new` set, between steps and never with a gate open; the process continues as new
with the checkpoint and calls `run(resume=...)`.

Decisions on risky tools reach the loop through the process's update: `validate_decision` in
its validator, `decide` in its handler; a closing decision answers once the tool has run.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

from workflows.components.approval import ApprovalGate, GateHooks

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel, ValidationError

    from activities.agent_types import (
        AgentStepInput,
        AgentStepResult,
        AppendToolResultInput,
        StoreTranscriptInput,
        ToolCall,
        ToolCallStatus,
        ToolContext,
        ToolDefinition,
        ToolInvocation,
        ToolResultMessage,
        TranscriptRef,
    )
    from workflows.components.agent_types import (
        AgentCheckpoint,
        AgentLimits,
        AgentOutcome,
        ToolCallRecord,
    )
    from workflows.contracts.approval import (
        ApprovalDecisionInput,
        ApprovalDecisionResult,
        ApprovalPolicy,
        ApprovalRequest,
        GateStatus,
    )

__all__ = [
    "MODEL_RETRY",
    "MODEL_TIMEOUT",
    "TOOL_RETRY",
    "TOOL_TIMEOUT",
    "AgentHooks",
    "AgentLoop",
    "AgentLoopResult",
    "ToolSpec",
]

MODEL_TIMEOUT = timedelta(minutes=2)
MODEL_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=1),
    maximum_attempts=5,
)
TRANSCRIPT_TIMEOUT = timedelta(seconds=30)
TRANSCRIPT_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=10,
)
TOOL_TIMEOUT = timedelta(seconds=30)
TOOL_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=5,
)
AGENT_ACTOR = "agent"
# What the model wrote is cut to this much in audit records and notes.
_MAX_DETAIL_CHARS = 300


@dataclass(frozen=True)
class ToolSpec:
    """One allowlisted tool. The model sees `description` and the JSON schema of `arguments`;
    the workflow validates the model's arguments with `arguments` before anything runs."""

    activity: str
    description: str
    arguments: type[BaseModel]
    result: type[BaseModel]
    risky: bool = False
    timeout: timedelta = TOOL_TIMEOUT
    retry: RetryPolicy = field(default_factory=lambda: TOOL_RETRY)
    amount_field: str | None = None  # the argument holding cents, shown to approvers

    def definition(self, name: str) -> ToolDefinition:
        return ToolDefinition(
            name=name, description=self.description, parameters=self.arguments.model_json_schema()
        )


@dataclass(frozen=True)
class AgentHooks:
    """What the loop asks of its process: `audit(action, actor=..., **detail)` records an audit
    event; `changed()` refreshes what the process shows."""

    audit: Callable[..., Awaitable[None]]
    changed: Callable[[], None] = lambda: None


@dataclass(frozen=True)
class AgentLoopResult:
    """How the loop stopped. `outcome` None: continue as new with `checkpoint`."""

    outcome: AgentOutcome | None
    checkpoint: AgentCheckpoint
    answer: str | None = None
    reason: str = ""

    @property
    def continue_as_new(self) -> bool:
        return self.outcome is None


@dataclass
class _Answer:
    status: ToolCallStatus
    payload: dict[str, Any]
    detail: str
    request_id: str | None = None


class _Stop(Exception):
    def __init__(self, outcome: AgentOutcome, reason: str) -> None:
        super().__init__(reason)
        self.outcome = outcome
        self.reason = reason


@dataclass
class _Gates:
    by_request: dict[str, ApprovalGate] = field(default_factory=dict)
    current: ApprovalGate | None = None


class AgentLoop:
    def __init__(
        self,
        *,
        process: str,
        tools: Mapping[str, ToolSpec],
        limits: AgentLimits,
        approval: ApprovalPolicy,
        requested_by: str,
        hooks: AgentHooks,
        customer_id: str | None = None,
        prompt: str | None = None,
    ) -> None:
        self.process = process
        self.limits = limits
        self.checkpoint: AgentCheckpoint | None = None
        self.calls: list[ToolCallRecord] = []
        self._tools = dict(tools)
        self._definitions = [spec.definition(name) for name, spec in self._tools.items()]
        self._approval = approval
        self._requested_by = requested_by
        self._hooks = hooks
        self._customer_id = customer_id
        self._prompt = prompt
        self._gates = _Gates()
        self._run_steps = 0

    # --- state --------------------------------------------------------------------------------

    @property
    def approval(self) -> ApprovalRequest | None:
        """The pending approval of a risky tool call (or the last one)."""
        gate = self._gates.current
        return gate.request if gate is not None else None

    @property
    def awaiting_approval(self) -> bool:
        gate = self._gates.current
        return gate is not None and gate.is_open

    def describe(self) -> list[str]:
        """Markdown lines for the process's current details."""
        lines: list[str] = []
        point = self.checkpoint
        if point is not None:
            lines.append(
                f"**Agent:** step {point.steps}/{self.limits.max_steps} · "
                f"{point.tokens:,}/{self.limits.max_tokens:,} tokens · "
                f"${point.cost_usd:.4f}/${self.limits.max_cost_usd:.4f} · run {point.runs} · "
                f"transcript `{point.transcript.transcript_id}` ({point.transcript.step} writes)"
            )
        lines.extend(
            f"- step {c.step}: `{c.name}` {c.status.value}" + (f": {c.detail}" if c.detail else "")
            for c in self.calls[-8:]
        )
        if self._gates.current is not None:
            lines.extend(self._gates.current.describe())
        return lines

    # --- decisions on risky tools -------------------------------------------------------------

    def validate_decision(
        self,
        decision: ApprovalDecisionInput,
        decision_id: str,
        *,
        encrypted: bool = False,
        check_token: bool = False,
    ) -> None:
        """For the process's update validator: ValueError when the decision cannot apply, and
        the gate's admission (`ApprovalGate.admit`: busy, or already recorded).
        `check_token`: its decision token is checked here (`gate.verify_now`), and `decide`
        is then called with `checked=True`."""
        gate = self._gate_for(decision)
        if check_token:
            decision = gate.verify_now(decision, encrypted=encrypted)
        gate.admit(decision, decision_id)

    async def decide(
        self,
        decision: ApprovalDecisionInput,
        decision_id: str,
        *,
        encrypted: bool = False,
        signed: bool = False,
        checked: bool = False,
    ) -> ApprovalDecisionResult:
        """For the process's update handler: apply, then answer once it has been carried out.
        `signed`: who decides comes from the decision's token: read from it when the validator
        `checked` it, else verified here (`gate.authenticate`; refused and audited if it does
        not hold)."""
        gate = self._gate_for(decision)
        try:
            if signed and checked:
                decision = gate.token_identity(decision)
            elif signed:
                decision = await gate.authenticate(decision, encrypted=encrypted)
            gate.accept(decision, now=workflow.now(), decision_id=decision_id, via="update")
        except ValueError as err:
            # A credential that does not hold, or a race with another decision.
            gate.refuse(decision, str(err), via="update")
            raise ApplicationError(str(err), type="DecisionRefused", non_retryable=True) from None
        await workflow.wait_condition(lambda: decision_id in gate.results)
        return gate.results[decision_id]

    def _gate_for(self, decision: ApprovalDecisionInput) -> ApprovalGate:
        gate = self._gates.by_request.get(decision.request_id)
        if gate is not None:
            return gate  # open, or closed: its validator answers a retry or says it was decided
        current = self._gates.current
        if current is None or not current.is_open:
            raise ValueError("no approval is pending for this case")
        return current  # its validator names the pending request

    # --- the loop -----------------------------------------------------------------------------

    async def run(
        self, *, goal: str | None = None, resume: AgentCheckpoint | None = None
    ) -> AgentLoopResult:
        """Converse until an outcome, or until it is time to continue as new."""
        if resume is not None:
            self.checkpoint = resume.model_copy(update={"runs": resume.runs + 1})
        elif goal is not None:
            await self._open(goal)
        else:
            raise ValueError("run needs a goal or a checkpoint to resume")
        self._hooks.changed()
        try:
            while True:
                self._check_limits()
                if self._time_to_continue():
                    return AgentLoopResult(None, self._point)
                step = await self._next_step()
                if step.answer is not None:
                    return AgentLoopResult(
                        AgentOutcome.COMPLETED, self._point, step.answer, "the model answered"
                    )
                await self._act(step)
        except _Stop as stop:
            return AgentLoopResult(stop.outcome, self._point, None, stop.reason)

    @property
    def _point(self) -> AgentCheckpoint:
        assert self.checkpoint is not None
        return self.checkpoint

    async def _open(self, goal: str) -> None:
        info = workflow.info()
        ref = TranscriptRef(transcript_id=str(workflow.uuid4()), step=0)
        ref = await workflow.execute_activity(
            "store_transcript",
            StoreTranscriptInput(
                transcript=ref,
                workflow_id=info.workflow_id,
                messages=[{"role": "user", "content": goal}],
                prompt=self._prompt,
            ),
            result_type=TranscriptRef,
            start_to_close_timeout=TRANSCRIPT_TIMEOUT,
            retry_policy=TRANSCRIPT_RETRY,
            summary="Agent: open the transcript",
        )
        self.checkpoint = AgentCheckpoint(transcript=ref)

    def _time_to_continue(self) -> bool:
        if self._run_steps == 0:
            return False  # every run makes progress, whatever the suggestion
        knob = self.limits.continue_after_steps
        return workflow.info().is_continue_as_new_suggested() or (
            knob is not None and self._run_steps >= knob
        )

    def _check_limits(self) -> None:
        point, limits = self._point, self.limits
        if point.steps >= limits.max_steps:
            raise _Stop(AgentOutcome.STEP_LIMIT, f"{limits.max_steps} model steps taken")
        if point.tokens >= limits.max_tokens:
            raise _Stop(
                AgentOutcome.BUDGET_EXHAUSTED,
                f"{point.tokens:,} tokens used of {limits.max_tokens:,}",
            )
        if point.cost_micro_usd >= limits.max_cost_micro_usd:
            raise _Stop(
                AgentOutcome.BUDGET_EXHAUSTED,
                f"${point.cost_usd:.4f} spent of ${limits.max_cost_usd:.4f}",
            )

    async def _next_step(self) -> AgentStepResult:
        point = self._point
        info = workflow.info()
        try:
            step: AgentStepResult = await workflow.execute_activity(
                "agent_next_step",
                AgentStepInput(
                    transcript=point.transcript,
                    workflow_id=info.workflow_id,
                    case_id=info.workflow_id,
                    tools=self._definitions,
                ),
                result_type=AgentStepResult,
                start_to_close_timeout=MODEL_TIMEOUT,
                retry_policy=MODEL_RETRY,
                summary=f"Agent step {point.steps + 1}",
            )
        except ActivityError as err:
            reason = _cause(err)
            await self._hooks.audit("agent_model_failed", step=point.steps + 1, error=reason)
            raise _Stop(AgentOutcome.NEEDS_HUMAN, reason) from None
        self._run_steps += 1
        self.checkpoint = point.model_copy(
            update={
                "transcript": step.transcript,
                "steps": point.steps + 1,
                "tokens_in": point.tokens_in + step.tokens_in,
                "tokens_out": point.tokens_out + step.tokens_out,
                "cost_micro_usd": point.cost_micro_usd + step.cost_micro_usd,
                "tool_calls": point.tool_calls + len(step.tool_calls),
            }
        )
        await self._hooks.audit(
            "agent_step",
            actor=AGENT_ACTOR,
            step=self._point.steps,
            model=step.model,
            tool_calls=[call.name for call in step.tool_calls],
            final=step.answer is not None,
            tokens_in=step.tokens_in,
            tokens_out=step.tokens_out,
            cost_micro_usd=step.cost_micro_usd,
            transcript_step=step.transcript.step,
        )
        self._hooks.changed()
        return step

    async def _act(self, step: AgentStepResult) -> None:
        """Answer every tool call of the step, then store the answers in one write."""
        point = self._point
        try:
            # Nobody would read the results: the tools of a step past the limits do not run.
            self._check_limits()
        except _Stop as stop:
            stop.reason += "; the tool calls of the last step were not run"
            raise
        results: list[ToolResultMessage] = []
        for index, call in enumerate(step.tool_calls, start=1):
            answer = await self._answer(call, point.steps, index)
            self.calls.append(
                ToolCallRecord(
                    step=point.steps,
                    tool_call_id=call.id,
                    name=call.name[:64],
                    status=answer.status,
                    detail=answer.detail[:_MAX_DETAIL_CHARS],
                    approval_request_id=answer.request_id,
                )
            )
            results.append(
                ToolResultMessage(
                    tool_call_id=call.id,
                    name=call.name,
                    status=answer.status,
                    content=json.dumps(answer.payload, separators=(",", ":")),
                )
            )
            self._hooks.changed()
        ref: TranscriptRef = await workflow.execute_activity(
            "append_tool_result",
            AppendToolResultInput(
                transcript=self._point.transcript,
                workflow_id=workflow.info().workflow_id,
                results=results,
            ),
            result_type=TranscriptRef,
            start_to_close_timeout=TRANSCRIPT_TIMEOUT,
            retry_policy=TRANSCRIPT_RETRY,
            summary=f"Agent: store {len(results)} tool result(s)",
        )
        self.checkpoint = self._point.model_copy(update={"transcript": ref})

    async def _answer(self, call: ToolCall, step: int, index: int) -> _Answer:
        audit = self._hooks.audit
        spec = self._tools.get(call.name)
        if spec is None or index > self.limits.max_tool_calls_per_step:
            why = (
                f"the tool '{call.name}' is not available; use only: {', '.join(self._tools)}"
                if spec is None
                else f"at most {self.limits.max_tool_calls_per_step} tool calls per step"
            )
            await audit(
                "agent_tool_refused",
                actor=AGENT_ACTOR,
                step=step,
                tool=call.name[:64],
                tool_call_id=call.id,
                arguments=call.arguments[:_MAX_DETAIL_CHARS],
                reason=why,
            )
            return _Answer(
                ToolCallStatus.REFUSED, {"error": "tool_not_allowed", "message": why}, why
            )
        try:
            arguments = spec.arguments.model_validate_json(call.arguments)
        except ValidationError as err:
            why = _validation_summary(err)
            await audit(
                "agent_tool_invalid_arguments",
                actor=AGENT_ACTOR,
                step=step,
                tool=call.name,
                tool_call_id=call.id,
                arguments=call.arguments[:_MAX_DETAIL_CHARS],
                errors=why,
            )
            return _Answer(
                ToolCallStatus.INVALID_ARGUMENTS,
                {"error": "invalid_arguments", "message": f"not run: {why}"},
                why,
            )
        approved_by: str | None = None
        request_id: str | None = None
        gate: ApprovalGate | None = None
        if spec.risky:
            request_id = f"tool-{step}-{index}"
            gate, arguments, approved_by, denial = await self._ask_people(
                request_id, call, spec, arguments
            )
            if denial is not None:
                gate.settle()
                return _Answer(
                    ToolCallStatus.DENIED,
                    {"error": "denied", "message": denial},
                    denial,
                    request_id,
                )
        answer = await self._run_tool(call, spec, arguments, step, index, approved_by)
        answer.request_id = request_id
        if gate is not None:
            gate.settle()  # the closing decision's update answers now that the tool has run
        return answer

    async def _ask_people(
        self, request_id: str, call: ToolCall, spec: ToolSpec, arguments: BaseModel
    ) -> tuple[ApprovalGate, BaseModel, str | None, str | None]:
        """Open a gate for one risky call: (gate, arguments to run with, approver, denial)."""
        hooks = self._hooks
        gate = ApprovalGate(
            process=self.process, hooks=GateHooks(audit=hooks.audit, changed=hooks.changed)
        )
        self._gates.by_request[request_id] = gate
        self._gates.current = gate
        shown = arguments.model_dump_json()
        amount = getattr(arguments, spec.amount_field) if spec.amount_field else None
        request = gate.open_request(
            request_id=request_id,
            now=workflow.now(),
            policy=self._approval,
            requested_by=self._requested_by,
            recommendation=f"run {call.name}",
            reasons=[f"The assistant asks to run {call.name} with {shown}"],
            subject=f"Assistant tool call {call.name} {shown[:_MAX_DETAIL_CHARS]}",
            amount_cents=amount if isinstance(amount, int) else None,
        )
        await hooks.audit(
            "agent_tool_approval_requested",
            actor=AGENT_ACTOR,
            request_id=request_id,
            tool=call.name,
            tool_call_id=call.id,
            arguments=arguments.model_dump(mode="json"),
            requested_by=request.requested_by,
            levels=[level.name for level in self._approval.levels],
            deadline_at=request.deadline_at.isoformat(),
        )
        outcome = await gate.run()
        approved = outcome.status == GateStatus.APPROVED or outcome.approved_by_default
        if not approved:
            closing = outcome.closing
            why = (
                f"rejected by a person: {closing.reason}"
                if outcome.status == GateStatus.REJECTED and closing is not None
                else "no decision before the approval deadline"
            )
            denial = (
                f"{call.name} was not run: {why}. Do not ask for it again; tell the customer "
                "a person will follow up."
            )
            await hooks.audit(
                "agent_tool_denied",
                actor=outcome.decided_by,
                request_id=request_id,
                tool=call.name,
                status=outcome.status.value,
                reason=why,
            )
            return gate, arguments, None, denial
        if (
            spec.amount_field
            and outcome.amount_cents is not None
            and outcome.amount_cents != amount
        ):
            # request_changes approved a lower amount: that is what runs.
            arguments = spec.arguments.model_validate(
                {**arguments.model_dump(), spec.amount_field: outcome.amount_cents}
            )
        return gate, arguments, outcome.decided_by, None

    async def _run_tool(
        self,
        call: ToolCall,
        spec: ToolSpec,
        arguments: BaseModel,
        step: int,
        index: int,
        approved_by: str | None,
    ) -> _Answer:
        info = workflow.info()
        point = self._point
        context = ToolContext(
            case_id=info.workflow_id,
            workflow_id=info.workflow_id,
            customer_id=self._customer_id,
            idempotency_key=f"{point.transcript.transcript_id}:{step}:{index}",
            approved_by=approved_by,
        )
        try:
            result = await workflow.execute_activity(
                spec.activity,
                ToolInvocation(context=context, arguments=arguments.model_dump(mode="json")),
                result_type=spec.result,
                start_to_close_timeout=spec.timeout,
                retry_policy=spec.retry,
                summary=f"Agent tool {call.name}",
            )
        except ActivityError as err:
            reason = _cause(err)
            await self._hooks.audit(
                "agent_tool_failed",
                actor=AGENT_ACTOR,
                step=step,
                tool=call.name,
                tool_call_id=call.id,
                error=reason,
            )
            return _Answer(
                ToolCallStatus.FAILED, {"error": "tool_failed", "message": reason}, reason
            )
        payload = result.model_dump(mode="json")
        await self._hooks.audit(
            "agent_tool_ran",
            actor=approved_by or AGENT_ACTOR,
            step=step,
            tool=call.name,
            tool_call_id=call.id,
            arguments=arguments.model_dump(mode="json"),
            result=payload,
        )
        return _Answer(ToolCallStatus.OK, payload, "")


def _cause(err: ActivityError) -> str:
    cause = err.cause
    if isinstance(cause, ApplicationError):
        return cause.message
    return str(cause or err)


def _validation_summary(err: ValidationError) -> str:
    parts = []
    for item in err.errors(include_url=False, include_input=False):
        location = ".".join(str(part) for part in item["loc"]) or "(root)"
        parts.append(f"{location}: {item['msg']}")
    return "; ".join(parts)[:_MAX_DETAIL_CHARS]
