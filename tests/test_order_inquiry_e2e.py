"""Delayed-order inquiry end to end: the HTTP API (`POST /cases/order_inquiry`), the real
Temporal dev server, the production worker wiring (`build_activities`, which reaches the carrier
through `PODIUM_CARRIER_URL`) and the embedded carrier on a loopback port, whose signed webhook
reaches the API and closes the case."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from activities.intelligence import EmbeddedModels
from core.webhook_signatures import SIGNATURE_HEADER
from starter.carrier_server import CarrierService, Scan, demo_shipments, serving
from tests.approvals_stack import ApprovalsStack, approvals_stack, eventually, free_port
from tests.auth_helpers import AsCaller
from workflows.contracts.carrier import ShipmentStatus

pytestmark = pytest.mark.timeout(180)

TOKEN = "e2e-carrier-token"
SECRET = "e2e-carrier-webhook-secret"
PORTAL = AsCaller("portal@example.com", roles=("service",))


def _value(read: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        return read()

    return probe


@pytest.fixture(scope="module")
def models() -> EmbeddedModels:
    return EmbeddedModels.load()


@pytest.fixture
def api_port() -> int:
    return free_port()


@pytest.fixture
async def carrier(monkeypatch: pytest.MonkeyPatch, api_port: int) -> AsyncIterator[CarrierService]:
    service = CarrierService(
        token=TOKEN,
        latency_ms=(5.0, 30.0),
        failure_rate=0.0,
        webhook_url=f"http://127.0.0.1:{api_port}/carrier/webhooks",
        webhook_secret=SECRET,
    )
    for shipment in demo_shipments(datetime.now(UTC)):
        service.add(shipment)
    async with serving(service) as url:
        monkeypatch.setenv("PODIUM_CARRIER_URL", url)
        monkeypatch.setenv("PODIUM_CARRIER_TOKEN", TOKEN)
        monkeypatch.setenv("PODIUM_CARRIER_WEBHOOK_SECRET", SECRET)
        yield service


@pytest.fixture
async def stack(
    dev_env: Any, tmp_path: Path, models: EmbeddedModels, carrier: CarrierService, api_port: int
) -> AsyncIterator[ApprovalsStack]:
    async with approvals_stack(dev_env, tmp_path, models, port=api_port) as running:
        yield running


async def test_a_late_order_is_credited_and_the_carriers_delivery_closes_the_case(
    stack: ApprovalsStack, carrier: CarrierService
) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60, auth=PORTAL) as http:
        started = await http.post(
            "/cases/order_inquiry",
            json={"customer_id": "C-1003", "message": "Where is my order O-5008? It is late."},
            headers={"Idempotency-Key": uuid.uuid4().hex},
        )
        assert 201 == started.status_code, started.text
        case_id = str(started.json()["case_id"])
        stack.started.append(case_id)
        case = await eventually(
            lambda: http.get(f"/cases/{case_id}"),
            lambda response: response.json()["state"]["status"] == "watching",
            timeout=90,
        )
        state = case.json()["state"]
        assert ("credit_issued", 2_500) == (state["outcome"], state["credit_cents"]), case.text

        # A forged webhook reaches no case.
        forged = await http.post(
            "/carrier/webhooks",
            content=b'{"id":"evt_x","reference":"' + case_id.encode() + b'"}',
            headers={SIGNATURE_HEADER: "t=1,v1=00", "Content-Type": "application/json"},
        )
        assert 401 == forged.status_code

        # The case shows `watching` before its subscription reaches the carrier: scan once the
        # carrier knows the subscriber (a scan before it is only seen at the next follow-up).
        parcel = carrier.shipments["PC1000005008"]
        subscribed = await eventually(
            _value(lambda: case_id in parcel.subscribers), bool, timeout=90
        )
        assert subscribed, parcel.subscribers
        carrier.scan("PC1000005008", Scan(status=ShipmentStatus.DELIVERED, description="door"))
        case = await eventually(
            lambda: http.get(f"/cases/{case_id}"),
            lambda response: response.json()["workflow_status"] == "completed",
            timeout=90,
        )
        view = case.json()
        assert "completed" == view["workflow_status"], case.text
        assert ("order_inquiry", "credit_issued") == (view["process"], view["outcome"]), case.text
        assert view["state"]["delivered_at"]
    assert 1 == len(carrier.webhooks_sent)
