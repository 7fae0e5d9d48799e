"""`make bench` stays runnable: a tiny run end to end, plus its pure helpers.

The smoke run is the real command (`python -m bench.refund`) as a subprocess with N=5: its own
dev server, the real embedded models and activities, every phase verified.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from bench.report import percentile
from bench.server import search_attribute_args
from workflows.contracts import search_attributes

REPO = Path(__file__).resolve().parents[1]
PHASES = ["refund/auto", "bare/auto", "refund/approval", "bare/approval"]
N = 5


# A bound against a hung run only, never a speed check (timing belongs in `make bench`).
SMOKE_BOUND_S = 600


@pytest.mark.e2e
@pytest.mark.timeout(SMOKE_BOUND_S + 60)
def test_bench_smoke_run_verifies_every_phase(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    args = ["--n", str(N), "--concurrency", "3", "--warmup", "1", "--json", "--out", str(out)]
    with subprocess.Popen(
        [sys.executable, "-m", "bench.refund", *args],
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
    assert PHASES == [p["phase"] for p in report["phases"]]
    phases = {p["phase"]: p for p in report["phases"]}
    for phase in phases.values():
        assert N == phase["n"] == phase["completed"], phase["phase"]
        assert 0 == phase["mismatches"] == phase["errors"], phase
        assert phase["cases_per_s"] > 0
        assert 0 < phase["latency_ms"]["p50"] <= phase["latency_ms"]["p95"]
        assert phase["history_events_per_case"]["min"] > 0
    assert N == phases["refund/auto"]["refund_rows"] == phases["refund/approval"]["refund_rows"]

    for path in ("auto", "approval"):
        # Like for like: the baseline runs exactly as many activities as the refund case.
        podium, bare = phases[f"refund/{path}"], phases[f"bare/{path}"]
        expected = report["shapes"][path]["activities"]
        assert (
            expected == podium["activities_per_case"]["max"] == bare["activities_per_case"]["min"]
        )
        assert (
            expected == podium["activities_per_case"]["min"] == bare["activities_per_case"]["max"]
        )
        ratios = report["ratios"][path]
        assert {"throughput", "p50", "p95", "cpu_per_case"} == set(ratios)
        assert all(math.isfinite(v) and v > 0 for v in ratios.values()), ratios
    # The approval case does more than the automatic one, and the baseline follows it.
    assert report["shapes"]["approval"]["activities"] > report["shapes"]["auto"]["activities"]
    assert phases["refund/approval"]["update_attempts_per_case"]["min"] >= 1


def test_percentile_interpolates_between_ranks() -> None:
    assert 2.5 == percentile([4.0, 1.0, 3.0, 2.0], 50)
    assert 4.0 == percentile([1.0, 2.0, 3.0, 4.0], 100)
    assert 1.0 == percentile([1.0], 95)
    assert math.isnan(percentile([], 50))


def test_every_search_attribute_is_registered_with_its_cli_type() -> None:
    args = search_attribute_args(search_attributes.ALL)
    pairs = dict(value.split("=") for value in args[1::2])
    assert ["--search-attribute"] * len(search_attributes.ALL) == args[::2]
    assert [key.name for key in search_attributes.ALL] == list(pairs)
    # The names `temporal server start-dev --search-attribute` accepts.
    assert set(pairs.values()) <= {"Text", "Keyword", "Int", "Double", "Bool", "Datetime"} | {
        "KeywordList"
    }
    assert "Keyword" == pairs["PodiumProcess"]
    assert "Bool" == pairs["PodiumAwaitingApproval"]
    assert "Double" == pairs["PodiumAmount"]
    assert "Datetime" == pairs["PodiumSlaDueAt"]
