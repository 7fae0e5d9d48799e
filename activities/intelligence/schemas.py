"""Payloads of the embedded extraction, summary and OCR models.

Pure pydantic, no I/O: the model gateway returns these from its activities and workflows import
them as payload types. Money is integer cents (minor units times 100 for every currency, as in
`activities.types`), dates are calendar dates without a time zone, and every result names the
model that produced it and how sure that model is, in [0, 1].
"""

from __future__ import annotations

from datetime import date

from pydantic import BaseModel, Field

__all__ = ["CaseSummary", "ExtractedFields", "OcrDocument"]


class ExtractedFields(BaseModel):
    """Structured fields found in a customer or employee message."""

    order_id: str | None = Field(default=None, description="Canonical order id, e.g. 'O-5004'")
    amount_cents: int | None = Field(default=None, ge=0, description="First amount, in cents")
    currency: str | None = Field(default=None, description="ISO 4217 code of that amount")
    dates: list[date] = Field(default_factory=list, description="Every date, in order of mention")
    employee: str | None = Field(
        default=None, description="Employee id (e.g. 'E-1234') or full name, for EX requests"
    )
    system_name: str | None = Field(
        default=None, description="Canonical name of an IT/SaaS system, e.g. 'Salesforce'"
    )
    email: str | None = None
    confidence: float = Field(ge=0.0, le=1.0)
    model: str = Field(description="Which model produced the result")


class CaseSummary(BaseModel):
    """An extractive summary: sentences of the original text, in their original order."""

    text: str
    sentences: list[str] = Field(default_factory=list)
    confidence: float = Field(ge=0.0, le=1.0)
    model: str


class OcrDocument(BaseModel):
    """The text of a receipt or invoice image and the fields read from it."""

    text: str = Field(description="All recognised lines, top to bottom, joined by newlines")
    lines: list[str] = Field(default_factory=list)
    order_id: str | None = None
    total_cents: int | None = Field(default=None, ge=0)
    currency: str | None = None
    document_date: date | None = None
    confidence: float = Field(ge=0.0, le=1.0)
    model: str
