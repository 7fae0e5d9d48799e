"""Stored documents (receipt photos, invoice scans): bytes in, an id out; the id in, bytes out.

Workflows never carry a document: the API stores the upload here before it starts a case and
the case carries the id, which an activity (`read_document`) resolves. Documents are stored
once per content: the sha256 is unique, so uploading the same image again (a retried request,
a second case about the same receipt) returns the first id. Blocking database work: call it
from synchronous activities or a thread.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from core.db import Document

__all__ = [
    "DocumentContent",
    "DocumentStore",
    "StoredDocument",
]


@dataclass(frozen=True)
class StoredDocument:
    """A document's reference and facts, without its bytes."""

    document_id: str
    sha256: str
    content_type: str
    size: int
    created: bool  # False when the same bytes had been stored before


@dataclass(frozen=True)
class DocumentContent:
    document_id: str
    content_type: str
    size: int
    data: bytes


class DocumentStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def put(self, data: bytes, content_type: str) -> StoredDocument:
        """Store `data` once: the same bytes again return the first document's id."""
        digest = hashlib.sha256(data).hexdigest()
        existing = self._by_sha256(digest)
        if existing is not None:
            return existing
        document_id = f"doc-{uuid.uuid4().hex}"
        row = Document(
            id=document_id,
            sha256=digest,
            content_type=content_type,
            size=len(data),
            data=data,
        )
        try:
            with Session(self._engine) as session:
                session.add(row)
                session.commit()
        except IntegrityError:
            # The same bytes, uploaded concurrently: the first writer's id wins.
            existing = self._by_sha256(digest)
            if existing is None:
                raise
            return existing
        return StoredDocument(document_id, digest, content_type, len(data), created=True)

    def get(self, document_id: str) -> DocumentContent | None:
        with Session(self._engine) as session:
            row = session.get(Document, document_id)
            if row is None:
                return None
            return DocumentContent(row.id, row.content_type, row.size, row.data)

    def exists(self, document_id: str) -> bool:
        with Session(self._engine) as session:
            statement = select(col(Document.id)).where(col(Document.id) == document_id)
            return session.exec(statement).first() is not None

    def _by_sha256(self, digest: str) -> StoredDocument | None:
        with Session(self._engine) as session:
            statement = select(
                col(Document.id), col(Document.content_type), col(Document.size)
            ).where(col(Document.sha256) == digest)
            found = session.exec(statement).first()
        if found is None:
            return None
        document_id, content_type, size = found
        return StoredDocument(document_id, digest, content_type, size, created=False)
