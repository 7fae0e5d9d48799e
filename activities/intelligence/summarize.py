"""Extractive case summaries: the most informative sentences of a message, in its own words.

`summarise(text)` splits the text into sentences with a small regular-expression tokenizer,
drops e-mail boilerplate (greetings, pleasantries, sign-offs, signatures, quoted replies),
ranks what is left with TextRank (`sumy`, with the English Snowball stemmer and stop-word list
shipped in the packages) and returns the best sentences in their original order. sumy's own
tokenizer needs NLTK's `punkt` data, which would have to be downloaded: ours needs nothing.

TextRank finds the sentences the others talk about. A case summary must also keep what the
writer asks for and the facts an agent acts on, so a sentence's rank is raised by half for a
request ("please", "I would like", "can you") and by half for a fact (an order id, an amount
or a date, found by `extract`). On the messages we tried, LexRank (sumy's, which has no
damping) ranked an isolated "I hope you are well." first; TextRank did not. Texts too short to
rank are summarised by their first sentences. The result is deterministic.

Confidence is the share of the text's distinct content words (stems, without stop words, after
the boilerplate is dropped) that the summary keeps: 1.0 when the summary is the whole text,
lower the more it leaves out.
"""

from __future__ import annotations

import functools
import re
from datetime import date
from importlib.metadata import version
from typing import Any

from sumy.models.dom import ObjectDocumentModel, Paragraph, Sentence
from sumy.nlp.stemmers import Stemmer
from sumy.summarizers.text_rank import TextRankSummarizer
from sumy.utils import get_stop_words

from activities.intelligence.extract import find_amounts, find_dates
from activities.intelligence.schemas import CaseSummary
from activities.intelligence.text import extract_order_ids

__all__ = ["MAX_SUMMARISED_CHARS", "RegexTokenizer", "summarise", "summary_model_name"]

_LANGUAGE = "english"
# Bounds the work: TextRank compares every pair of sentences.
MAX_SUMMARISED_CHARS = 20_000
_MAX_SENTENCES = 150
# Below this many words there is nothing to rank: the first sentences are the summary.
_MIN_WORDS_TO_RANK = 30
_MAX_BOILERPLATE_WORDS = 8

_ABBREVIATIONS = frozenset(
    re.findall(
        r"\S+",
        """mr mrs ms dr prof st no nos vs etc approx appt dept est inc ltd co corp jr sr e.g i.e
        a.m p.m u.s u.k fig ref tel ext min max avg qty ord""",
    )
)
# A sentence ends at . ! ? or …, with any closing quotes or brackets, before white space.
_SENTENCE_END = re.compile(r"""[.!?…]+["'\u201d\u2019)\]]*(?=\s)""")
_WORD_BEFORE_END = re.compile(r"([\w.]+)[.!?…][\"'\u201d\u2019)\]]*$")
_WORD = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)*")
_TERMINAL = re.compile(r"""[.!?…:;]["'\u201d\u2019)\]]*$""")
_SHORT_LINE = 40

_GREETING = re.compile(
    r"^(?:hi|hello|hey|dear|greetings|good\s+(?:morning|afternoon|evening)|to\s+whom)\b",
    re.IGNORECASE,
)
_SIGN_OFF = re.compile(
    r"^(?:thanks|thank\s+you|many\s+thanks|thx|cheers|best|regards|kind\s+regards"
    r"|best\s+regards|warm\s+regards|sincerely|yours|sent\s+from\s+my)\b",
    re.IGNORECASE,
)
_PLEASANTRY = re.compile(
    r"^(?:i\s+)?hope\s+(?:you\s+are|you're|this|all)\b|^have\s+a\s+(?:great|good|nice|lovely)\b"
    r"|^(?:please\s+)?let\s+me\s+know\s+if\b|^looking\s+forward\b|^thanks\s+in\s+advance\b",
    re.IGNORECASE,
)
_REQUEST = re.compile(
    r"\b(?:please|pls|kindly|would\s+like|'d\s+like|want|wants|need|needs|can\s+you"
    r"|could\s+you|would\s+you)\b",
    re.IGNORECASE,
)
_BOOST = 0.5
# Only whether a sentence has a date matters here, not which: any fixed day keeps it deterministic.
_ANY_DAY = date(2000, 1, 1)
_QUOTE_START = re.compile(
    r"^(?:>|-{2,}\s*original\s+message|on\s.{3,80}\bwrote:\s*$|from:\s)", re.IGNORECASE
)


class RegexTokenizer:
    """sumy's tokenizer interface (`to_sentences`, `to_words`) without NLTK data."""

    language = _LANGUAGE

    def to_sentences(self, paragraph: str) -> tuple[str, ...]:
        """Sentences of one paragraph; "e.g.", "Mr." and "No. 5004" do not end a sentence."""
        sentences: list[str] = []
        start = 0
        for match in _SENTENCE_END.finditer(paragraph):
            candidate = paragraph[start : match.end()].strip()
            before = _WORD_BEFORE_END.search(candidate)
            word = before.group(1).lower() if before else ""
            if candidate.endswith(".") and (
                word.rstrip(".") in _ABBREVIATIONS or (len(word) == 1 and word.isalpha())
            ):
                continue
            if candidate:
                sentences.append(candidate)
            start = match.end()
        rest = paragraph[start:].strip()
        if rest:
            sentences.append(rest)
        return tuple(sentences)

    def to_words(self, sentence: str) -> tuple[str, ...]:
        return tuple(_WORD.findall(sentence))


