"""The access review's Temporal Schedule, and `podium reviews`.

    podium reviews schedule      create or update the Schedule from policies/access_review.yaml
    podium reviews run-now       start a cycle now (the Schedule's action, triggered)
    podium reviews show          the Schedule: when, next cycles, recent cycles

The Schedule `podium-access-review` starts an `access_review` cycle (workflow id
`access_review-cycle` plus the scheduled time, which Temporal appends) at the policy's `cron`
or `every` (default: 09:00 UTC on the 1st of each month). `podium up` creates it, or updates it
to the current policy file, every time it starts; the policy file (its digest) travels in the
Schedule's action, so an edit reaches the next cycle once `podium up` or `podium reviews
schedule` ran. An operator's pause (Temporal UI, `temporal schedule toggle`) survives an update;
`schedule.paused: true` in the policy pauses it. Overlapping cycles are skipped; a cycle the
server missed while down starts if it is less than a day late.

These commands talk to Temporal directly (as `podium up` does), with the same payload
encryption: the keys of `PODIUM_ENCRYPTION_KEYS`, else those `podium up` keeps under
`<data dir>/keys/`.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import BaseModel, Field

from core.settings import Settings

if TYPE_CHECKING:
    from temporalio.client import Client, Schedule, ScheduleCalendarSpec

    from workflows.registry import Registry

__all__ = [
    "CYCLE_ID",
    "PROCESS",
    "SCHEDULER",
    "SCHEDULE_ID",
    "ScheduleView",
    "add_reviews_command",
    "build_schedule",
    "describe_schedule",
    "ensure_schedule",
    "run_now",
]

PROCESS = "access_review"
SCHEDULE_ID = "podium-access-review"
CYCLE_ID = "access_review-cycle"  # Temporal appends each cycle's scheduled time
SCHEDULER = f"schedule:{SCHEDULE_ID}"  # a cycle's requester: never a person
CATCHUP_WINDOW = timedelta(days=1)
RECENT = 5
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


class ScheduleView(BaseModel):
    schedule_id: str
    cron: list[str] = Field(default_factory=list)
    every: list[str] = Field(default_factory=list)
    paused: bool
    note: str | None = None
    policy_version: str | None = None
    next_cycles: list[datetime] = Field(default_factory=list)
    recent_cycles: list[str] = Field(default_factory=list, description="Workflow ids")


def build_schedule(settings: Settings, processes: Registry | None = None) -> Schedule:
    """The Schedule as the current policy file (or the typed defaults) says."""
    from temporalio.client import (
        Schedule,
        ScheduleActionStartWorkflow,
        ScheduleIntervalSpec,
        ScheduleOverlapPolicy,
        SchedulePolicy,
        ScheduleSpec,
        ScheduleState,
    )
    from temporalio.common import SearchAttributePair, TypedSearchAttributes

    from starter.client import RECEIVED, load_process_policy
    from workflows.access_review.types import AccessReviewInput
    from workflows.contracts import search_attributes as sa
    from workflows.contracts.case import CaseContext
    from workflows.registry import PROCESSES

    spec = (processes or PROCESSES).get(PROCESS)
    request = spec.request()
    case_input = spec.prepare(
        request,
        CaseContext(
            case_id=CYCLE_ID,
            requested_by=SCHEDULER,
            policy_document=load_process_policy(spec, settings),
        ),
    )
    assert isinstance(case_input, AccessReviewInput)
    when = case_input.policy.schedule
    text = spec.describe(request)
    return Schedule(
        action=ScheduleActionStartWorkflow(
            spec.name,
            case_input,
            id=CYCLE_ID,
            task_queue=settings.task_queue,
            typed_search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(sa.PROCESS, spec.name),
                    SearchAttributePair(sa.STATUS, RECEIVED),
                ]
            ),
            static_summary=text.summary,
            static_details=text.details,
        ),
        spec=ScheduleSpec(
            cron_expressions=[when.cron] if when.cron else [],
            intervals=[ScheduleIntervalSpec(every=when.every)] if when.every else [],
        ),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP, catchup_window=CATCHUP_WINDOW),
        state=ScheduleState(
            paused=when.paused,
            note=f"access reviews, policy {case_input.policy_version}",
        ),
    )


async def ensure_schedule(
    client: Client, settings: Settings, processes: Registry | None = None
) -> str:
    """Create the Schedule, or update it to the current policy: 'created' or 'updated'."""
    from temporalio.client import (
        ScheduleAlreadyRunningError,
        ScheduleUpdate,
        ScheduleUpdateInput,
    )

    schedule = build_schedule(settings, processes)
    try:
        await client.create_schedule(SCHEDULE_ID, schedule)
        return "created"
    except ScheduleAlreadyRunningError:
        pass

    def update(current: ScheduleUpdateInput) -> ScheduleUpdate:
        state = schedule.state
        if current.description.schedule.state.paused and not state.paused:
            # An operator paused it: keep their pause and its note.
            state = current.description.schedule.state
        schedule.state = state
        return ScheduleUpdate(schedule=schedule)

    await client.get_schedule_handle(SCHEDULE_ID).update(update)
    return "updated"


async def run_now(client: Client) -> None:
    """Start a cycle now through the Schedule (even while one runs)."""
    from temporalio.client import ScheduleOverlapPolicy

    await client.get_schedule_handle(SCHEDULE_ID).trigger(overlap=ScheduleOverlapPolicy.ALLOW_ALL)


async def describe_schedule(client: Client) -> ScheduleView:
    from temporalio.client import ScheduleActionStartWorkflow

    described = await client.get_schedule_handle(SCHEDULE_ID).describe()
    schedule = described.schedule
    action = schedule.action
    version: str | None = None
    if isinstance(action, ScheduleActionStartWorkflow) and schedule.state.note:
        version = schedule.state.note.rpartition(" ")[2]
    return ScheduleView(
        schedule_id=SCHEDULE_ID,
        # The server keeps a cron expression as a calendar: read it back as cron.
        cron=[
            *schedule.spec.cron_expressions,
            *(_cron_of(calendar) for calendar in schedule.spec.calendars),
        ],
        every=[str(interval.every) for interval in schedule.spec.intervals],
        paused=schedule.state.paused,
        note=schedule.state.note,
        policy_version=version,
        next_cycles=list(described.info.next_action_times[:RECENT]),
        recent_cycles=[
            getattr(action.action, "workflow_id", "")
            for action in described.info.recent_actions[-RECENT:]
        ],
    )


_FULL = {"minute": (0, 59), "hour": (0, 23), "day_of_month": (1, 31), "month": (1, 12)}


def _cron_of(calendar: ScheduleCalendarSpec) -> str:
    """`minute hour day-of-month month day-of-week` of a calendar the server returned."""

    def field(name: str, full: tuple[int, int]) -> str:
        ranges = getattr(calendar, name)
        if not ranges or [(r.start, r.end or r.start, r.step) for r in ranges] == [(*full, 1)]:
            return "*"
        parts = []
        for r in ranges:
            end = r.end or r.start
            part = str(r.start) if end == r.start else f"{r.start}-{end}"
            parts.append(part + (f"/{r.step}" if r.step > 1 else ""))
        return ",".join(parts)

    names = ("minute", "hour", "day_of_month", "month")
    return " ".join([*(field(n, _FULL[n]) for n in names), field("day_of_week", (0, 6))])


def _settings() -> Settings:
    """The operator's settings, with the keys `podium up` keeps when none are configured."""
    from starter.codec_server import KEYS_DIR, dev_secrets

    settings = Settings()
    if (
        settings.encryption == "on"
        and settings.encryption_keys is None
        and (settings.data_dir / KEYS_DIR / "encryption.key").exists()
    ):
        settings, _ = dev_secrets(settings)
    return settings


