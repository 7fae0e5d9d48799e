"""The embedded runtime behind `make up` / `podium up`: one foreground command, Ctrl-C stops it.

It starts, in order, and supervises:
1. the Temporal dev server with SQLite persistence under the data folder (state survives a
   restart), the Temporal UI, and Podium's search attributes registered; skipped when Temporal's
   env config names a server (`TEMPORAL_ADDRESS`, a profile, Temporal Cloud), where the search
   attributes are registered through the operator API instead;
2. the systems-of-record database (tables created, demo data seeded on first run);
3. two workers (`python -m worker`): the cases' (`PODIUM_WORKER_ROLE=cases`, no model loaded)
   and the models' (`models`: the model calls on their own rate-limited task queue, metrics on
   the next port), the starter HTTP API (uvicorn) and the codec server
   (`python -m starter.codec_server`), which the Temporal UI is pointed at;
4. the access reviews' Temporal Schedule (`podium-access-review`, `starter/reviews.py`),
   created or updated to `policies/access_review.yaml`.
5. the operations' Schedules (`podium-kpi-snapshot`, `podium-sla-sweep`,
   `starter/operations.py`), created or updated to `policies/operations.yaml`.

Payloads in Temporal history are encrypted (`core.codec`). Without configured keys, the key and
the codec server's token are created once under `<data folder>/keys/` (mode 0600) and handed to
the children in their environment; `PODIUM_ENCRYPTION=off` turns encryption off. Likewise the
API's JWT secret (`keys/jwt-secret`) when `PODIUM_JWT_SECRET` is not set: the banner then prints a
development token (30 days) for each demo role.

The embedded UI decodes payloads for the operator on this machine without a token: the codec
server is started with `--trust-local-ui` (see `starter/codec_server.py` for who that admits).

Supervision: a child that exits while Podium is up (the worker, the API, the codec server or the
dev server) is started again after a backoff that doubles from `RESTART_BACKOFF_MIN` to
`RESTART_BACKOFF_MAX` and resets once it has run for `RESTART_STABLE_AFTER`; the others keep
serving meanwhile (a worker restart does not drop the API). A child that cannot start at all
during start-up stops `podium up` with the reason instead, since restarting a configuration error
helps nobody. Children run in their own process groups so Ctrl-C reaches only this supervisor,
which stops them in reverse order (codec server, API, worker, dev server), each with a grace
period. On Linux each child also asks the kernel for SIGKILL when this supervisor dies
(`PR_SET_PDEATHSIG`), so even a `kill -9` of `podium up` leaves no dev server holding the port
and the SQLite file, and no worker polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import structlog
from pydantic import SecretStr
from temporalio.api.enums.v1 import IndexedValueType, TaskQueueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.service import RPCError

from core.db import create_tables, make_engine
from core.logging import configure_logging
from core.policy import PolicyError
from core.scheduling import model_task_queue
from core.seed import DEMO_CUSTOMERS, seed_demo_data
from core.settings import Settings
from core.temporal import connect, connect_config, uses_external_temporal
from starter.auth import load_or_create_jwt_secret, mint_token
from starter.carrier_server import dev_env as carrier_dev_env
from starter.codec_server import codec_banner, codec_url, dev_secrets
from starter.operations import ensure_schedules as ensure_operations
from starter.reviews import SCHEDULE_ID, ensure_schedule
from starter.scim_server import dev_env as scim_dev_env
from workflows.contracts import search_attributes

__all__ = ["Supervisor", "register_search_attributes", "run", "temporal_cli_args"]

log = structlog.get_logger()

STARTUP_TIMEOUT = 60.0
STOP_GRACE = 20.0
RESTART_BACKOFF_MIN = 1.0
RESTART_BACKOFF_MAX = 30.0
# A child that ran this long before exiting is restarted after the shortest backoff again.
RESTART_STABLE_AFTER = 60.0
SUPERVISE_INTERVAL = 0.5
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# Who the development tokens in the banner identify, and their roles.
DEV_IDENTITIES: list[tuple[str, str]] = [
    ("team_lead", "lead@example.com"),
    ("finance", "finance@example.com"),
    ("admin", "admin@example.com"),
    ("service", "service:demo"),
]

_CLI_TYPES: dict[int, str] = {
    IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD: "Keyword",
    IndexedValueType.INDEXED_VALUE_TYPE_TEXT: "Text",
    IndexedValueType.INDEXED_VALUE_TYPE_BOOL: "Bool",
    IndexedValueType.INDEXED_VALUE_TYPE_DOUBLE: "Double",
    IndexedValueType.INDEXED_VALUE_TYPE_INT: "Int",
    IndexedValueType.INDEXED_VALUE_TYPE_DATETIME: "Datetime",
    IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD_LIST: "KeywordList",
}


def _die_with_parent() -> Callable[[], None] | None:
    """A `preexec_fn` that has the kernel SIGKILL the child when this process dies (Linux).

    libc is resolved here, before any fork: between fork and exec the child only makes the two
    system calls. The death signal follows the thread that forked, so children are only ever
    spawned from the event loop's thread, which lives as long as `podium up`."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()
    kill = int(signal.SIGKILL)

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, kill, 0, 0, 0)
        if os.getppid() != parent:  # the supervisor died before the prctl took effect
            os._exit(1)

    return preexec


