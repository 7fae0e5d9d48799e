"""Worker roles: the cases' worker serves every activity but the model calls and loads no model
library; the models' worker serves exactly the model calls; the cache can be sized in memory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from activities.intelligence import EmbeddedModels
from core.db import create_tables, make_engine
from core.scheduling import MODEL_ACTIVITIES
from core.settings import CACHED_CASE_KIB, Settings
from worker import activity_name, build_activities, case_activities, model_activities
from workflows.registry import PROCESSES

ROOT = Path(__file__).resolve().parent.parent
MODEL_LIBRARIES = ("sklearn", "scipy", "numpy", "onnxruntime", "rapidocr_onnxruntime", "sumy")


def test_the_two_roles_split_every_activity_between_them(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'podium.db'}")
    create_tables(engine)
    models = EmbeddedModels.load()
    from activities.intelligence.gateway import ModelGateway

    gateway = ModelGateway.from_file(None, models)
    try:
        cases = {activity_name(f) for f in case_activities(engine)}
        served = {activity_name(f) for f in model_activities(engine, models, gateway)}
        every = {activity_name(f) for f in build_activities(engine, models, gateway)}
    finally:
        gateway.close()
        engine.dispose()
    assert served == MODEL_ACTIVITIES
    assert not cases & MODEL_ACTIVITIES
    assert cases | served == every
    needed = {name for process in PROCESSES for name in process.activities}
    assert needed <= every, sorted(needed - every)


def test_a_cases_worker_imports_no_model_library() -> None:
    """`import worker` as the cases' role does: none of the models' libraries is loaded (they
    cost about 120 MiB of a worker that runs no model)."""
    probe = (
        f"import sys, worker; print(' '.join(m for m in {MODEL_LIBRARIES!r} if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=600,  # a bound for a stuck interpreter, not a speed requirement
    ).stdout.split()
    assert loaded == []


def test_the_cache_can_be_sized_in_memory() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.cached_workflows == settings.max_cached_workflows == 2_000
    sized = Settings(_env_file=None, workflow_cache_mib=60)  # type: ignore[call-arg]
    assert sized.cached_workflows == 60 * 1024 // CACHED_CASE_KIB == 299
    assert Settings(_env_file=None, workflow_cache_mib=0.1).cached_workflows == 1  # type: ignore[call-arg]
