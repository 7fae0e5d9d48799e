"""The system under attack: `podium up` in a subprocess on free loopback ports and a throwaway data
folder, plus extra workers on the same task queue.

Every process started here asks the kernel to SIGKILL it when the battery dies
(`PR_SET_PDEATHSIG`, as `podium up` does for its own children), and `close` stops or kills them
all, so nothing outlives a run, even a `kill -9` of the battery. Secrets (JWT, decision-token,
payload and codec keys) are made up per run and passed explicitly, so the extra workers share
them with `podium up`'s own children.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from sqlalchemy.engine import Engine
from temporalio.client import Client

from core.db import make_engine
from core.settings import Settings
from core.temporal import connect
from starter.auth import mint_token

__all__ = ["CODE_ROOT", "HOST", "ChaosStack", "free_port", "pid_alive"]

HOST = "127.0.0.1"
BIN = Path(sys.executable).parent
START_TIMEOUT = 300.0
STOP_TIMEOUT = 60.0
PR_SET_PDEATHSIG = 1
CODE_ROOT = Path(__file__).resolve().parents[2]
# Trained embedded models, shared by every stack of every run (a worker that has to train them
# first may miss `podium up`'s start-up deadline on a busy machine); rebuilt when missing.
MODEL_CACHE = CODE_ROOT / "var" / "chaos-models"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def pid_alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie has stopped running)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _die_with_us() -> Callable[[], None] | None:
    """A `preexec_fn` asking the kernel to SIGKILL the child when this process dies (Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()
    kill = int(signal.SIGKILL)

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, kill, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return preexec


class ChaosStack:
    """`podium up` with fresh loopback ports, secrets and data folder `data_dir`."""

    def __init__(self, data_dir: Path, extra_env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self.temporal_port = free_port()
        self.ui_port = free_port()
        self.api_port = free_port()
        self.codec_port = free_port()
        self.jwt_secret = secrets.token_urlsafe(32)
        self.codec_token = secrets.token_urlsafe(32)
        self.decision_secret = secrets.token_urlsafe(48)
        self.key_entry = "chaos-1:" + base64.b64encode(secrets.token_bytes(32)).decode()
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("TEMPORAL_", "PODIUM_"))},
            "TEMPORAL_CONFIG_FILE": str(data_dir / "no-temporal.toml"),
            "PODIUM_DATA_DIR": str(data_dir),
            "PODIUM_TEMPORAL_PORT": str(self.temporal_port),
            "PODIUM_TEMPORAL_UI_PORT": str(self.ui_port),
            "PODIUM_API_PORT": str(self.api_port),
            "PODIUM_API_HOST": HOST,
            "PODIUM_CODEC_PORT": str(self.codec_port),
            # Every other port a `podium up` may open gets a free one too (the embedded SCIM
            # directory and carrier), so two stacks never collide.
            "PODIUM_SCIM_EMBEDDED_PORT": str(free_port()),
            "PODIUM_CARRIER_EMBEDDED_PORT": str(free_port()),
            "PODIUM_MODEL_CACHE_DIR": str(MODEL_CACHE),
            "PODIUM_API_URL": f"http://{HOST}:{self.api_port}",
            "PODIUM_LOG_JSON": "true",
            "PODIUM_JWT_SECRET": self.jwt_secret,
            "PODIUM_DECISION_SECRET": self.decision_secret,
            "PODIUM_ENCRYPTION_KEYS": self.key_entry,
            "PODIUM_ENCRYPTION_KEY_ID": "chaos-1",
            "PODIUM_CODEC_TOKEN": self.codec_token,
            # Every process of the stack runs the code this battery runs (a snapshot, say),
            # not whatever the editable install points at.
            "PYTHONPATH": os.pathsep.join(
                [str(CODE_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
            ),
            **(extra_env or {}),
        }
        self.log_path = data_dir / "podium-up.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.extra_workers: list[subprocess.Popen[bytes]] = []
        self._log_files: list[Any] = []
        self._client: Client | None = None
        self._engine: Engine | None = None

    # --- where things are ------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        return f"http://{HOST}:{self.api_port}"

    @property
    def codec_url(self) -> str:
        return f"http://{HOST}:{self.codec_port}"

    @property
    def settings(self) -> Settings:
        return Settings(
            _env_file=None,
            data_dir=self.data_dir,
            # A stack given a database of its own (PostgreSQL, say) reads and writes that one.
            database_url=self.env.get("PODIUM_DATABASE_URL"),
            temporal_port=self.temporal_port,
            encryption_keys=SecretStr(self.key_entry),
            encryption_key_id="chaos-1",
            jwt_secret=SecretStr(self.jwt_secret),
            decision_secret=SecretStr(self.decision_secret),
        )

    def token(self, subject: str, roles: list[str]) -> str:
        settings = self.settings
        return mint_token(
            self.jwt_secret,
            subject,
            roles,
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
        )

    def engine(self) -> Engine:
        """The systems-of-record database `podium up` uses (SQLite in the data folder unless
        the stack was given `PODIUM_DATABASE_URL`)."""
        if self._engine is None:
            self._engine = make_engine(self.settings.resolved_database_url)
        return self._engine

    async def client(self) -> Client:
        """A Temporal client with Podium's converter (decrypts), reconnecting after a kill."""
        if self._client is None:
            self._client = await connect(
                self.settings, target_host=f"{HOST}:{self.temporal_port}", namespace="default"
            )
        return self._client

    async def raw_client(self) -> Client:
        """A Temporal client without the codec: what anyone with server access reads."""
        return await Client.connect(f"{HOST}:{self.temporal_port}", namespace="default")

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        log = self.log_path.open("ab")
        self._log_files.append(log)
        self.process = subprocess.Popen(
            [str(BIN / "podium"), "up"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_us(),
        )
        deadline = time.monotonic() + START_TIMEOUT
        while "Podium is up." not in self.log_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                tail = self.log_text()[-4000:]
                self.close()
                raise RuntimeError("podium up did not come up:\n" + tail)
            time.sleep(0.5)

    def start_extra_worker(self) -> subprocess.Popen[bytes]:
        """Another `python -m worker` on the same task queue, database and keys, with the very
        environment `podium up` gave its own worker (which may hold what `podium up` drew for
        this run, such as the embedded directory's token)."""
        index = len(self.extra_workers) + 1
        env = self._child_env("worker") or self.env
        log = (self.data_dir / f"worker-{index}.log").open("ab")
        self._log_files.append(log)
        process = subprocess.Popen(
            [sys.executable, "-m", "worker"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_us(),
        )
        self.extra_workers.append(process)
        return process

    def _child_env(self, name: str) -> dict[str, str] | None:
        """The environment of `podium up`'s child `name` (our own grandchild), if readable."""
        try:
            raw = Path(f"/proc/{self.child_pid(name)}/environ").read_bytes()
        except (OSError, RuntimeError):
            return None
        pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
        env = {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}
        return env if env.get("PODIUM_DATA_DIR") == str(self.data_dir) else None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def all_logs(self) -> str:
        return "\n".join(
            path.read_text(errors="replace") for path in sorted(self.data_dir.glob("*.log"))
        )

    def records(self, event: str) -> list[dict[str, Any]]:
        found = []
        for line in self.log_text().splitlines():
            if f'"{event}"' not in line:
                continue
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict) and record.get("event") == event:
                    found.append(record)
        return found

    def child_pid(self, name: str) -> int:
        """The current pid of `podium up`'s child `name` (temporal, worker, api, codec)."""
        pids = [int(r["pid"]) for r in self.records("process_started") if r["process"] == name]
        if not pids:
            raise RuntimeError(f"podium up started no {name}")
        return pids[-1]

    def kill_child(self, name: str) -> int:
        """`kill -9` of `podium up`'s child `name`; returns the pid killed."""
        pid = self.child_pid(name)
        os.kill(pid, signal.SIGKILL)
        return pid

    def wait_restarted(self, name: str, old_pid: int, timeout: float = 120.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid = self.child_pid(name)
            if pid != old_pid and pid_alive(pid):
                return pid
            time.sleep(0.2)
        raise RuntimeError(f"podium up did not restart {name}")

    async def forget_client(self) -> None:
        self._client = None

    def close(self) -> None:
        """Whatever happened: no process of this stack outlives the run."""
        for worker in self.extra_workers:
            if worker.poll() is None:
                worker.terminate()
        for worker in self.extra_workers:
            try:
                worker.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=STOP_TIMEOUT * 2)
            except subprocess.TimeoutExpired:
                self.process.kill()  # its children die with it (PR_SET_PDEATHSIG)
                self.process.wait()
        if self._engine is not None:
            self._engine.dispose()
        for log in self._log_files:
            log.close()
