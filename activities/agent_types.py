"""Payload types of the tool-calling agent: transcript references, model turns, tool calls, and
the example customer-service tools' arguments and results.

A leaf like `activities.types`: pydantic only. The transcript itself (the message list) never
appears here except in `LoadTranscriptResult`, which is for callers outside workflows; workflows
carry a `TranscriptRef`.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "MAX_GOODWILL_CREDIT_CENTS",
    "AgentStepInput",
    "AgentStepResult",
    "AppendToolResultInput",
    "CreateTicketNoteArgs",
    "CreateTicketNoteInput",
    "CreateTicketNoteResult",
    "IssueGoodwillCreditArgs",
    "IssueGoodwillCreditInput",
    "IssueGoodwillCreditResult",
    "LoadTranscriptInput",
    "LoadTranscriptResult",
    "LookupOrderStatusArgs",
    "LookupOrderStatusInput",
    "LookupOrderStatusResult",
    "StoreTranscriptInput",
    "ToolCall",
    "ToolCallStatus",
    "ToolContext",
    "ToolDefinition",
    "ToolInvocation",
    "ToolResultMessage",
    "TranscriptRef",
]

# The largest goodwill credit the agent may even propose; a person approves every one.
MAX_GOODWILL_CREDIT_CENTS = 5_000


# --- Transcript ---------------------------------------------------------------------------------


class TranscriptRef(BaseModel):
    """Where a conversation lives: transcript id and the last write (`step`) it includes."""

    transcript_id: str = Field(min_length=1, max_length=64)
    step: int = Field(default=0, ge=0, description="Writes so far; 0 = nothing stored yet")


class StoreTranscriptInput(BaseModel):
    """Append messages (OpenAI chat format) to the transcript after `transcript.step`. With
    `prompt`, the system prompt `config/prompts/<prompt>.md` goes first (opening writes)."""

    transcript: TranscriptRef
    workflow_id: str
    messages: list[dict[str, Any]] = Field(default_factory=list)
    prompt: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_]{0,63}$")


class LoadTranscriptInput(BaseModel):
    transcript: TranscriptRef
    last: int | None = Field(default=None, ge=1, description="Only the last N messages")


class LoadTranscriptResult(BaseModel):
    """The messages (for APIs and tests; a workflow that loads them puts them in its history)."""

    transcript: TranscriptRef
    messages: list[dict[str, Any]]
    total: int = Field(description="Messages in the transcript, before `last` was applied")


# --- Model turns --------------------------------------------------------------------------------


class ToolDefinition(BaseModel):
    """A tool as the model sees it (OpenAI function calling)."""

    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str
    parameters: dict[str, Any] = Field(description="JSON schema of the arguments")

    def openai(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }


class AgentStepInput(BaseModel):
    transcript: TranscriptRef
    workflow_id: str
    case_id: str
    tools: list[ToolDefinition] = Field(default_factory=list, description="The allowlist")


class ToolCall(BaseModel):
    """A function call the model asked for. `arguments` is JSON text, unvalidated."""

    id: str
    name: str
    arguments: str = "{}"


class AgentStepResult(BaseModel):
    """What the model decided, small: the transcript holds the full assistant message."""

    transcript: TranscriptRef
    answer: str | None = Field(default=None, description="The final answer, when no tool calls")
    tool_calls: list[ToolCall] = Field(default_factory=list)
    model: str
    tokens_in: int = 0
    tokens_out: int = 0
    cost_micro_usd: int = 0
    replayed: bool = Field(
        default=False, description="A retry: the reply an earlier attempt stored, not re-asked"
    )


class ToolCallStatus(StrEnum):
    OK = "ok"
    REFUSED = "refused"  # not on the allowlist (or over the per-step limit)
    INVALID_ARGUMENTS = "invalid_arguments"
    DENIED = "denied"  # a person rejected it, or the approval expired
    FAILED = "failed"  # the tool's activity failed


class ToolResultMessage(BaseModel):
    """The answer to one tool call, as the model will read it."""

    tool_call_id: str
    name: str
    status: ToolCallStatus
    content: str = Field(description="JSON text")

    def message(self) -> dict[str, Any]:
        return {"role": "tool", "tool_call_id": self.tool_call_id, "content": self.content}


class AppendToolResultInput(BaseModel):
    """The answers to one step's tool calls, stored as one transcript write."""

    transcript: TranscriptRef
    workflow_id: str
    results: list[ToolResultMessage] = Field(min_length=1)


# --- Tools --------------------------------------------------------------------------------------


class ToolContext(BaseModel):
    """What the process, never the model, tells a tool: whose case, the side effect's key."""

    case_id: str
    workflow_id: str
    customer_id: str | None = None
    idempotency_key: str
    approved_by: str | None = None


class ToolInvocation(BaseModel):
    """What the agent loop sends a tool activity: its context and the validated arguments.
    Each tool declares the same shape with its own argument model (`<Tool>Input`)."""

    context: ToolContext
    arguments: dict[str, Any]


class _Arguments(BaseModel):
    # The model must not smuggle in fields the tool does not take.
    model_config = ConfigDict(extra="forbid")


class LookupOrderStatusArgs(_Arguments):
    """Look up the status of one of the customer's orders."""

    order_id: str = Field(pattern=r"^O-\d{1,12}$", description="The order id, e.g. O-5003")


class LookupOrderStatusInput(BaseModel):
    context: ToolContext
    arguments: LookupOrderStatusArgs


class LookupOrderStatusResult(BaseModel):
    found: bool
    order_id: str
    status: str | None = None
    amount_cents: int | None = None
    currency: str | None = None
    ordered_at: datetime | None = None
    promised_by: datetime | None = None
    shipped_at: datetime | None = None
    delivered_at: datetime | None = None
    late: bool | None = Field(default=None, description="Delivered (or still out) after promise")
    refunded: bool = False
    problem: str | None = None


class IssueGoodwillCreditArgs(_Arguments):
    """Credit the customer's account as a goodwill gesture (a person approves it first)."""

    amount_cents: int = Field(
        gt=0, le=MAX_GOODWILL_CREDIT_CENTS, description="Amount in cents, at most 5000 ($50)"
    )
    reason: str = Field(min_length=3, max_length=500, description="Why, in one sentence")
    order_id: str | None = Field(
        default=None, pattern=r"^O-\d{1,12}$", description="The order it relates to, if any"
    )


class IssueGoodwillCreditInput(BaseModel):
    context: ToolContext
    arguments: IssueGoodwillCreditArgs


class IssueGoodwillCreditResult(BaseModel):
    credit_id: str
    amount_cents: int
    currency: str
    created: bool = Field(description="False when an earlier attempt had written it")


class CreateTicketNoteArgs(_Arguments):
    """Add an internal note to the case's ticket (opened if the case has none)."""

    note: str = Field(min_length=1, max_length=1_000)


class CreateTicketNoteInput(BaseModel):
    context: ToolContext
    arguments: CreateTicketNoteArgs


class CreateTicketNoteResult(BaseModel):
    ticket_id: str
    notes: int = Field(description="Notes on the ticket now")
