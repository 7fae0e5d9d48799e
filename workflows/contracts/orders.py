"""Payload types of the order activities shared by customer-service processes: an order as an
inquiry about it needs it. Plain pydantic that imports nothing of ours; nothing personal (the
customer is an id, a tier and a standing).
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

__all__ = ["InquiryOrder", "LookupInquiryOrderInput"]


class LookupInquiryOrderInput(BaseModel):
    case_id: str
    customer_id: str
    order_id: str | None = None
    since: datetime = Field(description="Earlier inquiries from this moment on count")


class InquiryOrder(BaseModel):
    """The order as the inquiry needs it: nothing personal about the customer."""

    found: bool
    problem: str | None = None
    order_id: str | None = None
    amount_cents: int = 0
    currency: str = "USD"
    status: str | None = None
    promised_by: datetime | None = None
    delivered_at: datetime | None = None
    customer_tier: str | None = None
    customer_standing: str | None = None
    earlier_inquiries: int = Field(default=0, description="Other cases about this order")
