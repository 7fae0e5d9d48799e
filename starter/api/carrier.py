"""The carrier's webhook:

    POST /carrier/webhooks     a carrier event on a parcel a case watches (signed by the carrier)

No bearer token: the carrier signs the body with the shared secret
(`PODIUM_CARRIER_WEBHOOK_SECRET`, header `Podium-Signature`, `core.webhook_signatures`); an
unsigned, forged or stale request is a 401 problem and reaches no case. A signed event names the
case that subscribed (`reference`) and is signalled to it (`carrier_event`); the case ignores
repeats and other parcels.
"""

# No `from __future__ import annotations`: FastAPI reads the parameter types at run time.

from datetime import UTC, datetime
from typing import Any

import structlog
from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, ValidationError
from temporalio.service import RPCError

from activities.carrier import CarrierSettings
from core.webhook_signatures import SIGNATURE_HEADER, InvalidSignature, verify
from starter.api.deps import Podium
from workflows.contracts.carrier import CarrierEvent, ShipmentStatus

__all__ = ["WEBHOOK_PATH", "WebhookReceipt", "router"]

log = structlog.get_logger()

WEBHOOK_PATH = "/carrier/webhooks"
CASE_PREFIX = "order_inquiry-"  # the processes whose cases subscribe to parcels


class WebhookReceipt(BaseModel):
    received: bool
    case_id: str | None = None


def _event(body: dict[str, Any]) -> tuple[str, CarrierEvent]:
    tracker = body.get("tracker") or {}
    estimated = tracker.get("estimated_delivery")
    event = CarrierEvent(
        event_id=str(body.get("id") or ""),
        tracking_number=str(tracker.get("tracking_number") or ""),
        status=ShipmentStatus(str(tracker.get("status") or "unknown")),
        occurred_at=datetime.fromisoformat(str(body.get("occurred_at")))
        if body.get("occurred_at")
        else datetime.now(UTC),
        estimated_delivery=datetime.fromisoformat(estimated) if estimated else None,
    )
    return str(body.get("reference") or ""), event


def router() -> APIRouter:
    routes = APIRouter(tags=["carrier"])

    @routes.post(WEBHOOK_PATH, response_model=WebhookReceipt)
    async def carrier_webhook(request: Request, podium: Podium) -> WebhookReceipt:
        """A carrier event, signed by the carrier: signalled to the case that watches it."""
        body = await request.body()
        secret = CarrierSettings().webhook_secret or ""
        try:
            verify(secret, body, request.headers.get(SIGNATURE_HEADER))
        except InvalidSignature as err:
            log.warning("carrier_webhook_refused", reason=str(err))
            raise HTTPException(401, "the webhook is not signed by the carrier") from None
        try:
            case_id, event = _event(await request.json())
        except (ValueError, ValidationError):
            raise HTTPException(422, "not a carrier event") from None
        if not case_id.startswith(CASE_PREFIX):
            return WebhookReceipt(received=True)
        try:
            await podium.temporal.get_workflow_handle(case_id).signal("carrier_event", event)
        except RPCError as err:
            # A case that closed meanwhile: the event has nothing left to do.
            log.info("carrier_event_not_delivered", case_id=case_id, error=err.message)
            return WebhookReceipt(received=True, case_id=case_id)
        log.info("carrier_event_signalled", case_id=case_id, status=event.status.value)
        return WebhookReceipt(received=True, case_id=case_id)

    return routes
