"""Delayed-order automation rate: the share of "where is my order?" inquiries answered with no
person, on a demo stream.

    .venv/bin/python -m bench.order_inquiry --inquiries 40 --out results/order_inquiry.json

A stream of inquiries over generated orders (value, promised date, the carrier's estimate,
earlier inquiries, an angry message now and then, an exception asked for now and then; seeded,
so the same stream every run) runs through the real workflow on the time-skipping test server,
with the real connector against the embedded carrier on loopback (its latency and 5% of 503s),
the real systems-of-record activities on a temporary SQLite database and deterministic model
fakes. Each case is answered, then its parcel is delivered (a carrier event) and it closes.
Prints and writes the outcomes and the share resolved with no person.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlmodel import Session
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from activities.agent_tools import CustomerServiceTools
from activities.carrier import CarrierActivities, CarrierClient
from activities.orders import OrderInquiryActivities
from core.breaker import CircuitBreakers
from core.db import Order
from starter.carrier_server import CarrierService, Shipment, serving
from tests.conftest import TEMPORAL_TEST_SERVER, register_search_attributes
from tests.helpers import fake_draft, make_worker, real_system_activities, seeded_engine
from tests.test_order_inquiry import fake_triage
from workflows.contracts.carrier import CarrierEvent, ShipmentStatus
from workflows.order_inquiry.types import (
    OrderInquiryInput,
    OrderInquiryPolicy,
    OrderInquiryResult,
    OrderInquiryState,
)

CUSTOMERS = ["C-1001", "C-1002", "C-1003"]


def _stream(count: int, now: datetime, seed: int) -> list[dict[str, object]]:
    rng = random.Random(seed)
    stream = []
    for index in range(count):
        late = rng.choice([-2, -1, 0, 0, 1, 2, 3, 4, 5, 6, 8])  # days past the promise
        stream.append(
            {
                "order_id": f"O-{9000 + index}",
                "customer_id": rng.choice(CUSTOMERS),
                "amount_cents": rng.choice([1_999, 3_500, 6_400, 12_000, 24_900, 89_900]),
                "promised_by": now + timedelta(days=rng.randint(-5, 3)),
                "late": late,
                "angry": rng.random() < 0.1,
                "exception": rng.random() < 0.05,
            }
        )
    return stream


async def run(count: int, seed: int) -> dict[str, object]:
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter,
        test_server_existing_path=str(TEMPORAL_TEST_SERVER),
    )
    await register_search_attributes(env.client)
    now = await env.get_current_time()
    outcomes: Counter[str] = Counter()
    automated = 0
    why: Counter[str] = Counter()
    with tempfile.TemporaryDirectory() as folder:
        engine = seeded_engine(Path(folder), now=now)
        stream = _stream(count, now, seed)
        service = CarrierService(token="bench", latency_ms=(20.0, 120.0), failure_rate=0.05)
        with Session(engine) as session:
            for item in stream:
                promised = item["promised_by"]
                assert isinstance(promised, datetime)
                session.add(
                    Order(
                        id=str(item["order_id"]),
                        customer_id=str(item["customer_id"]),
                        amount_cents=int(str(item["amount_cents"])),
                        status="shipped",
                        ordered_at=promised - timedelta(days=6),
                        promised_by=promised,
                        shipped_at=promised - timedelta(days=4),
                    )
                )
                service.add(
                    Shipment(
                        tracking_number=f"PC{int(str(item['order_id'])[2:]):010d}",
                        reference=str(item["order_id"]),
                        status=ShipmentStatus.IN_TRANSIT,
                        estimated_delivery=promised + timedelta(days=int(str(item["late"]))),
                    )
                )
            session.commit()
        async with serving(service) as url:
            client = CarrierClient(url, "bench", breakers=CircuitBreakers(cooldown_s=0.5))
            activities = [
                *real_system_activities(engine),
                *CarrierActivities(client).activities(),
                *OrderInquiryActivities(engine).activities(),
                CustomerServiceTools(engine).issue_goodwill_credit,
                fake_triage,
                fake_draft,
            ]
            with ThreadPoolExecutor(max_workers=8) as executor:
                worker = make_worker(env.client, activities, executor)
                async with worker:
                    for item in stream:
                        text = "Where is my order?" + (" I am furious." if item["angry"] else "")
                        handle = await env.client.start_workflow(
                            "order_inquiry",
                            OrderInquiryInput(
                                customer_id=str(item["customer_id"]),
                                order_id=str(item["order_id"]),
                                message=text,
                                exception_requested=bool(item["exception"]),
                                requested_by="bench",
                                policy=OrderInquiryPolicy(),
                            ),
                            id=f"order_inquiry-{uuid.uuid4().hex}",
                            task_queue=worker.task_queue,
                            result_type=OrderInquiryResult,
                        )
                        state = None
                        for _ in range(600):
                            state = await handle.query("get_state", result_type=OrderInquiryState)
                            if state.outcome or state.approval is not None:
                                break
                            await asyncio.sleep(0.05)
                        assert state is not None
                        if state.outcome is None:
                            # A person's case: nobody answers in the benchmark.
                            outcomes["awaiting_person"] += 1
                            if state.assessment is not None:
                                why.update(r.split(":")[0] for r in state.assessment.reasons[1:])
                            await handle.terminate("benchmark: a person would decide")
                            continue
                        tracking = state.tracking
                        if tracking is not None and tracking.tracking_number:
                            await handle.signal(
                                "carrier_event",
                                CarrierEvent(
                                    event_id="delivered",
                                    tracking_number=tracking.tracking_number,
                                    status=ShipmentStatus.DELIVERED,
                                    occurred_at=now,
                                ),
                            )
                        result = await handle.result()
                        outcomes[result.outcome.value] += 1
                        automated += result.automated
            await client.aclose()
        engine.dispose()
    await env.shutdown()
    return {
        "benchmark": "order_inquiry_automation",
        "inquiries": count,
        "seed": seed,
        "automated": automated,
        "automation_rate": round(automated / count, 4) if count else 0.0,
        "outcomes": dict(sorted(outcomes.items())),
        "why_a_person": dict(why.most_common()),
        "carrier": {"requests": service.requests, "failed_503": service.failures},
        "measured_at": datetime.now(UTC).isoformat(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--inquiries", type=int, default=40)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--out", type=Path, default=Path("results/order_inquiry.json"))
    args = parser.parse_args()
    report = asyncio.run(run(args.inquiries, args.seed))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"delayed-order inquiries: {report['inquiries']}, resolved with no person: "
        f"{report['automated']} ({float(str(report['automation_rate'])):.0%})"
    )
    print(f"outcomes: {report['outcomes']}  ->  {args.out}")


if __name__ == "__main__":
    main()
