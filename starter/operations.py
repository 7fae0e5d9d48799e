"""The operations' Temporal Schedules, and `podium ops`.

    podium ops schedule            create or update both Schedules from policies/operations.yaml
    podium ops run-now kpi|sweep   run one now (the Schedule's action, triggered)
    podium ops show                both Schedules: when, next runs, recent runs

`podium-kpi-snapshot` starts `kpi_snapshot` (workflow id `kpi_snapshot` plus the scheduled
time) daily at 00:05 UTC; `podium-sla-sweep` starts `sla_sweep` every 15 minutes with a lead
time of 2 hours (`workflows/operations/`). Both run on the operations' task queue
(`<task queue>-operations`). `podium up` creates them, or updates them to the policy file,
every time it starts; an operator's pause (Temporal UI, `temporal schedule toggle`) survives
an update; `paused: true` in the policy pauses one. Overlapping runs are skipped; a run the
server missed while down starts if it is less than an hour late.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from core.settings import Settings
from starter.reviews import ScheduleView, _cron_of, _settings
from workflows.operations.types import (
    KpiSnapshotInput,
    OperationSchedule,
    OperationsPolicy,
    OperationsPolicyFile,
    SlaSweepInput,
    operations_task_queue,
)

if TYPE_CHECKING:
    from pydantic import BaseModel
    from temporalio.client import Client, Schedule

__all__ = [
    "KPI_SCHEDULE_ID",
    "POLICY_FILE",
    "SWEEP_SCHEDULE_ID",
    "Operation",
    "add_ops_command",
    "build_schedules",
    "describe_schedules",
    "ensure_schedules",
    "load_operations_policy",
    "run_now",
]

KPI_SCHEDULE_ID = "podium-kpi-snapshot"
SWEEP_SCHEDULE_ID = "podium-sla-sweep"
POLICY_FILE = "operations.yaml"
TYPED_DEFAULTS = "typed-defaults"
CATCHUP_WINDOW = timedelta(hours=1)
RECENT = 5
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@dataclass(frozen=True)
class Operation:
    key: str  # the name `podium ops run-now` takes
    schedule_id: str
    workflow: str  # its workflow type, and its workflow id before Temporal's suffix
    title: str


OPERATIONS = (
    Operation("kpi", KPI_SCHEDULE_ID, "kpi_snapshot", "daily KPI snapshot"),
    Operation("sweep", SWEEP_SCHEDULE_ID, "sla_sweep", "SLA-risk sweep"),
)


def load_operations_policy(settings: Settings) -> tuple[OperationsPolicy, str]:
    """The policy file (validated, its digest as version), else the typed defaults;
    `PolicyError` when the file is there but wrong."""
    from core.policy import DEFAULT_POLICIES_DIR
    from starter.client import parse_policy_as

    path = Path(settings.policies_dir or DEFAULT_POLICIES_DIR) / POLICY_FILE
    if not path.exists():
        return OperationsPolicy(), TYPED_DEFAULTS
    read = OperationsPolicyFile.model_validate(parse_policy_as(path, OperationsPolicyFile))
    policy = OperationsPolicy.model_validate(read.model_dump(exclude={"version", "digest"}))
    return policy, read.digest or read.version


def build_schedules(settings: Settings) -> dict[str, Schedule]:
    """Both Schedules as the current policy file (or the typed defaults) says."""
    policy, version = load_operations_policy(settings)
    return {
        KPI_SCHEDULE_ID: _schedule(
            settings, OPERATIONS[0], KpiSnapshotInput(), policy.kpi_snapshot, version
        ),
        SWEEP_SCHEDULE_ID: _schedule(
            settings,
            OPERATIONS[1],
            SlaSweepInput(lead_time=policy.sla_sweep.lead_time, policy_version=version),
            policy.sla_sweep,
            version,
        ),
    }


def _schedule(
    settings: Settings,
    operation: Operation,
    arg: BaseModel,
    when: OperationSchedule,
    version: str,
) -> Schedule:
    from temporalio.client import (
        Schedule,
        ScheduleActionStartWorkflow,
        ScheduleIntervalSpec,
        ScheduleOverlapPolicy,
        SchedulePolicy,
        ScheduleSpec,
        ScheduleState,
    )

    return Schedule(
        action=ScheduleActionStartWorkflow(
            operation.workflow,
            arg,
            id=operation.workflow,
            task_queue=operations_task_queue(settings.task_queue),
            static_summary=f"Podium operation: {operation.title}",
        ),
        spec=ScheduleSpec(
            cron_expressions=[when.cron] if when.cron else [],
            intervals=[ScheduleIntervalSpec(every=when.every)] if when.every else [],
        ),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP, catchup_window=CATCHUP_WINDOW),
        state=ScheduleState(paused=when.paused, note=f"{operation.title}, policy {version}"),
    )


async def ensure_schedules(client: Client, settings: Settings) -> dict[str, str]:
    """Create each Schedule, or update it to the current policy: 'created' or 'updated'."""
    from temporalio.client import ScheduleAlreadyRunningError, ScheduleUpdate, ScheduleUpdateInput

    done: dict[str, str] = {}
    for schedule_id, schedule in build_schedules(settings).items():
        try:
            await client.create_schedule(schedule_id, schedule)
            done[schedule_id] = "created"
            continue
        except ScheduleAlreadyRunningError:
            pass

        def update(current: ScheduleUpdateInput, schedule: Schedule = schedule) -> ScheduleUpdate:
            state = schedule.state
            if current.description.schedule.state.paused and not state.paused:
                state = current.description.schedule.state  # an operator's pause, and its note
            schedule.state = state
            return ScheduleUpdate(schedule=schedule)

        await client.get_schedule_handle(schedule_id).update(update)
        done[schedule_id] = "updated"
    return done


async def run_now(client: Client, operation: Operation) -> None:
    from temporalio.client import ScheduleOverlapPolicy

    await client.get_schedule_handle(operation.schedule_id).trigger(
        overlap=ScheduleOverlapPolicy.ALLOW_ALL
    )


async def describe_schedules(client: Client) -> list[ScheduleView]:
    views = []
    for operation in OPERATIONS:
        described = await client.get_schedule_handle(operation.schedule_id).describe()
        schedule = described.schedule
        note = schedule.state.note
        views.append(
            ScheduleView(
                schedule_id=operation.schedule_id,
                cron=[
                    *schedule.spec.cron_expressions,
                    *(_cron_of(calendar) for calendar in schedule.spec.calendars),
                ],
                every=[str(interval.every) for interval in schedule.spec.intervals],
                paused=schedule.state.paused,
                note=note,
                policy_version=note.rpartition(" ")[2] if note else None,
                next_cycles=list(described.info.next_action_times[:RECENT]),
                recent_cycles=[
                    getattr(action.action, "workflow_id", "")
                    for action in described.info.recent_actions[-RECENT:]
                ],
            )
        )
    return views


def add_ops_command(cli: typer.Typer) -> None:
    """Register `podium ops schedule | run-now | show`."""
    ops = typer.Typer(help="Operations: the daily KPI snapshot and the SLA-risk sweep.")
    cli.add_typer(ops, name="ops")

    def _fail(message: str) -> None:
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(2)

    async def _client(settings: Settings) -> Client:
        from core.temporal import connect

        try:
            return await connect(settings)
        except Exception as err:  # unreachable, or keys missing: say which
            _fail(f"cannot reach Temporal: {err}")
            raise

    def _show(views: list[ScheduleView], json_output: bool) -> None:
        if json_output:
            typer.echo("[" + ",".join(v.model_dump_json() for v in views) + "]")
            return
        for view in views:
            when = ", ".join(
                [*(f"cron {c}" for c in view.cron), *(f"every {e}" for e in view.every)]
            )
            typer.echo(f"{view.schedule_id}: {when}" + (" (paused)" if view.paused else ""))
            typer.echo(f"  policy   {view.policy_version or '-'}")
            for at in view.next_cycles[:1]:
                typer.echo(f"  next     {at.astimezone(UTC):%Y-%m-%d %H:%M UTC}")
            for workflow_id in view.recent_cycles:
                typer.echo(f"  recent   {workflow_id}")

    @ops.command("schedule")
    def schedule_command(json_output: JsonOption = False) -> None:
        """Create or update both Schedules from the policy file."""

        async def go() -> list[ScheduleView]:
            settings = _settings()
            client = await _client(settings)
            for schedule_id, done in (await ensure_schedules(client, settings)).items():
                if not json_output:
                    typer.echo(f"Schedule {schedule_id} {done}")
            return await describe_schedules(client)

        _show(asyncio.run(go()), json_output)

    @ops.command("run-now")
    def run_now_command(
        which: Annotated[str, typer.Argument(help="kpi (the KPI snapshot) or sweep")],
    ) -> None:
        """Run one operation now (creating the Schedules first if needed)."""
        operation = next((o for o in OPERATIONS if o.key == which), None)
        if operation is None:
            _fail(f"no operation {which!r}: kpi or sweep")
            return

        async def go() -> None:
            settings = _settings()
            client = await _client(settings)
            await ensure_schedules(client, settings)
            await run_now(client, operation)

        asyncio.run(go())
        typer.echo(f"Started: {operation.workflow}-<now> ({operation.title})")

    @ops.command("show")
    def show_command(json_output: JsonOption = False) -> None:
        """Both Schedules: when they run, the next run and the recent ones."""

        async def go() -> list[ScheduleView]:
            from temporalio.service import RPCError

            client = await _client(_settings())
            try:
                return await describe_schedules(client)
            except RPCError as err:
                _fail(f"no operations schedule ({err.message}); `podium ops schedule`")
                raise

        _show(asyncio.run(go()), json_output)
