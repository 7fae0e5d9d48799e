"""End to end: real Temporal dev server, real worker and activities, real HTTP API, real CLI.

1. The API served by uvicorn on a loopback port, a worker with every real activity (embedded
   models included) and a seeded SQLite database: a case is started, listed as pending, approved
   through the API and ends `approved` with exactly one refund row.
2. `podium up` itself, as a user runs it: the CLI submits a refund over the limit, `podium pending`
   and the Temporal UI's own API list it, `podium up` is stopped and started again while the case
   waits, and `podium approve` completes it with exactly one refund.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from activities.intelligence import EmbeddedModels
from core.db import Refund, make_engine
from core.settings import Settings
from starter.api import create_app
from starter.auth import jwt_secret_file, mint_token
from tests.auth_helpers import TEST_JWT_SECRET, AsCaller
from tests.helpers import seeded_engine
from worker import build_activities, build_worker

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def refund_count(engine: Engine, case_id: str) -> int:
    with Session(engine) as session:
        return len(list(session.exec(select(Refund).where(Refund.case_id == case_id))))


@pytest.fixture(scope="module")
def models() -> EmbeddedModels:
    return EmbeddedModels.load()


@pytest.fixture
async def stack(
    dev_env: WorkflowEnvironment, tmp_path: Path, models: EmbeddedModels
) -> AsyncIterator[tuple[str, Engine]]:
    """Worker + API (uvicorn on a free loopback port) on a fresh task queue and database."""
    port = free_port()
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        task_queue=f"e2e-{uuid.uuid4().hex}",
        data_dir=tmp_path,
        api_port=port,
        jwt_secret=TEST_JWT_SECRET,
    )
    engine = seeded_engine(tmp_path)

    async def factory(_: Settings) -> Client:
        return dev_env.client

    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings, factory), host="127.0.0.1", port=port, log_level="error"
        )
    )
    with ThreadPoolExecutor(max_workers=settings.activity_threads) as executor:
        worker = build_worker(
            dev_env.client,
            settings,
            activities=build_activities(engine, models),
            executor=executor,
        )
        async with worker:
            serving = asyncio.create_task(server.serve())
            while not server.started:
                await asyncio.sleep(0.05)
            try:
                yield f"http://127.0.0.1:{port}", engine
            finally:
                server.should_exit = True
                await serving
    engine.dispose()


async def test_refund_through_the_api_start_approve_outcome(
    stack: tuple[str, Engine],
) -> None:
    base_url, engine = stack
    async with httpx.AsyncClient(base_url=base_url, timeout=30, auth=AsCaller()) as http:
        created = await http.post(
            "/cases/refund",
            json={
                "channel": "email",
                "customer_id": "C-1002",
                "order_id": "O-5003",
                "message": "Hello, my order O-5003 arrived broken. I want a refund please.",
            },
            headers={"Idempotency-Key": uuid.uuid4().hex},
        )
        assert 201 == created.status_code, created.text
        case_id = created.json()["case_id"]

        view: dict[str, Any] = {}
        for _ in range(100):
            view = (await http.get(f"/cases/{case_id}")).json()
            if view.get("state", {}).get("status") == "awaiting_approval":
                break
            await asyncio.sleep(0.1)
        assert "awaiting_approval" == view["state"]["status"], view
        assert "refund_request" == view["state"]["intent"]

        pending: list[dict[str, Any]] = []
        for _ in range(50):  # visibility is eventually consistent
            pending = (await http.get("/approvals/pending", params={"min_amount": 100})).json()
            if any(item["case_id"] == case_id for item in pending):
                break
            await asyncio.sleep(0.1)
        assert case_id in [item["case_id"] for item in pending]

        decided = await http.post(
            f"/cases/{case_id}/approve",
            json={
                "approver": "lead@example.com",
                "roles": ["team_lead"],
                "comment": "customer sent photos",
            },
        )
        assert 200 == decided.status_code, decided.text
        assert "approved" == decided.json()["outcome"]
        assert decided.json()["effects"]["refund_id"]

        again = await http.post(f"/cases/{case_id}/approve", json={"approver": "someone-else"})
        assert 409 == again.status_code

        final = (await http.get(f"/cases/{case_id}")).json()
        assert "approved" == final["outcome"]
    assert 1 == refund_count(engine, case_id)


# --- `podium up` as a user runs it -------------------------------------------------------------


class Stack:
    """`podium up` in a subprocess with its own data folder and ports."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.temporal_port = free_port()
        self.ui_port = free_port()
        self.api_port = free_port()
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("TEMPORAL_", "PODIUM_"))},
            "PODIUM_DATA_DIR": str(data_dir),
            "PODIUM_TEMPORAL_PORT": str(self.temporal_port),
            "PODIUM_TEMPORAL_UI_PORT": str(self.ui_port),
            "PODIUM_API_PORT": str(self.api_port),
            "PODIUM_CODEC_PORT": str(free_port()),
            "PODIUM_API_URL": f"http://127.0.0.1:{self.api_port}",
            "PODIUM_LOG_JSON": "true",
        }
        self.process: subprocess.Popen[str] | None = None
        self.output: list[str] = []

    def start(self, timeout: float = 90) -> None:
        self.process = subprocess.Popen(
            [str(BIN / "podium"), "up"],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        ready = threading.Event()

        def pump() -> None:
            assert self.process is not None and self.process.stdout is not None
            for line in self.process.stdout:
                self.output.append(line)
                if "Podium is up." in line:
                    ready.set()

        threading.Thread(target=pump, daemon=True).start()
        if not ready.wait(timeout):
            self.stop()
            raise AssertionError("podium up did not come up:\n" + "".join(self.output[-40:]))

    def stop(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise

    def token(self, subject: str, roles: list[str]) -> str:
        """A token minted with the development secret `podium up` keeps in the data folder."""
        secret = jwt_secret_file(Settings(_env_file=None, data_dir=self.data_dir))  # type: ignore[call-arg]
        return mint_token(secret.read_text().strip(), subject, roles)

    def cli(self, *args: str, token: str | None = None) -> Any:
        env = {**self.env, "PODIUM_TOKEN": token or self.token("ops@example.com", ["admin"])}
        done = subprocess.run(
            [str(BIN / "podium"), *args, "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert 0 == done.returncode, done.stderr + done.stdout
        return json.loads(done.stdout)


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Stack]:
    stack = Stack(tmp_path / "var")
    yield stack
    if stack.process is not None and stack.process.poll() is None:
        stack.stop()


def wait_until(predicate: Any, timeout: float = 30, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.timeout(300)
def test_podium_up_cli_flow_survives_a_restart(up: Stack) -> None:
    up.start()
    banner = "".join(up.output)
    secret = jwt_secret_file(Settings(_env_file=None, data_dir=up.data_dir))  # type: ignore[call-arg]
    assert 0o600 == secret.stat().st_mode & 0o777
    first_secret = secret.read_text()
    for role in ("team_lead", "finance", "admin", "service"):
        assert f"PODIUM_TOKEN (dev, {role}" in banner
    assert first_secret not in banner  # the tokens, never the secret
    created = up.cli(
        "refund",
        "--customer",
        "C-1002",
        "--order",
        "O-5003",
        "--message",
        "My order O-5003 arrived broken, I want my money back",
    )
    case_id = created["case_id"]

    def listed() -> bool:
        return any(item["case_id"] == case_id for item in up.cli("pending"))

    wait_until(listed, what="the case in `podium pending`")

    # The Temporal UI's own API answers the operator's filter.
    query = 'PodiumProcess = "refund" AND PodiumAwaitingApproval = true AND PodiumAmount > 100'
    ui = httpx.get(
        f"http://127.0.0.1:{up.ui_port}/api/v1/namespaces/default/workflows",
        params={"query": query},
        timeout=30,
    )
    assert 200 == ui.status_code, ui.text
    assert case_id in [e["execution"]["workflowId"] for e in ui.json()["executions"]]

    assert 0 == up.stop()
    up.start()  # same data folder: the waiting case must still be there

    status = up.cli("status", case_id)
    assert "awaiting_approval" == status["state"]["status"]
    wait_until(listed, what="the case listed again after the restart")

    assert first_secret == secret.read_text()  # created once: tokens outlive a restart
    lead = up.token("lead@example.com", ["team_lead"])
    decided = up.cli("approve", case_id, "--role", "team_lead", token=lead)
    assert "approved" == decided["outcome"]
    assert "lead@example.com" == decided["approver"]
    assert 0 == up.stop()

    engine = make_engine(f"sqlite:///{up.data_dir / 'podium.db'}")
    try:
        assert 1 == refund_count(engine, case_id)
    finally:
        engine.dispose()
