"""A spike in intake volume raises one operations event per window: audited `intake_spike`."""

from __future__ import annotations

import uuid
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlmodel import Session, select
from temporalio.service import RPCError

from activities.types import Intent
from core.db import AuditEvent
from core.policy import DEFAULT_POLICIES_DIR
from core.settings import Settings
from starter.client import PodiumClient
from starter.intake import Intake
from tests.helpers import seeded_engine

pytestmark = pytest.mark.timeout(120)


class _Fixed:
    def classify_intent(self, text: str) -> tuple[Intent, float]:
        return Intent.HUMAN_AGENT, 0.99


async def test_a_spike_is_raised_once_per_window(dev_env: Any, tmp_path: Path) -> None:
    routing = yaml.safe_load((DEFAULT_POLICIES_DIR / "routing.yaml").read_text())
    routing["spike"] = {"max_messages": 2, "window": "PT1H"}
    path = tmp_path / "routing.yaml"
    path.write_text(yaml.safe_dump(routing))
    settings = Settings(_env_file=None, task_queue=f"spike-{uuid.uuid4().hex}", data_dir=tmp_path)  # type: ignore[call-arg]
    engine = seeded_engine(tmp_path)
    podium = PodiumClient(dev_env.client, settings)
    intake = Intake(podium, settings, classifier=_Fixed(), routing_file=path, engine=engine)
    acks = [
        await intake.receive(
            {
                "channel": "chat",
                "sender": "C-1001",
                "conversation_id": uuid.uuid4().hex,
                "text": "get me a real person now",
            }
        )
        for _ in range(5)
    ]
    try:
        assert ["handoff"] * 5 == [ack.process for ack in acks]
        with Session(engine) as session:
            spikes = session.exec(
                select(AuditEvent).where(AuditEvent.action == "intake_spike")
            ).all()
        assert 1 == len(spikes)
        assert {"messages": 3, "max": 2} == {k: spikes[0].detail[k] for k in ("messages", "max")}
    finally:
        for ack in acks:
            with suppress(RPCError):
                await dev_env.client.get_workflow_handle(ack.case_id).terminate("test finished")
        intake.close()
        podium.close()
        engine.dispose()
