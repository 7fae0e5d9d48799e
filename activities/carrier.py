"""Activities that talk to the carrier: where a parcel is, when it will arrive, and a webhook
subscription so the carrier tells the case about the parcel's next events.

The carrier is any service with the tracking API of the embedded one (`starter/carrier_server.py`,
which `podium up` runs on loopback) or a real one named by `PODIUM_CARRIER_URL` and
`PODIUM_CARRIER_TOKEN`. `CarrierClient` holds one pooled `httpx.AsyncClient` that never retries
by itself (Temporal does), with a timeout per call and a circuit breaker per provider
(`core.breaker`): after `PODIUM_CARRIER_BREAKER_THRESHOLD` consecutive failures it makes no call
for `PODIUM_CARRIER_BREAKER_COOLDOWN_S`, so a carrier outage costs the cases no time-outs.

Errors: a transport error, 408, 429 or 5xx is `CarrierUnavailable` (retryable, after the
carrier's `Retry-After`); an open circuit is `CarrierCircuitOpen` (retryable, after the cooldown
left); any other 4xx is `CarrierRejected` (non-retryable) and does not count against the
carrier's health. A parcel the carrier does not know is an answer (`found=False`), not an error.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import httpx
from pydantic_settings import BaseSettings, SettingsConfigDict
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.notifications import retry_after
from core.breaker import CircuitBreakers, CircuitOpen
from workflows.contracts.carrier import (
    ShipmentStatus,
    ShipmentTracking,
    TrackShipmentInput,
    WatchShipmentInput,
    WatchShipmentResult,
)

__all__ = ["CarrierActivities", "CarrierClient", "CarrierSettings"]


class CarrierSettings(BaseSettings):
    """Where the carrier is: `PODIUM_CARRIER_URL`, `PODIUM_CARRIER_TOKEN` (a bearer token;
    never logged), the per-call timeout and the circuit breaker's threshold and cooldown."""

    model_config = SettingsConfigDict(env_prefix="PODIUM_CARRIER_", extra="ignore")

    url: str = "http://127.0.0.1:8471"
    token: str | None = None
    name: str = "podium-carrier"
    timeout_s: float = 5.0
    breaker_threshold: int = 5
    breaker_cooldown_s: float = 30.0
    webhook_secret: str | None = None


class _Unavailable(Exception):
    def __init__(self, message: str, delay: Any = None) -> None:
        super().__init__(message)
        self.delay = delay


class CarrierClient:
    """The carrier's tracking API: parcels by order reference or number, subscriptions."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        name: str = "podium-carrier",
        timeout: httpx.Timeout | None = None,
        breakers: CircuitBreakers | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"Accept": "application/json", "User-Agent": "podium-carrier"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.name = name
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            timeout=timeout or httpx.Timeout(5.0, connect=2.0),
            # Retries are Temporal's: the transport makes exactly one attempt.
            transport=transport or httpx.AsyncHTTPTransport(retries=0),
            follow_redirects=False,
            headers=headers,
        )
        self._breakers = breakers or CircuitBreakers()

    @classmethod
    def from_settings(cls, settings: CarrierSettings) -> CarrierClient:
        return cls(
            settings.url,
            settings.token,
            name=settings.name,
            timeout=httpx.Timeout(settings.timeout_s, connect=min(2.0, settings.timeout_s)),
            breakers=CircuitBreakers(
                threshold=settings.breaker_threshold,
                cooldown_s=settings.breaker_cooldown_s,
            ),
        )

    @property
    def breakers(self) -> CircuitBreakers:
        return self._breakers

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response | None:
        """One request through the carrier's breaker; None for a 404. Only failures that say
        something about the carrier's health (no answer, 408, 429, 5xx) count against it."""
        where = f"{method} {path.split('?')[0]}"
        try:
            async with self._breakers.guard(self.name):
                try:
                    response = await self._client.request(method, path, **kwargs)
                except httpx.TransportError as err:
                    raise _Unavailable(f"carrier unreachable ({type(err).__name__})") from None
                status = response.status_code
                if status in (408, 429) or status >= 500:
                    raise _Unavailable(
                        f"carrier answered {status} to {where}", retry_after(response)
                    )
        except _Unavailable as err:
            raise ApplicationError(
                str(err), type="CarrierUnavailable", next_retry_delay=err.delay
            ) from None
        except CircuitOpen as err:
            raise ApplicationError(
                str(err),
                type="CarrierCircuitOpen",
                next_retry_delay=timedelta(seconds=max(1.0, err.retry_after)),
            ) from None
        if status == 404:
            return None
        if status >= 400:
            raise ApplicationError(
                f"carrier refused {where} with {status}", type="CarrierRejected", non_retryable=True
            )
        return response

    async def track(self, order_id: str, tracking_number: str | None) -> ShipmentTracking:
        if tracking_number:
            response = await self._call("GET", f"/v1/trackers/{tracking_number}")
            found = [response.json()] if response is not None else []
        else:
            response = await self._call("GET", "/v1/trackers", params={"reference": order_id})
            found = list(response.json().get("trackers") or []) if response is not None else []
        if not found:
            return ShipmentTracking(found=False, carrier=self.name)
        # Several parcels for one order: the one that arrives last decides.
        parcel = max(found, key=lambda p: p.get("estimated_delivery") or "")
        events = parcel.get("events") or []
        last = events[-1] if events else None
        return ShipmentTracking(
            found=True,
            carrier=str(parcel.get("carrier") or self.name),
            tracking_number=parcel["tracking_number"],
            status=_status(parcel.get("status")),
            estimated_delivery=_when(parcel.get("estimated_delivery")),
            delivered_at=_when(parcel.get("delivered_at")),
            last_event=(
                f"{last.get('status')}: {last.get('description') or '-'}" if last else None
            ),
        )

    async def subscribe(self, tracking_number: str, reference: str) -> WatchShipmentResult:
        response = await self._call(
            "POST",
            f"/v1/trackers/{tracking_number}/subscriptions",
            json={"reference": reference},
        )
        if response is None:
            return WatchShipmentResult(subscribed=False, created=False)
        # Read the parcel once the carrier holds the subscription: whatever happened to it
        # since the case last looked shows here, anything later comes as an event.
        parcel = await self.track(order_id=reference, tracking_number=tracking_number)
        return WatchShipmentResult(
            subscribed=True,
            created=response.status_code == 201,
            tracking=parcel if parcel.found else None,
        )


def _status(value: Any) -> ShipmentStatus:
    try:
        return ShipmentStatus(str(value))
    except ValueError:
        return ShipmentStatus.UNKNOWN


def _when(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) and value else None


class CarrierActivities:
    def __init__(self, client: CarrierClient) -> None:
        self._client = client

    @classmethod
    def from_env(cls) -> CarrierActivities:
        """On the carrier `PODIUM_CARRIER_URL` / `PODIUM_CARRIER_TOKEN` name (default: the
        embedded one of `podium up`)."""
        return cls(CarrierClient.from_settings(CarrierSettings()))

    @property
    def client(self) -> CarrierClient:
        return self._client

    def activities(self) -> list[Callable[..., Any]]:
        return [self.track_shipment, self.watch_shipment]

    @activity.defn(name="track_shipment")
    async def track_shipment(self, input: TrackShipmentInput) -> ShipmentTracking:
        return await self._client.track(input.order_id, input.tracking_number)

    @activity.defn(name="watch_shipment")
    async def watch_shipment(self, input: WatchShipmentInput) -> WatchShipmentResult:
        return await self._client.subscribe(input.tracking_number, input.case_id)
