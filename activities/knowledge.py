"""The knowledge base: short markdown documents shipped with Podium (`knowledge/`), searched
offline to answer customers' and employees' questions with the sources named.

Each document is a markdown file with a small front matter (`id`, `title`, `audience`). Documents
are ranked by BM25 (`bm25s`) over stemmed words without stop words (the Snowball stemmer and
stop-word list that ship with `sumy`), blended with the cosine similarity of WordLlama
embeddings (the weights inside the `wordllama` wheel, as the intent model uses them) so that a
question in other words than the document's ("payday", "send something back") still finds it:
both scores are scaled to 0..1 over the documents and mixed 70/30. No model is downloaded. A
document is indexed by its title (twice: titles are what questions echo) and its body; the
answer is the document's passages that share most of the question's words, in its own words.

Confidence is what a policy threshold reads: the share of the question's distinct content stems
that the first document holds (a question about the weather shares almost none with any of them),
multiplied by one minus half the runner-up's score relative to the first (two documents that
match as well as each other leave it unsure which answers).
"""

from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import dataclass
from functools import cache
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from temporalio import activity
from temporalio.exceptions import ApplicationError

if TYPE_CHECKING:
    import numpy as np

from workflows.contracts.knowledge import (
    BriefHandoffInput,
    BriefHandoffResult,
    KnowledgeHit,
    RouteCaseInput,
    RouteCaseResult,
    SearchKnowledgeInput,
    SearchKnowledgeResult,
)

__all__ = [
    "DEFAULT_KNOWLEDGE_DIR",
    "CaseRouter",
    "KnowledgeActivities",
    "KnowledgeBase",
    "KnowledgeDocument",
    "StartCase",
    "brief",
    "load_documents",
]

DEFAULT_KNOWLEDGE_DIR = Path(__file__).resolve().parent.parent / "knowledge"
_FRONT_MATTER = re.compile(r"\A---\n(.*?)\n---\n", re.DOTALL)
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_MARKDOWN = re.compile(r"[*_`#>|]+")
_ANSWER_PASSAGES = 2
_ANSWER_MAX_CHARS = 900
_TITLE_WEIGHT = 2
# Share of the embedding similarity in a document's rank (the rest is BM25): measured on
# `datasets/knowledge/questions.jsonl` by `python -m bench.knowledge`.
EMBEDDING_WEIGHT = 0.3


@dataclass(frozen=True)
class KnowledgeDocument:
    doc_id: str
    title: str
    audience: str
    body: str

    @property
    def passages(self) -> list[str]:
        """Paragraphs and table rows of the body, as plain text (headings left out)."""
        found: list[str] = []
        for block in re.split(r"\n\s*\n", self.body):
            lines = [line for line in block.strip().splitlines() if line.strip()]
            if not lines or lines[0].startswith("#"):
                lines = lines[1:]
            if not lines:
                continue
            if all(line.lstrip().startswith("|") for line in lines):
                rows = [line for line in lines if not re.fullmatch(r"[|\-\s:]+", line)]
                found.extend(_plain(" ".join(rows[0:1]) + " " + row) for row in rows[1:])
            else:
                found.append(_plain(" ".join(line.strip() for line in lines)))
        return [passage for passage in found if passage]


def _plain(text: str) -> str:
    text = _MARKDOWN.sub(" ", text).replace(" >", ",")
    return re.sub(r"\s+", " ", text).strip()


def load_documents(directory: Path = DEFAULT_KNOWLEDGE_DIR) -> list[KnowledgeDocument]:
    """Every `*.md` of `directory`, by file name; a file without an `id` and `title` is an error."""
    documents = []
    for path in sorted(directory.glob("*.md")):
        text = path.read_text(encoding="utf-8")
        match = _FRONT_MATTER.match(text)
        fields: dict[str, str] = {}
        if match:
            for line in match.group(1).splitlines():
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
        if not fields.get("id") or not fields.get("title"):
            raise ValueError(f"{path.name}: the front matter needs an id and a title")
        body = text[match.end() :] if match else text
        documents.append(
            KnowledgeDocument(
                doc_id=fields["id"],
                title=fields["title"],
                audience=fields.get("audience", "customer"),
                body=body,
            )
        )
    ids = [document.doc_id for document in documents]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{directory}: document ids must be unique")
    return documents


@cache
def _analyser() -> tuple[frozenset[str], object]:
    from sumy.nlp.stemmers import Stemmer
    from sumy.utils import get_stop_words

    return frozenset(get_stop_words("english")), Stemmer("english")


