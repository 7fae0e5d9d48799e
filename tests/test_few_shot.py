"""Few-shot intent prompts: a routing table may ask that labelled training examples follow the
LLM's intent prompt (`few_shot_per_intent`); the request the provider receives carries them.

Against the scripted OpenAI-compatible server on loopback (`tests/fake_openai.py`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from sqlalchemy.engine import Engine

from activities.intelligence import EmbeddedModels
from activities.intelligence.config import (
    DEFAULT_MODELS_FILE,
    load_models_config,
    load_prompts,
)
from activities.intelligence.gateway import ModelGateway
from activities.intelligence.ledger import ModelLedger
from activities.intelligence.tasks import IntentRequest, Task
from activities.types import Intent, RiskLevel
from core.db import create_tables, make_engine
from tests.fake_openai import FakeOpenAI, chat_completion

pytestmark = pytest.mark.timeout(60)

EXAMPLE_FILE = DEFAULT_MODELS_FILE.parent / "models.openai.example.yaml"
KEY_ENV = "PODIUM_TEST_FEW_SHOT_KEY"


def _models_file(folder: Path, base_url: str, shots: int) -> Path:
    """The example LLM routing table, its models on the scripted server."""
    document = yaml.safe_load(EXAMPLE_FILE.read_text())
    document["prompts_dir"] = str(DEFAULT_MODELS_FILE.parent / "prompts")
    for model in document["models"].values():
        if model["kind"] == "openai_compatible":
            model.update(base_url=base_url, api_key_env=KEY_ENV)
    document["tasks"]["intent"]["few_shot_per_intent"] = shots
    path = folder / "models.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def _examples(prompt: str) -> list[dict[str, str]]:
    return [json.loads(line) for line in prompt.splitlines() if line.startswith('{"text"')]


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'ledger.db'}")
    create_tables(engine)
    yield engine
    engine.dispose()


def test_the_example_routing_table_asks_for_three_examples_of_every_intent() -> None:
    config = load_models_config(EXAMPLE_FILE)
    prompt = load_prompts(config, EXAMPLE_FILE)[Task.INTENT]
    examples = _examples(prompt)
    assert {intent.value: 3 for intent in Intent} == {
        intent.value: sum(1 for e in examples if e["intent"] == intent.value) for intent in Intent
    }
    # The same examples every time: a prompt is part of what a model's answer depends on.
    assert prompt == load_prompts(config, EXAMPLE_FILE)[Task.INTENT]


@pytest.mark.parametrize("shots", [0, 2])
def test_the_provider_receives_the_examples_asked_for(
    shots: int, tmp_path: Path, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-test-few-shot")
    models = EmbeddedModels.load()
    with FakeOpenAI(max_lifetime=50) as fake:
        fake.enqueue(chat_completion({"intent": "refund_request", "confidence": 0.95}))
        gateway = ModelGateway.from_file(
            _models_file(tmp_path, fake.base_url, shots), models, ledger=ModelLedger(engine)
        )
        try:
            result = gateway.run_blocking(
                Task.INTENT,
                IntentRequest(text="where is the money from my return"),
                risk=RiskLevel.MEDIUM,
                case_id="case-1",
            )
        finally:
            gateway.close()
        [request] = fake.requests
    system = request.body["messages"][0]["content"]
    assert shots * len(Intent) == len(_examples(system))
    assert (shots > 0) == ("Labelled examples" in system)
    assert "refund_request" == result.output.intent.value
