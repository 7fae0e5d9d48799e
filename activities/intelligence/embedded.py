"""The embedded, offline intelligence behind triage and reply drafting.

`EmbeddedModels.load()` runs once when a worker starts: it loads the intent classifier built
from the committed examples, loads the VADER sentiment lexicon and compiles the reply
templates. The classifier is trained (a few seconds of CPU) only the first time a version of
the examples is seen; the trained model is kept in the model cache folder (`PODIUM_MODEL_CACHE_DIR`,
default `<PODIUM_DATA_DIR>/models`) under a hash of the examples and settings, and later starts
load it. Nothing is downloaded, and the same examples always give the same model, whose name
carries that hash. The loaded object is read-only and safe to share between the activity threads.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

import structlog
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from activities.intelligence.intent import (
    MAX_CLASSIFIED_CHARS,
    IntentClassifier,
    load_examples,
)
from activities.intelligence.replies import ReplyTemplates
from activities.intelligence.text import extract_order_ids
from activities.types import (
    DraftReplyInput,
    DraftReplyResult,
    Intent,
    Sentiment,
    TriageResult,
)

__all__ = ["EmbeddedModels", "default_model_cache_dir"]

log = structlog.get_logger(__name__)

_REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATASETS_DIR = _REPO_ROOT / "datasets"
DEFAULT_TEMPLATES_DIR = _REPO_ROOT / "templates"
TRAIN_FILE = Path("intents") / "train.jsonl"
# Written separately from the training examples; it never trains or tunes anything.
TEST_FILE = Path("intents") / "test.jsonl"
MODEL_CACHE_SUBDIR = "models"
REPLIES_DIR = Path("replies")

# VADER's own recommended cut-offs on the compound score.
NEGATIVE_AT_MOST = -0.05
POSITIVE_AT_LEAST = 0.05


def default_model_cache_dir() -> Path:
    """`PODIUM_MODEL_CACHE_DIR`, else `models/` under `PODIUM_DATA_DIR` (default `var/`).

    Read here because the worker calls `EmbeddedModels.load()` without a cache folder."""
    from core.settings import Settings

    settings = Settings()
    return settings.model_cache_dir or settings.data_dir / MODEL_CACHE_SUBDIR


class EmbeddedModels:
    """Intent, sentiment and order ids for triage; templated replies for drafting."""

    def __init__(
        self,
        intent: IntentClassifier,
        replies: ReplyTemplates,
        training_seconds: float = 0.0,
        training_cpu_seconds: float = 0.0,
        *,
        from_cache: bool = False,
    ) -> None:
        self._intent = intent
        self._replies = replies
        self._sentiment = SentimentIntensityAnalyzer()
        # Wall time depends on what else the machine is doing; CPU time is the budget (< 3 s).
        self.training_seconds = training_seconds
        self.training_cpu_seconds = training_cpu_seconds
        # True when the intent model was loaded from the cache instead of trained.
        self.from_cache = from_cache

    @classmethod
    def load(
        cls,
        datasets_dir: Path | None = None,
        templates_dir: Path | None = None,
        *,
        word_embeddings: bool = True,
        cache_dir: Path | Literal["default"] | None = "default",
    ) -> EmbeddedModels:
        """The intent classifier for `datasets/intents/train.jsonl` and the reply templates
        from `templates/replies/`. The classifier is loaded from `cache_dir` (default:
        `default_model_cache_dir()`) when it holds the model for these examples, else trained
        and stored there; `cache_dir=None` always trains and stores nothing.
        `word_embeddings=False` leaves out the WordLlama features (only for comparing models).
        `training_seconds` / `training_cpu_seconds` time the classifier's load or training."""
        datasets_dir = datasets_dir or DEFAULT_DATASETS_DIR
        templates_dir = templates_dir or DEFAULT_TEMPLATES_DIR
        replies = ReplyTemplates(templates_dir / REPLIES_DIR)
        started, started_cpu = time.perf_counter(), time.process_time()
        folder = default_model_cache_dir() if cache_dir == "default" else cache_dir
        intent, from_cache = IntentClassifier.cached(
            load_examples(datasets_dir / TRAIN_FILE), folder, word_embeddings=word_embeddings
        )
        models = cls(
            intent,
            replies,
            training_seconds=time.perf_counter() - started,
            training_cpu_seconds=time.process_time() - started_cpu,
            from_cache=from_cache,
        )
        log.info(
            "intent_model_ready",
            model=intent.name,
            from_cache=from_cache,
            cache_dir=None if folder is None else str(folder),
            seconds=round(models.training_seconds, 2),
            cpu_seconds=round(models.training_cpu_seconds, 2),
        )
        return models

    @property
    def intent_model(self) -> str:
        return self._intent.name

    @property
    def reply_model(self) -> str:
        return self._replies.name

    @property
    def reply_templates(self) -> list[str]:
        return self._replies.names

    def classify_intent(self, text: str) -> tuple[Intent, float]:
        """The most probable intent and its probability; `other` with 0.0 for blank text."""
        if not text.strip():
            return Intent.OTHER, 0.0
        return self._intent.predict(text)

    def classify_intents(self, texts: list[str]) -> list[tuple[Intent, float]]:
        """`classify_intent` for many texts at once (evaluation)."""
        return self._intent.predict_many(texts)

    def sentiment(self, text: str) -> tuple[Sentiment, float]:
        """VADER compound score in [-1, 1] and its polarity."""
        score = float(self._sentiment.polarity_scores(text[:MAX_CLASSIFIED_CHARS])["compound"])
        if score <= NEGATIVE_AT_MOST:
            return Sentiment.NEGATIVE, score
        if score >= POSITIVE_AT_LEAST:
            return Sentiment.POSITIVE, score
        return Sentiment.NEUTRAL, score

    def triage(self, text: str) -> TriageResult:
        intent, confidence = self.classify_intent(text)
        sentiment, score = self.sentiment(text)
        return TriageResult(
            intent=intent,
            intent_confidence=confidence,
            sentiment=sentiment,
            sentiment_score=score,
            order_ids=extract_order_ids(text),
            model=self.intent_model,
        )

    def draft_reply(self, request: DraftReplyInput) -> DraftReplyResult:
        """Render the named template; `ValueError` for an unknown template or bad values."""
        return DraftReplyResult(text=self._replies.render(request), model=self.reply_model)
