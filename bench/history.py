"""What a finished case's history says: its activities, the approval gate, where time went."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from google.protobuf.timestamp_pb2 import Timestamp
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory
from temporalio.converter import decode_typed_search_attributes

from workflows.contracts import search_attributes as sa
from workflows.refund.types import CaseStatus

__all__ = ["ApprovalShape", "CaseTimeline", "approval_shape", "scheduled_activities", "timeline"]

E = EventType


@dataclass(frozen=True)
class ApprovalShape:
    """Where an approval case's activities fall: before its gate opens, after it opened but
    before the case waits for the decision, and after the decision."""

    before: int
    during: int
    after: int

    @property
    def total(self) -> int:
        return self.before + self.during + self.after


@dataclass
class CaseTimeline:
    """Server-side times of one case, in ms: activities queued (scheduled -> started) and
    running (started -> completed), workflow tasks likewise; run time per activity type."""

    events: int = 0
    activities: int = 0
    activity_wait_ms: float = 0.0
    activity_run_ms: float = 0.0
    task_wait_ms: float = 0.0
    task_run_ms: float = 0.0
    first_task_run_ms: float = 0.0  # includes creating the workflow in the sandbox
    run_ms_by_type: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    calls_by_type: dict[str, int] = field(default_factory=lambda: defaultdict(int))


def scheduled_activities(history: WorkflowHistory) -> int:
    return sum(1 for e in history.events if e.event_type == E.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED)


def approval_shape(history: WorkflowHistory) -> ApprovalShape:
    """Split the activities of an approved refund case whose decision arrived only once it was
    waiting: the gate opens with the upsert of status `awaiting_approval` (or
    `PodiumAwaitingApproval` true), and the decision is the accepted update (or the signal)."""
    counts = [0, 0, 0]
    section = 0
    for event in history.events:
        if event.event_type == E.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            counts[section] += 1
        elif event.event_type == E.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES and section == 0:
            attrs = decode_typed_search_attributes(
                event.upsert_workflow_search_attributes_event_attributes.search_attributes
            )
            if (
                attrs.get(sa.STATUS) == CaseStatus.AWAITING_APPROVAL.value
                or attrs.get(sa.AWAITING_APPROVAL) is True
            ):
                section = 1
        elif section == 1 and event.event_type in (
            E.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED,
            E.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED,
        ):
            section = 2
    if section != 2:
        raise RuntimeError("the case's history shows no approval gate opening and a decision")
    return ApprovalShape(*counts)


def _ms(later: Timestamp, earlier: Timestamp) -> float:
    return (later.ToNanoseconds() - earlier.ToNanoseconds()) / 1e6


def timeline(history: WorkflowHistory) -> CaseTimeline:
    t = CaseTimeline(events=len(history.events))
    by_id = {e.event_id: e for e in history.events}
    for e in history.events:
        if e.event_type == E.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            attrs = e.activity_task_completed_event_attributes
            scheduled = by_id[attrs.scheduled_event_id]
            started = by_id[attrs.started_event_id]
            name = scheduled.activity_task_scheduled_event_attributes.activity_type.name
            run = _ms(e.event_time, started.event_time)
            t.activities += 1
            t.activity_wait_ms += _ms(started.event_time, scheduled.event_time)
            t.activity_run_ms += run
            t.run_ms_by_type[name] += run
            t.calls_by_type[name] += 1
        elif e.event_type == E.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            attrs_w = e.workflow_task_completed_event_attributes
            scheduled = by_id[attrs_w.scheduled_event_id]
            started = by_id[attrs_w.started_event_id]
            run = _ms(e.event_time, started.event_time)
            if t.task_run_ms == 0.0:
                t.first_task_run_ms = run
            t.task_wait_ms += _ms(started.event_time, scheduled.event_time)
            t.task_run_ms += run
    return t