async def _connect(settings: Settings) -> Client:
    from core.temporal import connect

    return await connect(settings)


def add_reviews_command(cli: typer.Typer) -> None:
    """Register `podium reviews schedule | run-now | show`."""
    reviews = typer.Typer(help="Access reviews: the monthly Schedule, and a cycle now.")
    cli.add_typer(reviews, name="reviews")

    def _fail(message: str) -> None:
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(2)

    async def _with_client(settings: Settings) -> Client:
        try:
            return await _connect(settings)
        except Exception as err:  # unreachable, or keys missing: say which
            _fail(f"cannot reach Temporal: {err}")
            raise

    @reviews.command("schedule")
    def schedule_command(json_output: JsonOption = False) -> None:
        """Create or update the Schedule from the policy file."""

        async def go() -> ScheduleView:
            settings = _settings()
            client = await _with_client(settings)
            done = await ensure_schedule(client, settings)
            if not json_output:
                typer.echo(f"Schedule {SCHEDULE_ID} {done}")
            return await describe_schedule(client)

        _show(asyncio.run(go()), json_output)

    @reviews.command("run-now")
    def run_now_command() -> None:
        """Start an access review cycle now (creating the Schedule first if needed)."""

        async def go() -> None:
            settings = _settings()
            client = await _with_client(settings)
            await ensure_schedule(client, settings)
            await run_now(client)

        asyncio.run(go())
        typer.echo(
            f"Cycle started: {CYCLE_ID}-<now>; `podium inbox --approver <manager> "
            f"--process {PROCESS}` lists each manager's reviews"
        )

    @reviews.command("show")
    def show_command(json_output: JsonOption = False) -> None:
        """The Schedule: when it runs, its next cycles and its recent ones."""

        async def go() -> ScheduleView:
            from temporalio.service import RPCError

            client = await _with_client(_settings())
            try:
                return await describe_schedule(client)
            except RPCError as err:
                _fail(f"no schedule {SCHEDULE_ID} ({err.message}); `podium reviews schedule`")
                raise

        _show(asyncio.run(go()), json_output)

    def _show(view: ScheduleView, json_output: bool) -> None:
        if json_output:
            typer.echo(view.model_dump_json(indent=2))
            return
        when = ", ".join([*(f"cron {c}" for c in view.cron), *(f"every {e}" for e in view.every)])
        typer.echo(f"{view.schedule_id}: {when}" + (" (paused)" if view.paused else ""))
        typer.echo(f"  policy   {view.policy_version or '-'}")
        for at in view.next_cycles:
            typer.echo(f"  next     {at.astimezone(UTC):%Y-%m-%d %H:%M UTC}")
        for workflow_id in view.recent_cycles:
            typer.echo(f"  recent   {workflow_id}")
