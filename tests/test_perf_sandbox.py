"""The worker's sandbox passes Podium's deterministic modules through (a parked case must not
hold its own import of the approval gate, the rules and the types), and that changes nothing a
case does: every committed history replays under the strict sandbox too, where every Podium
module that workflow code runs is imported inside the sandbox, under its restrictions."""

from __future__ import annotations

import importlib.util
import sys
import uuid
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from core.shared_code import SharedCodeLoader, share_code
from tests.shared_code_workflow import SharedCodeProbe
from worker import (
    cache_sandbox_bytecode,
    passthrough_modules,
    strict_workflow_runner,
    workflow_runner,
)
from workflows.operations.workflow import WORKFLOWS as OPERATIONS
from workflows.registry import PROCESSES

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


def _passed_through(module: str, passthrough: list[str]) -> bool:
    return any(module == name or module.startswith(f"{name}.") for name in passthrough)


def test_podium_modules_that_workflows_import_are_passed_through() -> None:
    """Every `workflows.*` module loaded by the registry's workflows, except the modules that
    define workflows, their packages and the registry-only modules, is passed through."""
    passthrough = passthrough_modules()
    workflow_modules = {p.workflow.__module__ for p in PROCESSES} | {
        w.__module__ for w in OPERATIONS
    }
    packages = {"workflows", *{m.rpartition(".")[0] for m in workflow_modules}}
    not_workflow_code = {"workflows.registry"} | {
        f"{package}.starting" for package in packages - {"workflows"}
    }
    loaded = {m for m in sys.modules if m == "workflows" or m.startswith("workflows.")}
    left = sorted(
        m
        for m in loaded - workflow_modules - packages - not_workflow_code
        if not _passed_through(m, passthrough)
    )
    assert [] == left
    assert [] == sorted(m for m in workflow_modules if _passed_through(m, passthrough))


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_history_replays_in_the_strict_sandbox(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    replayer = Replayer(
        workflows=[*PROCESSES.workflows, *OPERATIONS],
        data_converter=pydantic_data_converter,
        workflow_runner=strict_workflow_runner(),
    )
    await replayer.replay_workflow(history)


def test_the_worker_writes_the_bytecode_the_sandbox_imports_for_each_case() -> None:
    """The image sets PYTHONDONTWRITEBYTECODE: without this, every new case compiled the
    workflow module from source inside the sandbox."""
    written = cache_sandbox_bytecode()
    for process in PROCESSES:
        source = sys.modules[process.workflow.__module__].__file__
        assert source is not None
        assert Path(importlib.util.cache_from_source(source)).is_file(), source
    assert written >= len(PROCESSES)


async def _probe_identities(client: Client, queue: str, cases: int) -> list[list[int]]:
    """Run `cases` probes on one sandboxed worker, all in its cache at once, then release them."""
    async with Worker(
        client,
        task_queue=queue,
        workflows=[SharedCodeProbe],
        workflow_runner=workflow_runner(),
        max_cached_workflows=cases + 10,
    ):
        handles = [
            await client.start_workflow(SharedCodeProbe.run, id=f"{queue}-{n}", task_queue=queue)
            for n in range(cases)
        ]
        # Answered by each cached case once its first task ran: all are alive together here.
        identities = [await handle.query(SharedCodeProbe.identities) for handle in handles]
        for handle in handles:
            await handle.signal(SharedCodeProbe.release)
        assert identities == [await handle.result() for handle in handles]
        return identities


async def test_cases_share_one_copy_of_their_workflow_code_and_keep_their_own_module(
    dev_env: WorkflowEnvironment,
) -> None:
    """With `share_code`, every case's sandboxed import of the workflow module runs the same
    code objects (a parked case does not keep its own ~50 KiB copy) while its functions and
    classes are its own; without it, each case loads its own code."""
    module = SharedCodeProbe.__module__
    finder = share_code([module])
    try:
        shared = await _probe_identities(dev_env.client, f"shared-code-{uuid.uuid4().hex[:8]}", 3)
        finder.modules.discard(module)
        own = await _probe_identities(dev_env.client, f"own-code-{uuid.uuid4().hex[:8]}", 3)
    finally:
        finder.modules.discard(module)
    code, function, cls = (set(column) for column in zip(*shared, strict=True))
    assert len(code) == 1  # one code object for every case
    assert len(function) == 3 and len(cls) == 3  # each case its own module's objects
    assert str(Path(sys.modules[module].__file__ or "")) in SharedCodeLoader.cached_paths()
    assert len({ids[0] for ids in own}) == 3  # the control: each case loaded its own code
