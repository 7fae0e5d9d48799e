"""The intent examples: enough per intent, a test set that shares no text with training."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from activities.intelligence.embedded import DEFAULT_DATASETS_DIR, TEST_FILE, TRAIN_FILE
from activities.intelligence.intent import IntentExample, load_examples
from activities.types import Intent

MIN_TRAINING_EXAMPLES = 150
MIN_TEST_EXAMPLES = 20


def _key(text: str) -> str:
    return " ".join(re.sub(r"[^\w ]", " ", text.lower()).split())


def _load(path: Path) -> list[IntentExample]:
    return load_examples(DEFAULT_DATASETS_DIR / path)


def test_every_intent_has_enough_training_examples() -> None:
    counts = Counter(example.intent for example in _load(TRAIN_FILE))
    assert {intent: True for intent in Intent} == {
        intent: counts[intent] >= MIN_TRAINING_EXAMPLES for intent in Intent
    }


def test_every_intent_is_in_the_test_set() -> None:
    counts = Counter(example.intent for example in _load(TEST_FILE))
    assert {intent: True for intent in Intent} == {
        intent: counts[intent] >= MIN_TEST_EXAMPLES for intent in Intent
    }


def test_no_test_message_is_a_training_example() -> None:
    training = {_key(example.text) for example in _load(TRAIN_FILE)}
    assert [] == [e.text for e in _load(TEST_FILE) if _key(e.text) in training]


def test_no_text_is_labelled_twice() -> None:
    for path in (TRAIN_FILE, TEST_FILE):
        counts = Counter(_key(example.text) for example in _load(path))
        assert [] == [text for text, count in counts.items() if count > 1]


def test_typos_for_the_robustness_check_are_deterministic_and_small() -> None:
    import random

    from activities.intelligence.evaluate import with_typos

    text = "please refund the broken kettle I returned"
    first = with_typos(text, random.Random(1), rate=1.0)
    assert first == with_typos(text, random.Random(1), rate=1.0)
    assert first != text
    assert len(text.split()) == len(first.split())
    assert all(abs(len(a) - len(b)) <= 1 for a, b in zip(text.split(), first.split(), strict=True))
    assert text == with_typos(text, random.Random(1), rate=0.0)


def test_the_few_shot_prompt_shows_every_intent_from_the_training_data() -> None:
    import json

    from activities.intelligence.intent import few_shot_prompt

    training = _load(TRAIN_FILE)
    prompt = few_shot_prompt("You classify one message.", training, per_intent=3)
    assert prompt == few_shot_prompt("You classify one message.", training, per_intent=3)
    assert prompt.startswith("You classify one message.\n")
    shown = [json.loads(line) for line in prompt.splitlines() if line.startswith("{")]
    assert {intent.value: 3 for intent in Intent} == Counter(row["intent"] for row in shown)
    known = {(example.text, example.intent.value) for example in training}
    assert all((row["text"], row["intent"]) in known for row in shown)
    # Nothing from the test set is shown to a model.
    test_texts = {_key(example.text) for example in _load(TEST_FILE)}
    assert not [row for row in shown if _key(row["text"]) in test_texts]
