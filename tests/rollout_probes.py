"""Three builds of one small process for the rollout test (`tests/test_rollout.py`), in a module
of their own that imports nothing but the SDK, so the workflow sandbox can load it."""

from __future__ import annotations

from temporalio import workflow
from temporalio.common import VersioningBehavior

__all__ = ["NAME", "BadProbe", "GoodProbe", "ReleasedProbe"]

NAME = "rollout_probe"


@workflow.defn(name=NAME, versioning_behavior=VersioningBehavior.AUTO_UPGRADE)
class ReleasedProbe:
    """A short timer (say, a cooling-off period), then it waits to be released."""

    def __init__(self) -> None:
        self.released = False

    @workflow.signal(name="release")
    def release(self) -> None:
        self.released = True

    @workflow.run
    async def run(self) -> str:
        await workflow.sleep(0.1)
        await workflow.wait_condition(lambda: self.released)
        return "released"


@workflow.defn(name=NAME, versioning_behavior=VersioningBehavior.AUTO_UPGRADE)
class BadProbe:
    """The timer removed without `workflow.patched`: it cannot replay a started case."""

    def __init__(self) -> None:
        self.released = False

    @workflow.signal(name="release")
    def release(self) -> None:
        self.released = True

    @workflow.run
    async def run(self) -> str:
        await workflow.wait_condition(lambda: self.released)
        return "released"


@workflow.defn(name=NAME, versioning_behavior=VersioningBehavior.AUTO_UPGRADE)
class GoodProbe:
    """The same commands as the released build; only its answer's wording changed."""

    def __init__(self) -> None:
        self.released = False

    @workflow.signal(name="release")
    def release(self) -> None:
        self.released = True

    @workflow.run
    async def run(self) -> str:
        await workflow.sleep(0.1)
        await workflow.wait_condition(lambda: self.released)
        return "released by the good build"
