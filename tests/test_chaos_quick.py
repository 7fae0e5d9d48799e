"""The chaos battery's quick profile (`python -m bench.chaos --quick`), as CI runs it.

It starts its own `podium up` on free loopback ports, runs every scenario with the small sizes
(server and worker kills, duplicate and racing decisions, hostile requests, auth probes, canary
personal data, a locked database, a failing model provider) and writes its JSON; the figures
must show nothing lost, nothing duplicated, no 5xx, and every scenario's own checks passed
(R4's in a test of its own, an expected failure while the defect it found stands). The per-test
timeout only catches a stuck run: nothing here measures speed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="kills and prctl are Linux's"),
]

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = {"R1", "R2", "R4", "R5", "R7", "R8", "R9", "R9M"}
# R4 finds a product defect (racing `decide` updates leave histories the refund workflow cannot
# replay: nondeterminism errors, answered 503, a case stuck); its test is an expected failure
# until that is fixed, and shows XPASS when a run happens not to hit it.
KNOWN_DEFECTS = {"R4"}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    out = tmp_path_factory.mktemp("chaos") / "chaos.json"
    run = subprocess.run(
        [sys.executable, "-m", "bench.chaos", "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1700,
        check=False,
    )
    assert out.exists(), run.stderr[-4000:]
    return json.loads(out.read_text()), run.stderr[-4000:]


def _failed(report: dict[str, Any], names: set[str]) -> dict[str, Any]:
    return {
        name: {k: v for k, v in figures.items() if k in ("error", "failures", "5xx_examples")}
        for name, figures in report["scenarios"].items()
        if name in names and not figures.get("passed")
    }


@pytest.mark.timeout(1800)
def test_quick_chaos_profile_loses_and_duplicates_nothing(
    quick_run: tuple[dict[str, Any], str],
) -> None:
    report, stderr = quick_run
    assert "quick" == report["profile"]
    assert SCENARIOS == set(report["ran"]), report["not_run"]
    checked = SCENARIOS - KNOWN_DEFECTS
    assert {} == _failed(report, checked), stderr
    figures = [report["scenarios"][name] for name in checked]
    assert 0 == sum(int(f["lost"]) for f in figures)
    assert 0 == sum(int(f["duplicated"]) for f in figures)
    assert 0 == sum(int(f["5xx"]) for f in figures)
    # The faults were really injected, and the scenarios really tried something.
    assert report["totals"]["server_kills"] >= 1
    assert report["totals"]["worker_kills"] >= 1
    assert all(int(f["tried"]) > 0 for f in report["scenarios"].values())


@pytest.mark.timeout(1800)
@pytest.mark.xfail(
    reason="racing decide updates: nondeterminism on replay (results/chaos-r4-unreplayable-"
    "history.json); bench/README.md 'What the battery found'",
    strict=False,
)
def test_quick_chaos_racing_decisions_apply_exactly_once(
    quick_run: tuple[dict[str, Any], str],
) -> None:
    report, stderr = quick_run
    assert {} == _failed(report, KNOWN_DEFECTS), stderr
