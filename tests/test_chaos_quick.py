"""The chaos battery's quick profile (`python -m bench.chaos --quick`), as CI runs it.

It starts its own `podium up` on free loopback ports, runs every scenario with the small sizes
(server and worker kills, duplicate and racing decisions, hostile requests, auth probes, canary
personal data, a locked database, a failing model provider, a stopped PostgreSQL server) and
writes its JSON; the figures must show nothing lost, nothing duplicated, no 5xx, and every
scenario's own checks passed. The per-test timeout only catches a stuck run: nothing here
measures speed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="kills and prctl are Linux's"),
]

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = {"R1", "R2", "R4", "R5", "R7", "R8", "R9", "R9M", "R9P"}
# Defects the battery found and that are still open, by scenario (none since the full battery
# of 4 December 2026 passed every scenario: results/chaos.json). A scenario named here may fail
# for that reason alone (the test then reports it as an expected failure); any other fails it.
KNOWN_DEFECTS: set[str] = set()


@pytest.mark.timeout(1800)
def test_quick_chaos_profile_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    out = tmp_path / "chaos.json"
    run = subprocess.run(
        [sys.executable, "-m", "bench.chaos", "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1700,
        check=False,
    )
    assert out.exists(), run.stderr[-4000:]
    report = json.loads(out.read_text())
    assert "quick" == report["profile"]
    assert SCENARIOS == set(report["ran"]), report["not_run"]
    # A scenario this machine cannot run (R9P without a PostgreSQL server) says so and why; it
    # is neither a pass nor a failure, and the others must still pass.
    assert set(report["skipped"]) <= {"R9P"}, report["skipped"]
    ran = {n: f for n, f in report["scenarios"].items() if n not in report["skipped"]}
    failed = {
        name: {k: v for k, v in figures.items() if k in ("error", "failures", "5xx_examples")}
        for name, figures in ran.items()
        if not figures.get("passed")
    }
    totals = report["totals"]
    # The faults were really injected, and the scenarios really tried something.
    assert totals["server_kills"] >= 1
    assert totals["worker_kills"] >= 1
    assert all(int(f["tried"]) > 0 for f in ran.values())
    if failed and set(failed) <= KNOWN_DEFECTS:
        # Open defects the battery found (results/chaos.json, bench/README.md): anything else
        # failing, or these failing in another scenario, fails the test.
        pytest.xfail(f"known open defects found by the battery in {sorted(failed)}: {failed}")
    assert {} == failed, run.stderr[-4000:]
    assert 0 == totals["lost"]
    assert 0 == totals["duplicated"]
    assert 0 == totals["5xx"]
    assert 0 == run.returncode, run.stderr[-4000:]