@dataclass
class _Child:
    """One supervised process: how to start it, and its current incarnation."""

    name: str
    args: list[str]
    env: dict[str, str]
    stop_signal: signal.Signals = signal.SIGTERM
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    failures: int = 0
    restart_at: float | None = None
    history: list[int] = field(default_factory=list)  # pids, oldest first

    def start(self, now: float | None = None) -> None:
        self.process = subprocess.Popen(
            self.args, env=self.env, start_new_session=True, preexec_fn=_die_with_parent()
        )
        self.started_at = time.monotonic() if now is None else now
        self.restart_at = None
        self.history.append(self.process.pid)
        log.info("process_started", process=self.name, pid=self.process.pid)

    def exited(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    def stop(self) -> None:
        process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(self.stop_signal)
            try:
                process.wait(timeout=STOP_GRACE)
            except subprocess.TimeoutExpired:
                log.warning("process_killed", process=self.name)
                process.kill()
                process.wait()
        if process is not None:
            log.info("process_stopped", process=self.name, code=process.returncode)


class Supervisor:
    """Keeps `podium up`'s children running: each one that exits is restarted with backoff
    while the others carry on. Call `check` regularly; `stop` ends them all in reverse order."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.children: list[_Child] = []
        self._clock = clock

    def add(self, child: _Child) -> _Child:
        child.start(self._clock())
        self.children.append(child)
        return child

    @staticmethod
    def backoff(failures: int) -> float:
        """Seconds to wait before restart number `failures` (1, 2, ...) of a failing child."""
        return float(min(RESTART_BACKOFF_MAX, RESTART_BACKOFF_MIN * 2 ** max(0, failures - 1)))

    def check(self) -> None:
        now = self._clock()
        for child in self.children:
            if child.restart_at is not None:
                if now >= child.restart_at:
                    child.start(now)
                    log.info("process_restarted", process=child.name, restarts=child.failures)
                continue
            if not child.exited():
                continue
            assert child.process is not None
            ran = now - child.started_at
            child.failures = 1 if ran >= RESTART_STABLE_AFTER else child.failures + 1
            delay = self.backoff(child.failures)
            child.restart_at = now + delay
            log.error(
                "process_exited",
                process=child.name,
                pid=child.process.pid,
                code=child.process.returncode,
                restart_in_s=delay,
            )

    def stop(self) -> None:
        for child in reversed(self.children):
            child.stop()


def temporal_cli_args(
    settings: Settings, db_file: Path, codec_endpoint: str | None = None
) -> list[str]:
    """Arguments for `temporal server start-dev`: persistent, loopback-only, attributes set,
    the UI pointed at `codec_endpoint` (which still wants each operator's token)."""
    args = [
        str(Path(sys.executable).parent / "temporal"),
        "server",
        "start-dev",
        "--db-filename",
        str(db_file),
        "--ip",
        "127.0.0.1",
        "--port",
        str(settings.temporal_port),
        "--ui-port",
        str(settings.temporal_ui_port),
        "--sqlite-pragma",
        "journal_mode=wal",
        "--sqlite-pragma",
        "synchronous=normal",
        "--log-level",
        "error",
        *DEV_SERVER_TUNING,
    ]
    for key in search_attributes.ALL:
        args += ["--search-attribute", f"{key.name}={_CLI_TYPES[int(key.indexed_value_type)]}"]
    if codec_endpoint:
        args += ["--ui-codec-endpoint", codec_endpoint]
    return args


# The embedded dev server's dynamic configuration.
DEV_SERVER_TUNING = (
    # The single-shard dev server otherwise polls its transfer queue 20 times a second,
    # adding about 50 ms to every workflow step (measured by `make bench`).
    "--dynamic-config-value",
    "history.transferProcessorMaxPollRPS=1000",
    # One partition per task queue (one machine gains nothing from more): priority order and the
    # models' queue-wide rate limit then hold across the whole queue, not per partition
    # (bench.priority: urgent cases' p95 under overload 1.4x their idle p95 with one partition,
    # 2.4x with the default four).
    "--dynamic-config-value",
    "matching.numTaskqueueReadPartitions=1",
    "--dynamic-config-value",
    "matching.numTaskqueueWritePartitions=1",
)


async def register_search_attributes(client: Client) -> list[str]:
    """Register Podium's search attributes on an existing cluster; returns the ones added."""
    existing = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace)
    )
    known = set(existing.custom_attributes) | set(existing.system_attributes)
    missing = {
        key.name: IndexedValueType.ValueType(key.indexed_value_type)
        for key in search_attributes.ALL
        if key.name not in known
    }
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=client.namespace, search_attributes=missing)
        )
    return sorted(missing)


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


