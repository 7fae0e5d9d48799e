"""Documents the API receives (receipt photos): checked, then stored before any case refers to
them, so a case carries only the document's id and its history never holds the image.

`AttachmentUpload` (`workflows.contracts.documents`) is the JSON shape of an upload and checks
it while the request is parsed. `DocumentUploads` stores it in the
`documents` table of the settings' database (`Settings.resolved_database_url`), on an engine
built on first use, the blocking work in a thread.
"""

from __future__ import annotations

import asyncio
import threading

from pydantic import BaseModel, Field
from sqlalchemy.engine import Engine

from activities.documents import DocumentStore
from core.db import create_tables, make_engine
from core.settings import Settings
from workflows.contracts.documents import (
    DOCUMENT_ID_PATTERN,
    MAX_ATTACHMENT_BYTES,
    AttachmentUpload,
)

__all__ = [
    "DOCUMENT_ID_PATTERN",
    "MAX_ATTACHMENT_BYTES",
    "AttachmentUpload",
    "DocumentRef",
    "DocumentUploads",
]


class DocumentRef(BaseModel):
    document_id: str = Field(examples=["doc-3f2a9c0d4b6e4f1a8c7d5e9b0a1c2d3e"])
    sha256: str
    content_type: str
    size_bytes: int
    created: bool = Field(description="False when the same bytes had been stored before")


class DocumentUploads:
    """The API's access to the document store. Safe to share across tasks."""

    def __init__(self, settings: Settings) -> None:
        self._url = settings.resolved_database_url
        self._lock = threading.Lock()
        self._engine: Engine | None = None
        self._store: DocumentStore | None = None

    def engine(self) -> Engine:
        """The database engine, created on first use (with the tables: the API may store a
        document before a worker ran)."""
        with self._lock:
            if self._engine is None:
                self._engine = make_engine(self._url)
                create_tables(self._engine)
            return self._engine

    def _documents(self) -> DocumentStore:
        engine = self.engine()
        with self._lock:
            if self._store is None:
                self._store = DocumentStore(engine)
            return self._store

    async def save(self, upload: AttachmentUpload) -> DocumentRef:
        stored = await asyncio.to_thread(
            lambda: self._documents().put(upload.data, upload.content_type)
        )
        return DocumentRef(
            document_id=stored.document_id,
            sha256=stored.sha256,
            content_type=stored.content_type,
            size_bytes=stored.size,
            created=stored.created,
        )

    async def exists(self, document_id: str) -> bool:
        return await asyncio.to_thread(lambda: self._documents().exists(document_id))

    def close(self) -> None:
        with self._lock:
            if self._engine is not None:
                self._engine.dispose()
            self._engine = self._store = None
