"""A private, throwaway PostgreSQL cluster: for tests that must run against the real thing, and
for the chaos battery, which stops and restarts it under a running Podium.

`PostgresCluster.create()` finds the server binaries (Debian's `/usr/lib/postgresql/<version>/bin`,
else a `pg_ctl` on `PATH` with `initdb` and `postgres` beside it) and a temporary folder;
`init()` creates the cluster there, `start()` runs the server on a free loopback port (the same
port on every later start) with its unix socket in that folder, `stop()` stops it
(`pg_ctl stop`, fast by default) and `close()` stops it and removes the folder. Nothing outside
the folder is touched.

The server is a child of the process that starts it, which asks the kernel to SIGKILL it when
that process dies (`PR_SET_PDEATHSIG`; the kernel follows the *thread* that started it, so start
it from a thread that lives as long as the server), and its own backends leave with it: even a
`kill -9` of the parent leaves no server behind.

initdb refuses to run as root, so as root the cluster belongs to the `postgres` OS user and every
server command runs as that user. Authentication is `trust`: the server only listens on
127.0.0.1 and lives for one run.

Without the binaries (or with `PODIUM_TEST_NO_POSTGRES=1`) `create()` raises
`PostgresUnavailable`, whose message says why.
"""

from __future__ import annotations

import ctypes
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

__all__ = [
    "DISABLE_ENV",
    "PostgresCluster",
    "PostgresUnavailable",
    "create_database",
    "die_with_parent",
    "drop_database",
    "find_postgres_bin",
    "scratch_database",
]

DISABLE_ENV = "PODIUM_TEST_NO_POSTGRES"
POSTGRES_GLOB = "/usr/lib/postgresql/*/bin"
OS_USER = "postgres"
HOST = "127.0.0.1"
START_TIMEOUT_S = 60.0
START_ATTEMPTS = 3
STOP_TIMEOUT_S = 30
COMMAND_TIMEOUT_S = 120.0
CONNECT_TIMEOUT_S = 2
PR_SET_PDEATHSIG = 1
# A throwaway server: durability is worthless here, speed and a small footprint are not. The time
# zone is deliberately not UTC (and not a whole hour off), so a stored date that only looks right
# on a UTC server fails here.
SERVER_OPTIONS = (
    "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
    "-c shared_buffers=16MB -c max_connections=200 -c timezone=Asia/Kolkata"
)


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server can run here; the message says why."""


def die_with_parent() -> Callable[[], None] | None:
    """A `preexec_fn` asking the kernel to SIGKILL the child when its parent dies (Linux).

    It runs after `Popen` has switched the child's user (a change of credentials clears the
    setting), so it holds for a server that runs as another user too."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()
    kill = int(signal.SIGKILL)

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, kill, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the setting took
            os._exit(1)

    return preexec


def _version(bin_dir: Path) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in bin_dir.parent.name.split("."))
    except ValueError:
        return (0,)


def _complete(bin_dir: Path) -> bool:
    return all((bin_dir / name).is_file() for name in ("initdb", "pg_ctl", "postgres"))


def find_postgres_bin() -> tuple[Path | None, str]:
    """The newest installed server's bin folder, or None and why not."""
    if os.environ.get(DISABLE_ENV):
        return None, f"{DISABLE_ENV} is set"
    candidates = {path for path in Path("/").glob(POSTGRES_GLOB.lstrip("/")) if _complete(path)}
    on_path = shutil.which("pg_ctl")
    if on_path is not None and _complete(Path(on_path).resolve().parent):
        candidates.add(Path(on_path).resolve().parent)
    if not candidates:
        return None, (
            f"no initdb, pg_ctl and postgres under {POSTGRES_GLOB} or on PATH "
            "(apt-get install postgresql)"
        )
    return max(candidates, key=_version), ""