async def _wait_for_temporal(settings: Settings, server: _Child | None) -> Client:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    last: Exception | None = None
    while time.monotonic() < deadline:
        if server is not None and server.process is not None and server.process.poll() is not None:
            raise RuntimeError(
                f"the Temporal dev server exited with code {server.process.returncode}; "
                f"is port {settings.temporal_port} or {settings.temporal_ui_port} already in use?"
            )
        try:
            return await connect(settings)  # connecting fetches the server's system info
        except Exception as err:  # any failure means "not up yet"
            last = err
            await asyncio.sleep(0.5)
    raise RuntimeError(f"Temporal did not become reachable in {STARTUP_TIMEOUT:.0f}s: {last}")


async def _worker_polling(
    client: Client,
    task_queue: str,
    kind: TaskQueueType.ValueType = TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
) -> bool:
    response = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=client.namespace, task_queue=TaskQueue(name=task_queue), task_queue_type=kind
        )
    )
    return len(response.pollers) > 0


def _token_lines(settings: Settings, secret: str) -> list[str]:
    lines = ["  Development tokens (send as `Authorization: Bearer`, or PODIUM_TOKEN for the CLI):"]
    for role, subject in DEV_IDENTITIES:
        token = mint_token(
            secret, subject, [role], audience=settings.jwt_audience, issuer=settings.jwt_issuer
        )
        lines.append(f"  PODIUM_TOKEN (dev, {role} {subject})")
        lines.append(f"    {token}")
    return lines


def _jwt_dev_secret(settings: Settings) -> tuple[Settings, dict[str, str], str | None]:
    """The JWT secret: the configured one, or a development one kept under the data folder."""
    if settings.jwt_secret is not None:
        return settings, {}, None
    secret = load_or_create_jwt_secret(settings)
    log.info("dev_jwt_secret_in_use", folder=str(settings.data_dir / "keys"))
    resolved = settings.model_copy(update={"jwt_secret": SecretStr(secret)})
    return resolved, {"PODIUM_JWT_SECRET": secret}, secret


