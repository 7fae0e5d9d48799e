"""A private, throwaway PostgreSQL server for tests that must run against the real thing.

`postgres_url` (session scope) starts a `bench.postgres_cluster.PostgresCluster` (a cluster in a
temporary folder, its server on a free loopback port with its unix socket in that folder, a
child of the test process that dies with it) and yields a SQLAlchemy URL for a `podium`
database. Nothing outside the folder is touched and the server is stopped and removed
afterwards.

Without the binaries (or with `PODIUM_TEST_NO_POSTGRES=1`) the tests that need PostgreSQL skip.
Registered by `tests/conftest.py` as a pytest plugin.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import psycopg
import pytest

from bench.postgres_cluster import (
    PostgresCluster,
    PostgresUnavailable,
    create_database,
    drop_database,
    find_postgres_bin,
    scratch_database,
)

__all__ = [
    "create_database",
    "drop_database",
    "find_postgres_bin",
    "postgres_url",
    "scratch_database",
]

DATABASE = "podium"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of a `podium` database on a private PostgreSQL server for this test session."""
    try:
        cluster = PostgresCluster.create()
    except PostgresUnavailable as exc:
        pytest.skip(f"PostgreSQL server not usable: {exc}")
    with cluster:
        try:
            cluster.init()
            cluster.start()
            url = create_database(cluster.url(), DATABASE)
        except (RuntimeError, subprocess.TimeoutExpired, psycopg.Error) as exc:
            pytest.fail(
                f"private PostgreSQL did not start: {exc}\n{cluster.log_tail()}", pytrace=False
            )
        yield url