def _free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class PostgresCluster:
    """One cluster in a temporary folder, its server a child of this process."""

    def __init__(self, bin_dir: Path, owner: pwd.struct_passwd | None, root: Path) -> None:
        self.bin_dir = bin_dir
        self.owner = owner
        self.root = root
        self.data = root / "data"
        self.log = root / "server.log"
        self.port: int | None = None
        self.process: subprocess.Popen[bytes] | None = None

    @classmethod
    def create(cls, prefix: str = "podium-pg-") -> PostgresCluster:
        """A cluster-to-be in a fresh temporary folder; `PostgresUnavailable` when none can run."""
        bin_dir, why = find_postgres_bin()
        if bin_dir is None:
            raise PostgresUnavailable(why)
        owner = None
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam(OS_USER)
            except KeyError:
                raise PostgresUnavailable(f"running as root and no {OS_USER!r} user") from None
        root = Path(tempfile.mkdtemp(prefix=prefix))
        if owner is not None:
            os.chown(root, owner.pw_uid, owner.pw_gid)
        return cls(bin_dir, owner, root)

    # --- where it is -----------------------------------------------------------------------

    def url(self, database: str = "postgres") -> str:
        """SQLAlchemy URL of `database` on this server (psycopg 3)."""
        if self.port is None:
            raise RuntimeError("the server has never started")
        return f"postgresql+psycopg://postgres@{HOST}:{self.port}/{database}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""

    # --- lifecycle -------------------------------------------------------------------------

    def init(self) -> None:
        """Create the cluster (initdb)."""
        self._run(
            str(self.bin_dir / "initdb"),
            "-D", str(self.data),
            "-U", "postgres",
            "-A", "trust",
            "-E", "UTF8",
            "--no-locale",
            "--no-sync",
            "--no-instructions",
        )  # fmt: skip

    def start(self, timeout: float = START_TIMEOUT_S) -> None:
        """Start the server and wait until it accepts connections. The first start picks a free
        port (again, should another process take it first); later starts reuse it."""
        attempts_left = START_ATTEMPTS
        while True:
            fresh_port = self.port is None
            self.spawn()
            try:
                self.wait_ready(timeout)
                return
            except RuntimeError:
                attempts_left -= 1
                if not attempts_left or self.running:
                    raise
                if fresh_port:
                    self.port = None
                time.sleep(0.5)

    def spawn(self) -> None:
        """Start the server process and return at once (see `wait_ready`)."""
        if self.running:
            return
        if self.port is None:
            self.port = _free_port()
        command = [
            str(self.bin_dir / "postgres"),
            "-D", str(self.data),
            "-h", HOST,
            "-p", str(self.port),
            "-k", str(self.root),
            *shlex.split(SERVER_OPTIONS),
        ]  # fmt: skip
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.root,
                preexec_fn=die_with_parent(),
                **self._as_owner(),
            )

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        """Wait until the server accepts connections; RuntimeError when it exits or never does."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process is None or self.process.poll() is not None:
                code = None if self.process is None else self.process.returncode
                raise RuntimeError(f"postgres exited ({code}): {self.log_tail(1000)}")
            try:
                with psycopg.connect(
                    _libpq(self.url()), connect_timeout=CONNECT_TIMEOUT_S, autocommit=True
                ):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"postgres did not accept connections within {timeout:.0f} s: "
                        f"{self.log_tail(1000)}"
                    ) from None
            time.sleep(0.1)

    def stop(self, mode: str = "fast") -> None:
        """`pg_ctl stop -m <mode>`, waiting until the server is gone; nothing when it is not
        running. Should that fail, immediate mode, then SIGKILL."""
        if self.process is None:
            return
        if self.process.poll() is None:
            for attempt in (mode, "immediate"):
                try:
                    self._run(
                        str(self.bin_dir / "pg_ctl"), "stop",
                        "-D", str(self.data),
                        "-m", attempt,
                        "-w", "-t", str(STOP_TIMEOUT_S),
                        timeout=STOP_TIMEOUT_S + 10,
                    )  # fmt: skip
                    break
                except (RuntimeError, subprocess.TimeoutExpired):
                    continue
        try:
            self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()  # its backends leave when the postmaster is gone
            self.process.wait()

    def close(self) -> None:
        """Whatever happened: the server stopped and the folder removed."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresCluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # --- helpers ---------------------------------------------------------------------------

    def _as_owner(self) -> dict[str, Any]:
        """`Popen` arguments that run a command as the cluster's owner (when we are root)."""
        if self.owner is None:
            return {}
        return {"user": self.owner.pw_uid, "group": self.owner.pw_gid, "extra_groups": []}

    def _run(self, *args: str, timeout: float = COMMAND_TIMEOUT_S) -> None:
        result = subprocess.run(
            args,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=self.root,
            preexec_fn=die_with_parent(),
            **self._as_owner(),
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{Path(args[0]).name} failed ({result.returncode}): "
                f"{(result.stderr or result.stdout).strip()[-2000:]}"
            )


def _libpq(url: str) -> str:
    """The libpq form of a SQLAlchemy URL."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _admin_url(url: str) -> str:
    """A libpq URL for the server's maintenance database."""
    return _libpq(make_url(url).set(database="postgres").render_as_string(hide_password=False))


def create_database(url: str, name: str | None = None) -> str:
    """Create a fresh database on the server of `url`; return a URL for it."""
    name = name or f"podium_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_admin_url(url), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def drop_database(url: str) -> None:
    """Drop the database of `url`, closing any connection still open to it."""
    name = make_url(url).database
    assert name, url
    with psycopg.connect(_admin_url(url), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@contextmanager
def scratch_database(url: str) -> Iterator[str]:
    """A database of its own, dropped afterwards."""
    scratch = create_database(url)
    try:
        yield scratch
    finally:
        drop_database(scratch)
