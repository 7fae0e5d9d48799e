"""Processes that start at once on one database (the cases' and the models' workers, the API)
all create the tables: none of them fails because another created a table first."""

from __future__ import annotations

import threading
from pathlib import Path

from sqlalchemy import inspect
from sqlmodel import SQLModel

from core.db import create_tables, make_engine


def test_creators_racing_on_one_database_all_succeed(tmp_path: Path) -> None:
    failures: list[str] = []
    for attempt in range(8):
        url = f"sqlite:///{tmp_path / f'race-{attempt}.db'}"
        engines = [make_engine(url) for _ in range(3)]

        def create(engine: object) -> None:
            try:
                create_tables(engine)  # type: ignore[arg-type]
            except Exception as err:  # collected: the assertion below names them
                failures.append(f"{type(err).__name__}: {err}")

        threads = [threading.Thread(target=create, args=(engine,)) for engine in engines]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert set(SQLModel.metadata.tables) <= set(inspect(engines[0]).get_table_names())
        for engine in engines:
            engine.dispose()
    assert failures == []