def tokens(text: str) -> list[str]:
    """Stemmed content words of `text`: lower case, stop words out."""
    stop_words, stemmer = _analyser()
    words = _WORD.findall(text.lower().replace("\u2019", "'"))
    return [stemmer(word) for word in words if word not in stop_words]  # type: ignore[operator]


class KnowledgeBase:
    """A BM25 index over documents and, per document, over its passages."""

    def __init__(self, documents: list[KnowledgeDocument], *, embeddings: bool = True) -> None:
        import bm25s

        if not documents:
            raise ValueError("the knowledge base has no documents")
        self.documents = documents
        self._doc_tokens = [
            tokens(" ".join([document.title] * _TITLE_WEIGHT) + "\n" + document.body)
            for document in documents
        ]
        self._index = bm25s.BM25()
        self._index.index(self._doc_tokens, show_progress=False)
        self._vocabulary = [set(words) for words in self._doc_tokens]
        digest = hashlib.sha256()
        for document in documents:
            digest.update(f"{document.doc_id}\0{document.title}\0{document.body}\0".encode())
        self.version = digest.hexdigest()[:12]
        self.model = f"bm25s@{version('bm25s')}+snowball"
        self._embedder: _Embedder | None = None
        self._doc_vectors: np.ndarray | None = None
        if embeddings:
            self._embedder = _Embedder()
            self._doc_vectors = self._embedder.embed(
                [f"{d.title}. {d.title}. {_plain(d.body)}" for d in documents]
            )
            self.model += f"+wordllama@{version('wordllama')}"
        # bm25s keeps scratch state while scoring; activities call from many threads.
        self._lock = threading.Lock()

    @classmethod
    def load(
        cls, directory: Path = DEFAULT_KNOWLEDGE_DIR, *, embeddings: bool = True
    ) -> KnowledgeBase:
        return cls(load_documents(directory), embeddings=embeddings)

    def _ranking(self, question: str, query: list[str]) -> np.ndarray:
        """Each document's rank score: BM25 scaled by the best, blended with the embedding
        similarity scaled to 0..1; zero for every document when BM25 finds no word."""
        import numpy as np  # the model side only: a cases' worker never loads it

        bm25 = self._scores(query)
        if bm25.max() <= 0:
            return bm25
        scaled: np.ndarray = bm25 / bm25.max()
        if self._embedder is None or self._doc_vectors is None:
            return scaled
        cosine = self._doc_vectors @ self._embedder.embed([question])[0]
        spread = float(cosine.max() - cosine.min())
        similar = (cosine - cosine.min()) / spread if spread > 0 else np.zeros_like(cosine)
        blended: np.ndarray = (1 - EMBEDDING_WEIGHT) * scaled + EMBEDDING_WEIGHT * similar
        return blended

    def _scores(self, query: list[str]) -> np.ndarray:
        import numpy as np  # the model side only: a cases' worker never loads it

        known = [word for word in query if any(word in words for words in self._vocabulary)]
        if not known:
            return np.zeros(len(self.documents))
        with self._lock:
            return np.asarray(self._index.get_scores(known), dtype=float)

    def search(self, question: str, top_k: int = 3) -> SearchKnowledgeResult:
        """The documents that share words with the question, best first, with the answer
        drafted from the first; none (confidence 0) when no document shares a word."""
        query = tokens(question)
        bm25 = self._scores(query)
        ranking = self._ranking(question, query)
        order = sorted((i for i in range(len(bm25)) if bm25[i] > 0), key=lambda i: (-ranking[i], i))
        if not order:
            return SearchKnowledgeResult(
                hits=[], confidence=0.0, answer="", index_version=self.version, model=self.model
            )
        hits = [
            KnowledgeHit(
                doc_id=self.documents[i].doc_id,
                title=self.documents[i].title,
                score=round(float(ranking[i]), 4),
            )
            for i in order[:top_k]
        ]
        best = order[0]
        distinct = set(query)
        coverage = len(distinct & self._vocabulary[best]) / len(distinct)
        runner_up = float(bm25[order[1]]) if len(order) > 1 else 0.0
        closeness = min(1.0, runner_up / float(bm25[best]))
        confidence = coverage * (1.0 - 0.5 * closeness)
        return SearchKnowledgeResult(
            hits=hits,
            confidence=round(min(1.0, max(0.0, confidence)), 4),
            answer=self.answer(self.documents[best], query),
            index_version=self.version,
            model=self.model,
        )

    def answer(self, document: KnowledgeDocument, query: list[str]) -> str:
        """The document's passages that share the most of the question's words, in reading
        order (its first passage when none does)."""
        passages = document.passages
        wanted = set(query)
        overlap = [len(wanted & set(tokens(passage))) for passage in passages]
        ranked = sorted(range(len(passages)), key=lambda i: (-overlap[i], i))
        chosen = [i for i in ranked[:_ANSWER_PASSAGES] if overlap[i] > 0] or [0]
        text = " ".join(passages[i] for i in sorted(chosen))
        return text if len(text) <= _ANSWER_MAX_CHARS else text[: _ANSWER_MAX_CHARS - 1] + "…"


