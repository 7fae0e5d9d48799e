"""Payload types of the carrier activities and of the carrier's events a case receives.

Plain pydantic that imports nothing of ours: the carrier connector (`activities/carrier.py`),
the processes that track parcels, the API's webhook route and tests share them.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field

__all__ = [
    "CarrierEvent",
    "ShipmentStatus",
    "ShipmentTracking",
    "TrackShipmentInput",
    "WatchShipmentInput",
    "WatchShipmentResult",
]

TRACKING_NUMBER_PATTERN = r"^[A-Z0-9]{6,32}$"


class ShipmentStatus(StrEnum):
    LABEL_CREATED = "label_created"
    IN_TRANSIT = "in_transit"
    OUT_FOR_DELIVERY = "out_for_delivery"
    DELIVERED = "delivered"
    EXCEPTION = "exception"  # held, damaged, address problem: the carrier says why
    UNKNOWN = "unknown"


class TrackShipmentInput(BaseModel):
    case_id: str
    order_id: str = Field(min_length=1, max_length=64)
    tracking_number: str | None = Field(
        default=None,
        pattern=TRACKING_NUMBER_PATTERN,
        description="When known; otherwise the carrier finds the parcel by the order reference",
    )


class ShipmentTracking(BaseModel):
    """What the carrier reports on one parcel."""

    found: bool = Field(description="False when the carrier knows no parcel for the order")
    carrier: str
    tracking_number: str | None = None
    status: ShipmentStatus = ShipmentStatus.UNKNOWN
    estimated_delivery: datetime | None = None
    delivered_at: datetime | None = None
    last_event: str | None = Field(default=None, description="The carrier's latest scan, as text")


class WatchShipmentInput(BaseModel):
    """Ask the carrier to send its events on a parcel to Podium's webhook, for a case."""

    case_id: str
    tracking_number: str = Field(pattern=TRACKING_NUMBER_PATTERN)


class WatchShipmentResult(BaseModel):
    subscribed: bool
    created: bool = Field(description="False when the case was subscribed already")
    tracking: ShipmentTracking | None = Field(
        default=None,
        description="The parcel as the carrier reports it once the subscription holds (every "
        "later change comes as an event): a scan between the case's last look and the "
        "subscription shows here. None when it was not read.",
    )


class CarrierEvent(BaseModel):
    """A carrier's event on a parcel, as the API hands a signed webhook to the case (signal
    `carrier_event`)."""

    event_id: str = Field(min_length=1, max_length=100)
    tracking_number: str = Field(pattern=TRACKING_NUMBER_PATTERN)
    status: ShipmentStatus
    occurred_at: datetime
    estimated_delivery: datetime | None = None
