"""Priorities and the models' task queue (`policies/priority.yaml`, core/priority.py,
core/scheduling.py).

1. The policy: the most urgent key of the matching rules, the default when none matches, a file
   that does not validate refused with each reason.
2. A running case's facts: what its search attributes learnt (tier, amount) and the SLA it has
   left.
3. Through the real dev server, the real worker and the starter: a refund sent through a bulk
   channel starts at priority 5; its model calls run on the models' queue (served by the models'
   worker, rate limited); once it has learnt its customer is gold, its next activities start at
   priority 2 while the case stays at 5; the case's details in the UI say why.
"""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.testing import WorkflowEnvironment

from activities.intelligence import EmbeddedModels
from core.policy import DEFAULT_POLICIES_DIR, PolicyError
from core.priority import PriorityFacts, PriorityPolicy, choose_priority, load_priority_policy
from core.scheduling import MODEL_ACTIVITIES, case_priority_facts, model_task_queue
from core.settings import Settings
from starter.client import PodiumClient
from tests.helpers import seeded_engine
from worker import (
    build_model_worker,
    build_worker,
    case_activities,
    model_activities,
    priority_policy,
)
from workflows.contracts import search_attributes as sa
from workflows.refund.starting import RefundRequest

POLICY_FILE = DEFAULT_POLICIES_DIR / "priority.yaml"


@pytest.fixture(scope="module")
def policy() -> PriorityPolicy:
    return load_priority_policy(POLICY_FILE)


def facts(policy: PriorityPolicy, process: str, **fields: object) -> PriorityFacts:
    return PriorityFacts.of(process, SimpleNamespace(**fields), policy)


def test_the_most_urgent_matching_rule_wins_and_no_rule_leaves_the_default(
    policy: PriorityPolicy,
) -> None:
    assert (3, []) == (
        (c := choose_priority(policy, facts(policy, "refund", channel="email"))).key,
        c.reasons,
    )
    bulk = choose_priority(policy, facts(policy, "refund", channel="batch"))
    assert (5, ["bulk"]) == (bulk.key, bulk.reasons)
    live = choose_priority(policy, facts(policy, "refund", channel="Chat"))  # any case
    assert (2, ["live_channel"]) == (live.key, live.reasons)
    # A password reset's SLA is one hour: first, whatever its channel.
    reset = choose_priority(policy, facts(policy, "password_reset", channel="batch"))
    assert (1, ["sla_due_soon", "bulk"]) == (reset.key, reset.reasons)
    rich = choose_priority(
        policy, facts(policy, "refund", channel="email", customer_tier="gold", amount_cents=60_000)
    )
    assert (2, ["premium_customer", "high_value"]) == (rich.key, rich.reasons)
    assert "priority-2026-12" == rich.version


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("version: v\nrules:\n  - {name: a, when: {channel: [x]}, priority: 0}\n", "rules.0"),
        ("version: v\nrules:\n  - {name: a, when: {}, priority: 2}\n", "at least one condition"),
        ("version: v\nrules:\n  - {name: a, when: {tier: [x]}, priority: 2}\n", "unknown field"),
        (
            "version: v\nrules:\n"
            "  - {name: a, when: {channel: [x]}, priority: 2}\n"
            "  - {name: a, when: {channel: [y]}, priority: 4}\n",
            "unique",
        ),
        ("version: v\nsla_hours: {refund: -1}\n", "positive"),
        ("- not a mapping\n", "mapping"),
    ],
)
def test_a_policy_that_does_not_validate_is_refused_with_its_reason(
    tmp_path: Path, text: str, reason: str
) -> None:
    path = tmp_path / "priority.yaml"
    path.write_text(text)
    with pytest.raises(PolicyError) as raised:
        load_priority_policy(path)
    assert any(reason in line for line in raised.value.errors), raised.value.errors


def test_the_worker_runs_without_priorities_when_the_file_is_wrong_or_absent(
    tmp_path: Path,
) -> None:
    settings = Settings(_env_file=None, policies_dir=tmp_path)  # type: ignore[call-arg]
    assert priority_policy(settings) is None
    (tmp_path / "priority.yaml").write_text("version: v\ndefault: 9\n")
    assert priority_policy(settings) is None
    (tmp_path / "priority.yaml").write_text("version: v\ndefault: 4\n")
    assert 4 == (priority_policy(settings) or PriorityPolicy(version="x")).default


