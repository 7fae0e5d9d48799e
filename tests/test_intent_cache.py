"""The trained intent model is kept as an artefact per version of the examples: a second load
reads it, changed examples rebuild it, a broken file is rebuilt, and two loads at once are safe."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from activities.intelligence import EmbeddedModels
from activities.intelligence.intent import (
    ArtefactError,
    IntentClassifier,
    IntentExample,
    fingerprint,
    load_examples,
)
from activities.types import Intent

PROBES = ["where is my parcel", "I want my money back", "refund pls", "hello?"]


def _write(folder: Path, extra: str = "") -> None:
    examples = {
        Intent.ORDER_STATUS: ["where is my order", "my parcel is late", "track my package"],
        Intent.REFUND_REQUEST: ["I want a refund", "money back please", "refund my order"],
        Intent.OTHER: ["hello", "what's the weather", "tell me a joke" + extra],
    }
    intents_dir = folder / "datasets" / "intents"
    intents_dir.mkdir(parents=True, exist_ok=True)
    with (intents_dir / "train.jsonl").open("w") as out:
        for intent, texts in examples.items():
            for text in texts:
                out.write(json.dumps({"text": text, "intent": intent.value}) + "\n")
    replies_dir = folder / "templates" / "replies"
    replies_dir.mkdir(parents=True, exist_ok=True)
    (replies_dir / "hello.j2").write_text("Hello {{ customer_name }}.\n")


@pytest.fixture
def dirs(tmp_path: Path) -> Iterator[tuple[Path, Path, Path]]:
    _write(tmp_path)
    yield tmp_path / "datasets", tmp_path / "templates", tmp_path / "cache"


def _load(dirs: tuple[Path, Path, Path], **kwargs: object) -> EmbeddedModels:
    datasets_dir, templates_dir, cache_dir = dirs
    return EmbeddedModels.load(
        datasets_dir, templates_dir, word_embeddings=False, cache_dir=cache_dir, **kwargs
    )


def _artefacts(cache_dir: Path) -> list[Path]:
    return sorted(cache_dir.glob("intent-*.npz"))


def test_second_load_reads_the_artefact_and_decides_the_same(
    dirs: tuple[Path, Path, Path],
) -> None:
    built = _load(dirs)
    loaded = _load(dirs)
    assert (False, True) == (built.from_cache, loaded.from_cache)
    assert built.intent_model == loaded.intent_model
    assert 1 == len(_artefacts(dirs[2]))
    assert built.classify_intents(PROBES) == loaded.classify_intents(PROBES)


def test_the_embeddings_model_round_trips(dirs: tuple[Path, Path, Path]) -> None:
    datasets_dir, templates_dir, cache_dir = dirs
    built = EmbeddedModels.load(datasets_dir, templates_dir, cache_dir=cache_dir)
    loaded = EmbeddedModels.load(datasets_dir, templates_dir, cache_dir=cache_dir)
    assert loaded.from_cache
    assert loaded.intent_model.startswith("embedded:intent-tfidf+wordllama-lr@")
    assert built.classify_intents(PROBES) == loaded.classify_intents(PROBES)


def test_changed_examples_build_a_new_artefact(dirs: tuple[Path, Path, Path]) -> None:
    first = _load(dirs)
    _write(dirs[0].parent, extra=" please")
    second = _load(dirs)
    assert not second.from_cache
    assert first.intent_model != second.intent_model
    assert 2 == len(_artefacts(dirs[2]))


@pytest.mark.parametrize(
    "damage",
    [
        lambda path: path.write_bytes(b""),
        lambda path: path.write_bytes(path.read_bytes()[: path.stat().st_size // 2]),
        lambda path: path.write_bytes(b"not an npz file at all"),
    ],
    ids=["empty", "truncated", "garbage"],
)
def test_a_broken_artefact_is_rebuilt(dirs: tuple[Path, Path, Path], damage: object) -> None:
    built = _load(dirs)
    (artefact,) = _artefacts(dirs[2])
    damage(artefact)  # type: ignore[operator]
    rebuilt = _load(dirs)
    assert not rebuilt.from_cache
    assert built.classify_intents(PROBES) == rebuilt.classify_intents(PROBES)
    assert _load(dirs).from_cache


def test_an_artefact_for_other_examples_is_refused(tmp_path: Path) -> None:
    examples = [
        IntentExample(text, intent)
        for text, intent in [
            ("refund please", Intent.REFUND_REQUEST),
            ("refund my money", Intent.REFUND_REQUEST),
            ("hi there", Intent.OTHER),
            ("hi again", Intent.OTHER),
        ]
    ]
    model = IntentClassifier.train(examples, word_embeddings=False)
    model.save(tmp_path / "model.npz")
    other = fingerprint([*examples, IntentExample("hello", Intent.OTHER)], False)
    with pytest.raises(ArtefactError, match="other examples"):
        IntentClassifier.load(tmp_path / "model.npz", other)
    assert model.key == IntentClassifier.load(tmp_path / "model.npz", model.key).key


def test_an_artefact_holds_no_pickled_objects(dirs: tuple[Path, Path, Path]) -> None:
    _load(dirs)
    (artefact,) = _artefacts(dirs[2])
    with np.load(artefact, allow_pickle=False) as stored:
        assert all(stored[name].dtype != object for name in stored.files)


def test_only_the_newest_artefacts_are_kept(dirs: tuple[Path, Path, Path]) -> None:
    for version in range(6):
        _write(dirs[0].parent, extra=" " + "!" * version)
        _load(dirs)
    # The current one and the three before it.
    assert 4 == len(_artefacts(dirs[2]))
    assert _load(dirs).from_cache


def test_a_cache_folder_that_cannot_be_written_still_gives_a_model(
    dirs: tuple[Path, Path, Path],
) -> None:
    datasets_dir, templates_dir, cache_dir = dirs
    cache_dir.write_text("a file where the folder should be")
    models = EmbeddedModels.load(
        datasets_dir, templates_dir, word_embeddings=False, cache_dir=cache_dir
    )
    assert not models.from_cache
    assert Intent.REFUND_REQUEST == models.classify_intent("refund my order please")[0]


def test_no_cache_folder_always_trains(dirs: tuple[Path, Path, Path]) -> None:
    datasets_dir, templates_dir, _ = dirs
    for _ in range(2):
        models = EmbeddedModels.load(
            datasets_dir, templates_dir, word_embeddings=False, cache_dir=None
        )
        assert not models.from_cache


def test_loads_at_once_all_get_the_same_model(dirs: tuple[Path, Path, Path]) -> None:
    with ThreadPoolExecutor(max_workers=4) as pool:
        loaded = list(pool.map(lambda _: _load(dirs), range(4)))
    assert 1 == len({models.intent_model for models in loaded})
    assert 1 == len({tuple(models.classify_intents(PROBES)) for models in loaded})
    # Only whole artefacts are ever visible: no temporary file is left behind.
    assert [path.name for path in dirs[2].iterdir()] == [path.name for path in _artefacts(dirs[2])]
    assert _load(dirs).from_cache


def test_the_committed_examples_have_a_stable_key() -> None:
    path = Path(__file__).resolve().parents[1] / "datasets" / "intents" / "train.jsonl"
    examples = load_examples(path)
    assert fingerprint(examples, True) == fingerprint(list(examples), True)
    assert fingerprint(examples, True) != fingerprint(examples, False)
    assert fingerprint(examples, True) != fingerprint(examples[1:], True)


def test_the_default_cache_folder_follows_the_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from activities.intelligence.embedded import default_model_cache_dir

    monkeypatch.delenv("PODIUM_MODEL_CACHE_DIR", raising=False)
    monkeypatch.setenv("PODIUM_DATA_DIR", str(tmp_path / "data"))
    assert tmp_path / "data" / "models" == default_model_cache_dir()
    monkeypatch.setenv("PODIUM_MODEL_CACHE_DIR", str(tmp_path / "elsewhere"))
    assert tmp_path / "elsewhere" == default_model_cache_dir()


def test_a_load_without_a_cache_folder_uses_the_default(
    monkeypatch: pytest.MonkeyPatch, dirs: tuple[Path, Path, Path]
) -> None:
    datasets_dir, templates_dir, cache_dir = dirs
    monkeypatch.setenv("PODIUM_MODEL_CACHE_DIR", str(cache_dir))
    # The worker's call: folders only.
    first = EmbeddedModels.load(datasets_dir, templates_dir, word_embeddings=False)
    second = EmbeddedModels.load(datasets_dir, templates_dir, word_embeddings=False)
    assert (False, True) == (first.from_cache, second.from_cache)
    assert 1 == len(_artefacts(cache_dir))
