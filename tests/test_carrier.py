"""The carrier connector against the embedded carrier service on a loopback port: tracking by
order reference, a parcel the carrier does not know, refusals, the circuit breaker through an
outage, and signed webhooks."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI, Request
from temporalio.exceptions import ApplicationError

from activities.carrier import CarrierClient
from core.breaker import CircuitBreakers
from core.webhook_signatures import SIGNATURE_HEADER, InvalidSignature, sign, verify
from starter.carrier_server import CarrierService, Scan, demo_shipments, serving
from tests.approvals_stack import free_port
from workflows.contracts.carrier import ShipmentStatus

pytestmark = pytest.mark.timeout(60)

TOKEN = "carrier-test-token"
SECRET = "carrier-test-webhook-secret"


def _service(**fields: Any) -> CarrierService:
    fields.setdefault("latency_ms", (0.0, 0.0))
    fields.setdefault("failure_rate", 0.0)
    service = CarrierService(token=TOKEN, **fields)
    for shipment in demo_shipments(datetime.now(UTC)):
        service.add(shipment)
    return service


@pytest.fixture
async def carrier() -> AsyncIterator[tuple[str, CarrierService]]:
    service = _service()
    async with serving(service) as url:
        yield url, service


def _client(url: str, *, threshold: int = 3, token: str = TOKEN) -> CarrierClient:
    return CarrierClient(url, token, breakers=CircuitBreakers(threshold=threshold, cooldown_s=60))


async def test_a_parcel_is_tracked_by_its_order_reference(
    carrier: tuple[str, CarrierService],
) -> None:
    url, _ = carrier
    client = _client(url)
    try:
        tracking = await client.track("O-5004", None)
        assert (True, "PC1000005004", ShipmentStatus.IN_TRANSIT) == (
            tracking.found,
            tracking.tracking_number,
            tracking.status,
        )
        assert tracking.estimated_delivery is not None
        assert tracking.estimated_delivery > datetime.now(UTC) + timedelta(days=2)
        by_number = await client.track("O-5004", "PC1000005004")
        assert tracking == by_number
        assert not (await client.track("O-9999", None)).found
        assert not (await client.track("O-9999", "PC0000000000")).found
    finally:
        await client.aclose()


async def test_a_refusal_is_not_retried_and_does_not_open_the_circuit(
    carrier: tuple[str, CarrierService],
) -> None:
    url, _ = carrier
    client = _client(url, threshold=2, token="wrong")
    try:
        for _ in range(3):
            with pytest.raises(ApplicationError) as refused:
                await client.track("O-5004", None)
            assert ("CarrierRejected", True) == (refused.value.type, refused.value.non_retryable)
        assert "closed" == await client.breakers.state(client.name)
    finally:
        await client.aclose()


async def test_an_outage_opens_the_circuit_then_a_probe_closes_it(
    carrier: tuple[str, CarrierService],
) -> None:
    url, service = carrier
    service.down = True
    client = CarrierClient(url, TOKEN, breakers=CircuitBreakers(threshold=3, cooldown_s=0.5))
    try:
        for _ in range(3):
            with pytest.raises(ApplicationError) as failed:
                await client.track("O-5004", None)
            assert ("CarrierUnavailable", False) == (failed.value.type, failed.value.non_retryable)
            assert timedelta(seconds=1) == failed.value.next_retry_delay  # the Retry-After
        asked = service.requests
        with pytest.raises(ApplicationError) as open_:
            await client.track("O-5004", None)
        assert "CarrierCircuitOpen" == open_.value.type
        assert not open_.value.non_retryable and open_.value.next_retry_delay is not None
        assert asked == service.requests  # no call while the circuit is open
        service.down = False
        for _ in range(100):  # the cooldown passes; polled with a generous bound
            await asyncio.sleep(0.1)
            try:
                tracking = await client.track("O-5004", None)
                break
            except ApplicationError as err:
                assert "CarrierCircuitOpen" == err.type
        else:
            raise AssertionError("the circuit never let a probe through")
        assert tracking.found
        assert "closed" == await client.breakers.state(client.name)
    finally:
        await client.aclose()


async def test_an_unreachable_carrier_is_retryable() -> None:
    client = _client(f"http://127.0.0.1:{free_port()}")
    try:
        with pytest.raises(ApplicationError) as failed:
            await client.track("O-5004", None)
        assert ("CarrierUnavailable", False) == (failed.value.type, failed.value.non_retryable)
    finally:
        await client.aclose()


def test_a_webhook_signature_holds_only_for_its_body_secret_and_time() -> None:
    body = b'{"id":"evt_1"}'
    header = sign(SECRET, body, timestamp=1_000_000)
    assert 1_000_000 == verify(SECRET, body, header, now=1_000_010)
    for bad_body, secret, now, header_ in [
        (b'{"id":"evt_2"}', SECRET, 1_000_010, header),
        (body, "another-secret", 1_000_010, header),
        (body, SECRET, 1_000_000 + 3600, header),
        (body, SECRET, 1_000_010, None),
        (body, SECRET, 1_000_010, "v1=abc"),
    ]:
        with pytest.raises(InvalidSignature):
            verify(secret, bad_body, header_, now=now)


async def test_a_subscribed_parcel_sends_signed_webhooks() -> None:
    received: list[tuple[bytes, str | None]] = []
    receiver = FastAPI()

    @receiver.post("/carrier/webhooks")
    async def webhook(request: Request) -> dict[str, bool]:
        received.append((await request.body(), request.headers.get(SIGNATURE_HEADER)))
        return {"ok": True}

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(receiver, host="127.0.0.1", port=port, log_level="error")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    service = _service(
        webhook_url=f"http://127.0.0.1:{port}/carrier/webhooks", webhook_secret=SECRET
    )
    try:
        async with serving(service) as url:
            client = _client(url)
            try:
                first = await client.subscribe("PC1000005008", "order_inquiry-1")
                again = await client.subscribe("PC1000005008", "order_inquiry-1")
                assert (True, True, False) == (first.subscribed, first.created, again.created)
                assert not (await client.subscribe("PC0000000000", "x")).subscribed
                # The subscription reads the parcel as it stands: a scan before it shows there.
                assert first.tracking is not None
                assert ("PC1000005008", ShipmentStatus.IN_TRANSIT) == (
                    first.tracking.tracking_number,
                    first.tracking.status,
                )
                service.scan(
                    "PC1000005008", Scan(status=ShipmentStatus.DELIVERED, description="door")
                )
                late = await client.subscribe("PC1000005008", "order_inquiry-1")
            finally:
                await client.aclose()
            await service.drain()
            assert late.tracking is not None
            assert (ShipmentStatus.DELIVERED, False) == (late.tracking.status, late.created)
            assert late.tracking.delivered_at is not None
    finally:
        server.should_exit = True
        await task
    ((body, header),) = received
    verify(SECRET, body, header)
    event = json.loads(body)
    assert ("order_inquiry-1", "delivered", "PC1000005008") == (
        event["reference"],
        event["tracker"]["status"],
        event["tracker"]["tracking_number"],
    )
