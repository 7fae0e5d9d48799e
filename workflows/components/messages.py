"""Messages that join a running case: what a process's `customer_message` signal handler keeps.

The intake (`POST /messages`) signals `customer_message` (`CustomerMessage`) to the open case of
a conversation when the customer writes again. A handler built on `join_message` issues no
command (no activity, timer or search attribute): it records the message's reference in the
case's state, so histories recorded before the signal existed still replay, and a case that
receives one runs on exactly as it would have. The case's next step reads the state.

Kept of each message: the intake's message id, channel, intent, document ids and when the case
received it. The text only where the case already shows the customer's words to a person
(`keep_text`, handoff), cut to `TEXT_LIMIT`; otherwise it stays in the intake's store.
"""

from __future__ import annotations

from datetime import datetime

from workflows.contracts.messages import CustomerMessage, JoinedMessage

__all__ = ["MAX_KEPT", "TEXT_LIMIT", "describe_messages", "join_message"]

# The state keeps the latest this many (a query answer stays small however chatty a customer is).
MAX_KEPT = 50
TEXT_LIMIT = 10_000


def join_message(
    kept: list[JoinedMessage],
    message: CustomerMessage,
    *,
    received_at: datetime,
    keep_text: bool = False,
) -> JoinedMessage | None:
    """Append `message`'s reference to `kept` (the state's list, changed in place); None when
    it is there already (the intake sent the signal again)."""
    if any(seen.message_id == message.message_id for seen in kept):
        return None
    joined = JoinedMessage(
        message_id=message.message_id,
        channel=message.channel,
        received_at=received_at,
        intent=message.intent,
        attachments=list(message.attachments),
        text=message.text[:TEXT_LIMIT] if keep_text else None,
    )
    kept.append(joined)
    del kept[:-MAX_KEPT]
    return joined


def describe_messages(kept: list[JoinedMessage]) -> list[str]:
    """The current details' line about the messages that joined (none: no line)."""
    if not kept:
        return []
    count = f"{len(kept)} message" + ("s" if len(kept) != 1 else "")
    return [f"**Customer wrote again:** {count}, the last {kept[-1].reference()}"]
