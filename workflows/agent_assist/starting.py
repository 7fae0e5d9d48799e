"""How an agent-assist case starts and reads outside its workflow: the caller's request, the
input built from it (the caller as requester, the policy file's tool allowlist when the process
has one), the Temporal UI's first text and the approval card of a risky tool call.

Pure functions over pydantic models: the registry hands them to the starter. The workflow never
imports this module.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints

from workflows.agent_assist.types import AgentAssistInput, AgentAssistState
from workflows.components.agent_types import AgentLimits
from workflows.contracts.case import AiView, ApprovalCard, CaseContext, CaseText, Fact
from workflows.contracts.text import VisibleText, text_limits

__all__ = ["AgentAssistRequest", "approval_card", "describe", "prepare"]

_CustomerId = Annotated[VisibleText, text_limits(64)]
_Message = Annotated[VisibleText, text_limits(5_000)]
_Tool = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^[a-z][a-z0-9_]{0,63}$")]


class AgentAssistRequest(BaseModel):
    """A customer's question for the tool-calling assistant."""

    customer_id: _CustomerId = Field(examples=["C-1001"])
    message: _Message = Field(examples=["Where is my order O-5002? It is late."])
    tools: list[_Tool] | None = Field(
        default=None,
        max_length=20,
        description="Only these of the process's tools (default: all the policy allows)",
    )
    limits: AgentLimits = Field(default_factory=AgentLimits)


def prepare(request: AgentAssistRequest, context: CaseContext) -> AgentAssistInput:
    tools = request.tools
    allowed = (context.policy_document or {}).get("allowed_agent_tools")
    if isinstance(allowed, list):
        # The policy file narrows what the caller may ask for; it never widens it.
        names = [str(name) for name in allowed]
        tools = [tool for tool in (tools if tools is not None else names) if tool in names]
    return AgentAssistInput(
        customer_id=request.customer_id,
        message=request.message,
        requested_by=context.requested_by,
        tools=tools,
        limits=request.limits,
    )


def describe(request: AgentAssistRequest) -> CaseText:
    question = request.message.replace("$", "\\$")
    if len(question) > 500:
        question = question[:500].rstrip() + "…"
    quoted = "\n".join(f"> {line}" for line in question.splitlines())
    return CaseText(
        summary=f"Assistant answers {request.customer_id}",
        details=f"**Customer:** {request.customer_id}\n\n**Question:**\n\n{quoted}\n",
        customer_id=request.customer_id,
    )


def approval_card(case_input: AgentAssistInput | None, state: AgentAssistState) -> ApprovalCard:
    """The pending tool call: which tool and with what, as the agent loop asked for it."""
    request = state.approval
    facts: list[Fact] = []
    if request is not None and request.recommendation.startswith("run "):
        facts.append(Fact(label="Tool", value=request.recommendation.removeprefix("run ")))
    call = next(
        (
            record
            for record in reversed(state.tool_calls)
            if request is not None and record.approval_request_id == request.request_id
        ),
        None,
    )
    if call is not None and call.detail:
        facts.append(Fact(label="Call", value=call.detail))
    return ApprovalCard(
        message=case_input.message if case_input else None,
        customer_id=state.customer_id,
        amount_cents=request.amount_cents if request else None,
        facts=facts,
        ai=AiView(
            recommendation=request.recommendation if request else None,
            reasons=list(request.reasons) if request else [],
        ),
    )
