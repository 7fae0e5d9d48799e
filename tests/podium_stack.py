"""`podium up` as a user runs it, in a subprocess with its own data folder and loopback ports.

Shared by the supervision and Temporal UI tests. The supervisor logs JSON lines
(`PODIUM_LOG_JSON=true`); its `process_started` records name each child's pid, so a test can kill
one and watch it come back. Every process started here is stopped (or killed) by `close`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from core.settings import Settings
from starter.auth import jwt_secret_file, mint_token

BIN = Path(sys.executable).parent
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def eventually(predicate: Callable[[], T], what: str, timeout: float = 120.0) -> T:
    """Poll `predicate` until it returns something truthy. The timeout only catches a stuck
    system: nothing here measures speed."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.3)


def alive(pid: int) -> bool:
    """Whether `pid` still runs (a zombie nobody reaped has stopped running)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


class PodiumUp:
    """`podium up` with fresh ports and data folder `data_dir`."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.process: subprocess.Popen[str] | None = None
        self.output: list[str] = []
        self._lock = threading.Lock()
        self._pick_ports()

    def _pick_ports(self) -> None:
        data_dir = self.data_dir
        self.temporal_port = free_port()
        self.ui_port = free_port()
        self.api_port = free_port()
        self.codec_port = free_port()
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("TEMPORAL_", "PODIUM_"))},
            "TEMPORAL_CONFIG_FILE": str(data_dir / "no-temporal.toml"),
            "PODIUM_DATA_DIR": str(data_dir),
            "PODIUM_TEMPORAL_PORT": str(self.temporal_port),
            "PODIUM_TEMPORAL_UI_PORT": str(self.ui_port),
            "PODIUM_API_PORT": str(self.api_port),
            "PODIUM_CODEC_PORT": str(self.codec_port),
            # The embedded directory and carrier too: a `make up` on this machine keeps theirs.
            "PODIUM_SCIM_EMBEDDED_PORT": str(free_port()),
            "PODIUM_CARRIER_EMBEDDED_PORT": str(free_port()),
            "PODIUM_API_URL": f"http://127.0.0.1:{self.api_port}",
            "PODIUM_LOG_JSON": "true",
        }

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def ui_url(self) -> str:
        return f"http://localhost:{self.ui_port}"

    @property
    def codec_url(self) -> str:
        return f"http://127.0.0.1:{self.codec_port}"

    def start(self, timeout: float = 240, attempts: int = 3) -> None:
        """Start `podium up`; when another program took one of the free ports between picking
        and binding it (other test runs share this machine), again on fresh ports."""
        for attempt in range(1, attempts + 1):
            try:
                self._start_once(timeout)
                return
            except AssertionError:
                if attempt == attempts or "address already in use" not in self.tail():
                    raise
                with self._lock:
                    self.output.clear()
                self._pick_ports()

    def _start_once(self, timeout: float) -> None:
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
                with self._lock:
                    self.output.append(line)
                if "Podium is up." in line:
                    ready.set()

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not ready.wait(0.5):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise AssertionError("podium up did not come up:\n" + self.tail())

    def tail(self, lines: int = 60) -> str:
        with self._lock:
            return "".join(self.output[-lines:])

    def records(self, event: str) -> list[dict[str, Any]]:
        """The JSON log records named `event`, oldest first."""
        with self._lock:
            lines = list(self.output)
        found = []
        for line in lines:
            if f'"{event}"' not in line:
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("event") == event:
                found.append(record)
        return found

    def pids(self, name: str) -> list[int]:
        """Every pid the supervisor started for child `name`, oldest first."""
        return [int(r["pid"]) for r in self.records("process_started") if r["process"] == name]

    def children(self) -> dict[str, int]:
        """The current pid of each child."""
        return {r["process"]: int(r["pid"]) for r in self.records("process_started")}

    def token(self, subject: str, roles: list[str]) -> str:
        """A token minted with the development secret `podium up` keeps in the data folder."""
        settings = Settings(_env_file=None, data_dir=self.data_dir)
        return mint_token(jwt_secret_file(settings).read_text().strip(), subject, roles)

    def stop(self) -> int:
        """Ctrl-C, as a user stops it; its exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=120)

    def close(self) -> None:
        """Whatever happened: no process of this stack outlives the test."""
        if self.process is not None and self.process.poll() is None:
            try:
                self.stop()
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for pid in self.children().values():
            if alive(pid) and self._ours(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)  # each child leads its own process group

    def _ours(self, pid: int) -> bool:
        """Whether `pid` is still one of this stack's children (not a reused pid)."""
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            return False
        return f"PODIUM_DATA_DIR={self.data_dir}".encode() in environ.split(b"\0")
