"""Podium worker: load settings, configure logging, connect, build dependencies, register, run.

    python worker.py            # or: podium worker

Stops gracefully on SIGINT/SIGTERM, letting running activities finish (up to 15 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import py_compile
import signal
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy.engine import Engine
from temporalio import activity
from temporalio.client import Client
from temporalio.common import VersioningBehavior, WorkerDeploymentVersion
from temporalio.worker import (
    FixedSizeSlotSupplier,
    Worker,
    WorkerDeploymentConfig,
    WorkerTuner,
)
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.access import AccessActivities
from activities.agent import AgentActivities
from activities.agent_tools import CustomerServiceTools
from activities.audit import AuditActivities
from activities.carrier import CarrierActivities
from activities.decisions import DecisionVerifier
from activities.documents import DocumentStore
from activities.identity import IdentityActivities
from activities.intelligence.gateway import ModelGateway
from activities.intelligence.ledger import ModelLedger
from activities.knowledge import CaseRouter, KnowledgeActivities, StartCase
from activities.notifications import ApprovalNotifier, NotificationActivities, approval_notifier
from activities.operations import OperationsActivities
from activities.orders import OrderInquiryActivities
from activities.outcomes import OutcomeActivities
from activities.policy import PolicyActivities
from activities.systems import SystemsOfRecordActivities
from core.case_metrics import case_interceptors
from core.db import create_tables, make_engine
from core.decision_tokens import DecisionKey
from core.logging import configure_logging
from core.metrics import RuntimeMetrics, worker_metrics_runtime
from core.priority import PRIORITY_FILE_STEM, PriorityPolicy, load_priority_policy
from core.rollout import promote, replay_check
from core.scheduling import MODEL_ACTIVITIES, SchedulingInterceptor, model_task_queue
from core.settings import Settings
from core.shared_code import share_code
from core.sticky_cache import (
    CaseWorkflowRunner,
    GuardedSlotSupplier,
    StickinessReset,
    StickyCacheGuard,
    context_free,
)
from core.temporal import connect
from core.tracing import TRACING_PASSTHROUGH
from workflows.contracts.knowledge import RouteCaseInput, RouteCaseResult
from workflows.operations.types import operations_task_queue
from workflows.operations.workflow import WORKFLOWS as OPERATIONS
from workflows.registry import PROCESSES, Registry

if TYPE_CHECKING:
    # The models' libraries load only where model calls run (`model_activities`, role `models`
    # or `all`): a cases' worker imports none of them.
    from activities.intelligence import EmbeddedModels
    from activities.intelligence.ocr import ReceiptReader

__all__ = [
    "activity_name",
    "agent_activities",
    "build_activities",
    "build_model_worker",
    "build_operations_worker",
    "build_worker",
    "cache_sandbox_bytecode",
    "case_activities",
    "case_opener",
    "case_worker_sizing",
    "model_activities",
    "passthrough_modules",
    "priority_policy",
    "run",
    "serve_metrics",
    "strict_workflow_runner",
    "workflow_modules",
    "workflow_runner",
]

log = structlog.get_logger()

GRACEFUL_SHUTDOWN = timedelta(seconds=15)
# Temporal's defaults for the slots the cases' worker's tuner also sets.
LOCAL_ACTIVITY_SLOTS = 100
NEXUS_SLOTS = 100


# Podium's own deterministic modules, imported once per worker instead of once per case: the
# shared contracts, the reusable components (approval gate, agent loop, audit) and, per process,
# its pure rules and payload types (`workflows/<process>/rules.py`, `types.py`). Only the modules
# that define workflows stay sandboxed. Their determinism is proven by the replay tests under
# both this runner and `strict_workflow_runner` (every Podium workflow module sandboxed).
PASSTHROUGH_PACKAGES = ("workflows.contracts", "workflows.components")
PROCESS_PASSTHROUGH = ("rules", "types")


def passthrough_modules(processes: Registry = PROCESSES) -> list[str]:
    """The modules the sandbox takes from the worker instead of importing them per case."""
    payloads = {model.__module__ for p in processes for model in (p.input, p.state, p.result)}
    siblings = {
        f"{p.workflow.__module__.rpartition('.')[0]}.{name}"
        for p in processes
        for name in PROCESS_PASSTHROUGH
    }
    workflow_modules = {p.workflow.__module__ for p in processes}
    # The operations' payload types (`workflows/operations/`, on the operations' worker).
    operations = {f"{w.__module__.rpartition('.')[0]}.types" for w in OPERATIONS}
    own = sorted((payloads | siblings | operations | set(PASSTHROUGH_PACKAGES)) - workflow_modules)
    return ["activities.types", "activities.agent_types", *own, "pydantic", "pydantic_core"]


def workflow_runner(processes: Registry = PROCESSES) -> SandboxedWorkflowRunner:
    """The sandbox, with Podium's deterministic modules passed through (`passthrough_modules`):
    a parked case then holds its own state, not its own copy of the gate, rules and types."""
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(
            *passthrough_modules(processes), *TRACING_PASSTHROUGH
        )
    )


def strict_workflow_runner(processes: Registry = PROCESSES) -> SandboxedWorkflowRunner:
    """The sandbox with only payload modules passed through: every Podium module that workflow
    code runs is imported inside it, under its restrictions (the replay tests use both)."""
    payloads = sorted(
        {model.__module__ for p in processes for model in (p.input, p.state, p.result)}
    )
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(
            "activities.types",
            "activities.agent_types",
            "workflows.contracts",
            *payloads,
            "pydantic",
            "pydantic_core",
        )
    )


def workflow_modules(processes: Registry = PROCESSES) -> list[str]:
    """The modules that define the workflows this worker runs (the sandbox imports each per
    case): every process's and the operations'."""
    return sorted({p.workflow.__module__ for p in processes} | {w.__module__ for w in OPERATIONS})


def cache_sandbox_bytecode(processes: Registry = PROCESSES, fallback: Path | None = None) -> int:
    """Write the bytecode of the modules the sandbox imports for every new case (each process's
    workflow module and its packages); how many were written. Without it, with
    `PYTHONDONTWRITEBYTECODE=1` (the image sets it), the sandbox compiles them from source for
    every case (~30 ms of CPU for the refund workflow's module alone). Where the code is
    read-only, the bytecode goes under `fallback` (`sys.pycache_prefix`)."""
    names: set[str] = set()
    for process in processes:
        parts = process.workflow.__module__.split(".")
        names.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    sources = sorted(
        {
            module.__file__
            for name in names
            if (module := sys.modules.get(name)) is not None
            and module.__file__
            and module.__file__.endswith(".py")
        }
    )
    written = 0
    for source in sources:
        try:
            py_compile.compile(source, cfile=importlib.util.cache_from_source(source), doraise=True)
        except (OSError, py_compile.PyCompileError):
            if fallback is None or sys.pycache_prefix is not None:
                continue
            sys.pycache_prefix = str(fallback)  # read by every later import, the sandbox's too
            return cache_sandbox_bytecode(processes)
        written += 1
    return written


def build_activities(
    engine: Engine,
    models: EmbeddedModels,
    gateway: ModelGateway | None = None,
    *,
    approvals: ApprovalNotifier | None = None,
    reader: ReceiptReader | None = None,
    decisions: DecisionVerifier | None = None,
    knowledge: KnowledgeActivities | None = None,
    router: CaseRouter | None = None,
) -> list[Callable[..., Any]]:
    """Every activity, the cases' and the models' (one worker serving one queue, as the tests
    run it). Without a gateway: the repository's `config/models.yaml`, its ledger on `engine`.
    Without a receipt `reader`, the first `read_document` builds the worker's one. Without a
    decision verifier: one with the settings' decision key (`PODIUM_DECISION_SECRET`)."""
    gateway = gateway or ModelGateway.from_file(None, models, ledger=ModelLedger(engine))
    return [
        *case_activities(engine, approvals=approvals, decisions=decisions, router=router),
        *model_activities(engine, models, gateway, reader=reader, knowledge=knowledge),
    ]


def case_activities(
    engine: Engine,
    *,
    approvals: ApprovalNotifier | None = None,
    decisions: DecisionVerifier | None = None,
    router: CaseRouter | None = None,
) -> list[Callable[..., Any]]:
    """The activities of the case task queue: systems of record, notifications, audit,
    outcomes, decisions, policy, identity and access, carrier, orders, agent transcripts and
    tools, re-routing. None of them loads a model."""
    systems = SystemsOfRecordActivities(engine)
    # Approver notices go to `approvals` (log or webhook channel); default: the log.
    notifications = NotificationActivities(engine, approvals)
    audit = AuditActivities(engine)
    decisions = decisions or DecisionVerifier(DecisionKey.from_settings(Settings()))
    identity = IdentityActivities.from_env(engine)
    # A person re-routes a handoff: the case opens as `POST /cases/{process}` would open it.
    router = router or CaseRouter(case_opener())
    agent = AgentActivities(engine, None)
    tools = CustomerServiceTools(engine)
    return [
        *systems.activities(),
        notifications.send_reply,
        notifications.notify_escalation,
        notifications.notify_approvers,
        audit.record_audit_event,
        OutcomeActivities(engine).record_outcome,
        decisions.verify_decision,
        agent.store_transcript,
        agent.load_transcript,
        agent.append_tool_result,
        tools.lookup_order_status,
        tools.create_ticket_note,
        tools.issue_goodwill_credit,
        PolicyActivities(engine).evaluate_policy,
        # The SCIM directory `PODIUM_SCIM_URL` names (default: the embedded one of `podium up`),
        # shared by the identity and access activities (one pooled client).
        *identity.activities(),
        *AccessActivities.from_env(identity.directory, engine).activities(),
        # The carrier `PODIUM_CARRIER_URL` names (default: the embedded one of `podium up`).
        *CarrierActivities.from_env().activities(),
        *OrderInquiryActivities(engine).activities(),
        router.route_case,
    ]


def model_activities(
    engine: Engine,
    models: EmbeddedModels,
    gateway: ModelGateway,
    *,
    reader: ReceiptReader | None = None,
    knowledge: KnowledgeActivities | None = None,
) -> list[Callable[..., Any]]:
    """The model calls (`core.scheduling.MODEL_ACTIVITIES`): intent and sentiment, drafting,
    OCR and field extraction, the agent's chat turns, the knowledge base (`knowledge/`,
    indexed on the first search)."""
    from activities.ai import IntelligenceActivities

    intelligence = IntelligenceActivities(
        models, gateway, documents=DocumentStore(engine), reader=reader
    )
    knowledge = knowledge or KnowledgeActivities()
    return [
        intelligence.triage_request,
        intelligence.draft_reply,
        intelligence.read_document,
        intelligence.extract_fields,
        AgentActivities(engine, gateway).agent_next_step,
        knowledge.search_knowledge,
        knowledge.brief_handoff,
    ]


def case_opener(settings: Settings | None = None, processes: Registry = PROCESSES) -> StartCase:
    """How `route_case` opens a case of another process: the starter's own `start` (request
    validated, policy file read, search attributes set), on the task queue of the activity."""

    async def start(input: RouteCaseInput, task_queue: str) -> RouteCaseResult:
        from starter.client import (
            IdempotencyConflict,
            InvalidRequest,
            PodiumClient,
            ProcessNotFound,
        )

        base = settings or Settings()
        podium = PodiumClient(
            activity.client(), base.model_copy(update={"task_queue": task_queue}), processes
        )
        try:
            ref = await podium.start(
                input.process,
                input.request,
                input.idempotency_key,
                requested_by=input.requested_by,
            )
        except (ProcessNotFound, InvalidRequest, IdempotencyConflict) as err:
            raise ValueError(str(err)) from None
        return RouteCaseResult(case_id=ref.case_id, created=ref.created)

    return start


def activity_name(function: Callable[..., Any]) -> str:
    """The name an activity function is registered under (`@activity.defn(name=...)`)."""
    definition = getattr(function, "__temporal_activity_definition", None)
    if definition is None:
        raise TypeError(f"{function!r} is not an activity (no @activity.defn)")
    return str(definition.name)


def agent_activities(engine: Engine, gateway: ModelGateway) -> list[Callable[..., Any]]:
    """The tool-calling agent's transcript and model turns (its chat model is `tasks.agent` in
    the models file), and the customer-service tools it may call."""
    agent = AgentActivities(engine, gateway)
    tools = CustomerServiceTools(engine)
    return [
        agent.store_transcript,
        agent.load_transcript,
        agent.agent_next_step,
        agent.append_tool_result,
        tools.lookup_order_status,
        tools.create_ticket_note,
        tools.issue_goodwill_credit,
    ]


def build_worker(
    client: Client,
    settings: Settings,
    *,
    activities: Sequence[Callable[..., Any]],
    executor: ThreadPoolExecutor,
    task_queue: str | None = None,
    processes: Registry = PROCESSES,
    model_queue: str | None = None,
    priority: PriorityPolicy | None = None,
) -> Worker:
    """A worker for every process of `processes`; refuses to start when an activity a process
    needs is missing from `activities` (a wiring mistake, better seen now than mid-case).
    `model_queue`: the cases' model calls go there (`build_model_worker` serves it) instead of
    this worker's queue. `priority`: the policy that raises the priority of a case's activities
    as the case learns more (`core.scheduling`)."""
    provided = {activity_name(function) for function in activities}
    if model_queue is not None:
        provided |= MODEL_ACTIVITIES
    for process in processes:
        missing = sorted(set(process.activities) - provided)
        if missing:
            raise ValueError(
                f"process '{process.name}' needs activities the worker lacks: {', '.join(missing)}"
            )
    versioning: dict[str, Any] = {}
    if settings.deployment_name and settings.build_id:
        # A case stays with the build that started it unless its process auto-upgrades.
        versioning["deployment_config"] = WorkerDeploymentConfig(
            version=WorkerDeploymentVersion(
                deployment_name=settings.deployment_name, build_id=settings.build_id
            ),
            use_worker_versioning=True,
            default_versioning_behavior=VersioningBehavior.PINNED,
        )
    return Worker(
        client,
        task_queue=task_queue or settings.task_queue,
        workflows=processes.workflows,
        activities=list(activities),
        activity_executor=executor,
        max_cached_workflows=settings.cached_workflows,
        sticky_queue_schedule_to_start_timeout=timedelta(seconds=settings.sticky_queue_timeout_s),
        **case_worker_sizing(settings, workflow_runner(processes), client),
        graceful_shutdown_timeout=GRACEFUL_SHUTDOWN,
        # `podium_cases_closed_total` and the outcome record of every case (core/case_metrics.py);
        # model calls to the models' queue, priorities (core/scheduling.py).
        interceptors=[*case_interceptors(), SchedulingInterceptor(model_queue, priority)],
        **versioning,
    )


def case_worker_sizing(
    settings: Settings, runner: SandboxedWorkflowRunner, client: Client
) -> dict[str, Any]:
    """The cases' worker's runner and task slots (core/sticky_cache.py): the sandbox, asked for
    no payload context the client's converter would ignore; with `sticky_cache_guard` (the
    default), a cache that holds the cases in motion (built on the worker's event loop)."""
    lean = context_free(client.data_converter)
    if not settings.sticky_cache_guard:
        return {
            "workflow_runner": CaseWorkflowRunner(runner, context_free=lean),
            "max_concurrent_workflow_tasks": settings.max_concurrent_workflow_tasks,
            "max_concurrent_activities": settings.max_concurrent_activities,
        }
    # The resets run on the worker's event loop (a worker is built on it; without one, as in a
    # synchronous check of the options, cases pushed out just keep their stickiness).
    try:
        reset: StickinessReset | None = StickinessReset(client, asyncio.get_running_loop())
    except RuntimeError:
        reset = None
    guard = StickyCacheGuard(
        settings.cached_workflows, patience_s=settings.sticky_cache_patience_s, on_pushed_out=reset
    )
    if reset is not None:
        reset.still_out = lambda run_id: not guard.is_cached(run_id)
    return {
        "workflow_runner": CaseWorkflowRunner(runner, guard=guard, context_free=lean),
        "tuner": WorkerTuner.create_composite(
            workflow_supplier=GuardedSlotSupplier(guard, settings.max_concurrent_workflow_tasks),
            activity_supplier=FixedSizeSlotSupplier(settings.max_concurrent_activities),
            local_activity_supplier=FixedSizeSlotSupplier(LOCAL_ACTIVITY_SLOTS),
            nexus_supplier=FixedSizeSlotSupplier(NEXUS_SLOTS),
        ),
    }


def build_model_worker(
    client: Client,
    settings: Settings,
    *,
    activities: Sequence[Callable[..., Any]],
    executor: ThreadPoolExecutor,
    task_queue: str | None = None,
) -> Worker:
    """The models' worker: the model calls only, on the models' task queue (default:
    `<task_queue>-models`), at most `model_activities_per_second` started per second across
    every worker of the queue (the server holds the rest back, most urgent first)."""
    rate = settings.model_activities_per_second
    return Worker(
        client,
        task_queue=task_queue or model_task_queue(settings.task_queue),
        activities=list(activities),
        activity_executor=executor,
        max_concurrent_activities=settings.max_concurrent_model_activities,
        max_task_queue_activities_per_second=rate or None,
        graceful_shutdown_timeout=GRACEFUL_SHUTDOWN,
    )


def priority_policy(settings: Settings) -> PriorityPolicy | None:
    """`policies/priority.yaml` (or the settings' policies folder's); None without one. A file
    that does not validate is logged and left out: cases run at the priority they started with."""
    from core.policy import DEFAULT_POLICIES_DIR, PolicyError

    path = (settings.policies_dir or DEFAULT_POLICIES_DIR) / f"{PRIORITY_FILE_STEM}.yaml"
    if not path.exists():
        return None
    try:
        return load_priority_policy(path)
    except PolicyError as err:
        log.error("priority_policy_invalid", path=str(path), errors=err.errors)
        return None


async def run(settings: Settings, *, processes: Registry = PROCESSES) -> None:
    """Serve `processes` (default: every registered process) until SIGINT/SIGTERM: their cases,
    their model calls or both, by `settings.worker_role`."""
    role = settings.worker_role
    serves_cases, serves_models = role in ("all", "cases"), role in ("all", "models")
    if serves_cases:
        cache_sandbox_bytecode(processes, fallback=settings.data_dir / "bytecode")
        # One copy of each workflow module's code for all the cases the sandbox imports it for.
        share_code(workflow_modules(processes))
    engine = make_engine(settings.resolved_database_url)
    create_tables(engine)
    gateway: ModelGateway | None = None
    reader: ReceiptReader | None = None
    if serves_models:
        from activities.intelligence import EmbeddedModels
        from activities.intelligence.ocr import ReceiptReader

        models = EmbeddedModels.load(settings.datasets_dir, settings.templates_dir)
        gateway = ModelGateway.from_file(settings.models_file, models, ledger=ModelLedger(engine))
        reader = ReceiptReader()  # OCR models, loaded once and shared by the activity threads
    approvals = approval_notifier(settings)  # approver notices: log, or the webhook's pool
    metrics = serve_metrics(settings)
    runtime: dict[str, Any] = {"runtime": metrics.runtime} if metrics else {}
    client: Client = await connect(settings, worker=True, **runtime)
    # Decisions must reach cases encrypted whenever this worker's payloads are.
    decisions = DecisionVerifier(
        DecisionKey.from_settings(settings),
        require_encrypted=client.data_converter.payload_codec is not None,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    refused = False
    models_queue = model_task_queue(settings.task_queue)
    with ThreadPoolExecutor(max_workers=settings.activity_threads) as executor:
        workers: list[Worker] = []
        if serves_cases:
            workers.append(
                build_worker(
                    client,
                    settings,
                    activities=case_activities(engine, approvals=approvals, decisions=decisions),
                    executor=executor,
                    processes=processes,
                    model_queue=models_queue,
                    priority=priority_policy(settings),
                )
            )
            workers.append(
                build_operations_worker(
                    client, settings, engine=engine, executor=executor, approvals=approvals
                )
            )
        if gateway is not None:
            workers.append(
                build_model_worker(
                    client,
                    settings,
                    activities=model_activities(engine, models, gateway, reader=reader),
                    executor=executor,
                    task_queue=models_queue,
                )
            )
        async with contextlib.AsyncExitStack() as running:
            for worker in workers:
                await running.enter_async_context(worker)
            log.info(
                "worker_started",
                role=role,
                task_queue=settings.task_queue if serves_cases else None,
                models_task_queue=models_queue if serves_models else None,
                cached_workflows=settings.cached_workflows if serves_cases else None,
                namespace=client.namespace,
                processes=processes.names,
            )
            if serves_cases and settings.deployment_name and settings.build_id:
                # Become current only if this build replays every running case it would take.
                report = await replay_check(
                    client,
                    processes.workflows,
                    workflow_runner(processes),
                    task_queue=settings.task_queue,
                )
                if not await promote(client, settings.deployment_name, settings.build_id, report):
                    refused = True
                    stop.set()
            await stop.wait()
            log.info("worker_stopping")
    if gateway is not None:
        await asyncio.to_thread(gateway.close)
    await approvals.aclose()
    engine.dispose()
    if metrics is not None:
        metrics.close()
    log.info("worker_stopped")
    if refused:
        # The deploy is rolled back: the previous build stays current (core/rollout.py).
        raise SystemExit(1)


def build_operations_worker(
    client: Client,
    settings: Settings,
    *,
    engine: Engine,
    executor: ThreadPoolExecutor,
    approvals: ApprovalNotifier | None = None,
    task_queue: str | None = None,
) -> Worker:
    """The operations' worker (`workflows/operations/`: the KPI snapshot, the SLA-risk sweep)
    on their own task queue. Not the process registry's: they are no cases, and without the
    case interceptors they write no case outcome (which would count in the KPIs they take)."""
    from core.policy import DEFAULT_POLICIES_DIR
    from core.report import DEFAULT_BASELINE_FILE

    operations = OperationsActivities(
        engine,
        approvals,
        baseline_file=(settings.policies_dir or DEFAULT_POLICIES_DIR) / DEFAULT_BASELINE_FILE.name,
    )
    return Worker(
        client,
        task_queue=task_queue or operations_task_queue(settings.task_queue),
        workflows=list(OPERATIONS),
        activities=[*operations.activities(), AuditActivities(engine).record_audit_event],
        activity_executor=executor,
        workflow_runner=workflow_runner(),
        graceful_shutdown_timeout=GRACEFUL_SHUTDOWN,
    )


def serve_metrics(settings: Settings) -> RuntimeMetrics | None:
    """The worker's `/metrics` (`core.metrics`), unless `PODIUM_WORKER_METRICS_PORT` is 0. A port
    already taken costs the metrics, not the worker: it logs and serves cases without them."""
    if not settings.worker_metrics_port:
        return None
    try:
        metrics = worker_metrics_runtime(settings.worker_metrics_host, settings.worker_metrics_port)
    except OSError as err:
        log.warning(
            "worker_metrics_not_served",
            host=settings.worker_metrics_host,
            port=settings.worker_metrics_port,
            error=str(err),
        )
        return None
    log.info("worker_metrics_serving", url=metrics.url)
    return metrics


def main() -> None:
    settings = Settings()
    configure_logging(settings.log_level, settings.log_json)
    asyncio.run(run(settings))


if __name__ == "__main__":
    main()
