"""What the model gateway can be asked to do: one request and one output model per task.

The output models double as the JSON schemas sent to LLM providers (structured outputs, strict
mode: every field required, no extra properties) and as the validators of their replies. A
request may add checks of its own through `validation_context()`: a drafted reply, for instance,
must keep every fact (amount, order id) of the template it improves.
"""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from activities.types import Intent, Sentiment

__all__ = [
    "TASK_OUTPUTS",
    "DraftOutput",
    "DraftRequest",
    "ExtractOutput",
    "ExtractRequest",
    "IntentOutput",
    "IntentRequest",
    "SentimentOutput",
    "SentimentRequest",
    "SummaryOutput",
    "SummaryRequest",
    "Task",
    "TaskOutput",
    "TaskRequest",
]


class Task(StrEnum):
    INTENT = "intent"
    SENTIMENT = "sentiment"
    DRAFT = "draft"
    # Text in, structured fields out / the key sentences out. (OCR is not a gateway task: the
    # OpenAI-compatible provider sends text, and receipts are images; `read_document` runs
    # the embedded reader and records its ledger row as task "ocr".)
    EXTRACT = "extract"
    SUMMARY = "summary"


class TaskRequest(BaseModel):
    """What a provider is given. Sent to LLMs as JSON: keep secrets and internal notes out."""

    def validation_context(self) -> dict[str, Any]:
        return {}


class TaskOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def threshold_confidence(self) -> float | None:
        """How sure the model is, for tasks gated by a confidence threshold."""
        return None


class IntentRequest(TaskRequest):
    text: str


class IntentOutput(TaskOutput):
    intent: Intent
    confidence: float = Field(ge=0.0, le=1.0)

    def threshold_confidence(self) -> float | None:
        return self.confidence


class SentimentRequest(TaskRequest):
    text: str


class SentimentOutput(TaskOutput):
    sentiment: Sentiment
    score: float = Field(ge=-1.0, le=1.0)


class DraftRequest(TaskRequest):
    template: str
    customer_name: str
    order_id: str | None = None
    amount: str | None = Field(default=None, description="Formatted, e.g. '$129.00'")
    draft: str = Field(description="The reply rendered from the approved template")

    def validation_context(self) -> dict[str, Any]:
        facts = [fact for fact in (self.order_id, self.amount) if fact and fact in self.draft]
        return {"required_facts": facts}


class DraftOutput(TaskOutput):
    text: str

    @field_validator("text")
    @classmethod
    def _keeps_the_facts(cls, text: str, info: ValidationInfo) -> str:
        if not text.strip():
            raise ValueError("the reply is empty")
        context = info.context if isinstance(info.context, dict) else {}
        missing = [fact for fact in context.get("required_facts", []) if fact not in text]
        if missing:
            raise ValueError(f"the reply must keep these facts verbatim: {', '.join(missing)}")
        return text.strip()


class ExtractRequest(TaskRequest):
    text: str
    today: date | None = Field(default=None, description="Resolves relative dates")
    expected: list[str] | None = Field(
        default=None, description="The fields the caller needs (see EXTRACTED_FIELD_NAMES)"
    )


class ExtractOutput(TaskOutput):
    """`ExtractedFields` as a strict schema: every field present, null when not found."""

    order_id: str | None = Field(description="Canonical order id, e.g. 'O-5004'")
    amount_cents: int | None = Field(ge=0, description="First amount, in cents")
    currency: str | None = Field(description="ISO 4217 code of that amount")
    dates: list[date] = Field(description="Every date, in order of mention")
    employee: str | None = Field(description="Employee id or full name")
    system_name: str | None = Field(description="IT/SaaS system named")
    email: str | None
    confidence: float = Field(ge=0.0, le=1.0)

    def threshold_confidence(self) -> float | None:
        return self.confidence


class SummaryRequest(TaskRequest):
    text: str
    max_sentences: int = Field(default=2, ge=1, le=10)


class SummaryOutput(TaskOutput):
    text: str
    sentences: list[str]
    confidence: float = Field(ge=0.0, le=1.0)


TASK_OUTPUTS: dict[Task, type[TaskOutput]] = {
    Task.INTENT: IntentOutput,
    Task.SENTIMENT: SentimentOutput,
    Task.DRAFT: DraftOutput,
    Task.EXTRACT: ExtractOutput,
    Task.SUMMARY: SummaryOutput,
}
