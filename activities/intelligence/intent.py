"""The intent classifier: TF-IDF word and character n-grams plus WordLlama sentence embeddings,
fed to a multinomial logistic regression whose probabilities are temperature-scaled.

It trains in about a second from `datasets/intents/train.jsonl` when a worker starts, so the
model always matches the committed examples and nothing is downloaded or unpickled. Training is
deterministic: every worker built from the same examples makes the same decisions. Word
n-grams carry the vocabulary of each intent, character n-grams survive misspellings ("refnd",
"cancle"), and the static WordLlama embeddings (shipped inside the wheel) generalise to
synonyms the examples do not contain.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.sparse import csr_matrix, hstack
from scipy.special import softmax
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import FeatureUnion
from threadpoolctl import threadpool_limits

from activities.intelligence.text import normalize_for_intent
from activities.types import Intent

__all__ = ["IntentClassifier", "IntentExample", "load_examples"]

# Measured by 3x5-fold cross-validation over all labelled examples (datasets/intents/README.md):
# the embeddings at this weight add about 2 points of accuracy over TF-IDF alone.
_EMBEDDING_WEIGHT = 0.25
_REGULARISATION_C = 20.0
_MAX_ITER = 3000
# Logistic regression at this C is under-confident (mean probability 0.84 at 93% accuracy in
# cross-validation). Dividing the logits by this temperature gives an expected calibration
# error of 0.02; 0.65 minimises log-loss, we stay slightly cautious.
_TEMPERATURE = 0.7
# Long e-mail threads: the customer's own request comes first; quoted history adds only noise.
MAX_CLASSIFIED_CHARS = 4000


@dataclass(frozen=True, slots=True)
class IntentExample:
    text: str
    intent: Intent


def load_examples(path: Path) -> list[IntentExample]:
    """Read a JSONL file of `{"text": ..., "intent": ...}` objects, one per line."""
    examples: list[IntentExample] = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                examples.append(IntentExample(text=str(row["text"]), intent=Intent(row["intent"])))
            except (ValueError, KeyError, TypeError) as err:
                raise ValueError(f"{path}:{number}: not a valid intent example: {err}") from err
    if not examples:
        raise ValueError(f"{path}: no intent examples")
    return examples


class _WordEmbedder:
    """Average-pooled WordLlama token embeddings, loaded from the weights inside the wheel."""

    def __init__(self) -> None:
        import wordllama

        package_dir = Path(wordllama.__file__).resolve().parent
        self._model = wordllama.WordLlama.load(cache_dir=package_dir, disable_download=True)
        # The tokenizer is shared state in Rust; activities call us from many threads.
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> Any:
        with self._lock:
            return self._model.embed(list(texts))


def _ngram_features() -> FeatureUnion:
    return FeatureUnion(
        [
            (
                "words",
                TfidfVectorizer(
                    analyzer="word",
                    ngram_range=(1, 2),
                    sublinear_tf=True,
                    token_pattern=r"(?u)\b\w+\b",
                ),
            ),
            (
                "chars",
                # min_df=2 drops a quarter of the features (and training time), same accuracy.
                TfidfVectorizer(
                    analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2
                ),
            ),
        ]
    )


def _fingerprint(examples: Sequence[IntentExample], embeddings: bool) -> str:
    settings = f"C={_REGULARISATION_C};T={_TEMPERATURE};w={_EMBEDDING_WEIGHT};e={embeddings}"
    digest = hashlib.sha256(settings.encode())
    for example in examples:
        digest.update(f"\n{example.intent.value}\t{example.text}".encode())
    return digest.hexdigest()[:8]


class IntentClassifier:
    """Maps a customer or employee message to an `Intent` and the probability of that intent."""

    def __init__(
        self,
        features: FeatureUnion,
        embedder: _WordEmbedder | None,
        model: LogisticRegression,
        name: str,
    ) -> None:
        self._features = features
        self._embedder = embedder
        self._model = model
        self._classes = [Intent(label) for label in model.classes_]
        self.name = name

    @classmethod
    def train(
        cls, examples: Sequence[IntentExample], *, word_embeddings: bool = True
    ) -> IntentClassifier:
        features = _ngram_features()
        embedder = _WordEmbedder() if word_embeddings else None
        texts = [normalize_for_intent(example.text) for example in examples]
        matrix = cls._combine(features.fit_transform(texts), embedder, texts)
        model = LogisticRegression(C=_REGULARISATION_C, max_iter=_MAX_ITER)
        # Multi-threaded BLAS makes this small fit several times slower on a busy 2-core host.
        with threadpool_limits(limits=1, user_api="blas"):
            model.fit(matrix, [example.intent.value for example in examples])
        kind = "tfidf+wordllama-lr" if word_embeddings else "tfidf-lr"
        name = f"embedded:intent-{kind}@{_fingerprint(examples, word_embeddings)}"
        return cls(features, embedder, model, name)

    @staticmethod
    def _combine(ngrams: Any, embedder: _WordEmbedder | None, texts: Sequence[str]) -> Any:
        if embedder is None:
            return ngrams
        dense = np.asarray(embedder.embed(texts), dtype=np.float64) * _EMBEDDING_WEIGHT
        return hstack([ngrams, csr_matrix(dense)], format="csr")

    def predict_many(self, texts: Sequence[str]) -> list[tuple[Intent, float]]:
        """The most probable intent of each text and its probability."""
        normalized = [normalize_for_intent(text[:MAX_CLASSIFIED_CHARS]) for text in texts]
        matrix = self._combine(self._features.transform(normalized), self._embedder, normalized)
        logits = np.asarray(self._model.decision_function(matrix), dtype=np.float64)
        if logits.ndim == 1:  # two intents only: the logit of the second against the first
            logits = np.column_stack([np.zeros_like(logits), logits])
        probabilities = softmax(logits / _TEMPERATURE, axis=1)
        best = probabilities.argmax(axis=1)
        return [
            (self._classes[int(index)], float(row[index]))
            for index, row in zip(best, probabilities, strict=True)
        ]

    def predict(self, text: str) -> tuple[Intent, float]:
        return self.predict_many([text])[0]