def _banner(
    settings: Settings,
    embedded: bool,
    seeded: bool,
    codec_lines: list[str] | None = None,
    token_lines: list[str] | None = None,
) -> str:
    api = f"http://{settings.api_host}:{settings.api_port}"
    target = connect_config(settings)["target_host"]
    customer = DEMO_CUSTOMERS[1]["id"]
    lines = [
        "",
        "Podium is up.",
        f"  Temporal UI   {settings.ui_base_url}"
        + ("" if embedded else f"  (external Temporal at {target})"),
        f"  Temporal      {target}"
        + ("  (embedded dev server, state in " if embedded else "")
        + (f"{settings.data_dir}/temporal.db)" if embedded else ""),
        f"  HTTP API      {api}   (OpenAPI: {api}/docs)",
        f"  Metrics       {api}/metrics   workers: "
        + (
            f"http://{settings.worker_metrics_host}:{settings.worker_metrics_port}/metrics "
            f"(cases), :{settings.worker_metrics_port + 1}/metrics (models)"
            if settings.worker_metrics_port
            else "off (PODIUM_WORKER_METRICS_PORT=0)"
        ),
        f"  Database      {settings.resolved_database_url}"
        + ("  (demo data seeded)" if seeded else ""),
        *(codec_lines or []),
        *(token_lines or []),
        "",
        "Try a refund over the automatic limit, then approve it (PODIUM_TOKEN: a token above):",
        f"  PODIUM_TOKEN=<service> .venv/bin/podium refund --customer {customer} --order O-5003 "
        '--message "My order O-5003 arrived broken, I want my money back"',
        "  PODIUM_TOKEN=<team_lead> .venv/bin/podium inbox",
        "  PODIUM_TOKEN=<team_lead> .venv/bin/podium approve <case-id>",
        "",
        "Stop with Ctrl-C.",
        "",
    ]
    return "\n".join(lines)


