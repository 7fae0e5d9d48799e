"""A workflow that reports the identity of its module's objects, for tests/test_perf_sandbox.py:
the sandbox imports this module afresh for each case; with `core.shared_code` every case's copy
runs the same code objects while its functions and classes stay its own."""

from __future__ import annotations

from temporalio import workflow


def helper() -> int:
    return 1


@workflow.defn(name="shared_code_probe")
class SharedCodeProbe:
    def __init__(self) -> None:
        self._released = False
        self._identities: list[int] = []

    @workflow.query
    def identities(self) -> list[int]:
        return self._identities

    @workflow.signal
    def release(self) -> None:
        self._released = True

    @workflow.run
    async def run(self) -> list[int]:
        # Identities while every probe case is alive at once (parked until released).
        self._identities = [id(helper.__code__), id(helper), id(SharedCodeProbe)]
        await workflow.wait_condition(lambda: self._released)
        return self._identities
