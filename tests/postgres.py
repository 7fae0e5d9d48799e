"""A private, throwaway PostgreSQL server for tests that must run against the real thing.

`postgres_url` (session scope) finds the server binaries Debian installs under
`/usr/lib/postgresql/<version>/bin`, creates a cluster in a temporary folder, starts it on a free
loopback port with its unix socket in that folder, and yields a SQLAlchemy URL for a `podium`
database. Nothing outside the folder is touched and the server is stopped and removed afterwards.

initdb refuses to run as root, so as root the cluster belongs to the `postgres` OS user and every
server command runs through `runuser`. Authentication is `trust`: the server only listens on
127.0.0.1 and lives for one test session.

Without the binaries (or with `PODIUM_TEST_NO_POSTGRES=1`) the tests that need PostgreSQL skip.
Registered by `tests/conftest.py` as a pytest plugin.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import make_url

__all__ = [
    "create_database",
    "drop_database",
    "find_postgres_bin",
    "postgres_url",
    "scratch_database",
]

DISABLE_ENV = "PODIUM_TEST_NO_POSTGRES"
POSTGRES_GLOB = "/usr/lib/postgresql/*/bin"
OS_USER = "postgres"
DATABASE = "podium"
START_TIMEOUT_S = 60
START_ATTEMPTS = 3
STOP_TIMEOUT_S = 30
COMMAND_TIMEOUT_S = 120
# A test server: durability is worthless here, speed and a small footprint are not. The time zone
# is deliberately not UTC (and not a whole hour off), so a stored date that only looks right on
# a UTC server fails here.
SERVER_OPTIONS = (
    "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
    "-c shared_buffers=16MB -c max_connections=200 -c timezone=Asia/Kolkata"
)


def _version(bin_dir: Path) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in bin_dir.parent.name.split("."))
    except ValueError:
        return (0,)


def find_postgres_bin() -> tuple[Path | None, str]:
    """The newest installed server's bin folder, or None and why not."""
    if os.environ.get(DISABLE_ENV):
        return None, f"{DISABLE_ENV} is set"
    candidates = [
        path
        for path in Path("/").glob(POSTGRES_GLOB.lstrip("/"))
        if (path / "initdb").is_file() and (path / "pg_ctl").is_file()
    ]
    if not candidates:
        return None, f"no initdb and pg_ctl under {POSTGRES_GLOB} (apt-get install postgresql)"
    return max(candidates, key=_version), ""


def _free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _run(prefix: list[str], *args: str, timeout: float = COMMAND_TIMEOUT_S) -> None:
    result = subprocess.run(
        [*prefix, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"{Path(args[0]).name} failed ({result.returncode}): "
            f"{(result.stderr or result.stdout).strip()[-2000:]}"
        )


def _admin_url(url: str) -> str:
    """A libpq URL for the server's maintenance database."""
    return (
        make_url(url)
        .set(drivername="postgresql", database="postgres")
        .render_as_string(hide_password=False)
    )


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
    """A database of its own for one test, dropped afterwards."""
    scratch = create_database(url)
    try:
        yield scratch
    finally:
        drop_database(scratch)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of a `podium` database on a private PostgreSQL server for this test session."""
    bin_dir, why = find_postgres_bin()
    if bin_dir is None:
        pytest.skip(f"PostgreSQL server not installed: {why}")

    prefix: list[str] = []
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam(OS_USER)
        except KeyError:
            pytest.skip(f"PostgreSQL server not usable: running as root and no {OS_USER!r} user")
        runuser = shutil.which("runuser")
        if runuser is None:
            pytest.skip("PostgreSQL server not usable: running as root and no runuser")
        prefix = [runuser, "-u", OS_USER, "--"]

    root = Path(tempfile.mkdtemp(prefix="podium-pg-"))
    if prefix:
        os.chown(root, owner.pw_uid, owner.pw_gid)
    data, log = root / "data", root / "server.log"
    pg_ctl = str(bin_dir / "pg_ctl")
    try:
        try:
            _run(
                prefix,
                str(bin_dir / "initdb"),
                "-D", str(data),
                "-U", "postgres",
                "-A", "trust",
                "-E", "UTF8",
                "--no-locale",
                "--no-sync",
                "--no-instructions",
            )  # fmt: skip
            port = _start(prefix, pg_ctl, data, root, log)
            server = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
            url = create_database(server, DATABASE)
        except (RuntimeError, subprocess.TimeoutExpired, psycopg.Error) as exc:
            server_log = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            pytest.fail(f"private PostgreSQL did not start: {exc}\n{server_log}", pytrace=False)
        yield url
    finally:
        _stop(prefix, pg_ctl, data)
        shutil.rmtree(root, ignore_errors=True)


def _start(prefix: list[str], pg_ctl: str, data: Path, root: Path, log: Path) -> int:
    """Start the server on a free loopback port; return the port."""
    attempts_left = START_ATTEMPTS
    while True:
        # Another process on a shared machine may take the port before the server binds it.
        port = _free_port()
        try:
            _run(
                prefix,
                pg_ctl, "start",
                "-D", str(data),
                "-l", str(log),
                "-w", "-t", str(START_TIMEOUT_S),
                "-o", f"-h 127.0.0.1 -p {port} -k {root} {SERVER_OPTIONS}",
                timeout=START_TIMEOUT_S + 10,
            )  # fmt: skip
            return port
        except RuntimeError:
            attempts_left -= 1
            if not attempts_left or (data / "postmaster.pid").exists():
                raise


def _stop(prefix: list[str], pg_ctl: str, data: Path) -> None:
    """Stop the server if it runs: politely first, then at once."""
    if not (data / "postmaster.pid").exists():
        return
    for mode in ("fast", "immediate"):
        try:
            _run(
                prefix,
                pg_ctl, "stop", "-D", str(data), "-m", mode, "-w", "-t", str(STOP_TIMEOUT_S),
                timeout=STOP_TIMEOUT_S + 10,
            )  # fmt: skip
            return
        except (RuntimeError, subprocess.TimeoutExpired):
            continue