async def _run(settings: Settings) -> int:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    embedded = not uses_external_temporal()
    supervisor = Supervisor()
    env = dict(os.environ)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        # Keys and the codec token go to Podium's processes only, never to the Temporal server.
        settings, secrets_env = dev_secrets(settings)
        settings, jwt_env, dev_jwt_secret = _jwt_dev_secret(settings)
        podium_env = {**env, **secrets_env, **jwt_env}
        codec = settings.encryption == "on"
        if codec and _port_open(settings.codec_host, settings.codec_port):
            log.warning("codec_server_not_started", reason=f"port {settings.codec_port} in use")
            codec = False
        server: _Child | None = None
        if embedded:
            if _port_open("127.0.0.1", settings.temporal_port):
                raise RuntimeError(
                    f"port {settings.temporal_port} is in use; stop what runs there or set "
                    "PODIUM_TEMPORAL_PORT (or TEMPORAL_ADDRESS to use that server)"
                )
            server = supervisor.add(
                _Child(
                    "temporal",
                    temporal_cli_args(
                        settings,
                        settings.data_dir / "temporal.db",
                        codec_url(settings) if codec else None,
                    ),
                    env,
                    stop_signal=signal.SIGINT,
                )
            )
        client = await _wait_for_temporal(settings, server)
        if not embedded:
            try:
                added = await register_search_attributes(client)
                log.info("search_attributes_registered", added=added)
            except RPCError as err:
                log.warning("search_attributes_not_registered", error=err.message)

        engine = make_engine(settings.resolved_database_url)
        create_tables(engine)
        seeded = seed_demo_data(engine)
        engine.dispose()

        # The embedded SCIM directory (demo employees), unless PODIUM_SCIM_URL names one.
        scim_env = scim_dev_env(env)
        scim_port = int(scim_env.get("PODIUM_SCIM_EMBEDDED_PORT", "0"))
        if scim_env and _port_open("127.0.0.1", scim_port):
            raise RuntimeError(
                f"port {scim_port} is in use; stop what runs there or set "
                "PODIUM_SCIM_EMBEDDED_PORT (or PODIUM_SCIM_URL to use that directory)"
            )
        podium_env.update(scim_env)
        if scim_env:
            supervisor.add(
                _Child("scim", [sys.executable, "-m", "starter.scim_server"], podium_env)
            )
        # The embedded carrier (demo parcels, signed webhooks to the API), unless
        # PODIUM_CARRIER_URL names one.
        carrier_env = carrier_dev_env(env, f"http://127.0.0.1:{settings.api_port}")
        carrier_port = int(carrier_env.get("PODIUM_CARRIER_EMBEDDED_PORT", "0"))
        if carrier_env and _port_open("127.0.0.1", carrier_port):
            raise RuntimeError(
                f"port {carrier_port} is in use; stop what runs there or set "
                "PODIUM_CARRIER_EMBEDDED_PORT (or PODIUM_CARRIER_URL to use that carrier)"
            )
        podium_env.update(carrier_env)
        if carrier_env:
            supervisor.add(
                _Child("carrier", [sys.executable, "-m", "starter.carrier_server"], podium_env)
            )
        # Two workers: the cases' (no model loaded) and the models' (the model calls, on their
        # own rate-limited task queue), each with its own metrics port.
        supervisor.add(
            _Child(
                "worker",
                [sys.executable, "-m", "worker"],
                podium_env | {"PODIUM_WORKER_ROLE": "cases"},
            )
        )
        models_metrics = settings.worker_metrics_port + 1 if settings.worker_metrics_port else 0
        supervisor.add(
            _Child(
                "models",
                [sys.executable, "-m", "worker"],
                podium_env
                | {
                    "PODIUM_WORKER_ROLE": "models",
                    "PODIUM_WORKER_METRICS_PORT": str(models_metrics),
                },
            )
        )
        supervisor.add(
            _Child(
                "api",
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "starter.api:app",
                    "--host",
                    settings.api_host,
                    "--port",
                    str(settings.api_port),
                    "--log-level",
                    "warning",
                ],
                podium_env,
            )
        )
        if codec:
            # The embedded UI is loopback only: its operator's browser decodes without a token.
            trust = ["--trust-local-ui"] if embedded else []
            supervisor.add(
                _Child("codec", [sys.executable, "-m", "starter.codec_server", *trust], podium_env)
            )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not (
            _port_open(settings.api_host, settings.api_port)
            and (not codec or _port_open(settings.codec_host, settings.codec_port))
            and (not scim_env or _port_open("127.0.0.1", scim_port))
            and (not carrier_env or _port_open("127.0.0.1", carrier_port))
            and await _worker_polling(client, settings.task_queue)
            and await _worker_polling(
                client,
                model_task_queue(settings.task_queue),
                TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
            )
        ):
            if stop.is_set():
                log.info("shutting_down")
                return 0
            failed = [c.name for c in supervisor.children if c.exited()]
            if failed or time.monotonic() > deadline:
                raise RuntimeError(
                    f"{', '.join(failed) or 'the worker, the API or the codec server'} did not "
                    "start; see the errors above"
                )
            await asyncio.sleep(0.3)
        try:
            # The access reviews' Schedule, in step with policies/access_review.yaml.
            done = await ensure_schedule(client, settings)
            log.info("access_review_schedule", schedule_id=SCHEDULE_ID, done=done)
        except (RPCError, PolicyError) as err:
            log.warning("access_review_schedule_not_set", error=str(err))
        try:
            # The KPI snapshot's and the SLA-risk sweep's Schedules (policies/operations.yaml).
            for schedule_id, done in (await ensure_operations(client, settings)).items():
                log.info("operations_schedule", schedule_id=schedule_id, done=done)
        except (RPCError, PolicyError) as err:
            log.warning("operations_schedules_not_set", error=str(err))
        codec_lines = (
            codec_banner(
                settings,
                show_token="PODIUM_CODEC_TOKEN" in secrets_env,
                trust_local_ui=embedded,
            )
            if codec
            else None
        )
        token_lines = _token_lines(settings, dev_jwt_secret) if dev_jwt_secret else None
        scim_lines = [
            f"  SCIM          {podium_env.get('PODIUM_SCIM_URL', '-')}"
            + ("  (embedded directory, demo employees)" if scim_env else ""),
            f"  Carrier       {podium_env.get('PODIUM_CARRIER_URL', '-')}"
            + ("  (embedded carrier, demo parcels)" if carrier_env else ""),
        ]
        print(
            _banner(settings, embedded, seeded, codec_lines, [*scim_lines, *(token_lines or [])]),
            flush=True,
        )

        while not stop.is_set():
            supervisor.check()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=SUPERVISE_INTERVAL)
        log.info("shutting_down")
        return 0
    except RuntimeError as err:
        log.error("startup_failed", error=str(err))
        return 1
    finally:
        supervisor.stop()


def run(settings: Settings) -> None:
    configure_logging(settings.log_level, settings.log_json)
    raise SystemExit(asyncio.run(_run(settings)))
