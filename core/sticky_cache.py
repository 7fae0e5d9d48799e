"""Keep the cases a worker is moving in its sticky cache.

The cases' worker caches at most `max_cached_workflows` cases (sized to memory); a case that is not
cached replays its history on its next event. The cache is least-recently-used: a task for a case
that is not cached takes the place of the case touched longest ago. When many parked cases wake at
once (a burst of decisions) and more cases are in motion than the cache holds, that case is one
still in motion (its activity result is on the way), so it replays on its next step, and so on
for every step of every case: the worker spends its time replaying.

`StickyCacheGuard` holds cases in motion in the cache instead. `CaseWorkflowRunner` wraps the
worker's runner and tells the guard, activation by activation, which cases are cached and which of
them wait on an activity (in motion) rather than on a person or a timer (quiet).
`GuardedSlotSupplier` is the worker's workflow task slot supplier: a poll of the task queue itself
(a task for a case that is not cached, or a new case) waits while the cache is full and the cases
it would push out are in motion; polls of the worker's sticky queue (the next step of a cached
case) never wait. A case that has waited on its activity for `patience_s` counts as quiet (its
activity is slow or retrying; replaying it later is cheaper than stalling the queue), so the wait
is bounded and nothing can deadlock. Tasks are never refused, only taken a little later; the
server keeps them meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import ResetStickyTaskQueueRequest
from temporalio.bridge.proto.workflow_activation import RemoveFromCache, WorkflowActivation
from temporalio.bridge.proto.workflow_completion import WorkflowActivationCompletion
from temporalio.client import Client
from temporalio.converter import (
    ActivitySerializationContext,
    DataConverter,
    StorageDriverStoreContext,
    WorkflowSerializationContext,
)
from temporalio.service import RPCError
from temporalio.worker import (
    CustomSlotSupplier,
    SlotMarkUsedContext,
    SlotPermit,
    SlotReleaseContext,
    SlotReserveContext,
    WorkflowInstance,
    WorkflowInstanceDetails,
    WorkflowRunner,
)

from core.metrics import CACHE_INTAKE_WAITS, CASES_LOADED, CASES_PUSHED_OUT

__all__ = [
    "CaseWorkflowRunner",
    "GuardedSlotSupplier",
    "StickinessReset",
    "StickyCacheGuard",
    "context_free",
]

PATIENCE_S = 5.0
GRACE_S = 1.0
WAIT_STEP_S = 0.02
_ENDING_COMMANDS = frozenset(
    {
        "complete_workflow_execution",
        "fail_workflow_execution",
        "cancel_workflow_execution",
        "continue_as_new_workflow_execution",
    }
)


@dataclass
class _Run:
    touched: float
    pending: set[int] = field(default_factory=set)


class StickyCacheGuard:
    """What the worker's cache holds, in least-recently-used order, and which cases are in motion.

    Thread-safe: activations run on the worker's workflow threads, slot calls on its event loop.
    """

    def __init__(
        self,
        capacity: int,
        *,
        patience_s: float = PATIENCE_S,
        clock: Callable[[], float] = time.monotonic,
        on_pushed_out: Callable[[str, str, bool], None] | None = None,
    ) -> None:
        """`on_pushed_out(workflow_id, run_id, in_motion)`: a case left the full cache
        (`StickinessReset`)."""
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self.on_pushed_out = on_pushed_out
        self.pushed_out = 0
        self.patience_s = patience_s
        self._clock = clock
        self._lock = threading.Lock()
        self._runs: OrderedDict[str, _Run] = OrderedDict()
        self._intake = 0  # queue polls reserved and not yet released
        self.waits = 0  # queue polls that had to wait (reported by the worker's metrics)

    # --- what the runner reports ---------------------------------------------------------------

    def activated(self, act: WorkflowActivation, workflow_id: str = "") -> None:
        for job in act.jobs:
            if job.HasField("remove_from_cache"):
                with self._lock:
                    run = self._runs.pop(act.run_id, None)
                if job.remove_from_cache.reason == RemoveFromCache.EvictionReason.CACHE_FULL:
                    in_motion = bool(run and run.pending)
                    self.pushed_out += 1
                    CASES_PUSHED_OUT.labels(in_motion=str(in_motion).lower()).inc()
                    if self.on_pushed_out is not None:
                        self.on_pushed_out(workflow_id, act.run_id, in_motion)
                return
        with self._lock:
            run = self._runs.get(act.run_id)
            if run is None:
                run = self._runs[act.run_id] = _Run(touched=self._clock())
            else:
                run.touched = self._clock()
                self._runs.move_to_end(act.run_id)
            for job in act.jobs:
                if job.HasField("resolve_activity"):
                    run.pending.discard(job.resolve_activity.seq)

    def completed(self, run_id: str, completion: WorkflowActivationCompletion) -> None:
        if not completion.HasField("successful"):
            return
        with self._lock:
            run = self._runs.get(run_id)
            if run is None:
                return
            for command in completion.successful.commands:
                kind = command.WhichOneof("variant")
                if kind == "schedule_activity":
                    run.pending.add(command.schedule_activity.seq)
                elif kind == "schedule_local_activity":
                    run.pending.add(command.schedule_local_activity.seq)
                elif kind in _ENDING_COMMANDS:
                    run.pending.clear()

    # --- what the slot supplier asks ----------------------------------------------------------

    def in_motion(self) -> int:
        """Cached cases waiting on an activity."""
        with self._lock:
            return sum(1 for run in self._runs.values() if run.pending)

    def cached(self) -> int:
        with self._lock:
            return len(self._runs)

    def is_cached(self, run_id: str) -> bool:
        with self._lock:
            return run_id in self._runs

    def admits_intake(self) -> bool:
        """Whether one more poll of the task queue may go out: the cache has room for what the
        polls already out may bring plus one, or each case they would push out is quiet."""
        with self._lock:
            room = self.capacity - len(self._runs) - self._intake
            if room > 0:
                return True
            now = self._clock()
            needed = 1 - room  # the cases at the cold end that would leave
            for run in self._runs.values():
                if needed == 0:
                    return True
                if run.pending and now - run.touched < self.patience_s:
                    return False
                needed -= 1
            return True

    def intake_reserved(self) -> None:
        with self._lock:
            self._intake += 1

    def intake_released(self) -> None:
        with self._lock:
            self._intake = max(0, self._intake - 1)


def context_free(converter: DataConverter) -> bool:
    """Whether `converter` encodes every payload the same whatever its serialization context
    (no component takes one, no external storage): Podium's pydantic converter and encryption
    codec do."""
    if converter.external_storage is not None:
        return False
    probes = (
        WorkflowSerializationContext(namespace="default", workflow_id="probe"),
        ActivitySerializationContext(
            namespace="default",
            activity_id="probe",
            activity_type="probe",
            activity_task_queue="probe",
            workflow_id="probe",
            workflow_type="probe",
            is_local=False,
        ),
    )
    return all(converter.with_context(probe) is converter for probe in probes)


class _CaseInstance(WorkflowInstance):
    def __init__(
        self, inner: WorkflowInstance, guard: StickyCacheGuard | None, context_free: bool
    ) -> None:
        self._inner = inner
        self._guard = guard
        self._context_free = context_free

    def activate(self, act: WorkflowActivation) -> WorkflowActivationCompletion:
        if self._guard is None:
            return self._inner.activate(act)
        self._guard.activated(act, self._inner.get_info().workflow_id)
        completion = self._inner.activate(act)
        self._guard.completed(act.run_id, completion)
        return completion

    def get_serialization_context(self, command_info: Any) -> Any:
        if self._context_free:
            return None  # the context-free converter: the same bytes, without a sandbox call
        return self._inner.get_serialization_context(command_info)

    def get_external_store_context(self, command_info: Any) -> Any:
        if self._context_free:
            return StorageDriverStoreContext(target=None)  # no external storage to tell
        return self._inner.get_external_store_context(command_info)

    def get_info(self) -> Any:
        return self._inner.get_info()

    def get_thread_id(self) -> int | None:
        return self._inner.get_thread_id()


class CaseWorkflowRunner(WorkflowRunner):
    """The worker's runner (the sandbox) around each case: reports every activation to `guard`
    (if any); with `context_free` (see `context_free()`: true of the worker's converter, or the
    payloads would differ), answers the payload serialization context itself instead of asking
    the sandbox for it (a compile and exec in the sandbox per payload, about a fifth of a busy
    cases' worker's CPU)."""

    def __init__(
        self,
        inner: WorkflowRunner,
        *,
        guard: StickyCacheGuard | None = None,
        context_free: bool = False,
    ) -> None:
        self.inner = inner
        self.guard = guard
        self.context_free = context_free

    def prepare_workflow(self, defn: Any) -> None:
        self.inner.prepare_workflow(defn)

    def create_instance(self, det: WorkflowInstanceDetails) -> WorkflowInstance:
        CASES_LOADED.inc()
        return _CaseInstance(self.inner.create_instance(det), self.guard, self.context_free)

    def set_worker_level_failure_exception_types(
        self, types: Sequence[type[BaseException]]
    ) -> None:
        self.inner.set_worker_level_failure_exception_types(types)


class _Permit(SlotPermit):
    def __init__(self, intake: bool) -> None:
        super().__init__()
        self.intake = intake


class GuardedSlotSupplier(CustomSlotSupplier):
    """At most `slots` workflow tasks at once; a poll of the task queue itself waits for
    `guard.admits_intake()`, a poll of the sticky queue never does."""

    def __init__(self, guard: StickyCacheGuard, slots: int) -> None:
        if slots < 2:
            raise ValueError("a cached worker needs at least two workflow task slots")
        self.guard = guard
        self.slots = slots
        self._lock = threading.Lock()
        self._used = 0

    def _take(self, intake: bool) -> bool:
        with self._lock:
            if self._used >= self.slots:
                return False
            if intake:
                if not self.guard.admits_intake():
                    return False
                self.guard.intake_reserved()
            self._used += 1
            return True

    async def reserve_slot(self, ctx: SlotReserveContext) -> SlotPermit:
        intake = not ctx.is_sticky
        waited = False
        while not self._take(intake):
            waited = True
            await asyncio.sleep(WAIT_STEP_S)
        if waited and intake:
            self.guard.waits += 1
            CACHE_INTAKE_WAITS.inc()
        return _Permit(intake)

    def try_reserve_slot(self, ctx: SlotReserveContext) -> SlotPermit | None:
        intake = not ctx.is_sticky
        return _Permit(intake) if self._take(intake) else None

    def mark_slot_used(self, ctx: SlotMarkUsedContext) -> None:
        pass

    def release_slot(self, ctx: SlotReleaseContext) -> None:
        permit = ctx.permit
        with self._lock:
            self._used = max(0, self._used - 1)
        if isinstance(permit, _Permit) and permit.intake:
            self.guard.intake_released()


class StickinessReset:
    """`on_pushed_out` for a worker on `loop`: tells the server that a case pushed out of the
    cache has left this worker (Temporal's ResetStickyTaskQueue), so its next task (a decision,
    a timer) goes to the task queue itself, where `GuardedSlotSupplier` paces what comes in,
    instead of to this worker's sticky queue, which is never held back.

    A quiet case can be pushed out just as its next task reaches the sticky queue (a decision
    arriving in the same instant); reset then, that task would wait out the sticky queue's
    timeout before the server moves it. So a quiet case's reset waits `grace_s` and is skipped
    if the case came back meanwhile (`still_out(run_id)` false): such a task is taken from the
    sticky queue within moments. A case pushed out in motion (the cache's intake is not the only
    way in: a quiet case's task on the sticky queue brings it back too) is reset at once: its
    next step, taken from the sticky queue, would push out the next case in motion, and so on
    down the cache. Best effort: a failed call leaves the case as Temporal alone would (its task
    reaches the worker on the sticky queue and it replays)."""

    def __init__(
        self, client: Client, loop: asyncio.AbstractEventLoop, *, grace_s: float = GRACE_S
    ) -> None:
        self._client = client
        self._loop = loop
        self.grace_s = grace_s
        self.still_out: Callable[[str], bool] = lambda run_id: True
        self._waiting = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.skipped = 0

    def __call__(self, workflow_id: str, run_id: str, in_motion: bool) -> None:
        self._loop.call_soon_threadsafe(self._wait, workflow_id, run_id, in_motion)

    def _wait(self, workflow_id: str, run_id: str, in_motion: bool) -> None:
        self._waiting += 1
        if in_motion:
            self._start(workflow_id, run_id, check=False)
        else:
            self._loop.call_later(self.grace_s, self._start, workflow_id, run_id)

    def _start(self, workflow_id: str, run_id: str, check: bool = True) -> None:
        self._waiting -= 1
        if check and not self.still_out(run_id):
            self.skipped += 1
            return
        task = self._loop.create_task(self._reset(workflow_id, run_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reset(self, workflow_id: str, run_id: str) -> None:
        with contextlib.suppress(RPCError):  # best effort (see above)
            await self._client.workflow_service.reset_sticky_task_queue(
                ResetStickyTaskQueueRequest(
                    namespace=self._client.namespace,
                    execution=WorkflowExecution(workflow_id=workflow_id, run_id=run_id),
                )
            )

    async def drain(self) -> None:
        """Wait for the resets already asked for (on the worker's loop)."""
        await asyncio.sleep(0)  # let the calls scheduled from workflow threads start
        while self._waiting or self._tasks:
            if self._tasks:
                await asyncio.gather(*self._tasks)
            else:
                await asyncio.sleep(self.grace_s / 10)
