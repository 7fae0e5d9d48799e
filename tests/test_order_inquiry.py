"""The delayed-order inquiry on the time-skipping test server, against the embedded carrier on a
loopback port (real HTTP connector, retries and circuit breaker): on time, late with a goodwill
credit, a high-value order a person approves or rejects, a follow-up days later that finds the
parcel slipped and writes, the carrier's delivered event closing the case, and a carrier outage
waited out, or handed to a person.

The systems of record, tickets, credits, replies and audit are the real activities on a
temporary SQLite database seeded with the demo data; the models are deterministic fakes.

`PODIUM_RECORD_ORDER_INQUIRY_HISTORIES=1 pytest tests/test_order_inquiry.py` (re)writes the
committed `tests/histories/order_inquiry-*.json` that `test_replay.py` replays: only for a
deliberate, versioned change of the workflow.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from temporalio import activity
from temporalio.client import WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from activities.agent_tools import CustomerServiceTools
from activities.carrier import CarrierActivities, CarrierClient
from activities.orders import OrderInquiryActivities
from activities.types import Intent, Sentiment, TriageInput, TriageResult
from core.breaker import CircuitBreakers
from core.db import AuditEvent, Credit, Message
from starter.carrier_server import CarrierService, Scan, demo_shipments, serving
from tests.helpers import (
    commands_answering_signal,
    customer_message,
    fake_draft,
    history_recording,
    make_worker,
    parked,
    real_system_activities,
    seeded_engine,
    signed,
)
from worker import workflow_runner
from workflows.contracts.approval import ApprovalDecisionInput
from workflows.contracts.carrier import (
    CarrierEvent,
    ShipmentStatus,
    ShipmentTracking,
    TrackShipmentInput,
)
from workflows.order_inquiry.types import (
    OrderInquiryInput,
    OrderInquiryOutcome,
    OrderInquiryPolicy,
    OrderInquiryResult,
    OrderInquiryState,
    OrderInquiryStatus,
)
from workflows.registry import PROCESSES

pytestmark = pytest.mark.timeout(180)

HISTORIES = Path(__file__).parent / "histories"
RECORDED = history_recording("PODIUM_RECORD_ORDER_INQUIRY_HISTORIES")
TOKEN = "carrier-test-token"
Handle = WorkflowHandle[Any, OrderInquiryResult]


@activity.defn(name="triage_request")
def fake_triage(input: TriageInput) -> TriageResult:
    angry = "furious" in input.text
    return TriageResult(
        intent=Intent.ORDER_STATUS,
        intent_confidence=0.9,
        sentiment=Sentiment.NEGATIVE if angry else Sentiment.NEUTRAL,
        sentiment_score=-0.9 if angry else -0.1,
        order_ids=[],
        model="fake:triage",
    )


@pytest.fixture
async def now(time_env: WorkflowEnvironment) -> datetime:
    """The test server's clock (ahead of the wall clock once a test has skipped time): the
    demo orders and parcels are dated from it."""
    return await time_env.get_current_time()


@pytest.fixture
def engine(tmp_path: Path, now: datetime) -> Iterator[Engine]:
    engine = seeded_engine(tmp_path, now=now)
    yield engine
    engine.dispose()


@pytest.fixture
async def carrier(now: datetime) -> AsyncIterator[tuple[str, CarrierService]]:
    service = CarrierService(token=TOKEN, latency_ms=(0.0, 5.0), failure_rate=0.0)
    for shipment in demo_shipments(now):
        service.add(shipment)
    async with serving(service) as url:
        yield url, service


@asynccontextmanager
async def order_worker(
    env: WorkflowEnvironment,
    engine: Engine,
    url: str,
    wrap_track: Callable[[CarrierActivities], Callable[..., Any]] | None = None,
) -> AsyncIterator[Worker]:
    """A worker with the real carrier connector on `url` (`wrap_track`: its `track_shipment`
    in a test's wrapper)."""
    # A short cooldown: the breaker runs on the real clock while the test server skips time.
    client = CarrierClient(url, TOKEN, breakers=CircuitBreakers(threshold=3, cooldown_s=0.2))
    carrier = CarrierActivities(client)
    track = wrap_track(carrier) if wrap_track else carrier.track_shipment
    activities = [
        *real_system_activities(engine),
        track,
        carrier.watch_shipment,
        *OrderInquiryActivities(engine).activities(),
        CustomerServiceTools(engine).issue_goodwill_credit,
        fake_triage,
        fake_draft,
    ]
    with ThreadPoolExecutor(max_workers=8) as executor:
        running = make_worker(env.client, activities, executor)
        async with running:
            yield running
    await client.aclose()


@pytest.fixture
async def worker(
    time_env: WorkflowEnvironment, engine: Engine, carrier: tuple[str, CarrierService]
) -> AsyncIterator[Worker]:
    async with order_worker(time_env, engine, carrier[0]) as running:
        yield running


async def start(
    env: WorkflowEnvironment,
    worker: Worker,
    customer_id: str,
    order_id: str,
    message: str = "Where is my order?",
    **fields: Any,
) -> Handle:
    handle: Handle = await env.client.start_workflow(
        "order_inquiry",
        OrderInquiryInput(
            customer_id=customer_id,
            order_id=order_id,
            message=message,
            requested_by="portal",
            policy=fields.pop("policy", OrderInquiryPolicy()),
            **fields,
        ),
        id=f"order_inquiry-{uuid.uuid4().hex}",
        task_queue=worker.task_queue,
        result_type=OrderInquiryResult,
    )
    return handle


async def state_of(handle: Handle) -> OrderInquiryState:
    return await handle.query("get_state", result_type=OrderInquiryState)


async def until(
    handle: Handle, status: OrderInquiryStatus, *, tries: int = 500
) -> OrderInquiryState:
    """Poll the case's state (generous bound: only a stuck case fails here)."""
    for _ in range(tries):
        state = await state_of(handle)
        if state.status == status:
            return state
        await asyncio.sleep(0.05)
    raise AssertionError(f"the case never reached {status}: {state.status}")


async def deliver(handle: Handle, tracking_number: str, event_id: str = "evt-1") -> None:
    await handle.signal(
        "carrier_event",
        CarrierEvent(
            event_id=event_id,
            tracking_number=tracking_number,
            status=ShipmentStatus.DELIVERED,
            occurred_at=datetime(2030, 1, 1, tzinfo=UTC),
        ),
    )


def replies(engine: Engine, case_id: str) -> list[str]:
    with Session(engine) as session:
        rows = session.exec(
            select(Message)
            .where(Message.case_id == case_id, Message.kind == "customer_reply")
            .order_by(col(Message.id))
        )
        return [row.body for row in rows]


def audit_actions(engine: Engine, case_id: str) -> list[str]:
    with Session(engine) as session:
        query = (
            select(AuditEvent).where(AuditEvent.case_id == case_id).order_by(col(AuditEvent.seq))
        )
        return [event.action for event in session.exec(query)]


def credits(engine: Engine, case_id: str) -> list[int]:
    with Session(engine) as session:
        return [
            c.amount_cents for c in session.exec(select(Credit).where(Credit.case_id == case_id))
        ]


async def replays(handle: Handle, path: str) -> None:
    history = await handle.fetch_history()
    replayer = Replayer(
        workflows=PROCESSES.workflows,
        data_converter=pydantic_data_converter,
        workflow_runner=workflow_runner(),
    )
    await replayer.replay_workflow(history)
    name = RECORDED(path)
    if name:
        text = history.to_json().replace(str(Path(__file__).resolve().parent.parent), "podium")
        (HISTORIES / f"order_inquiry-{name}.json").write_text(text)


async def test_an_order_on_time_is_answered_with_its_date_and_closed_on_delivery(
    time_env: WorkflowEnvironment, worker: Worker, engine: Engine
) -> None:
    handle = await start(time_env, worker, "C-1001", "O-5009")
    state = await until(handle, OrderInquiryStatus.WATCHING)
    assert (OrderInquiryOutcome.ON_TIME.value, "PC1000005009") == (
        state.outcome,
        state.tracking.tracking_number if state.tracking else None,
    )
    await deliver(handle, "PC0000000001", "evt-other")  # another parcel's event: ignored
    await deliver(handle, "PC1000005009")
    result = await handle.result()
    assert (OrderInquiryOutcome.ON_TIME, True, "delivered", None) == (
        result.outcome,
        result.automated,
        result.closed_by,
        result.credit_cents,
    )
    (reply,) = replies(engine, handle.id)
    assert "[order_on_time]" in reply
    actions = audit_actions(engine, handle.id)
    assert ["answered", "parcel_watched", "delivered", "case_closed"] == actions[-4:]
    described = await handle.describe()
    attributes = described.typed_search_attributes
    from workflows.contracts import search_attributes as sa

    assert ("order_inquiry", "on_time", "completed") == (
        attributes.get(sa.PROCESS),
        attributes.get(sa.OUTCOME),
        attributes.get(sa.STATUS),
    )
    await replays(handle, "on_time_delivered")


async def test_the_customer_writes_again_while_the_parcel_is_watched(
    time_env: WorkflowEnvironment, worker: Worker, engine: Engine
) -> None:
    handle = await start(time_env, worker, "C-1001", "O-5009")
    await until(handle, OrderInquiryStatus.WATCHING)
    await parked(handle)
    again = customer_message("msg-order-2", "Still nothing at my door, any news?", "email")
    await handle.signal("customer_message", again)
    for _ in range(500):
        state = await state_of(handle)
        if state.customer_messages:
            break
        await asyncio.sleep(0.02)
    # Its reference, not its words: nothing in the state repeats the customer's text.
    assert [("msg-order-2", "email", "order_status", None)] == [
        (joined.message_id, joined.channel, joined.intent, joined.text)
        for joined in state.customer_messages
    ]
    assert again.text not in state.model_dump_json()
    assert OrderInquiryStatus.WATCHING == state.status
    card = PROCESSES.get("order_inquiry").approval_card(None, state)
    assert ["Customer wrote again"] == [
        fact.label for fact in card.facts if "msg-order-2" in fact.value
    ]
    history = await handle.fetch_history()
    assert [] == commands_answering_signal(history, "customer_message")
    # A signal whose handler acts does issue commands: the check above can fail.
    await deliver(handle, "PC1000005009")
    result = await handle.result()
    assert (OrderInquiryOutcome.ON_TIME, "delivered") == (result.outcome, result.closed_by)
    history = await handle.fetch_history()
    assert "ACTIVITY_TASK_SCHEDULED" in commands_answering_signal(history, "carrier_event")
    with Session(engine) as session:
        trail = list(
            session.exec(
                select(AuditEvent)
                .where(AuditEvent.case_id == handle.id)
                .order_by(col(AuditEvent.seq))
            )
        )
    noted = [
        (e.action, e.detail["customer_wrote_again"])
        for e in trail
        if "customer_wrote_again" in e.detail
    ]
    assert [("delivered", ["msg-order-2"])] == noted  # the next audit event names it, once
    assert again.text not in str([event.detail for event in trail])
    attributes = (await handle.describe()).typed_search_attributes
    assert again.text not in str([pair.value for pair in attributes])
    await replays(handle, "customer_wrote_again")


async def test_late_beyond_the_grace_gets_a_goodwill_credit_within_the_limit(
    time_env: WorkflowEnvironment, worker: Worker, engine: Engine
) -> None:
    handle = await start(time_env, worker, "C-1003", "O-5008")
    state = await until(handle, OrderInquiryStatus.WATCHING)
    assert (OrderInquiryOutcome.CREDIT_ISSUED.value, 2_500) == (state.outcome, state.credit_cents)
    assert state.assessment is not None and state.assessment.late_days == 6
    assert [2_500] == credits(engine, handle.id)
    await deliver(handle, "PC1000005008")
    result = await handle.result()
    assert (OrderInquiryOutcome.CREDIT_ISSUED, True, 2_500) == (
        result.outcome,
        result.automated,
        result.credit_cents,
    )
    assert "[order_late_credit]" in replies(engine, handle.id)[0]
    await replays(handle, "late_credit")


@pytest.mark.parametrize("action", ["approve", "reject"])
async def test_a_high_value_order_waits_for_a_person(
    time_env: WorkflowEnvironment, worker: Worker, engine: Engine, action: str
) -> None:
    handle = await start(time_env, worker, "C-1002", "O-5004")
    state = await until(handle, OrderInquiryStatus.AWAITING_APPROVAL)
    assert state.approval is not None and 3_000 == state.approval.amount_cents
    assert any("high value" in reason for reason in state.approval.reasons)
    decision = ApprovalDecisionInput(
        request_id="approval-1",
        action=action,
        approver="lead@example.com",
        approver_roles=["team_lead"],
        decision_id=f"d-{action}",
        reason=None if action == "approve" else "the customer was told already",
    )
    decided = await handle.execute_update("decide", signed(handle.id, decision))
    assert decided is not None
    await until(handle, OrderInquiryStatus.WATCHING)
    await deliver(handle, "PC1000005004")
    result = await handle.result()
    if action == "approve":
        assert (OrderInquiryOutcome.CREDIT_APPROVED, False, 3_000) == (
            result.outcome,
            result.automated,
            result.credit_cents,
        )
        assert [3_000] == credits(engine, handle.id)
    else:
        assert (OrderInquiryOutcome.CREDIT_REJECTED, None) == (result.outcome, result.credit_cents)
        assert [] == credits(engine, handle.id)
        assert "[order_late]" in replies(engine, handle.id)[0]
    assert "lead@example.com" == result.decided_by
    await replays(
        handle, {"approve": "high_value_approved", "reject": "high_value_rejected"}[action]
    )


async def test_an_angry_message_or_an_exception_goes_to_a_person() -> None:
    from workflows.contracts.carrier import ShipmentTracking
    from workflows.contracts.orders import InquiryOrder
    from workflows.order_inquiry.rules import assess_inquiry
    from workflows.order_inquiry.types import Route

    now = datetime(2030, 1, 10, tzinfo=UTC)
    order = InquiryOrder(
        found=True, order_id="O-1", amount_cents=5_000, promised_by=now - timedelta(days=1)
    )
    tracking = ShipmentTracking(
        found=True,
        carrier="c",
        tracking_number="PC1",
        status=ShipmentStatus.IN_TRANSIT,
        estimated_delivery=now + timedelta(days=1),
    )
    policy = OrderInquiryPolicy()

    def route(**fields: Any) -> Route:
        arguments: dict[str, Any] = {"sentiment_score": 0.0, "exception_requested": False}
        arguments.update(fields)
        return assess_inquiry(
            order=fields.pop("order", order),
            tracking=tracking,
            policy=policy,
            now=now,
            **{k: v for k, v in arguments.items() if k != "order"},
        ).route

    assert Route.LATE == route()  # two days late: within the grace
    assert Route.PERSON == route(sentiment_score=-0.8)
    assert Route.PERSON == route(exception_requested=True)
    assert Route.PERSON == route(order=order.model_copy(update={"earlier_inquiries": 2}))


async def test_a_follow_up_finds_the_parcel_slipped_and_writes_to_the_customer(
    time_env: WorkflowEnvironment,
    worker: Worker,
    engine: Engine,
    carrier: tuple[str, CarrierService],
) -> None:
    _, service = carrier
    handle = await start(time_env, worker, "C-1001", "O-5009")
    state = await until(handle, OrderInquiryStatus.WATCHING)
    given = state.promised_delivery
    assert given is not None
    # The carrier pushes the parcel back three days.
    later = given + timedelta(days=3)
    service.scan("PC1000005009", Scan(status=ShipmentStatus.IN_TRANSIT, estimated_delivery=later))
    for _ in range(6):  # three days, in steps
        await time_env.sleep(timedelta(hours=12))
        if (await state_of(handle)).follow_ups:
            break
    state = await state_of(handle)
    assert 1 == state.follow_ups
    assert state.promised_delivery is not None
    assert later.date() == state.promised_delivery.date()
    sent = replies(engine, handle.id)
    assert 2 == len(sent) and "[order_slipped]" in sent[1]
    await deliver(handle, "PC1000005009")
    result = await handle.result()
    assert (OrderInquiryOutcome.ON_TIME, 1, "delivered") == (
        result.outcome,
        result.follow_ups,
        result.closed_by,
    )
    assert "delivery_slipped" in audit_actions(engine, handle.id)
    await replays(handle, "follow_up_slipped")


async def test_a_parcel_delivered_before_the_subscription_closes_the_case_at_once(
    time_env: WorkflowEnvironment, engine: Engine, carrier: tuple[str, CarrierService]
) -> None:
    """The carrier scans the parcel delivered right after the case's look, before the case has
    subscribed: no event will come, and the subscription's reading of the parcel closes the case
    (before patch `order-inquiry-parcel-read-on-watch`, the follow-up check days later did)."""
    url, service = carrier
    looks: list[ShipmentStatus] = []

    def delivered_after_the_first_look(carrier: CarrierActivities) -> Callable[..., Any]:
        @activity.defn(name="track_shipment")
        async def track_shipment(input: TrackShipmentInput) -> ShipmentTracking:
            tracking = await carrier.track_shipment(input)
            looks.append(tracking.status)
            if len(looks) == 1:
                service.scan("PC1000005008", Scan(status=ShipmentStatus.DELIVERED))
            return tracking

        return track_shipment

    async with order_worker(time_env, engine, url, delivered_after_the_first_look) as worker:
        handle = await start(time_env, worker, "C-1003", "O-5008")
        result = await handle.result()
        await replays(handle, "delivered_before_subscribed")
    assert (OrderInquiryOutcome.CREDIT_ISSUED, "delivered", 0) == (
        result.outcome,
        result.closed_by,
        result.follow_ups,
    )
    assert result.delivered_at is not None
    assert [ShipmentStatus.IN_TRANSIT] == looks  # one look: no follow-up check was needed
    assert ["parcel_watched", "delivered", "case_closed"] == audit_actions(engine, handle.id)[-3:]
    assert [2_500] == credits(engine, handle.id)


async def test_a_carrier_outage_is_waited_out_then_the_case_goes_on(
    time_env: WorkflowEnvironment,
    worker: Worker,
    engine: Engine,
    carrier: tuple[str, CarrierService],
) -> None:
    _, service = carrier
    service.down = True
    handle = await start(time_env, worker, "C-1003", "O-5008")
    for _ in range(40):  # the round's retry budget passes, in steps
        if (await state_of(handle)).status == OrderInquiryStatus.WAITING_FOR_CARRIER:
            break
        await time_env.sleep(timedelta(minutes=1))
    await until(handle, OrderInquiryStatus.WAITING_FOR_CARRIER)
    assert "carrier_unavailable" in audit_actions(engine, handle.id)
    service.down = False
    for _ in range(10):
        await time_env.sleep(timedelta(minutes=15))
        if (await state_of(handle)).status == OrderInquiryStatus.WATCHING:
            break
    state = await until(handle, OrderInquiryStatus.WATCHING)
    assert OrderInquiryOutcome.CREDIT_ISSUED.value == state.outcome
    await deliver(handle, "PC1000005008")
    assert OrderInquiryOutcome.CREDIT_ISSUED == (await handle.result()).outcome
    await replays(handle, "carrier_outage_recovered")


async def test_a_carrier_that_stays_down_hands_the_case_to_a_person(
    time_env: WorkflowEnvironment,
    worker: Worker,
    engine: Engine,
    carrier: tuple[str, CarrierService],
) -> None:
    _, service = carrier
    service.down = True
    policy = OrderInquiryPolicy(carrier_retry_rounds=1)
    handle = await start(time_env, worker, "C-1003", "O-5008", policy=policy)
    result = await handle.result()
    assert (OrderInquiryOutcome.CARRIER_UNAVAILABLE, False, "handed_off") == (
        result.outcome,
        result.automated,
        result.closed_by,
    )
    assert "[order_checking]" in replies(engine, handle.id)[0]
    assert 2 == audit_actions(engine, handle.id).count("carrier_unavailable")
    await replays(handle, "carrier_unavailable")
