"""A message that joins a running case: the payload of signal `customer_message`, which the
intake (`POST /messages`) sends to a case whose workflow defines that signal."""

from __future__ import annotations

from pydantic import BaseModel, Field

__all__ = ["CustomerMessage"]


class CustomerMessage(BaseModel):
    message_id: str
    channel: str
    text: str
    intent: str
    confidence: float
    attachments: list[str] = Field(default_factory=list)
