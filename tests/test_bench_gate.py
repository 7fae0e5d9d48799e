"""`make bench-gate` stays runnable: a tiny run end to end, plus its pure helpers.

The smoke run is the real command (`python -m bench.gate`) as a subprocess with N=20: its own
dev server, Podium's real worker (`python -m worker`) and the baseline's in subprocesses, every
case verified parked, every sampled decision completed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import FixedSizeSlotSupplier, WorkerTuner

import worker
from bench import wait
from bench.gate import expected_cached, render_table, sample_groups
from core.settings import Settings
from core.sticky_cache import CaseWorkflowRunner, GuardedSlotSupplier
from workflows.registry import PROCESSES, Registry

REPO = Path(__file__).resolve().parents[1]
N = 20
SAMPLE = 10


# A bound against a hung run only, never a speed check: on a busy machine the smoke run's
# warm-up alone took 30 s (timing belongs in `make bench`).
SMOKE_BOUND_S = 600


@pytest.mark.e2e
@pytest.mark.timeout(SMOKE_BOUND_S + 60)
def test_gate_bench_smoke_run_parks_measures_and_decides(tmp_path: Path) -> None:
    out = tmp_path / "bench-gate.json"
    args = [
        *("--n", str(N), "--sample", str(SAMPLE), "--warmup", "1", "--park-concurrency", "10"),
        *("--json", "--out", str(out)),
    ]
    with subprocess.Popen(
        [sys.executable, "-m", "bench.gate", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as run:
        try:
            stdout, stderr = run.communicate(timeout=SMOKE_BOUND_S)
        except subprocess.TimeoutExpired:
            # SIGTERM: the bench stops its workers and server itself (SIGKILL would orphan them).
            run.terminate()
            stdout, stderr = run.communicate()  # the per-test timeout bounds this
            pytest.fail("the smoke run hung:\n" + stderr[-3_000:])
    assert 0 == run.returncode, stderr[-3_000:]
    report = json.loads(stdout)
    assert report == json.loads(out.read_text())
    assert report["verified"] is True
    assert (N, SAMPLE) == (report["config"]["n"], report["config"]["sample"])

    for name in ("refund", "bare"):
        system = report["systems"][name]
        assert N == system["parked"], name
        assert [] == system["park_errors"]
        rss = system["worker_rss_mib"]
        assert {"before", "parked", "after_decisions", "peak"} == set(rss)
        assert all(value > 0 for value in rss.values()), rss
        assert system["history_events_per_parked_case"] >= 4
        decisions = system["decisions"]
        assert SAMPLE == decisions["n"] == decisions["ok"]
        assert [] == decisions["failures"] == decisions["errors"]
        completion = decisions["completion_ms"]
        assert 0 < completion["p50"] <= completion["p95"] <= completion["max"]
        groups = decisions["groups"]
        assert SAMPLE // 2 == groups["first_parked"]["completion_ms"]["n"]
        assert SAMPLE // 2 == groups["last_parked"]["completion_ms"]["n"]
    # A refund case does real work before it waits; the baseline only waits.
    refund, bare = report["systems"]["refund"], report["systems"]["bare"]
    assert refund["history_events_per_parked_case"] > bare["history_events_per_parked_case"]
    assert refund["decisions"]["ack_ms"]["n"] == SAMPLE and bare["decisions"]["ack_ms"] is None
    ratios = report["ratios"]
    for key in ("completion_p50", "completion_p95", "worker_cpu_per_parked_case"):
        assert math.isfinite(ratios[key]) and ratios[key] > 0, ratios
    # At N=20 the RSS growth is within GC noise (it may even shrink): a ratio or none.
    assert ratios["rss_per_parked_case"] is None or ratios["rss_per_parked_case"] > 0
    # N is under the default cache: every parked case stays cached.
    assert {"first_parked": 5, "last_parked": 5} == report["cache"]["expected_cached_when_decided"]

    table = render_table(report)
    assert "refund (Podium)" in table and "bench_wait (bare)" in table
    assert "cases parked (verified on the server)" in table and f"{N}/{N}" in table
    assert "all cases parked and every decision completed" in table


def test_the_baseline_worker_has_podiums_worker_options(monkeypatch: pytest.MonkeyPatch) -> None:
    """Same settings, same options: only the task queue's workflows differ."""
    built: list[dict[str, Any]] = []
    monkeypatch.setattr(worker, "Worker", lambda client, **options: built.append(options))
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        max_cached_workflows=123,
        max_concurrent_activities=7,
        sticky_queue_timeout_s=42,
    )
    # No process needs an activity here: the options are what is compared.
    no_activities = Registry(dataclasses.replace(process, activities=()) for process in PROCESSES)
    client = SimpleNamespace(data_converter=pydantic_data_converter)
    worker.build_worker(
        client,  # type: ignore[arg-type]
        settings,
        activities=[],
        executor=None,  # type: ignore[arg-type]
        processes=no_activities,
    )
    podium = built[0]
    baseline = wait.worker_options(settings, client)  # type: ignore[arg-type]
    for options in (podium, baseline):
        runner = options.pop("workflow_runner")
        assert isinstance(runner, CaseWorkflowRunner) and runner.context_free
        options["passthrough"] = set(runner.inner.restrictions.passthrough_modules)
        options["guard"] = (runner.guard.capacity, runner.guard.patience_s)
        options["tuner"] = sizing(options.pop("tuner"))
    assert [wait.WaitWorkflow] == baseline.pop("workflows")
    # Podium's own work, not a worker setting: its workflows, activities and the interceptors
    # that count and record each case's close (measured as Podium's, as its workflow code is).
    for key in ("workflows", "activities", "activity_executor", "interceptors"):
        podium.pop(key)
    assert podium == baseline
    assert 123 == baseline["max_cached_workflows"] == baseline["guard"][0]
    assert 7 == baseline["tuner"][1]  # activity slots: max_concurrent_activities
    assert timedelta(seconds=15) == baseline["graceful_shutdown_timeout"]
    assert timedelta(seconds=42) == baseline["sticky_queue_schedule_to_start_timeout"]


