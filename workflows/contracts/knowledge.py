"""Payload types of the knowledge activities: a question searched in the knowledge base, the
documents found (by id and title, never their full text) and the answer drafted from them.

Shared by the `knowledge_answer` and `handoff` processes and `activities.knowledge`. Pure
pydantic that imports nothing of Podium's: safe under the sandbox's passthrough.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

__all__ = ["KnowledgeHit", "SearchKnowledgeInput", "SearchKnowledgeResult"]


class SearchKnowledgeInput(BaseModel):
    case_id: str
    question: str = Field(min_length=1, max_length=4_000)
    top_k: int = Field(default=3, ge=1, le=10)


class KnowledgeHit(BaseModel):
    doc_id: str = Field(description="The document's id, e.g. KB-101")
    title: str
    score: float = Field(
        description="Rank score, 0..1: BM25 scaled by the best document's, blended with the "
        "embedding similarity"
    )


class SearchKnowledgeResult(BaseModel):
    hits: list[KnowledgeHit] = Field(default_factory=list, description="Best first")
    confidence: float = Field(
        ge=0.0,
        le=1.0,
        description="How sure retrieval is that the first document answers the question: the "
        "share of the question's content words it holds, lowered when the runner-up scores "
        "almost as high",
    )
    answer: str = Field(
        default="",
        max_length=2_000,
        description="The passages of the first document that "
        "answer best, in its own words (empty when nothing was found)",
    )
    index_version: str = Field(description="Digest of the documents the index was built from")
    model: str = Field(description="The retrieval method and library version")


__all__ += ["BriefHandoffInput", "BriefHandoffResult", "RouteCaseInput", "RouteCaseResult"]


class BriefHandoffInput(BaseModel):
    case_id: str
    message: str = Field(min_length=1, max_length=10_000)


class BriefHandoffResult(BaseModel):
    summary: str = Field(description="The message's most informative sentences, its own words")
    suggested_reply: str
    sources: list[KnowledgeHit] = Field(
        default_factory=list, description="The documents the suggested reply draws on"
    )
    model: str


class RouteCaseInput(BaseModel):
    """Open a case of another registered process (as `POST /cases/{process}` would)."""

    idempotency_key: str = Field(pattern=r"^[A-Za-z0-9._:-]{1,100}$")
    process: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    request: dict[str, str]
    requested_by: str = Field(min_length=1, max_length=128)


class RouteCaseResult(BaseModel):
    case_id: str
    created: bool
