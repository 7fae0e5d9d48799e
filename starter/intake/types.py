"""What a channel sends the intake (`IncomingMessage`) and what it answers (`MessageAck`)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from workflows.contracts.documents import DOCUMENT_ID_PATTERN
from workflows.contracts.text import VisibleText, text_limits

__all__ = ["CHANNELS", "Channel", "IncomingMessage", "MessageAck"]

Channel = Literal["email", "chat", "web", "voice"]
CHANNELS: tuple[str, ...] = ("email", "chat", "web", "voice")
MESSAGE_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"

_Sender = Annotated[
    str,
    StringConstraints(strip_whitespace=True, pattern=r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$"),
]
_Conversation = Annotated[
    str, StringConstraints(strip_whitespace=True, pattern=r"^[A-Za-z0-9._:@/+-]{1,200}$")
]
_Text = Annotated[VisibleText, text_limits(5_000)]
_DocumentId = Annotated[str, StringConstraints(pattern=DOCUMENT_ID_PATTERN)]


class IncomingMessage(BaseModel):
    """One message from a customer or an employee, on any channel."""

    model_config = ConfigDict(extra="forbid")

    channel: Channel = Field(examples=["email"])
    sender: _Sender = Field(
        description="A customer id (C-1002), an employee's user name (ana.lima), or an email "
        "address resolved to one of them (customers first, then the directory)",
        examples=["C-1002"],
    )
    conversation_id: _Conversation = Field(
        description="The channel's thread: messages of one conversation join its open case",
        examples=["thread-8842"],
    )
    text: _Text = Field(examples=["My blender from order O-5004 arrived broken, refund please"])
    attachments: list[_DocumentId] = Field(
        default_factory=list,
        max_length=5,
        description="Documents stored earlier (POST /documents); a refund takes the first as "
        "its receipt (`attachment_id`)",
    )
    message_id: Annotated[str, StringConstraints(pattern=MESSAGE_ID_PATTERN)] | None = Field(
        default=None,
        description="The channel's id of the message: the same id again returns the first "
        "acknowledgement (default: a new id)",
    )


class MessageAck(BaseModel):
    """The case a message opened or joined, and how it was read."""

    case_id: str
    process: str
    joined: bool = Field(description="True when the message joined a case already open")
    intent: str
    confidence: float
    reason: str | None = Field(
        default=None, description="Why the message went to a person, when it did"
    )
    message_id: str
    routing_version: str = Field(description="The routing file's short sha256")