def sizing(tuner: WorkerTuner) -> tuple[Any, ...]:
    """A tuner's slot counts: workflow (the guarded supplier's), activity, local activity."""
    workflow = tuner._get_workflow_task_slot_supplier()
    assert isinstance(workflow, GuardedSlotSupplier)
    slots = [
        s.num_slots
        for s in (
            tuner._get_activity_task_slot_supplier(),
            tuner._get_local_activity_task_slot_supplier(),
        )
        if isinstance(s, FixedSizeSlotSupplier)
    ]
    return (workflow.slots, *slots)


def test_the_sample_takes_the_first_and_last_parked_cases() -> None:
    order = [f"c{i}" for i in range(10)]
    picks = sample_groups(order, 4)
    assert [("c0", "first_parked"), ("c1", "first_parked")] == picks[:2]
    assert [("c8", "last_parked"), ("c9", "last_parked")] == picks[2:]
    # A sample as large as N takes every case once.
    assert sorted(order) == sorted(case for case, _ in sample_groups(order, 50))
    odd = sample_groups(order, 5)
    assert (2, 3) == tuple(
        sum(1 for _, g in odd if g == group) for group in ("first_parked", "last_parked")
    )


def test_expected_cached_follows_the_cache_size() -> None:
    # Everything fits: every sampled case is cached.
    assert {"first_parked": 100, "last_parked": 100} == expected_cached(1_000, 2_000, 200)
    # N = 5000 over a 2000 cache: the first parked were evicted, the last stay cached.
    assert {"first_parked": 0, "last_parked": 100} == expected_cached(5_000, 2_000, 200)
    # Just over: the newest of the first group are still cached.
    assert {"first_parked": 60, "last_parked": 100} == expected_cached(2_040, 2_000, 200)