class _Embedder:
    """WordLlama embeddings, unit length, from the weights inside the wheel (never downloaded)."""

    def __init__(self) -> None:
        import wordllama

        package_dir = Path(wordllama.__file__).resolve().parent
        self._model = wordllama.WordLlama.load(cache_dir=package_dir, disable_download=True)
        self._lock = threading.Lock()  # the tokenizer is shared state

    def embed(self, texts: list[str]) -> np.ndarray:
        import numpy as np  # the model side only: a cases' worker never loads it

        with self._lock:
            vectors = np.asarray(self._model.embed(texts), dtype=float)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        normalised: np.ndarray = vectors / np.where(norms > 0, norms, 1.0)
        return normalised


class KnowledgeActivities:
    """The knowledge activities, over one index the worker builds once."""

    def __init__(self, knowledge: KnowledgeBase | None = None) -> None:
        self._knowledge = knowledge
        self._building = threading.Lock()

    @property
    def knowledge(self) -> KnowledgeBase:
        with self._building:
            if self._knowledge is None:
                self._knowledge = KnowledgeBase.load()
            return self._knowledge

    @activity.defn(name="search_knowledge")
    def search_knowledge(self, input: SearchKnowledgeInput) -> SearchKnowledgeResult:
        found = self.knowledge.search(input.question, input.top_k)
        activity.logger.info(
            "knowledge searched (case %s, %d hits, confidence %.2f)",
            input.case_id,
            len(found.hits),
            found.confidence,
        )
        return found

    @activity.defn(name="brief_handoff")
    def brief_handoff(self, input: BriefHandoffInput) -> BriefHandoffResult:
        return brief(self.knowledge, input.message)


# The suggested reply of a handoff draws on the knowledge base only when it is this sure.
SUGGESTION_MIN_CONFIDENCE = 0.3
_ACKNOWLEDGEMENT = (
    "Thank you for your message. A member of our team has read it and is looking into it; "
    "we will come back to you shortly."
)


def brief(knowledge: KnowledgeBase, message: str) -> BriefHandoffResult:
    """What a person taking a case over reads first: a summary and a suggested reply (the
    knowledge base's answer when it is sure enough, with its source; else an acknowledgement)."""
    from activities.intelligence.summarize import summarise, summary_model_name

    summary = summarise(message, max_sentences=2).text or message[:300]
    found = knowledge.search(message, top_k=1)
    if found.hits and found.confidence >= SUGGESTION_MIN_CONFIDENCE and found.answer:
        hit = found.hits[0]
        reply = f"{found.answer}\n\nSource: [{hit.doc_id}] {hit.title}"
        sources = found.hits
    else:
        reply, sources = _ACKNOWLEDGEMENT, []
    return BriefHandoffResult(
        summary=summary,
        suggested_reply=reply,
        sources=sources,
        model=f"{summary_model_name()}+{knowledge.model}",
    )


class StartCase(Protocol):
    """Opens a case of a registered process (the worker supplies it: the starter's `start`)."""

    async def __call__(self, input: RouteCaseInput, task_queue: str) -> RouteCaseResult: ...


class CaseRouter:
    """`route_case`: a person re-routes a case to another process, which opens with its message.
    The worker hands in how cases open (`StartCase`); without one, routing fails for good."""

    def __init__(self, start: StartCase | None = None) -> None:
        self._start = start

    @activity.defn(name="route_case")
    async def route_case(self, input: RouteCaseInput) -> RouteCaseResult:
        if self._start is None:
            raise ApplicationError(
                "this worker cannot open cases", type="RoutingUnavailable", non_retryable=True
            )
        try:
            opened = await self._start(input, activity.info().task_queue)
        except (ValueError, LookupError) as err:
            # An unknown process or a request it refuses: retrying changes nothing.
            raise ApplicationError(
                f"{type(err).__name__}: {err}", type="RouteRefused", non_retryable=True
            ) from None
        activity.logger.info(
            "case routed (to %s, case %s, created=%s)",
            input.process,
            opened.case_id,
            opened.created,
        )
        return opened
