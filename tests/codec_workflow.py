"""A workflow that fails on purpose with personal data in its failures, for tests/test_codec.py.

Kept apart from the test module, which imports `cryptography`: the sandbox re-imports a
workflow's module, and `cryptography` must stay out of it.
"""

from __future__ import annotations

import contextlib
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

PLANTED_EMAIL = "jane.planted@example.com"
PLANTED_CARD = "4111111111111111"


@activity.defn(name="codec_test_leak")
async def leak(customer: str) -> None:
    raise ApplicationError(f"card {PLANTED_CARD} declined for {PLANTED_EMAIL}", type="CardDeclined")


@workflow.defn(name="codec_test_failing")
class FailingWorkflow:
    @workflow.run
    async def run(self, customer: str) -> None:
        with contextlib.suppress(ActivityError):  # its failure stays in history
            await workflow.execute_activity(
                leak,
                customer,
                start_to_close_timeout=timedelta(seconds=10),
                retry_policy=RetryPolicy(maximum_attempts=1),
            )
        raise ApplicationError(
            f"refund refused for {PLANTED_EMAIL}, card {PLANTED_CARD}",
            type="RefundRefused",
            non_retryable=True,
        )
