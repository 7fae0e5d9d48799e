"""How the client reads Temporal's refusals: pushback and a cut connection are worth a retry
(`TemporalUnavailable`, a 503 with Retry-After at the API), found by the chaos battery as 500s:
more than ten decisions in flight on one case, a case whose workflow task is failing, a server
killed during a decision. Anything unplanned still surfaces as it is."""

from __future__ import annotations

import pytest
from temporalio.service import RPCError, RPCStatusCode

from core.settings import Settings
from starter.client import PodiumClient, TemporalUnavailable


@pytest.fixture
def podium() -> PodiumClient:
    return PodiumClient(object(), Settings(_env_file=None))  # type: ignore[arg-type,call-arg]


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (
            RPCStatusCode.RESOURCE_EXHAUSTED,
            "limit on number of concurrent in-flight updates has been reached (10)",
        ),
        (
            RPCStatusCode.FAILED_PRECONDITION,
            "Unable to perform workflow execution update due to Workflow Task in failed state.",
        ),
        (RPCStatusCode.UNKNOWN, "transport error"),
        (RPCStatusCode.UNAVAILABLE, "connection refused"),
    ],
)
def test_pushback_and_cut_connections_say_retry(
    podium: PodiumClient, status: RPCStatusCode, message: str
) -> None:
    translated = podium._translate(RPCError(message, status, b""), "refund-1")
    assert isinstance(translated, TemporalUnavailable)


def test_anything_unplanned_surfaces_as_it_is(podium: PodiumClient) -> None:
    error = RPCError("boom", RPCStatusCode.INTERNAL, b"")
    with pytest.raises(RPCError) as raised:
        podium._translate(error, "refund-1")
    assert raised.value is error
