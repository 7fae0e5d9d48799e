"""The embedded carrier: a parcel-tracking service with a carrier's latency and failures.

    python -m starter.carrier_server                 # 127.0.0.1:8471; `podium up` starts it
    PODIUM_CARRIER_TOKEN=... python -m starter.carrier_server --port 8471

What a carrier's tracking API offers, on loopback, in memory, seeded at every start with the
demo parcels (`DEMO_SHIPMENTS`, dates relative to the start):

    GET  /v1/trackers?reference=O-5004        the parcels shipped for a merchant's order
    GET  /v1/trackers/{tracking_number}       one parcel: status, estimated delivery, events
    POST /v1/trackers/{tracking_number}/subscriptions   {"reference": case id}: send this
                                              parcel's events to the webhook, naming the case
    POST /v1/shipments                        a new parcel (demo and benchmark streams)
    POST /v1/trackers/{tracking_number}/events  a scan (in transit, delayed, delivered): the
                                              parcel changes and every subscriber is told
    POST /_sim/outage {"down": true}          the carrier answers 503 until told otherwise

Every /v1 answer takes a carrier's time (`PODIUM_CARRIER_LATENCY_MS`, default 20-120 ms) and a
share of them fail with 503 and Retry-After (`PODIUM_CARRIER_FAILURE_RATE`, default 0.05).
Requests need `Authorization: Bearer <PODIUM_CARRIER_TOKEN>` when a token is set. Webhooks go
to `PODIUM_CARRIER_WEBHOOK_URL`, signed with `PODIUM_CARRIER_WEBHOOK_SECRET`
(`core.webhook_signatures`), and are delivered again a few times when the receiver fails.
Point Podium at a real carrier with `PODIUM_CARRIER_URL` instead: `podium up` then starts none.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import structlog
import uvicorn
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from core.webhook_signatures import SIGNATURE_HEADER, sign
from workflows.contracts.carrier import TRACKING_NUMBER_PATTERN, ShipmentStatus

__all__ = [
    "DEFAULT_PORT",
    "DEMO_SHIPMENTS",
    "CarrierService",
    "Shipment",
    "build_app",
    "dev_env",
    "serving",
]

log = structlog.get_logger()

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8471
CARRIER_NAME = "podium-carrier"
WEBHOOK_PATH = "/carrier/webhooks"
WEBHOOK_ATTEMPTS = 5
WEBHOOK_TIMEOUT = httpx.Timeout(5.0)


@dataclass
class Shipment:
    tracking_number: str
    reference: str
    status: ShipmentStatus
    estimated_delivery: datetime | None
    delivered_at: datetime | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    subscribers: list[str] = field(default_factory=list)

    def view(self) -> dict[str, Any]:
        return {
            "carrier": CARRIER_NAME,
            "tracking_number": self.tracking_number,
            "reference": self.reference,
            "status": self.status.value,
            "estimated_delivery": _iso(self.estimated_delivery),
            "delivered_at": _iso(self.delivered_at),
            "events": self.events,
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


# The demo parcels of the demo orders (core/seed.py): order -> (tracking number, status,
# days from now to the estimated delivery; for a delivered one, days since delivery).
DEMO_SHIPMENTS: dict[str, tuple[str, ShipmentStatus, int]] = {
    "O-5001": ("PC1000005001", ShipmentStatus.DELIVERED, -6),
    "O-5002": ("PC1000005002", ShipmentStatus.DELIVERED, -5),
    "O-5003": ("PC1000005003", ShipmentStatus.DELIVERED, -4),
    # Promised 3 days ago, now due in 3: late, and $1,299.00 (a person decides).
    "O-5004": ("PC1000005004", ShipmentStatus.IN_TRANSIT, 3),
    # Label printed, due before its promise: on time.
    "O-5005": ("PC1000005005", ShipmentStatus.LABEL_CREATED, 3),
    "O-5006": ("PC1000005006", ShipmentStatus.DELIVERED, -60),
    "O-5007": ("PC1000005007", ShipmentStatus.DELIVERED, -2),
    # Promised 4 days ago, due in 2: late beyond the grace, $64.00 (a goodwill credit).
    "O-5008": ("PC1000005008", ShipmentStatus.IN_TRANSIT, 2),
    # Promised in 3 days, due in 2: on time.
    "O-5009": ("PC1000005009", ShipmentStatus.IN_TRANSIT, 2),
}


def demo_shipments(now: datetime) -> list[Shipment]:
    found = []
    for reference, (number, status, days) in DEMO_SHIPMENTS.items():
        when = now + timedelta(days=days)
        delivered = status == ShipmentStatus.DELIVERED
        found.append(
            Shipment(
                tracking_number=number,
                reference=reference,
                status=status,
                estimated_delivery=when,
                delivered_at=when if delivered else None,
                events=[_event(status, when if delivered else now, "demo parcel")],
            )
        )
    return found


def _event(status: ShipmentStatus, at: datetime, description: str) -> dict[str, Any]:
    return {"status": status.value, "occurred_at": at.isoformat(), "description": description}


class NewShipment(BaseModel):
    reference: str = Field(min_length=1, max_length=64)
    tracking_number: str | None = Field(default=None, pattern=TRACKING_NUMBER_PATTERN)
    status: ShipmentStatus = ShipmentStatus.IN_TRANSIT
    estimated_delivery: datetime | None = None
    delivered_at: datetime | None = None


class Scan(BaseModel):
    status: ShipmentStatus
    estimated_delivery: datetime | None = None
    description: str = Field(default="", max_length=200)


class Subscription(BaseModel):
    reference: str = Field(min_length=1, max_length=200)


class Outage(BaseModel):
    down: bool


@dataclass
class CarrierService:
    """The carrier's state and behaviour; tests reach in to script a parcel's life."""

    token: str | None = None
    webhook_url: str | None = None
    webhook_secret: str | None = None
    latency_ms: tuple[float, float] = (20.0, 120.0)
    failure_rate: float = 0.05
    seed: int | None = None
    down: bool = False
    shipments: dict[str, Shipment] = field(default_factory=dict)
    requests: int = 0
    failures: int = 0
    webhooks_sent: list[dict[str, Any]] = field(default_factory=list)
    _rng: random.Random = field(default_factory=random.Random)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def add(self, shipment: Shipment) -> Shipment:
        self.shipments[shipment.tracking_number] = shipment
        return shipment

    def by_reference(self, reference: str) -> list[Shipment]:
        return [s for s in self.shipments.values() if s.reference == reference]

    def scan(self, tracking_number: str, scan: Scan, *, now: datetime | None = None) -> Shipment:
        """A new scan of the parcel: its status (and estimate) change, subscribers are told."""
        shipment = self.shipments[tracking_number]
        at = now or datetime.now(UTC)
        shipment.status = scan.status
        if scan.estimated_delivery is not None:
            shipment.estimated_delivery = scan.estimated_delivery
        if scan.status == ShipmentStatus.DELIVERED:
            shipment.delivered_at = at
        event = _event(scan.status, at, scan.description)
        shipment.events.append(event)
        for reference in shipment.subscribers:
            self._notify(shipment, reference, event)
        return shipment

    def _notify(self, shipment: Shipment, reference: str, event: dict[str, Any]) -> None:
        if not self.webhook_url or not self.webhook_secret:
            return
        body = {
            "id": f"evt_{secrets.token_hex(8)}",
            "type": "tracker.updated",
            "reference": reference,
            "occurred_at": event["occurred_at"],
            "tracker": shipment.view(),
        }
        task = asyncio.get_running_loop().create_task(self._deliver(body))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, body: dict[str, Any]) -> None:
        assert self.webhook_url and self.webhook_secret
        content = json.dumps(body, separators=(",", ":")).encode()
        async with httpx.AsyncClient(timeout=WEBHOOK_TIMEOUT) as client:
            for attempt in range(WEBHOOK_ATTEMPTS):
                headers = {
                    "Content-Type": "application/json",
                    SIGNATURE_HEADER: sign(self.webhook_secret, content),
                }
                try:
                    response = await client.post(self.webhook_url, content=content, headers=headers)
                    if response.status_code < 300:
                        self.webhooks_sent.append(body)
                        return
                    log.warning("carrier_webhook_refused", status=response.status_code)
                except httpx.HTTPError as err:
                    log.warning("carrier_webhook_failed", error=type(err).__name__)
                await asyncio.sleep(min(2**attempt * 0.5, 10.0))

    async def drain(self) -> None:
        """Wait for the webhooks under way (tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _carrier_time(self) -> bool:
        """A carrier's latency, then True when this request fails (outage or bad luck)."""
        self.requests += 1
        low, high = self.latency_ms
        if high > 0:
            await asyncio.sleep(self._rng.uniform(low, high) / 1000)
        failed = self.down or self._rng.random() < self.failure_rate
        self.failures += failed
        return failed


def build_app(service: CarrierService) -> FastAPI:
    app = FastAPI(title="Carrier (embedded)", docs_url=None, redoc_url=None)

    @app.middleware("http")
    async def carrier(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        if service.token and request.headers.get("Authorization") != f"Bearer {service.token}":
            return JSONResponse({"detail": "unauthorized"}, status_code=401)
        if request.url.path.startswith("/v1/") and await service._carrier_time():
            return JSONResponse(
                {"detail": "tracking temporarily unavailable"},
                status_code=503,
                headers={"Retry-After": "1"},
            )
        return await call_next(request)

    def _shipment(tracking_number: str) -> Shipment:
        shipment = service.shipments.get(tracking_number)
        if shipment is None:
            raise HTTPException(404, f"no parcel {tracking_number}")
        return shipment

    @app.get("/v1/trackers")
    async def trackers(reference: str) -> dict[str, Any]:
        return {"trackers": [s.view() for s in service.by_reference(reference)]}

    @app.get("/v1/trackers/{tracking_number}")
    async def tracker(tracking_number: str) -> dict[str, Any]:
        return _shipment(tracking_number).view()

    @app.post("/v1/trackers/{tracking_number}/subscriptions")
    async def subscribe(
        tracking_number: str, body: Subscription, response: Response
    ) -> dict[str, Any]:
        shipment = _shipment(tracking_number)
        created = body.reference not in shipment.subscribers
        if created:
            shipment.subscribers.append(body.reference)
        response.status_code = 201 if created else 200
        return {"tracking_number": tracking_number, "reference": body.reference, "created": created}

    @app.post("/v1/shipments", status_code=201)
    async def create(body: NewShipment) -> dict[str, Any]:
        number = body.tracking_number or f"PC{secrets.randbelow(10**12):012d}"
        if number in service.shipments:
            raise HTTPException(409, f"parcel {number} exists")
        now = datetime.now(UTC)
        shipment = service.add(
            Shipment(
                tracking_number=number,
                reference=body.reference,
                status=body.status,
                estimated_delivery=body.estimated_delivery,
                delivered_at=body.delivered_at,
                events=[_event(body.status, now, "shipment created")],
            )
        )
        return shipment.view()

    @app.post("/v1/trackers/{tracking_number}/events", status_code=201)
    async def add_scan(tracking_number: str, body: Scan) -> dict[str, Any]:
        _shipment(tracking_number)
        return service.scan(tracking_number, body).view()

    @app.post("/_sim/outage")
    async def outage(body: Outage) -> dict[str, bool]:
        service.down = body.down
        return {"down": service.down}

    return app


def service_from_env(environ: dict[str, str]) -> CarrierService:
    latency = environ.get("PODIUM_CARRIER_LATENCY_MS", "20-120")
    low, _, high = latency.partition("-")
    service = CarrierService(
        token=environ.get("PODIUM_CARRIER_TOKEN") or None,
        webhook_url=environ.get("PODIUM_CARRIER_WEBHOOK_URL") or None,
        webhook_secret=environ.get("PODIUM_CARRIER_WEBHOOK_SECRET") or None,
        latency_ms=(float(low), float(high or low)),
        failure_rate=float(environ.get("PODIUM_CARRIER_FAILURE_RATE", "0.05")),
    )
    for shipment in demo_shipments(datetime.now(UTC)):
        service.add(shipment)
    return service


def dev_env(environ: dict[str, str], api_url: str) -> dict[str, str]:
    """What `podium up` adds to its children's environment for the embedded carrier: its URL
    (port `PODIUM_CARRIER_EMBEDDED_PORT`, default 8471), a token and a webhook secret drawn for
    this run, and the API's webhook route. Empty when `PODIUM_CARRIER_URL` names a carrier."""
    if environ.get("PODIUM_CARRIER_URL"):
        return {}
    port = int(environ.get("PODIUM_CARRIER_EMBEDDED_PORT") or DEFAULT_PORT)
    return {
        "PODIUM_CARRIER_URL": f"http://{DEFAULT_HOST}:{port}",
        "PODIUM_CARRIER_TOKEN": environ.get("PODIUM_CARRIER_TOKEN") or secrets.token_urlsafe(24),
        "PODIUM_CARRIER_WEBHOOK_SECRET": environ.get("PODIUM_CARRIER_WEBHOOK_SECRET")
        or secrets.token_urlsafe(32),
        "PODIUM_CARRIER_WEBHOOK_URL": api_url.rstrip("/") + WEBHOOK_PATH,
        "PODIUM_CARRIER_EMBEDDED_PORT": str(port),
    }


@asynccontextmanager
async def serving(
    service: CarrierService, *, host: str = DEFAULT_HOST, port: int = 0
) -> AsyncIterator[str]:
    """`service` served on `host` (a free port by default) in this event loop, for tests and
    benchmarks: its base URL."""
    if port == 0:
        with socket.socket() as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
    server = uvicorn.Server(
        uvicorn.Config(
            build_app(service), host=host, port=port, log_level="warning", lifespan="off"
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # raises why uvicorn could not start
        await asyncio.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        await task
        await service.drain()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--host", default=DEFAULT_HOST, help="loopback by default")
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("PODIUM_CARRIER_EMBEDDED_PORT", DEFAULT_PORT)),
    )
    args = parser.parse_args()
    service = service_from_env(dict(os.environ))
    app = build_app(service)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", lifespan="off")


if __name__ == "__main__":
    main()