def test_a_running_case_reads_its_search_attributes_and_the_sla_it_has_left(
    policy: PriorityPolicy,
) -> None:
    case_input = SimpleNamespace(channel="email")
    nothing = TypedSearchAttributes.empty
    fresh = case_priority_facts(policy, "refund", case_input, nothing, elapsed_hours=0)
    assert (None, None, 48.0) == (fresh.customer_tier, fresh.amount_cents, fresh.sla_left_hours)
    assert 3 == choose_priority(policy, fresh).key
    learnt = TypedSearchAttributes(
        [
            SearchAttributePair(sa.CUSTOMER_TIER, "platinum"),
            SearchAttributePair(sa.AMOUNT, 650.0),
        ]
    )
    known = case_priority_facts(policy, "refund", case_input, learnt, elapsed_hours=1)
    assert ("platinum", 65_000, 47.0) == (
        known.customer_tier,
        known.amount_cents,
        known.sla_left_hours,
    )
    assert 2 == choose_priority(policy, known).key
    # 45 hours at an approval gate: 3 of its 48 left, it goes first from now on.
    late = case_priority_facts(policy, "refund", case_input, nothing, elapsed_hours=45)
    assert (1, ["sla_due_soon"]) == (
        (c := choose_priority(policy, late)).key,
        c.reasons,
    )


async def test_a_bulk_refund_runs_its_model_calls_on_the_models_queue_and_rises_for_gold(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    seeded = seeded_engine(tmp_path)
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        task_queue=f"prio-{uuid.uuid4().hex}",
        data_dir=tmp_path,
        model_activities_per_second=20.0,
    )
    models_queue = model_task_queue(settings.task_queue)
    models = EmbeddedModels.load()
    from activities.intelligence.gateway import ModelGateway

    gateway = ModelGateway.from_file(None, models)
    podium = PodiumClient(dev_env.client, settings)
    with ThreadPoolExecutor(max_workers=settings.activity_threads) as executor:
        cases = build_worker(
            dev_env.client,
            settings,
            activities=case_activities(seeded),
            executor=executor,
            model_queue=models_queue,
            priority=priority_policy(settings),
        )
        model_worker = build_model_worker(
            dev_env.client,
            settings,
            activities=model_activities(seeded, models, gateway),
            executor=executor,
        )
        assert 20.0 == model_worker.config()["max_task_queue_activities_per_second"]
        async with cases, model_worker:
            ref = await podium.start(
                "refund",
                RefundRequest(
                    channel="batch",
                    customer_id="C-1001",
                    order_id="O-5001",
                    message="My order O-5001 arrived broken, I want my money back.",
                ),
                f"prio-{uuid.uuid4().hex}",
            )
            handle = dev_env.client.get_workflow_handle(ref.case_id)
            await handle.result()
    gateway.close()
    seeded.dispose()
    description = await handle.describe()
    info = description.raw_description.workflow_execution_info
    assert 5 == info.priority.priority_key
    assert "**Priority** 5 (bulk; priority-2026-12)" in (await description.static_details())
    scheduled = [
        event.activity_task_scheduled_event_attributes
        async for event in handle.fetch_history_events()
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    names = [a.activity_type.name for a in scheduled]
    assert {"triage_request", "draft_reply"} <= set(names), names
    for attributes in scheduled:
        expected = models_queue if attributes.activity_type.name in MODEL_ACTIVITIES else None
        assert (expected or settings.task_queue) == attributes.task_queue.name, attributes
    # Before the customer lookup the case's own key (inherited: none set on the activity);
    # after it (PodiumCustomerTier = gold), premium_customer's 2.
    lookup = names.index("lookup_order")
    before, after = scheduled[: lookup + 1], scheduled[lookup + 1 :]
    assert all(a.priority.priority_key in (0, 5) for a in before), before
    assert after and all(2 == a.priority.priority_key for a in after), after
