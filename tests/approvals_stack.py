"""The real approvals stack the inbox tests run against.

The Temporal dev server (`dev_env`), a worker running the real refund workflow with every real
activity (embedded models, SQLite systems of record seeded with the demo data), and the HTTP API
served by uvicorn on a free loopback port, on a fresh task queue: what an approver's browser or
CLI talks to.
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import uvicorn
from sqlalchemy.engine import Engine
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from activities.intelligence import EmbeddedModels
from activities.intelligence.gateway import ModelGateway
from core.settings import Settings
from starter.api import create_app
from tests.auth_helpers import TEST_JWT_SECRET
from tests.helpers import seeded_engine
from worker import build_activities, build_worker
from workflows.contracts import search_attributes as sa
from workflows.contracts.approval import ApprovalLevel, ApprovalPolicy
from workflows.refund.starting import refund_policy
from workflows.refund.types import RefundCaseInput, RiskLevel
from workflows.registry import PROCESSES, Registry

__all__ = ["ApprovalsStack", "approvals_stack", "eventually", "free_port", "short_sla_policy"]

_T = TypeVar("_T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def eventually(
    probe: Callable[[], Awaitable[_T]],
    check: Callable[[_T], bool],
    *,
    timeout: float = 20.0,
    interval: float = 0.2,
) -> _T:
    """Poll `probe` until `check` holds (visibility is eventually consistent); the last value
    otherwise, for the caller's assertion to show."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if check(value) or time.monotonic() > deadline:
            return value
        await asyncio.sleep(interval)


def short_sla_policy(settings: Settings, sla: timedelta) -> Any:
    """The settings' refund policy, with one `team_lead` level whose SLA is `sla` for every
    risk: a case that is overdue (and escalated) a moment after it asks."""
    level = ApprovalLevel(name="team_lead", approver_roles=["team_lead"], sla=sla)
    approval = ApprovalPolicy(levels=[level], deadline=timedelta(hours=1))
    return refund_policy(settings.model_dump(mode="json")).model_copy(
        update={"approvals": {risk: approval for risk in RiskLevel}}
    )


@dataclass
class ApprovalsStack:
    base_url: str
    engine: Engine
    settings: Settings
    client: Client
    started: list[str] = field(default_factory=list)

    async def start_case(
        self,
        *,
        customer_id: str,
        order_id: str,
        message: str,
        policy: Any,
        summary: str,
    ) -> str:
        """A refund case started on Temporal directly, with a policy of its own (the API
        stamps the settings' policy on every case)."""
        case_id = f"refund-{uuid.uuid4().hex}"
        await self.client.start_workflow(
            "refund",
            RefundCaseInput(
                channel="email",
                customer_id=customer_id,
                order_id=order_id,
                message=message,
                policy=policy,
            ),
            id=case_id,
            task_queue=self.settings.task_queue,
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(sa.PROCESS, "refund"),
                    SearchAttributePair(sa.CUSTOMER_ID, customer_id),
                ]
            ),
            static_summary=summary,
        )
        self.started.append(case_id)
        return case_id

    async def terminate_running(self, case_ids: list[str]) -> None:
        """Nothing a test started may keep waiting on the shared dev server."""
        for case_id in case_ids:
            handle = self.client.get_workflow_handle(case_id)
            with suppress(RPCError):
                if (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
                    await handle.terminate("test finished")


@asynccontextmanager
async def approvals_stack(
    dev_env: WorkflowEnvironment,
    tmp_path: Path,
    models: EmbeddedModels,
    *,
    processes: Registry = PROCESSES,
    extra_activities: Sequence[Callable[..., Any]] = (),
    gateway: ModelGateway | None = None,
    port: int | None = None,
) -> AsyncIterator[ApprovalsStack]:
    """`processes` and `extra_activities`: a registry with more processes, and what they need
    beyond the production activities; `gateway`: the model gateway (default: the repository's
    models file, embedded models only); `port`: the API's (default: a free one), for a service
    that must know it before the API starts (a carrier's webhook)."""
    port = port or free_port()
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        task_queue=f"inbox-{uuid.uuid4().hex}",
        data_dir=tmp_path,
        api_port=port,
        jwt_secret=TEST_JWT_SECRET,
    )
    engine = seeded_engine(tmp_path)

    async def factory(_: Settings) -> Client:
        return dev_env.client

    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings, factory, processes),
            host="127.0.0.1",
            port=port,
            log_level="error",
        )
    )
    stack = ApprovalsStack(f"http://127.0.0.1:{port}", engine, settings, dev_env.client)
    with ThreadPoolExecutor(max_workers=settings.activity_threads) as executor:
        worker = build_worker(
            dev_env.client,
            settings,
            activities=[*build_activities(engine, models, gateway), *extra_activities],
            executor=executor,
            processes=processes,
        )
        async with worker:
            serving = asyncio.create_task(server.serve())
            while not server.started:
                if serving.done():
                    serving.result()  # raises why uvicorn could not start
                await asyncio.sleep(0.05)
            try:
                yield stack
            finally:
                await stack.terminate_running(stack.started)
                server.should_exit = True
                await serving
    engine.dispose()
