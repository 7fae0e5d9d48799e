"""The sticky cache guard (core/sticky_cache.py): which cached cases are in motion, when a poll of
the task queue may go out, and, on the real server, that cases in motion are not pushed out of a
full cache."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio import activity, workflow
from temporalio.bridge.proto.workflow_activation import WorkflowActivation
from temporalio.bridge.proto.workflow_completion import WorkflowActivationCompletion
from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import PayloadCodec, WithSerializationContext
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import (
    FixedSizeSlotSupplier,
    UnsandboxedWorkflowRunner,
    Worker,
    WorkerTuner,
    WorkflowInstance,
    WorkflowInstanceDetails,
)

from bench.gate import production_settings
from core.settings import Settings
from core.sticky_cache import (
    CaseWorkflowRunner,
    GuardedSlotSupplier,
    StickinessReset,
    StickyCacheGuard,
    context_free,
)
from core.temporal import data_converter
from worker import case_worker_sizing, workflow_runner


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def activation(
    run_id: str, *, resolved: int | None = None, evict: bool = False
) -> WorkflowActivation:
    act = WorkflowActivation(run_id=run_id)
    if evict:
        act.jobs.add().remove_from_cache.message = "evicted"
    elif resolved is not None:
        act.jobs.add().resolve_activity.seq = resolved
    else:
        act.jobs.add().initialize_workflow.workflow_type = "refund"
    return act


def completion(
    run_id: str, *, schedules: tuple[int, ...] = (), local: tuple[int, ...] = (), ends: bool = False
) -> WorkflowActivationCompletion:
    done = WorkflowActivationCompletion(run_id=run_id)
    done.successful.SetInParent()
    for seq in schedules:
        done.successful.commands.add().schedule_activity.seq = seq
    for seq in local:
        done.successful.commands.add().schedule_local_activity.seq = seq
    if ends:
        done.successful.commands.add().complete_workflow_execution.SetInParent()
    return done


def step(guard: StickyCacheGuard, run_id: str, **kw: object) -> None:
    """One activation of `run_id` and its completion."""
    resolved = kw.pop("resolved", None)
    guard.activated(activation(run_id, resolved=resolved))  # type: ignore[arg-type]
    guard.completed(run_id, completion(run_id, **kw))  # type: ignore[arg-type]


def test_a_case_is_in_motion_from_scheduling_an_activity_until_its_result() -> None:
    guard = StickyCacheGuard(10, clock=Clock())
    step(guard, "a", schedules=(1,))
    step(guard, "b")  # waits on a timer or a person: quiet
    step(guard, "c", local=(1,))
    assert (guard.cached(), guard.in_motion()) == (3, 2)
    step(guard, "a", resolved=1)
    step(guard, "c", resolved=1, schedules=(2,))
    assert guard.in_motion() == 1  # c's next step
    step(guard, "c", resolved=2, ends=True)
    assert guard.in_motion() == 0
    guard.activated(activation("c", evict=True))
    assert guard.cached() == 2


def test_polls_wait_only_while_a_full_cache_would_push_out_a_case_in_motion() -> None:
    clock = Clock()
    guard = StickyCacheGuard(3, patience_s=5.0, clock=clock)
    step(guard, "parked")
    step(guard, "moving-1", schedules=(1,))
    assert guard.admits_intake()  # room left
    step(guard, "moving-2", schedules=(1,))
    assert guard.admits_intake()  # full, but the coldest case is quiet
    guard.activated(activation("parked", evict=True))
    step(guard, "moving-3", schedules=(1,))
    assert not guard.admits_intake()  # full, the coldest case waits on its activity
    clock.now += 4.9
    assert not guard.admits_intake()
    step(guard, "moving-1", resolved=1)  # its result came: quiet, and the warmest now
    assert not guard.admits_intake()  # moving-2 is the coldest and in motion
    clock.now += 0.2  # moving-2 has waited patience_s: its activity is slow, it may go
    assert guard.admits_intake()


def test_polls_already_out_count_as_cases_coming_in() -> None:
    guard = StickyCacheGuard(3, clock=Clock())
    step(guard, "parked")
    step(guard, "moving", schedules=(1,))
    assert guard.admits_intake()
    guard.intake_reserved()  # that poll may bring a third case
    assert guard.admits_intake()  # a fourth would push out "parked" only
    guard.intake_reserved()
    assert not guard.admits_intake()  # a fifth would push out "moving"
    guard.intake_released()
    assert guard.admits_intake()


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError):
        StickyCacheGuard(0)
    with pytest.raises(ValueError):
        GuardedSlotSupplier(StickyCacheGuard(5), slots=1)


async def test_the_cases_worker_takes_the_guard_unless_it_is_turned_off(
    dev_env: WorkflowEnvironment,
) -> None:
    on = case_worker_sizing(Settings(_env_file=None), workflow_runner(), dev_env.client)  # type: ignore[call-arg]
    assert isinstance(on["workflow_runner"], CaseWorkflowRunner)
    assert on["workflow_runner"].guard is not None and on["workflow_runner"].context_free
    assert "tuner" in on and "max_concurrent_activities" not in on
    off = case_worker_sizing(
        Settings(_env_file=None, sticky_cache_guard=False),  # type: ignore[call-arg]
        workflow_runner(),
        dev_env.client,
    )
    assert "tuner" not in off and off["workflow_runner"].guard is None


def test_only_a_converter_that_ignores_the_context_skips_asking_for_it(tmp_path: Path) -> None:
    """Podium's converters (pydantic, with or without encryption) encode the same bytes in any
    context; one whose codec takes the context does not qualify."""
    plain = pydantic_data_converter
    assert context_free(plain)
    encrypted = data_converter(production_settings(tmp_path, "t"), mark_decrypted=True)
    assert context_free(encrypted)

    class ContextCodec(PayloadCodec, WithSerializationContext):
        async def encode(self, payloads):  # type: ignore[no-untyped-def]
            return list(payloads)

        async def decode(self, payloads):  # type: ignore[no-untyped-def]
            return list(payloads)

        def with_context(self, context):  # type: ignore[no-untyped-def]
            return ContextCodec()

    assert not context_free(dataclasses.replace(plain, payload_codec=ContextCodec()))


# --- on the real server ---------------------------------------------------------------------------

STEPS = 4


@activity.defn(name="sticky_cache_step")
async def sticky_cache_step(n: int) -> int:
    await asyncio.sleep(0.05)
    return n + 1


@workflow.defn(name="sticky_cache_chain")
class Chain:
    @workflow.run
    async def run(self) -> int:
        n = 0
        for _ in range(STEPS):
            n = await workflow.execute_activity(
                sticky_cache_step, n, start_to_close_timeout=timedelta(minutes=5)
            )
        return n


class CountingRunner(UnsandboxedWorkflowRunner):
    def __init__(self) -> None:
        self.created = 0

    def create_instance(self, det: WorkflowInstanceDetails) -> WorkflowInstance:
        self.created += 1
        return super().create_instance(det)


def guarded_worker(
    client: Client,
    queue: str,
    workflow_class: type,
    runner: CountingRunner,
    guard: StickyCacheGuard,
    sticky_timeout: timedelta,
) -> Worker:
    """A worker caching two cases, `guard` holding the cases in motion, `runner` counting."""
    return Worker(
        client,
        task_queue=queue,
        workflows=[workflow_class],
        activities=[sticky_cache_step],
        workflow_runner=CaseWorkflowRunner(runner, guard=guard, context_free=True),
        max_cached_workflows=2,
        sticky_queue_schedule_to_start_timeout=sticky_timeout,
        tuner=WorkerTuner.create_composite(
            workflow_supplier=GuardedSlotSupplier(guard, 10),
            activity_supplier=FixedSizeSlotSupplier(20),
            local_activity_supplier=FixedSizeSlotSupplier(5),
            nexus_supplier=FixedSizeSlotSupplier(5),
        ),
    )


async def test_cases_in_motion_stay_cached_when_more_arrive_than_the_cache_holds(
    dev_env: WorkflowEnvironment,
) -> None:
    """Twelve cases of four steps each start at once on a worker that caches two: with the guard,
    each case is instantiated exactly once (none is pushed out between its steps and replayed);
    they all finish."""
    client: Client = dev_env.client
    queue = f"sticky-cache-{uuid.uuid4().hex[:8]}"
    counting = CountingRunner()
    # Patience beyond any machine's hiccup: on this test's scale only a case's own end frees it.
    guard = StickyCacheGuard(2, patience_s=3_600)
    worker = guarded_worker(client, queue, Chain, counting, guard, timedelta(minutes=10))
    async with worker:
        handles = [
            await client.start_workflow(
                Chain.run,
                id=f"{queue}-{i}",
                task_queue=queue,
                execution_timeout=timedelta(minutes=10),
            )
            for i in range(12)
        ]
        results = await asyncio.gather(*(h.result() for h in handles))
    assert results == [STEPS] * 12
    assert counting.created == 12
    assert guard.waits > 0  # the intake did wait for room
    assert guard.in_motion() == 0


@workflow.defn(name="sticky_cache_parked")
class Parked:
    def __init__(self) -> None:
        self._go = False

    @workflow.signal
    def go(self) -> None:
        self._go = True

    @workflow.run
    async def run(self) -> int:
        await workflow.wait_condition(lambda: self._go)
        n = 0
        for _ in range(STEPS):
            n = await workflow.execute_activity(
                sticky_cache_step, n, start_to_close_timeout=timedelta(minutes=5)
            )
        return n


async def test_parked_cases_woken_at_once_replay_once_each(dev_env: WorkflowEnvironment) -> None:
    """Ten cases park on a worker that caches two (eight are pushed out, their stickiness reset),
    then all are woken at once and take four steps each. Each case is instantiated once to park
    and once more to finish, give or take the few brought back through the sticky queue (a
    case cached when its signal came, or pushed out just as its step's result came): measured
    20-21 of 30 allowed; without resetting the stickiness of pushed-out cases it was 58."""
    client: Client = dev_env.client
    queue = f"sticky-parked-{uuid.uuid4().hex[:8]}"
    counting = CountingRunner()
    reset = StickinessReset(client, asyncio.get_running_loop())
    guard = StickyCacheGuard(2, patience_s=3_600, on_pushed_out=reset)
    reset.still_out = lambda run_id: not guard.is_cached(run_id)
    worker = guarded_worker(client, queue, Parked, counting, guard, timedelta(seconds=15))
    async with worker:
        handles = []
        for i in range(10):
            handle = await client.start_workflow(
                Parked.run,
                id=f"{queue}-{i}",
                task_queue=queue,
                execution_timeout=timedelta(minutes=10),
            )
            handles.append(handle)
        # Parked: each case's first workflow task is done (it waits for its signal).
        for handle in handles:
            while not await _first_task_done(handle):
                await asyncio.sleep(0.1)
        while guard.pushed_out < 8:
            await asyncio.sleep(0.1)
        await reset.drain()
        assert counting.created == 10
        await asyncio.gather(*(h.signal(Parked.go) for h in handles))
        results = await asyncio.gather(*(h.result() for h in handles))
    assert results == [STEPS] * 10
    assert counting.created <= 30, counting.created
    assert guard.in_motion() == 0


async def _first_task_done(handle: WorkflowHandle[Any, Any]) -> bool:
    async for event in handle.fetch_history_events():
        if event.HasField("workflow_task_completed_event_attributes"):
            return True
    return False