def _paragraphs(text: str) -> list[str]:
    """Blank lines separate paragraphs; a line break ends a sentence only where the line does
    (terminal punctuation, or a short line such as "Hi team," or a list item)."""
    paragraphs: list[str] = []
    for block in re.split(r"\n\s*\n", text):
        lines = [line.strip() for line in block.splitlines() if line.strip()]
        joined = ""
        for line in lines:
            if not joined:
                joined = line
            elif _TERMINAL.search(joined) or len(joined.rsplit("\n", 1)[-1]) < _SHORT_LINE:
                joined += "\n" + line
            else:
                joined += " " + line
        if joined:
            paragraphs.append(joined)
    return paragraphs


def _without_quoted_reply(text: str) -> str:
    """The text above the first quoted line ("> ...", "On Mon, ... wrote:")."""
    kept: list[str] = []
    for line in text.splitlines():
        if _QUOTE_START.match(line.strip()):
            break
        kept.append(line)
    return "\n".join(kept)


def _is_boilerplate(sentence: str, words: tuple[str, ...]) -> bool:
    if len(words) > _MAX_BOILERPLATE_WORDS:
        return False
    if _GREETING.match(sentence) or _SIGN_OFF.match(sentence) or _PLEASANTRY.match(sentence):
        return True
    # A signature: a name alone on its line ("Jane", "Jane Smith").
    return len(words) <= 3 and all(word[:1].isupper() for word in words) and "." not in sentence


def _sentences(text: str, tokenizer: RegexTokenizer) -> list[str]:
    sentences: list[str] = []
    for paragraph in _paragraphs(text):
        for line in paragraph.split("\n"):
            sentences.extend(tokenizer.to_sentences(line))
    return sentences


@functools.cache
def _ranker() -> Any:
    summarizer = TextRankSummarizer(Stemmer(_LANGUAGE))
    summarizer.stop_words = get_stop_words(_LANGUAGE)
    return summarizer


def summary_model_name() -> str:
    return f"embedded:sumy-textrank@{version('sumy')}"


def _content_stems(sentences: list[str], tokenizer: RegexTokenizer) -> set[str]:
    ranker = _ranker()
    stop_words: frozenset[str] = ranker.stop_words
    return {
        ranker.stem_word(word)
        for sentence in sentences
        for word in tokenizer.to_words(sentence.lower())
        if word not in stop_words
    }


def _weight(sentence: str) -> float:
    """1.0, plus half for a request and half for a fact the agent acts on."""
    weight = 1.0
    if _REQUEST.search(sentence):
        weight += _BOOST
    if extract_order_ids(sentence) or find_amounts(sentence) or find_dates(sentence, _ANY_DAY):
        weight += _BOOST
    return weight


def _best(sentences: list[str], count: int, tokenizer: RegexTokenizer) -> list[str]:
    objects = [Sentence(sentence, tokenizer) for sentence in sentences]
    ratings = _ranker().rate_sentences(ObjectDocumentModel([Paragraph(objects)]))
    scored = [
        (float(ratings[sentence_object]) * _weight(sentence), -position)
        for position, (sentence, sentence_object) in enumerate(zip(sentences, objects, strict=True))
    ]
    # Highest score first, the earlier sentence on a tie; then back into reading order.
    best = sorted(range(len(sentences)), key=lambda i: scored[i], reverse=True)[:count]
    return [sentences[i] for i in sorted(best)]


def summarise(text: str, max_sentences: int = 2) -> CaseSummary:
    """The `max_sentences` most informative sentences of `text`, in their original order."""
    if max_sentences < 1:
        raise ValueError(f"max_sentences must be at least 1, got {max_sentences}")
    tokenizer = RegexTokenizer()
    model = summary_model_name()
    all_sentences = _sentences(_without_quoted_reply(text[:MAX_SUMMARISED_CHARS]), tokenizer)
    if not all_sentences:
        return CaseSummary(text="", sentences=[], confidence=0.0, model=model)
    content = [s for s in all_sentences if not _is_boilerplate(s, tokenizer.to_words(s))]
    # Repeated sentences ("Please help.") would share one rank and could fill the summary.
    sentences = list(dict.fromkeys(content or all_sentences))[:_MAX_SENTENCES]

    words = sum(len(tokenizer.to_words(sentence)) for sentence in sentences)
    if len(sentences) <= max_sentences or words < _MIN_WORDS_TO_RANK:
        chosen = sentences[:max_sentences]
    else:
        chosen = _best(sentences, max_sentences, tokenizer)

    everything = _content_stems(sentences, tokenizer)
    kept = _content_stems(chosen, tokenizer)
    confidence = len(kept & everything) / len(everything) if everything else 1.0
    return CaseSummary(
        text=" ".join(chosen),
        sentences=chosen,
        confidence=round(confidence, 4),
        model=model,
    )
