"""`make bench-gate`: what cases parked at Podium's approval gate cost, against a bare wait.

    python -m bench.gate [--n 5000] [--sample 200] [--park-concurrency 40] [--warmup 3]
                         [--max-cached-workflows K] [--json] [--out FILE]

One run starts its own Temporal dev server and systems-of-record database (`bench.server`,
`bench.data`), then two workers, each in its own subprocess so its memory is measured alone:

- Podium's: `python -m worker`, the real entry point (the real `RefundWorkflow`, every real
  activity, the embedded models), pointed at the run's server, database and task queue through
  the environment, like a deployment;
- the baseline's: `python -m bench.wait`, `bench_wait` (waits for one signal, then completes),
  with `worker.build_worker`'s options from the same settings (`max_cached_workflows`, ...).

Per system: warm-up cases run through their decision; the worker's RSS; N cases are parked
(refund requests over the automatic limit, medium risk: one approval level; at most
`--park-concurrency` on their way to the gate at once); every one is checked on the server
(running, waiting for the decision, nothing pending); the worker goes idle; RSS again. Then a
sample of decisions, one at a time, each timed from sending it (refund: the `decide` update;
baseline: its signal) to the workflow's result arriving: half on the cases parked first, half on
those parked last. With N above `max_cached_workflows` the first ones have left the worker's
cache and are replayed from history when decided; the last ones are still cached.

Progress goes to stderr, the table (or `--json`) to stdout. Exit code 1 when a case did not park
or a decision did not complete as expected, 2 on `--timeout`, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO, TypeVar

import temporalio
from pydantic import SecretStr
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from temporalio.client import Client, WorkflowExecutionDescription, WorkflowExecutionStatus
from temporalio.common import HeaderCodecBehavior

from bench.data import BenchCase, seed_cases
from bench.report import percentile
from bench.server import TEMPORAL_CLI, DevServer, dev_server
from core.admission import AdmissionInterceptor
from core.codec import new_key_entry
from core.db import Message, create_tables, make_engine
from core.decision_tokens import DecisionKey
from core.logging import configure_logging
from core.settings import Settings
from core.temporal import data_converter
from workflows.contracts import search_attributes as sa
from workflows.contracts.approval import (
    ApprovalAction,
    ApprovalDecisionInput,
    ApprovalDecisionResult,
    decision_digest,
)
from workflows.refund.types import (
    RefundCaseInput,
    RefundCaseResult,
    RefundOutcome,
    RefundPolicy,
    RiskLevel,
)
from workflows.refund.workflow import APPROVAL_REQUEST_ID

__all__ = ["Options", "main", "run_benchmark"]

REPO = Path(__file__).resolve().parents[1]
DEFAULT_N = 5_000
DEFAULT_SAMPLE = 200
DEFAULT_PARK_CONCURRENCY = 40
DEFAULT_WARMUP = 3
DEFAULT_TIMEOUT_S = 3_600.0
DEFAULT_SEED = 11

APPROVER = "bench@podium.test"
APPROVER_ROLES = ["team_lead"]  # medium risk: one level, a team lead
CHANNEL = "email"
NOTICE_KIND = "approval_request"  # the outbox row the gate's first notice writes
PARKED_ORDERS, WARM_ORDERS = 100_000, 90_000
NOTICE_POLL_S = 0.2
PARK_TIMEOUT_S = 300.0  # one case, start -> parked, under full load
BARE_POLL_S = 0.05
SWEEP_CONCURRENCY = 16
SWEEP_ROUNDS = 30
IDLE_CPU_SHARE = 0.03  # a worker under 3 % of one core ...
IDLE_WINDOW_S = 1.0  # ... over two such windows in a row is idle
IDLE_TIMEOUT_S = 120.0
LIVENESS_POLL_S = 0.5
DECIDE_TIMEOUT_S = 120.0  # one decision, sent -> workflow result
WORKER_STOP_S = 60.0
KIB, MIB = 1024, 1024 * 1024
# What the workers run: a copy taken at the start, so edits to the working tree during a long run
# (the sandbox re-reads workflow modules from disk for every new case) cannot change it midway.
SNAPSHOT = (
    "worker.py",
    "core",
    "activities",
    "workflows",
    "bench",
    "config",
    "datasets",
    "templates",
)
_T = TypeVar("_T")


@dataclass(frozen=True)
class Options:
    n: int = DEFAULT_N
    sample: int = DEFAULT_SAMPLE
    park_concurrency: int = DEFAULT_PARK_CONCURRENCY
    warmup: int = DEFAULT_WARMUP
    timeout_s: float = DEFAULT_TIMEOUT_S
    seed: int = DEFAULT_SEED
    max_cached_workflows: int | None = None  # default: the settings'


class Progress:
    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._started = time.monotonic()

    def say(self, message: str) -> None:
        print(f"[{time.monotonic() - self._started:7.1f}s] {message}", file=self._out, flush=True)


# --- a worker in a subprocess -------------------------------------------------------------------


def _proc_status(pid: int, field_name: str) -> int:
    """A `kB` field of /proc/<pid>/status, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) * KIB
    raise RuntimeError(f"no {field_name} in /proc/{pid}/status")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class WorkerProcess:
    """One worker subprocess: its memory (RSS, peak), CPU time, liveness and log."""

    def __init__(self, name: str, process: asyncio.subprocess.Process, log: Path) -> None:
        self.name = name
        self.process = process
        self.log = log

    def rss(self) -> int:
        self.ensure_alive()
        return _proc_status(self.process.pid, "VmRSS")

    def peak_rss(self) -> int:
        self.ensure_alive()
        return _proc_status(self.process.pid, "VmHWM")

    def cpu_seconds(self) -> float:
        self.ensure_alive()
        return _cpu_seconds(self.process.pid)

    def ensure_alive(self) -> None:
        if self.process.returncode is not None:
            tail = self.log.read_text(errors="replace")[-3_000:]
            raise RuntimeError(
                f"the {self.name} worker exited with code {self.process.returncode}:\n{tail}"
            )

    async def alive_while(self, awaitable: Awaitable[_T], timeout: float) -> _T:
        """Await `awaitable` (bounded), failing fast with the worker's log if it dies meanwhile."""
        task = asyncio.ensure_future(awaitable)
        try:
            async with asyncio.timeout(timeout):
                while True:
                    done, _ = await asyncio.wait({task}, timeout=LIVENESS_POLL_S)
                    if done:
                        return task.result()
                    self.ensure_alive()
        finally:
            task.cancel()

    async def wait_idle(self) -> float:
        """Wait until the worker has (nearly) stopped using CPU; seconds waited."""
        started = time.monotonic()
        quiet = 0
        while quiet < 2:
            before = self.cpu_seconds()
            await asyncio.sleep(IDLE_WINDOW_S)
            share = (self.cpu_seconds() - before) / IDLE_WINDOW_S
            quiet = quiet + 1 if share < IDLE_CPU_SHARE else 0
            if time.monotonic() - started > IDLE_TIMEOUT_S:
                raise TimeoutError(f"the {self.name} worker did not go idle")
        return time.monotonic() - started


