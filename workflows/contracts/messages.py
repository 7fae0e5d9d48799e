"""A message that joins a running case: the payload of signal `customer_message`, which the
intake (`POST /messages`) sends to a case whose workflow defines that signal, and the
reference the case keeps of it in its state (`JoinedMessage`)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

__all__ = ["CustomerMessage", "JoinedMessage"]


class CustomerMessage(BaseModel):
    message_id: str
    channel: str
    text: str
    intent: str
    confidence: float
    attachments: list[str] = Field(default_factory=list)


class JoinedMessage(BaseModel):
    """A message that joined the case while it ran, as the case's state keeps it: the intake's
    message id (the intake's store holds the text), its channel, when the case received it,
    and the intent the intake read."""

    message_id: str
    channel: str
    received_at: datetime
    intent: str
    attachments: list[str] = Field(default_factory=list, description="Document ids")
    text: str | None = Field(
        default=None,
        description="The words themselves, only where the case already shows the customer's "
        "message to a person (handoff); otherwise None",
    )

    def reference(self) -> str:
        """How a person's view names the message without its text."""
        return (
            f"message {self.message_id} ({self.intent}, {self.channel}, "
            f"{self.received_at:%Y-%m-%d %H:%M UTC})"
        )
