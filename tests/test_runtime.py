"""The embedded runtime's pieces and logging, against a real dev server where one is needed."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from pydantic import SecretStr
from temporalio import activity, workflow
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from temporalio.worker import Worker

from core.logging import configure_logging
from core.settings import Settings
from core.temporal import connect_config, uses_external_temporal
from starter.codec_server import codec_banner, codec_url
from starter.runtime import register_search_attributes, temporal_cli_args
from tests.conftest import TEMPORAL_CLI
from workflows.contracts import search_attributes


def test_dev_server_is_persistent_loopback_and_registers_every_attribute(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, temporal_port=17999, temporal_ui_port=18999)  # type: ignore[call-arg]
    args = temporal_cli_args(settings, tmp_path / "temporal.db")
    joined = " ".join(args)
    assert f"--db-filename {tmp_path / 'temporal.db'}" in joined
    assert "--ip 127.0.0.1" in joined and "--port 17999" in joined and "--ui-port 18999" in joined
    assert "--sqlite-pragma journal_mode=wal" in joined
    flags = [args[i + 1] for i, a in enumerate(args) if a == "--search-attribute"]
    assert {
        "PodiumProcess=Keyword",
        "PodiumAwaitingApproval=Bool",
        "PodiumAmount=Double",
        "PodiumSlaDueAt=Datetime",
    } <= set(flags)
    assert len(search_attributes.ALL) == len(flags)


def test_the_embedded_ui_decodes_without_a_token_that_it_never_holds(tmp_path: Path) -> None:
    """The UI is pointed at the codec server's plain endpoint: the token appears neither in the
    dev server's command line (which every local user can read) nor in the UI's settings, and
    the banner tells the operator that the UI needs none while the CLI still does."""
    token = "codec-token-for-tests-0123456789"
    settings = Settings(_env_file=None, codec_token=SecretStr(token))  # type: ignore[call-arg]
    args = temporal_cli_args(settings, tmp_path / "temporal.db", codec_url(settings))
    assert codec_url(settings) == args[args.index("--ui-codec-endpoint") + 1]
    assert token not in " ".join(args)
    banner = "\n".join(codec_banner(settings, show_token=True, trust_local_ui=True))
    assert "no token" in banner and f"/t/{token}" not in banner
    assert f'--codec-auth "Bearer {token}"' in banner
    standalone = "\n".join(codec_banner(settings, show_token=True))
    assert f"{codec_url(settings)}/t/{token}" in standalone


def test_temporal_env_config_decides_embedded_or_external(monkeypatch) -> None:
    for var in ("TEMPORAL_ADDRESS", "TEMPORAL_PROFILE", "TEMPORAL_CONFIG_FILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TEMPORAL_CONFIG_FILE", "/nonexistent/temporal.toml")
    settings = Settings(_env_file=None, temporal_port=7555)  # type: ignore[call-arg]
    assert not uses_external_temporal()
    assert "127.0.0.1:7555" == connect_config(settings)["target_host"]

    monkeypatch.setenv("TEMPORAL_ADDRESS", "temporal.example.com:7233")
    monkeypatch.setenv("TEMPORAL_NAMESPACE", "podium-prod")
    assert uses_external_temporal()
    config = connect_config(settings)
    assert "temporal.example.com:7233" == config["target_host"]
    assert "podium-prod" == config["namespace"]


async def test_search_attributes_are_registered_on_an_external_cluster() -> None:
    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter, dev_server_existing_path=str(TEMPORAL_CLI)
    )
    try:
        added = await register_search_attributes(env.client)
        assert sorted(key.name for key in search_attributes.ALL) == added
        assert [] == await register_search_attributes(env.client)  # idempotent
    finally:
        await env.shutdown()


# --- logging ------------------------------------------------------------------------------------


@pytest.fixture
def json_logs(monkeypatch) -> Iterator[io.StringIO]:
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    structlog.reset_defaults()
    configure_logging("INFO", json=True)
    yield stream
    logging.getLogger().handlers = []
    structlog.reset_defaults()


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


@activity.defn(name="log_something")
def log_something(text: str) -> str:
    activity.logger.info("activity says %s", text)
    return text


@workflow.defn(name="log_workflow", sandboxed=False)  # the module imports structlog
class LogWorkflow:
    @workflow.run
    async def run(self) -> None:
        workflow.logger.info("workflow says hello")


def test_structlog_json_lines_carry_activity_fields(json_logs: io.StringIO) -> None:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, activity_type="log_something", workflow_id="case-9")
    env.run(log_something, "hi")
    structlog.get_logger().info("plain_event", case_id="refund-1")
    records = lines(json_logs)
    from_activity = next(r for r in records if r["event"] == "activity says hi")
    assert "log_something" == from_activity["activity_type"]
    assert "case-9" == from_activity["workflow_id"]
    assert "info" == from_activity["level"]
    plain = next(r for r in records if r["event"] == "plain_event")
    assert "refund-1" == plain["case_id"] and "timestamp" in plain


async def test_workflow_logs_carry_workflow_and_run_ids(
    dev_env: WorkflowEnvironment, json_logs: io.StringIO
) -> None:
    async with Worker(
        dev_env.client, task_queue=f"log-{uuid.uuid4().hex}", workflows=[LogWorkflow]
    ) as worker:
        handle = await dev_env.client.start_workflow(
            "log_workflow", id=f"log-{uuid.uuid4().hex}", task_queue=worker.task_queue
        )
        await handle.result()
    record = next(r for r in lines(json_logs) if r["event"] == "workflow says hello")
    assert handle.id == record["workflow_id"]
    assert handle.result_run_id == record["run_id"]
    assert "log_workflow" == record["workflow_type"]