@contextlib.asynccontextmanager
async def worker_process(
    name: str, module: str, env: dict[str, str], workdir: Path
) -> AsyncIterator[WorkerProcess]:
    log = workdir / f"worker-{name}.log"
    with log.open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            module,
            cwd=workdir,  # no stray `.env`: the environment below is the whole configuration
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            start_new_session=True,
        )
    try:
        yield WorkerProcess(name, process, log)
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), WORKER_STOP_S)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()


def snapshot_code(workdir: Path) -> Path:
    """Copy the code and data the workers load into `workdir/src`; they import from there."""
    target = workdir / "src"
    target.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in SNAPSHOT:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=ignore)
        elif source.exists():
            shutil.copy2(source, target / name)
    return target


def check_snapshot(env: dict[str, str], workdir: Path, code: Path) -> None:
    """The workers' imports must resolve to the snapshot, not to the working tree."""
    probe = "import importlib.util as u; print(u.find_spec('worker').origin, " + (
        "u.find_spec('workflows.refund').origin)"
    )
    origins = subprocess.run(
        [sys.executable, "-c", probe],
        env=env,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()
    if len(origins) != 2 or not all(Path(o).is_relative_to(code) for o in origins):
        raise RuntimeError(f"the workers would not import the code snapshot: {origins}")


def _code_version() -> dict[str, Any]:
    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    changed = [line for line in git("status", "--porcelain").splitlines() if line.strip()]
    return {"git_head": git("rev-parse", "--short", "HEAD") or None, "changed_files": len(changed)}


def report_header(benchmark: str) -> dict[str, Any]:
    """What every report starts with: its name, when, on what machine, from which code."""
    return {
        "benchmark": benchmark,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": _machine(),
        "code": _code_version(),
    }


def production_settings(workdir: Path, run: str, **overrides: Any) -> Settings:
    """A run's settings in production configuration: its own SQLite database under `workdir`,
    payload encryption with a throwaway key, a fresh decision secret; `overrides` on top."""
    key_id = f"bench-{run}"
    return Settings(
        _env_file=None,
        data_dir=workdir,
        database_url=f"sqlite:///{workdir / 'podium.db'}",
        encryption="on",
        encryption_keys=SecretStr(new_key_entry(key_id)),
        encryption_key_id=key_id,
        decision_secret=SecretStr(secrets.token_urlsafe(48)),
        **overrides,
    )


def worker_env(
    settings: Settings, server: DevServer, database_url: str, task_queue: str, code: Path
) -> dict[str, str]:
    """The worker's whole configuration: the run's server, database and queue, the settings'
    worker sizing, the code snapshot first on the path; nothing inherited from the caller's
    TEMPORAL_* / PODIUM_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEMPORAL_", "PODIUM_"))}
    env.update(
        {
            "TEMPORAL_ADDRESS": server.address,
            "TEMPORAL_NAMESPACE": "default",
            "PODIUM_DATA_DIR": str(settings.data_dir),
            "PODIUM_DATABASE_URL": database_url,
            "PODIUM_TASK_QUEUE": task_queue,
            "PODIUM_MAX_CACHED_WORKFLOWS": str(settings.max_cached_workflows),
            "PODIUM_STICKY_QUEUE_TIMEOUT_S": str(settings.sticky_queue_timeout_s),
            "PODIUM_STICKY_CACHE_GUARD": str(settings.sticky_cache_guard).lower(),
            "PODIUM_MAX_CONCURRENT_WORKFLOW_TASKS": str(settings.max_concurrent_workflow_tasks),
            "PODIUM_MAX_CONCURRENT_ACTIVITIES": str(settings.max_concurrent_activities),
            "PODIUM_ACTIVITY_THREADS": str(settings.activity_threads),
            "PODIUM_ENCRYPTION": settings.encryption,
            "PODIUM_LOG_LEVEL": "WARNING",
            "PODIUM_LOG_JSON": "true",
            "PYTHONPATH": str(code),
        }
    )
    if settings.encryption_keys is not None:
        env["PODIUM_ENCRYPTION_KEYS"] = settings.encryption_keys.get_secret_value()
    if settings.decision_secret is not None:
        env["PODIUM_DECISION_SECRET"] = settings.decision_secret.get_secret_value()
    if settings.encryption_key_id is not None:
        env["PODIUM_ENCRYPTION_KEY_ID"] = settings.encryption_key_id
    return env


def podium_client(server: DevServer, settings: Settings) -> Client:
    """The bench's client as Podium's own are made (`core.temporal`): same payload codec."""
    return Client(
        server.client.service_client,
        namespace=server.client.namespace,
        data_converter=data_converter(settings),
        header_codec_behavior=HeaderCodecBehavior.CODEC,
        interceptors=[AdmissionInterceptor()],  # decisions a busy case defers: sent again
    )


# --- parking --------------------------------------------------------------------------------------


class NoticeWatch:
    """When each refund case sent its approval request notice: the outbox, polled by id."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._last_id = 0
        self._waiters: dict[str, asyncio.Future[float]] = {}
        self._seen: dict[str, float] = {}

    def _fetch(self) -> list[tuple[int, str]]:
        with Session(self._engine) as session:
            rows = session.exec(
                select(Message.id, Message.case_id)
                .where(Message.kind == NOTICE_KIND, col(Message.id) > self._last_id)
                .order_by(col(Message.id))
            ).all()
        return [(int(row_id or 0), case_id) for row_id, case_id in rows]

    async def run(self) -> None:
        while True:
            rows = await asyncio.to_thread(self._fetch)
            now = time.monotonic()
            for row_id, case_id in rows:
                self._last_id = max(self._last_id, row_id)
                self._seen.setdefault(case_id, now)
                waiter = self._waiters.pop(case_id, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(now)
            await asyncio.sleep(NOTICE_POLL_S)

    async def wait(self, case_id: str) -> float:
        if case_id in self._seen:
            return self._seen[case_id]
        waiter = self._waiters.setdefault(case_id, asyncio.get_running_loop().create_future())
        return await waiter


@dataclass
class Parked:
    """A phase of parking: when each case parked (in order), wall time, worker CPU, errors."""

    order: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    worker_cpu_s: float = 0.0
    errors: list[str] = field(default_factory=list)
    events: list[int] = field(default_factory=list)
    history_bytes: list[int] = field(default_factory=list)
    verified: int = 0


async def park(
    name: str,
    case_ids: Sequence[str],
    start: Callable[[str], Awaitable[None]],
    parked: Callable[[str], Awaitable[None]],
    *,
    concurrency: int,
    worker: WorkerProcess,
    progress: Progress,
) -> Parked:
    """Start every case, at most `concurrency` on their way to the gate at once."""
    gate = asyncio.Semaphore(concurrency)
    result = Parked()
    step = max(1, len(case_ids) // 10)

    async def one(case_id: str) -> None:
        async with gate:
            try:
                await start(case_id)
                await worker.alive_while(parked(case_id), PARK_TIMEOUT_S)
                result.order.append(case_id)
            except Exception as err:  # counted and printed, never hidden
                result.errors.append(f"{case_id}: {type(err).__name__}: {err}")
        done = len(result.order) + len(result.errors)
        if done % step == 0 or done == len(case_ids):
            worker.ensure_alive()
            progress.say(f"{name}: {done}/{len(case_ids)} parked")

    cpu = worker.cpu_seconds()
    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for case_id in case_ids:
            group.create_task(one(case_id))
    result.wall_s = time.perf_counter() - started
    result.worker_cpu_s = worker.cpu_seconds() - cpu
    return result


def refund_parked(description: WorkflowExecutionDescription) -> bool:
    raw = description.raw_description
    return (
        description.status == WorkflowExecutionStatus.RUNNING
        and description.typed_search_attributes.get(sa.AWAITING_APPROVAL) is True
        and not raw.pending_activities
        and not raw.HasField("pending_workflow_task")
    )


def bare_parked(description: WorkflowExecutionDescription) -> bool:
    raw = description.raw_description
    return (
        description.status == WorkflowExecutionStatus.RUNNING
        and raw.workflow_execution_info.history_length >= 4  # its first task completed
        and not raw.HasField("pending_workflow_task")
    )


async def verify_parked(
    client: Client,
    phase: Parked,
    is_parked: Callable[[WorkflowExecutionDescription], bool],
) -> list[str]:
    """Describe every case on the server until each one is parked (bounded); what never was."""
    gate = asyncio.Semaphore(SWEEP_CONCURRENCY)
    sizes: dict[str, tuple[int, int]] = {}
    todo = list(phase.order)

    async def check(case_id: str) -> None:
        async with gate:
            description = await client.get_workflow_handle(case_id).describe()
        if is_parked(description):
            info = description.raw_description.workflow_execution_info
            sizes[case_id] = (info.history_length, info.history_size_bytes)

    for _ in range(SWEEP_ROUNDS):
        async with asyncio.TaskGroup() as group:
            for case_id in todo:
                group.create_task(check(case_id))
        todo = [case_id for case_id in todo if case_id not in sizes]
        if not todo:
            break
        await asyncio.sleep(1.0)
    phase.verified = len(sizes)
    phase.events = [events for events, _ in sizes.values()]
    phase.history_bytes = [size for _, size in sizes.values()]
    return todo


# --- decisions ----------------------------------------------------------------------------------


@dataclass
class Decided:
    case_id: str
    group: str  # "first_parked" | "last_parked"
    completion_ms: float
    ack_ms: float | None
    ok: bool
    detail: str


# The run's decision key (the worker's, under the run's data folder): set by `run_benchmark`.
_decision_keys: list[DecisionKey] = []


def _decision(case_id: str) -> ApprovalDecisionInput:
    """The approval, with the decision token the API would mint for the approver."""
    decision = ApprovalDecisionInput(
        request_id=APPROVAL_REQUEST_ID,
        decision_id=f"bench-{case_id}",
        action=ApprovalAction.APPROVE,
        approver=APPROVER,
        approver_roles=APPROVER_ROLES,
    )
    if not _decision_keys:
        return decision
    credential = _decision_keys[-1].mint(
        subject=APPROVER, roles=APPROVER_ROLES, digest=decision_digest(case_id, decision)
    )
    return decision.model_copy(update={"credential": credential})


async def decide_refund(client: Client, case_id: str, group: str) -> Decided:
    handle = client.get_workflow_handle(case_id, result_type=RefundCaseResult)
    started = time.perf_counter()
    await handle.execute_update("decide", _decision(case_id), result_type=ApprovalDecisionResult)
    acked = time.perf_counter()
    result = await handle.result()
    done = time.perf_counter()
    ok = result.outcome == RefundOutcome.APPROVED and result.refund_id is not None
    return Decided(
        case_id,
        group,
        (done - started) * 1_000,
        (acked - started) * 1_000,
        ok,
        f"outcome {result.outcome.value}: " + "; ".join(result.reasons),
    )


async def decide_bare(client: Client, case_id: str, group: str) -> Decided:
    handle = client.get_workflow_handle(case_id, result_type=bool)
    started = time.perf_counter()
    await handle.signal("decide", _decision(case_id))
    approved = await handle.result()
    done = time.perf_counter()
    return Decided(case_id, group, (done - started) * 1_000, None, approved is True, f"{approved}")


def sample_groups(order: Sequence[str], sample: int) -> list[tuple[str, str]]:
    """(case id, group): half the sample from the cases parked first, half from the last."""
    k = min(sample, len(order))
    first = list(order[: k // 2])
    last = list(order[len(order) - (k - k // 2) :])
    return [(c, "first_parked") for c in first] + [(c, "last_parked") for c in last]


def expected_cached(n: int, cache: int, sample: int) -> dict[str, int]:
    """How many of each group should still be in the worker's cache when decided: the cache
    holds the last `cache` cases parked (least recently used go first); deciding the first
    group evicts as many of the oldest cached ones, which are not in the last group while
    `cache >= sample`."""
    k = min(sample, n)
    first, last = k // 2, k - k // 2
    return {
        "first_parked": max(0, first - max(0, n - cache)),
        "last_parked": last if cache >= k else max(0, min(last, cache - first)),
    }


async def decide_sample(
    name: str,
    client: Client,
    picks: Sequence[tuple[str, str]],
    decide: Callable[[Client, str, str], Awaitable[Decided]],
    worker: WorkerProcess,
    progress: Progress,
) -> tuple[list[Decided], list[str]]:
    """One decision at a time: its latency is the case's, not a queue's."""
    decided: list[Decided] = []
    errors: list[str] = []
    step = max(1, len(picks) // 4)
    for index, (case_id, group) in enumerate(picks, start=1):
        try:
            decided.append(
                await worker.alive_while(decide(client, case_id, group), DECIDE_TIMEOUT_S)
            )
        except Exception as err:  # counted and printed, never hidden
            errors.append(f"{case_id}: {type(err).__name__}: {err}")
        if index % step == 0 or index == len(picks):
            progress.say(f"{name}: {index}/{len(picks)} decided")
    return decided, errors


# --- the run ------------------------------------------------------------------------------------


def _spread(values: Sequence[float]) -> dict[str, float | None]:
    def rounded(value: float) -> float | None:
        return None if math.isnan(value) else round(value, 1)

    values = list(values)
    return {
        "n": len(values),
        "p50": rounded(percentile(values, 50)),
        "p95": rounded(percentile(values, 95)),
        "max": rounded(max(values)) if values else None,
        "mean": rounded(sum(values) / len(values)) if values else None,
    }


def _mean(values: Sequence[float]) -> float | None:
    return round(sum(values) / len(values), 1) if values else None


def _machine() -> dict[str, Any]:
    try:
        cli = subprocess.run(
            [str(TEMPORAL_CLI), "--version"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        cli = "temporal CLI (version unknown)"
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(terse=True),
        "python": platform.python_version(),
        "temporalio": temporalio.__version__,
        "temporal_cli": cli,
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


@dataclass
class SystemRun:
    """What one system (Podium's refund or the bare wait) measured."""

    name: str
    worker: WorkerProcess
    rss: dict[str, int] = field(default_factory=dict)
    parked: Parked = field(default_factory=Parked)
    not_parked: list[str] = field(default_factory=list)
    decided: list[Decided] = field(default_factory=list)
    decide_errors: list[str] = field(default_factory=list)

    def report(self, n: int, cache: int) -> dict[str, Any]:
        parked = self.parked
        grown = self.rss["parked"] - self.rss["before"]
        groups = {
            group: {
                "completion_ms": _spread(
                    [d.completion_ms for d in self.decided if d.group == group]
                ),
            }
            for group in ("first_parked", "last_parked")
        }
        acks = [d.ack_ms for d in self.decided if d.ack_ms is not None]
        failures = [f"{d.case_id}: {d.detail}" for d in self.decided if not d.ok]
        return {
            "parked": parked.verified,
            "park_errors": parked.errors + [f"{c}: not parked" for c in self.not_parked],
            "park_wall_s": round(parked.wall_s, 1),
            "park_rate_per_s": round(len(parked.order) / parked.wall_s, 1)
            if parked.wall_s
            else None,
            "worker_cpu_ms_per_parked_case": round(parked.worker_cpu_s * 1_000 / n, 1),
            "history_events_per_parked_case": _mean(parked.events),
            "history_kib_per_parked_case": _mean([b / KIB for b in parked.history_bytes]),
            "worker_rss_mib": {k: round(v / MIB, 1) for k, v in self.rss.items()},
            "rss_per_parked_case_kib": round(grown / n / KIB, 1),
            "rss_per_cached_case_kib": round(grown / min(n, cache) / KIB, 1),
            "decisions": {
                "n": len(self.decided) + len(self.decide_errors),
                "ok": sum(1 for d in self.decided if d.ok),
                "completion_ms": _spread([d.completion_ms for d in self.decided]),
                "ack_ms": _spread(acks) if acks else None,
                "groups": groups,
                "failures": failures,
                "errors": self.decide_errors,
            },
        }

    def verified(self, n: int, sample: int) -> bool:
        return (
            self.parked.verified == n
            and not self.parked.errors
            and not self.not_parked
            and not self.decide_errors
            and len(self.decided) == min(sample, n)
            and all(d.ok for d in self.decided)
        )


async def _warm_up(
    refund: SystemRun,
    bare: SystemRun,
    client: Client,
    start_refund: Callable[[str], Awaitable[None]],
    refund_parked_at: Callable[[str], Awaitable[None]],
    start_bare: Callable[[str], Awaitable[None]],
    bare_parked_at: Callable[[str], Awaitable[None]],
    refund_ids: Sequence[str],
    bare_ids: Sequence[str],
) -> None:
    """Untimed cases through their decision first (sandbox imports, pools, SQLite)."""
    for system, ids, start, parked, decide in (
        (refund, refund_ids, start_refund, refund_parked_at, decide_refund),
        (bare, bare_ids, start_bare, bare_parked_at, decide_bare),
    ):
        for case_id in ids:
            await start(case_id)
            await system.worker.alive_while(parked(case_id), PARK_TIMEOUT_S)
            decided = await system.worker.alive_while(
                decide(client, case_id, "warm_up"), PARK_TIMEOUT_S
            )
            if not decided.ok:
                raise RuntimeError(f"warm-up {system.name} case {case_id}: {decided.detail}")


async def run_benchmark(opts: Options, out: TextIO = sys.stderr) -> dict[str, Any]:
    """Park N cases per system, measure, decide a sample; the report (see bench/README.md)."""
    if min(opts.n, opts.sample, opts.park_concurrency, opts.warmup) < 1:
        raise ValueError("--n, --sample, --park-concurrency and --warmup must be at least 1")
    progress = Progress(out)
    run = uuid.uuid4().hex[:8]
    policy = RefundPolicy()
    report: dict[str, Any] = {
        "benchmark": "gate",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": _machine(),
        "code": _code_version(),
    }
    with tempfile.TemporaryDirectory(prefix="podium-bench-gate-") as tmp:
        workdir = Path(tmp)
        database_url = f"sqlite:///{workdir / 'podium.db'}"
        overrides: dict[str, Any] = {"data_dir": workdir, "database_url": database_url}
        if opts.max_cached_workflows is not None:
            overrides["max_cached_workflows"] = opts.max_cached_workflows
        settings = Settings(**overrides)
        if settings.encryption == "on" and settings.encryption_keys is None:
            # As deployed: payloads encrypted; a throwaway key for this run, never printed.
            key_id = f"bench-{run}"
            settings = settings.model_copy(
                update={
                    "encryption_keys": SecretStr(new_key_entry(key_id)),
                    "encryption_key_id": key_id,
                }
            )
        # One decision key for the run: the bench mints with it, the workers verify with it.
        key = DecisionKey.from_settings(settings)
        _decision_keys.append(key)
        settings = settings.model_copy(update={"decision_secret": SecretStr(key.secret)})
        cache = settings.max_cached_workflows
        report["config"] = {
            "n": opts.n,
            "sample": min(opts.sample, opts.n),
            "park_concurrency": opts.park_concurrency,
            "warmup": opts.warmup,
            "seed": opts.seed,
            "max_cached_workflows": cache,
            "max_concurrent_activities": settings.max_concurrent_activities,
            "activity_threads": settings.activity_threads,
            "payload_encryption": settings.encryption,
            "approval_levels": [
                level.name for level in policy.approval_for(RiskLevel.MEDIUM).levels
            ],
        }
        engine = make_engine(database_url)
        try:
            create_tables(engine)
            limit = policy.auto_refund_limit_cents
            rng = random.Random(opts.seed)

            def seed(label: str, first: int, count: int) -> list[BenchCase]:
                # Over the automatic limit, under the high-risk multiple: medium risk, one level.
                return seed_cases(
                    engine,
                    label=label,
                    first_number=first,
                    count=count,
                    min_cents=limit + 100,
                    max_cents=4 * limit,
                    rng=rng,
                )

            cases = seed(f"gate-{run}", PARKED_ORDERS, opts.n)
            warm = seed(f"gate-{run}-warm", WARM_ORDERS, opts.warmup)
            by_id: dict[str, BenchCase] = {case.case_id: case for case in [*cases, *warm]}
            progress.say(f"seeded {opts.n + opts.warmup} customers and orders in {workdir}")
            async with asyncio.timeout(opts.timeout_s):
                report |= await _run(
                    opts,
                    settings,
                    engine,
                    database_url,
                    workdir,
                    run,
                    policy,
                    by_id,
                    [c.case_id for c in cases],
                    [c.case_id for c in warm],
                    progress,
                )
        finally:
            engine.dispose()
    report["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return report


async def _run(
    opts: Options,
    settings: Settings,
    engine: Engine,
    database_url: str,
    workdir: Path,
    run: str,
    policy: RefundPolicy,
    by_id: dict[str, BenchCase],
    parked_ids: list[str],
    warm_ids: list[str],
    progress: Progress,
) -> dict[str, Any]:
    n, cache = opts.n, settings.max_cached_workflows
    refund_queue, bare_queue = f"bench-gate-{run}", f"bench-wait-{run}"
    bare_ids = [f"bench-wait-{run}-{i:05d}" for i in range(n)]
    bare_warm = [f"bench-wait-{run}-warm-{i}" for i in range(opts.warmup)]
    case_timeout = timedelta(seconds=opts.timeout_s)

    code = snapshot_code(workdir)
    progress.say(f"workers run a snapshot of the code in {code}")
    progress.say("starting the Temporal dev server")
    async with dev_server(workdir, sa.ALL) as server:
        client = podium_client(server, settings)
        check_snapshot(worker_env(settings, server, database_url, "-", code), workdir, code)
        progress.say(f"Temporal dev server ready on {server.address}; starting both workers")
        async with (
            worker_process(
                "refund",
                "worker",
                worker_env(settings, server, database_url, refund_queue, code),
                workdir,
            ) as refund_worker,
            worker_process(
                "bare",
                "bench.wait",
                worker_env(settings, server, database_url, bare_queue, code),
                workdir,
            ) as bare_worker,
        ):
            refund, bare = SystemRun("refund", refund_worker), SystemRun("bare", bare_worker)
            notices = NoticeWatch(engine)
            watching = asyncio.create_task(notices.run())

            async def start_refund(case_id: str) -> None:
                case = by_id[case_id]
                await client.start_workflow(
                    "refund",
                    RefundCaseInput(
                        channel=CHANNEL,
                        customer_id=case.customer_id,
                        order_id=case.order_id,
                        message=case.message,
                        policy=policy,
                    ),
                    id=case_id,
                    task_queue=refund_queue,
                    execution_timeout=case_timeout,
                )

            async def refund_parked_at(case_id: str) -> None:
                await notices.wait(case_id)

            async def start_bare(case_id: str) -> None:
                await client.start_workflow(
                    "bench_wait", id=case_id, task_queue=bare_queue, execution_timeout=case_timeout
                )

            async def bare_parked_at(case_id: str) -> None:
                handle = client.get_workflow_handle(case_id)
                while not bare_parked(await handle.describe()):
                    await asyncio.sleep(BARE_POLL_S)

            try:
                await _warm_up(
                    refund,
                    bare,
                    client,
                    start_refund,
                    refund_parked_at,
                    start_bare,
                    bare_parked_at,
                    warm_ids,
                    bare_warm,
                )
                progress.say(f"warm-up: {opts.warmup} cases per system decided and completed")
                for system in (refund, bare):
                    await system.worker.wait_idle()
                    system.rss["before"] = system.worker.rss()
                progress.say(
                    f"worker RSS before parking: refund {refund.rss['before'] / MIB:.0f} MiB, "
                    f"bare {bare.rss['before'] / MIB:.0f} MiB"
                )

                for system, ids, start, parked in (
                    (refund, parked_ids, start_refund, refund_parked_at),
                    (bare, bare_ids, start_bare, bare_parked_at),
                ):
                    progress.say(
                        f"{system.name}: parking {n} cases, {opts.park_concurrency} at a time"
                    )
                    system.parked = await park(
                        system.name,
                        ids,
                        start,
                        parked,
                        concurrency=opts.park_concurrency,
                        worker=system.worker,
                        progress=progress,
                    )
                for system, check in ((refund, refund_parked), (bare, bare_parked)):
                    system.not_parked = await verify_parked(client, system.parked, check)
                    progress.say(
                        f"{system.name}: {system.parked.verified}/{n} verified parked on the "
                        f"server, {len(system.parked.errors)} errors"
                    )
                for system in (refund, bare):
                    await system.worker.wait_idle()
                    system.rss["parked"] = system.worker.rss()
                server_rss = _proc_status(server.process.pid, "VmRSS")
                progress.say(
                    f"worker RSS with {n} parked: refund {refund.rss['parked'] / MIB:.0f} MiB, "
                    f"bare {bare.rss['parked'] / MIB:.0f} MiB"
                )

                for system, decide in ((refund, decide_refund), (bare, decide_bare)):
                    picks = sample_groups(system.parked.order, opts.sample)
                    system.decided, system.decide_errors = await decide_sample(
                        system.name, client, picks, decide, system.worker, progress
                    )
                for system in (refund, bare):
                    system.rss["after_decisions"] = system.worker.rss()
                    system.rss["peak"] = system.worker.peak_rss()
            finally:
                watching.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watching
            progress.say("stopping the workers and the Temporal dev server")

    reports = {"refund": refund.report(n, cache), "bare": bare.report(n, cache)}

    def ratio(a: float | None, b: float | None) -> float | None:
        # None when either side is not a positive figure (e.g. RSS that shrank: noise at low N).
        return round(a / b, 2) if a is not None and b is not None and a > 0 and b > 0 else None

    podium, base = reports["refund"], reports["bare"]
    return {
        "systems": reports,
        "server_rss_mib_with_all_parked": round(server_rss / MIB, 1),
        "cache": {
            "max_cached_workflows": cache,
            "cached_at_most": min(n, cache),
            "expected_cached_when_decided": expected_cached(n, cache, opts.sample),
        },
        "ratios": {
            "rss_per_parked_case": ratio(
                podium["rss_per_parked_case_kib"], base["rss_per_parked_case_kib"]
            ),
            "completion_p50": ratio(
                podium["decisions"]["completion_ms"]["p50"],
                base["decisions"]["completion_ms"]["p50"],
            ),
            "completion_p95": ratio(
                podium["decisions"]["completion_ms"]["p95"],
                base["decisions"]["completion_ms"]["p95"],
            ),
            "worker_cpu_per_parked_case": ratio(
                podium["worker_cpu_ms_per_parked_case"], base["worker_cpu_ms_per_parked_case"]
            ),
        },
        "verified": refund.verified(n, opts.sample) and bare.verified(n, opts.sample),
    }


# --- the report ---------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]
    line = ["-" * width for width in widths]
    out = []
    for index, row in enumerate([headers, line, *rows]):
        cells = [
            cell.ljust(width) if column == 0 or index == 0 else cell.rjust(width)
            for column, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        out.append("  ".join(cells).rstrip())
    return "\n".join(out)


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def render_table(report: dict[str, Any]) -> str:
    config, machine, cache = report["config"], report["machine"], report["cache"]
    podium, bare = report["systems"]["refund"], report["systems"]["bare"]
    ratios = report["ratios"]
    n = config["n"]
    load = machine["loadavg_at_start"][0], machine.get("loadavg_at_end", [math.nan])[0]
    lines = [
        f"Podium approval-gate benchmark  {report['date']}  N={n} parked per system  "
        f"sample={config['sample']} decisions  park concurrency={config['park_concurrency']}",
        f"machine: {machine['cpus']} cores, {machine['platform']}, Python {machine['python']}, "
        f"temporalio {machine['temporalio']}, {machine['temporal_cli']}, 1-min load average "
        f"{load[0]:.2f} at start, {load[1]:.2f} at end",
        f"workers: max_cached_workflows={cache['max_cached_workflows']} "
        + (
            f"(< N: at most {cache['cached_at_most']} of the {n} parked cases stay cached; "
            "the others are replayed from history when decided)"
            if cache["max_cached_workflows"] < n
            else "(>= N: every parked case stays cached)"
        ),
        "",
    ]

    def decision(system: dict[str, Any], group: str | None, key: str) -> str:
        spread = (
            system["decisions"]["completion_ms"]
            if group is None
            else system["decisions"]["groups"][group]["completion_ms"]
        )
        return _fmt(spread[key], 0)

    expected = cache["expected_cached_when_decided"]
    half = {g: podium["decisions"]["groups"][g]["completion_ms"]["n"] for g in expected}
    rows = [
        [
            "cases parked (verified on the server)",
            f"{podium['parked']}/{n}",
            f"{bare['parked']}/{n}",
            "",
        ],
        ["park rate (cases/s)", _fmt(podium["park_rate_per_s"]), _fmt(bare["park_rate_per_s"]), ""],
        [
            "worker CPU per parked case (ms)",
            _fmt(podium["worker_cpu_ms_per_parked_case"]),
            _fmt(bare["worker_cpu_ms_per_parked_case"]),
            _ratio(ratios["worker_cpu_per_parked_case"]),
        ],
        [
            "history events per parked case",
            _fmt(podium["history_events_per_parked_case"]),
            _fmt(bare["history_events_per_parked_case"]),
            "",
        ],
        [
            "history KiB per parked case",
            _fmt(podium["history_kib_per_parked_case"]),
            _fmt(bare["history_kib_per_parked_case"]),
            "",
        ],
        [
            "worker RSS before parking (MiB)",
            _fmt(podium["worker_rss_mib"]["before"]),
            _fmt(bare["worker_rss_mib"]["before"]),
            "",
        ],
        [
            f"worker RSS with {n} parked (MiB)",
            _fmt(podium["worker_rss_mib"]["parked"]),
            _fmt(bare["worker_rss_mib"]["parked"]),
            "",
        ],
        [
            "RSS per parked case (KiB)",
            _fmt(podium["rss_per_parked_case_kib"]),
            _fmt(bare["rss_per_parked_case_kib"]),
            _ratio(ratios["rss_per_parked_case"]),
        ],
        [
            f"RSS per cached case (KiB, /{cache['cached_at_most']})",
            _fmt(podium["rss_per_cached_case_kib"]),
            _fmt(bare["rss_per_cached_case_kib"]),
            "",
        ],
        [
            "decision -> completion p50 (ms)",
            decision(podium, None, "p50"),
            decision(bare, None, "p50"),
            _ratio(ratios["completion_p50"]),
        ],
        [
            "decision -> completion p95 (ms)",
            decision(podium, None, "p95"),
            decision(bare, None, "p95"),
            _ratio(ratios["completion_p95"]),
        ],
    ]
    for group, label in (("first_parked", "parked first"), ("last_parked", "parked last")):
        rows.append(
            [
                f"  {label}: {expected[group]}/{half[group]} cached, p50 / p95",
                f"{decision(podium, group, 'p50')} / {decision(podium, group, 'p95')}",
                f"{decision(bare, group, 'p50')} / {decision(bare, group, 'p95')}",
                "",
            ]
        )
    ack = podium["decisions"]["ack_ms"] or {}
    rows += [
        [
            "`decide` update answered p50 / p95 (ms)",
            f"{_fmt(ack.get('p50'), 0)} / {_fmt(ack.get('p95'), 0)}",
            "-",
            "",
        ],
        [
            "decisions completed as expected",
            f"{podium['decisions']['ok']}/{podium['decisions']['n']}",
            f"{bare['decisions']['ok']}/{bare['decisions']['n']}",
            "",
        ],
        [
            "worker RSS after the decisions / peak (MiB)",
            f"{_fmt(podium['worker_rss_mib']['after_decisions'])} / "
            f"{_fmt(podium['worker_rss_mib']['peak'])}",
            f"{_fmt(bare['worker_rss_mib']['after_decisions'])} / "
            f"{_fmt(bare['worker_rss_mib']['peak'])}",
            "",
        ],
    ]
    lines.append(_table(["", "refund (Podium)", "bench_wait (bare)", "Podium / bare"], rows))
    lines += [
        "",
        f"Temporal dev server RSS with all {2 * n} cases parked: "
        f"{report['server_rss_mib_with_all_parked']:,.0f} MiB",
        "RSS: /proc/<worker pid>/status VmRSS, each worker in its own process, idle; per case "
        "= (parked - before) / N. Decision -> completion: one decision at a time, from sending "
        "it (refund: `decide` update; bare: signal) to the workflow result arriving.",
        "",
    ]
    problems = [
        f"{name}: {line}"
        for name in ("refund", "bare")
        for line in [
            *report["systems"][name]["park_errors"],
            *report["systems"][name]["decisions"]["failures"],
            *report["systems"][name]["decisions"]["errors"],
        ]
    ]
    lines += problems[:20] if problems else ["all cases parked and every decision completed"]
    return "\n".join(lines)


# --- command line -------------------------------------------------------------------------------


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def parse_args(argv: Sequence[str] | None = None) -> tuple[Options, bool, Path | None]:
    parser = argparse.ArgumentParser(
        prog="python -m bench.gate",
        description="Cases parked at Podium's approval gate vs a bare Temporal wait.",
    )
    parser.add_argument("--n", type=_positive, default=DEFAULT_N, help="cases parked per system")
    parser.add_argument(
        "--sample", type=_positive, default=DEFAULT_SAMPLE, help="decisions timed per system"
    )
    parser.add_argument(
        "--park-concurrency",
        type=_positive,
        default=DEFAULT_PARK_CONCURRENCY,
        help="cases on their way to the gate at once",
    )
    parser.add_argument(
        "--warmup", type=_positive, default=DEFAULT_WARMUP, help="untimed cases per system first"
    )
    parser.add_argument(
        "--max-cached-workflows",
        type=_positive,
        default=None,
        help="worker cache size (default: the settings', PODIUM_MAX_CACHED_WORKFLOWS)",
    )
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="give up after this many seconds"
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the generated data")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    parser.add_argument("--out", type=Path, help="also write the JSON report to this file")
    args = parser.parse_args(argv)
    opts = Options(
        n=args.n,
        sample=args.sample,
        park_concurrency=args.park_concurrency,
        warmup=args.warmup,
        timeout_s=args.timeout,
        seed=args.seed,
        max_cached_workflows=args.max_cached_workflows,
    )
    return opts, args.json, args.out


async def _until_terminated(opts: Options) -> dict[str, Any]:
    """SIGTERM cancels the run like Ctrl-C, so the workers and the server are stopped."""
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await run_benchmark(opts)


def main(argv: Sequence[str] | None = None) -> int:
    opts, as_json, out = parse_args(argv)
    configure_logging("WARNING")
    try:
        report = asyncio.run(_until_terminated(opts))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted: the workers and the Temporal dev server are stopped", file=sys.stderr)
        return 130
    except TimeoutError as err:
        print(f"gave up: {err or f'--timeout {opts.timeout_s:.0f} s passed'}", file=sys.stderr)
        return 2
    text = json.dumps(report, indent=2, allow_nan=False)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    print(text if as_json else render_table(report))
    return 0 if report["verified"] else 1


if __name__ == "__main__":
    sys.exit(main())
