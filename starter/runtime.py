"""The embedded runtime behind `make up` / `podium up`: one foreground command, Ctrl-C stops it.

It starts, in order, and supervises:
1. the Temporal dev server with SQLite persistence under the data folder (state survives a
   restart), the Temporal UI, and Podium's search attributes registered; skipped when Temporal's
   env config names a server (`TEMPORAL_ADDRESS`, a profile, Temporal Cloud), where the search
   attributes are registered through the operator API instead;
2. the systems-of-record database (tables created, demo data seeded on first run);
3. the worker (`python -m worker`), the starter HTTP API (uvicorn) and the codec server
   (`python -m starter.codec_server`), which the Temporal UI is pointed at.

Payloads in Temporal history are encrypted (`core.codec`). Without configured keys, the key and
the codec server's token are created once under `<data folder>/keys/` (mode 0600) and handed to
the children in their environment; `PODIUM_ENCRYPTION=off` turns encryption off. Likewise the
API's JWT secret (`keys/jwt-secret`) when `PODIUM_JWT_SECRET` is not set: the banner then prints a
development token (30 days) for each demo role.

Children run in their own process groups so Ctrl-C reaches only this supervisor, which stops them
in reverse order (API, worker, server), each with a grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
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
from core.seed import DEMO_CUSTOMERS, seed_demo_data
from core.settings import Settings
from core.temporal import connect, connect_config, uses_external_temporal
from starter.auth import load_or_create_jwt_secret, mint_token
from starter.codec_server import codec_banner, codec_url, dev_secrets
from workflows import search_attributes

__all__ = ["register_search_attributes", "run", "temporal_cli_args"]

log = structlog.get_logger()

STARTUP_TIMEOUT = 60.0
STOP_GRACE = 20.0
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


@dataclass
class _Child:
    name: str
    process: subprocess.Popen[bytes]


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
        # The single-shard dev server otherwise polls its transfer queue 20 times a second,
        # adding about 50 ms to every workflow step (measured by `make bench`).
        "--dynamic-config-value",
        "history.transferProcessorMaxPollRPS=1000",
    ]
    for key in search_attributes.ALL:
        args += ["--search-attribute", f"{key.name}={_CLI_TYPES[int(key.indexed_value_type)]}"]
    if codec_endpoint:
        args += ["--ui-codec-endpoint", codec_endpoint]
    return args


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
        if server is not None and server.process.poll() is not None:
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


async def _worker_polling(client: Client, task_queue: str) -> bool:
    response = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=client.namespace,
            task_queue=TaskQueue(name=task_queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        )
    )
    return len(response.pollers) > 0


def _spawn(name: str, args: list[str], env: dict[str, str]) -> _Child:
    process = subprocess.Popen(args, env=env, start_new_session=True)
    log.info("process_started", process=name, pid=process.pid)
    return _Child(name, process)


def _stop(children: list[_Child]) -> None:
    for child in reversed(children):
        if child.process.poll() is None:
            child.process.send_signal(signal.SIGTERM if child.name != "temporal" else signal.SIGINT)
            try:
                child.process.wait(timeout=STOP_GRACE)
            except subprocess.TimeoutExpired:
                log.warning("process_killed", process=child.name)
                child.process.kill()
                child.process.wait()
        log.info("process_stopped", process=child.name, code=child.process.returncode)


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
    children: list[_Child] = []
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
            server = _spawn(
                "temporal",
                temporal_cli_args(
                    settings,
                    settings.data_dir / "temporal.db",
                    codec_url(settings) if codec else None,
                ),
                env,
            )
            children.append(server)
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

        children.append(_spawn("worker", [sys.executable, "-m", "worker"], podium_env))
        children.append(
            _spawn(
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
            children.append(
                _spawn("codec", [sys.executable, "-m", "starter.codec_server"], podium_env)
            )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not (
            _port_open(settings.api_host, settings.api_port)
            and (not codec or _port_open(settings.codec_host, settings.codec_port))
            and await _worker_polling(client, settings.task_queue)
        ):
            if time.monotonic() > deadline or any(c.process.poll() is not None for c in children):
                raise RuntimeError(
                    "the worker, the API or the codec server did not start; see the errors above"
                )
            await asyncio.sleep(0.3)
        codec_lines = (
            codec_banner(settings, show_token="PODIUM_CODEC_TOKEN" in secrets_env)
            if codec
            else None
        )
        token_lines = _token_lines(settings, dev_jwt_secret) if dev_jwt_secret else None
        print(_banner(settings, embedded, seeded, codec_lines, token_lines), flush=True)

        while not stop.is_set():
            exited = [c for c in children if c.process.poll() is not None]
            if exited:
                log.error(
                    "process_exited", process=exited[0].name, code=exited[0].process.returncode
                )
                return 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)
        log.info("shutting_down")
        return 0
    except RuntimeError as err:
        log.error("startup_failed", error=str(err))
        return 1
    finally:
        _stop(children)


def run(settings: Settings) -> None:
    configure_logging(settings.log_level, settings.log_json)
    raise SystemExit(asyncio.run(_run(settings)))
