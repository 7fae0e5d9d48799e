"""The embedded, offline intelligence behind triage and reply drafting.

`EmbeddedModels.load()` runs once when a worker starts: it trains the intent classifier from
the committed examples (about a second on one core), loads the VADER sentiment lexicon and
compiles the reply templates. Nothing is downloaded, and the same examples always give the same
model, whose name carries a hash of them. The loaded object is read-only and safe to share
between the activity threads.
"""

from __future__ import annotations

import time
from pathlib import Path

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

__all__ = ["EmbeddedModels"]

_REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATASETS_DIR = _REPO_ROOT / "datasets"
DEFAULT_TEMPLATES_DIR = _REPO_ROOT / "templates"
TRAIN_FILE = Path("intents") / "train.jsonl"
HELDOUT_FILE = Path("intents") / "heldout.jsonl"
REPLIES_DIR = Path("replies")

# VADER's own recommended cut-offs on the compound score.
NEGATIVE_AT_MOST = -0.05
POSITIVE_AT_LEAST = 0.05


class EmbeddedModels:
    """Intent, sentiment and order ids for triage; templated replies for drafting."""

    def __init__(
        self,
        intent: IntentClassifier,
        replies: ReplyTemplates,
        training_seconds: float = 0.0,
        training_cpu_seconds: float = 0.0,
    ) -> None:
        self._intent = intent
        self._replies = replies
        self._sentiment = SentimentIntensityAnalyzer()
        # Wall time depends on what else the machine is doing; CPU time is the budget (< 3 s).
        self.training_seconds = training_seconds
        self.training_cpu_seconds = training_cpu_seconds

    @classmethod
    def load(
        cls,
        datasets_dir: Path | None = None,
        templates_dir: Path | None = None,
        *,
        word_embeddings: bool = True,
    ) -> EmbeddedModels:
        """Train the intent classifier from `datasets/intents/train.jsonl` and load the reply
        templates from `templates/replies/`. `word_embeddings=False` leaves out the WordLlama
        features (only for comparing models)."""
        datasets_dir = datasets_dir or DEFAULT_DATASETS_DIR
        templates_dir = templates_dir or DEFAULT_TEMPLATES_DIR
        replies = ReplyTemplates(templates_dir / REPLIES_DIR)
        started, started_cpu = time.perf_counter(), time.process_time()
        intent = IntentClassifier.train(
            load_examples(datasets_dir / TRAIN_FILE), word_embeddings=word_embeddings
        )
        return cls(
            intent,
            replies,
            training_seconds=time.perf_counter() - started,
            training_cpu_seconds=time.process_time() - started_cpu,
        )

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
