"""The intake: every message, on any channel, triaged once and routed to the case it opens or
joins (`POST /messages`, `PodiumClient.send_message`, `podium message`)."""

from starter.intake.routing import RoutingTable, load_routing
from starter.intake.service import Intake, SenderUnknown
from starter.intake.types import IncomingMessage, MessageAck

__all__ = [
    "IncomingMessage",
    "Intake",
    "MessageAck",
    "RoutingTable",
    "SenderUnknown",
    "load_routing",
]
