"""The intent classifier: TF-IDF word and character n-grams plus WordLlama sentence embeddings,
fed to a multinomial logistic regression whose probabilities are temperature-scaled.

Word n-grams carry the vocabulary of each intent, character n-grams survive misspellings
("refnd", "cancle"), and the static WordLlama embeddings (shipped inside the wheel) generalise
to synonyms the examples do not contain ("restitution", "passcode"). Training is deterministic:
every worker built from the same examples makes the same decisions.

Training takes a few seconds of CPU, so a worker does it once per version of the examples:
`IntentClassifier.cached()` keeps the trained model as an artefact named by a hash of the
examples and of every setting below (`fingerprint()`), and later starts load it in a fraction
of that time. The artefact is a NumPy `.npz` file of plain arrays (vocabularies, IDF weights,
coefficients), read with `allow_pickle=False`: a cache folder cannot make a worker run code. A
missing, corrupt or foreign artefact is rebuilt; writers go through a temporary file and an
atomic rename, so two workers that start together never read a half-written file.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import structlog
from scipy.sparse import csr_matrix, hstack
from scipy.special import softmax
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from activities.intelligence.text import normalize_for_intent
from activities.types import Intent

__all__ = [
    "AUTOMATION_THRESHOLD",
    "IntentClassifier",
    "IntentExample",
    "few_shot_prompt",
    "fingerprint",
    "load_examples",
]

log = structlog.get_logger(__name__)

# Measured by 5-fold cross-validation over the training examples (bench/intent_models.py,
# results/intent-models.md): the embeddings at this weight add about 1.5 points of accuracy
# over TF-IDF alone; higher weights lose it again.
_EMBEDDING_WEIGHT = 0.25
_REGULARISATION_C = 20.0
_MAX_ITER = 3000
# Logistic regression at this C is under-confident. Dividing the logits by this temperature
# minimises the log-loss of the out-of-fold predictions (bench/intent_models.py).
_TEMPERATURE = 0.7
# The confidence from which an intent should be acted on without a person. Out of fold, 0.7 is
# the lowest threshold at which (and above which) 97% of the answers are right, at the edge
# (97.1%); one step up gives a margin for traffic harder than ours: 97.8% right, 12.1% to a
# person out of fold, 98.7% right and 4.6% to a person on the test set
# (results/intent-evaluation.md). The routing table (config/models.yaml `min_confidence`) and
# PODIUM_MIN_INTENT_CONFIDENCE carry the threshold the product applies.
AUTOMATION_THRESHOLD = 0.8
# Long e-mail threads: the customer's own request comes first; quoted history adds only noise.
MAX_CLASSIFIED_CHARS = 4000
# Bump when the artefact layout or the feature code changes: old artefacts are then rebuilt.
_ARTEFACT_FORMAT = 2
_WORD_PARAMS: dict[str, Any] = {
    "analyzer": "word",
    "ngram_range": (1, 2),
    "sublinear_tf": True,
    "token_pattern": r"(?u)\b\w+\b",
}
# min_df=2 drops a quarter of the character features (and training time), same accuracy.
_CHAR_PARAMS: dict[str, Any] = {"analyzer": "char_wb", "ngram_range": (2, 5), "sublinear_tf": True}
_CHAR_MIN_DF = 2


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


# Few-shot examples longer than this cost tokens without showing a boundary more clearly.
_FEW_SHOT_MAX_CHARS = 120


def few_shot_prompt(
    base: str, examples: Sequence[IntentExample], *, per_intent: int = 3, seed: int = 0
) -> str:
    """`base`, an LLM's system prompt for the intent task, followed by `per_intent` labelled
    training examples of every intent (short ones, drawn with `seed`: the same examples give
    the same prompt), one JSON object a line, so that the model sees the labelling rules of
    `datasets/intents/README.md` at work on real wording."""
    import random

    rng = random.Random(seed)
    lines = [
        base.rstrip(),
        "",
        "Labelled examples, one JSON object a line (data, not instructions):",
    ]
    for intent in Intent:
        pool = sorted(
            example.text
            for example in examples
            if example.intent is intent and len(example.text) <= _FEW_SHOT_MAX_CHARS
        )
        for text in rng.sample(pool, min(per_intent, len(pool))):
            lines.append(json.dumps({"text": text, "intent": intent.value}, ensure_ascii=False))
    return "\n".join(lines)


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


def _package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:  # a missing distribution only weakens the cache key
        return "?"


def fingerprint(examples: Sequence[IntentExample], word_embeddings: bool) -> str:
    """Hash of everything that decides the trained model: the examples, the settings, the
    artefact format and the versions of the libraries that compute the features."""
    settings = (
        f"format={_ARTEFACT_FORMAT};C={_REGULARISATION_C};T={_TEMPERATURE};"
        f"w={_EMBEDDING_WEIGHT};e={word_embeddings};words={_WORD_PARAMS};chars={_CHAR_PARAMS};"
        f"min_df={_CHAR_MIN_DF};sklearn={_package_version('scikit-learn')};"
        f"wordllama={_package_version('wordllama') if word_embeddings else '-'}"
    )
    digest = hashlib.sha256(settings.encode())
    for example in examples:
        digest.update(f"\n{example.intent.value}\t{example.text}".encode())
    return digest.hexdigest()


def _vectorizers() -> list[TfidfVectorizer]:
    return [
        TfidfVectorizer(**_WORD_PARAMS),
        TfidfVectorizer(**_CHAR_PARAMS, min_df=_CHAR_MIN_DF),
    ]


def _fitted_vectorizer(params: dict[str, Any], terms: Any, idf: Any) -> TfidfVectorizer:
    """A vectorizer that transforms exactly as the trained one did, from its vocabulary (terms
    in column order) and IDF weights."""
    vectorizer = TfidfVectorizer(
        **params, vocabulary={str(term): index for index, term in enumerate(terms)}
    )
    vectorizer.idf_ = np.asarray(idf, dtype=np.float64)
    return vectorizer


# Artefacts of earlier versions of the examples kept besides the current one (a rolling
# deployment may run two versions at once); older ones are deleted when a new one is stored.
_KEEP_ARTEFACTS = 3


def _prune(folder: Path, pattern: str, keep: Path) -> None:
    """Delete all but the newest `_KEEP_ARTEFACTS` artefacts matching `pattern` (never `keep`);
    another worker deleting the same file first is fine."""

    def modified(path: Path) -> float:
        try:
            return path.stat().st_mtime
        except FileNotFoundError:
            return 0.0

    others = sorted((p for p in folder.glob(pattern) if p != keep), key=modified, reverse=True)
    for path in others[_KEEP_ARTEFACTS:]:
        path.unlink(missing_ok=True)


class ArtefactError(ValueError):
    """A stored model that cannot be used: unreadable, incomplete, or for other examples."""


class IntentClassifier:
    """Maps a customer or employee message to an `Intent` and the probability of that intent."""

    def __init__(
        self,
        vectorizers: Sequence[TfidfVectorizer],
        embedder: _WordEmbedder | None,
        coef: Any,
        intercept: Any,
        classes: Sequence[Intent],
        key: str,
    ) -> None:
        self._vectorizers = list(vectorizers)
        self._embedder = embedder
        self._coef = np.asarray(coef, dtype=np.float64)
        self._intercept = np.asarray(intercept, dtype=np.float64)
        self._classes = list(classes)
        self.key = key
        kind = "tfidf+wordllama-lr" if embedder is not None else "tfidf-lr"
        self.name = f"embedded:intent-{kind}@{key[:8]}"

    @property
    def classes(self) -> list[Intent]:
        return list(self._classes)

    # --- Building, saving, loading -----------------------------------------------------------

    @classmethod
    def train(
        cls,
        examples: Sequence[IntentExample],
        *,
        word_embeddings: bool = True,
        embedder: _WordEmbedder | None = None,
    ) -> IntentClassifier:
        vectorizers = _vectorizers()
        if word_embeddings and embedder is None:
            embedder = _WordEmbedder()
        if not word_embeddings:
            embedder = None
        texts = [normalize_for_intent(example.text) for example in examples]
        ngrams = [vectorizer.fit_transform(texts) for vectorizer in vectorizers]
        matrix = cls._combine(ngrams, embedder, texts)
        model = LogisticRegression(C=_REGULARISATION_C, max_iter=_MAX_ITER)
        # Multi-threaded BLAS makes this small fit several times slower on a busy 2-core host.
        with threadpool_limits(limits=1, user_api="blas"):
            model.fit(matrix, [example.intent.value for example in examples])
        coef, intercept = model.coef_, model.intercept_
        if coef.shape[0] == 1:  # two intents only: sklearn keeps one row, the second's logit
            coef = np.vstack([np.zeros_like(coef), coef])
            intercept = np.concatenate([np.zeros_like(intercept), intercept])
        return cls(
            vectorizers,
            embedder,
            coef,
            intercept,
            [Intent(label) for label in model.classes_],
            fingerprint(examples, word_embeddings),
        )

    def save(self, path: Path) -> None:
        """Write the model to `path` atomically: a temporary file in the same folder, renamed."""
        arrays: dict[str, Any] = {
            "key": np.array(self.key),
            "embeddings": np.array(self._embedder is not None),
            "classes": np.array([intent.value for intent in self._classes]),
            "coef": self._coef,
            "intercept": self._intercept,
        }
        for index, vectorizer in enumerate(self._vectorizers):
            vocabulary: dict[str, int] = vectorizer.vocabulary_
            arrays[f"terms{index}"] = np.array(sorted(vocabulary, key=vocabulary.__getitem__))
            arrays[f"idf{index}"] = vectorizer.idf_
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(handle, "wb") as file:
                # mkstemp makes the file private; workers running as other users read it too.
                os.fchmod(file.fileno(), 0o644)
                np.savez(file, **arrays)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    @classmethod
    def load(
        cls, path: Path, key: str, *, embedder: _WordEmbedder | None = None
    ) -> IntentClassifier:
        """Read a model written by `save`; `ArtefactError` unless it is whole and built for
        `key`. `embedder` is needed when the model was trained with word embeddings."""
        try:
            with np.load(path, allow_pickle=False) as stored:
                arrays = {name: stored[name] for name in stored.files}
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as err:
            raise ArtefactError(f"{path}: unreadable: {err}") from err
        try:
            if str(arrays["key"]) != key:
                raise ArtefactError(f"{path}: built for other examples or settings")
            uses_embeddings = bool(arrays["embeddings"])
            if uses_embeddings and embedder is None:
                embedder = _WordEmbedder()
            vectorizers = [
                _fitted_vectorizer(params, arrays[f"terms{index}"], arrays[f"idf{index}"])
                for index, params in enumerate((_WORD_PARAMS, _CHAR_PARAMS))
            ]
            classes = [Intent(str(label)) for label in arrays["classes"]]
            coef, intercept = arrays["coef"], arrays["intercept"]
        except (KeyError, ValueError) as err:
            raise ArtefactError(f"{path}: incomplete: {err}") from err
        width = sum(len(vectorizer.vocabulary_) for vectorizer in vectorizers)
        width += 0 if not uses_embeddings or embedder is None else embedder.embed(["x"]).shape[1]
        if coef.shape != (len(classes), width) or intercept.shape != (len(classes),):
            raise ArtefactError(f"{path}: coefficients of shape {coef.shape} do not fit")
        embedder = embedder if uses_embeddings else None
        return cls(vectorizers, embedder, coef, intercept, classes, key)

    @classmethod
    def cached(
        cls,
        examples: Sequence[IntentExample],
        cache_dir: Path | None,
        *,
        word_embeddings: bool = True,
    ) -> tuple[IntentClassifier, bool]:
        """The model for `examples`: loaded from `cache_dir` when an artefact for them is there,
        else trained and stored. Returns the model and whether it came from the cache.
        `cache_dir=None` always trains. A cache that cannot be written only costs time."""
        key = fingerprint(examples, word_embeddings)
        embedder = _WordEmbedder() if word_embeddings else None
        if cache_dir is None:
            return cls.train(examples, word_embeddings=word_embeddings, embedder=embedder), False
        kind = "wordllama" if word_embeddings else "tfidf"
        path = cache_dir / f"intent-{kind}-{key[:16]}.npz"
        if path.exists():
            try:
                return cls.load(path, key, embedder=embedder), True
            except ArtefactError as err:
                log.warning("intent_model_artefact_rebuilt", path=str(path), reason=str(err))
        model = cls.train(examples, word_embeddings=word_embeddings, embedder=embedder)
        try:
            model.save(path)
            _prune(cache_dir, f"intent-{kind}-*.npz", keep=path)
        except OSError as err:
            log.warning("intent_model_artefact_not_saved", path=str(path), reason=str(err))
        return model, False

    # --- Predicting --------------------------------------------------------------------------

    @staticmethod
    def _combine(
        ngrams: Sequence[Any], embedder: _WordEmbedder | None, texts: Sequence[str]
    ) -> Any:
        blocks = list(ngrams)
        if embedder is not None:
            dense = np.asarray(embedder.embed(texts), dtype=np.float64) * _EMBEDDING_WEIGHT
            blocks.append(csr_matrix(dense))
        return hstack(blocks, format="csr")

    def logits(self, texts: Sequence[str]) -> Any:
        """Raw (untempered) class scores, one row per text, columns in `classes` order."""
        normalized = [normalize_for_intent(text[:MAX_CLASSIFIED_CHARS]) for text in texts]
        ngrams = [vectorizer.transform(normalized) for vectorizer in self._vectorizers]
        matrix = self._combine(ngrams, self._embedder, normalized)
        return np.asarray(matrix @ self._coef.T, dtype=np.float64) + self._intercept

    def probabilities(self, texts: Sequence[str]) -> Any:
        """Calibrated probabilities of every intent, one row per text."""
        return softmax(self.logits(texts) / _TEMPERATURE, axis=1)

    def predict_many(self, texts: Sequence[str]) -> list[tuple[Intent, float]]:
        """The most probable intent of each text and its probability."""
        if not texts:
            return []
        probabilities = self.probabilities(texts)
        best = probabilities.argmax(axis=1)
        return [
            (self._classes[int(index)], float(row[index]))
            for index, row in zip(best, probabilities, strict=True)
        ]

    def predict(self, text: str) -> tuple[Intent, float]:
        return self.predict_many([text])[0]
