"""The policy activity: evaluate a case's facts against the policy stamped on the case.

An activity, not workflow code: the expression engine is not checked for the sandbox, and the
result in history makes replay deterministic (a policy change applies only to new cases).

A case names its policy by digest (`EvaluatePolicyInput.policy_digest`): the starter stored the
document under it (`PolicyVersions`, table `policy_versions`) before the case started. Cases
started before that carry the whole document (`EvaluatePolicyInput.policy`), evaluated as is.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session
from temporalio import activity
from temporalio.exceptions import ApplicationError

from core.db import PolicyVersion
from core.policy import PolicyError, evaluate
from workflows.contracts.policy import EvaluatePolicyInput, PolicyDocument, PolicyEvaluation

__all__ = ["PolicyActivities", "PolicyVersions"]


class PolicyVersions:
    """Policy documents by digest, in the database the API and the workers share. A digest
    names one file's bytes, so a stored document never changes: each is read (or written) once
    per process and kept. Safe to share across threads."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._lock = threading.Lock()
        self._documents: dict[str, dict[str, Any]] = {}

    def known(self, digest: str) -> bool:
        """True when this process has stored or read `digest` already (no database call)."""
        return digest in self._documents

    def save(self, process: str, document: dict[str, Any]) -> str:
        """Store `document` (a validated `PolicyDocument`, serialized) under its digest, once;
        the digest."""
        digest = str(document.get("digest") or "")
        if not digest:
            raise ValueError("a policy document is stored under its digest: this one has none")
        if digest in self._documents:
            return digest
        with Session(self._engine) as session:
            if session.get(PolicyVersion, digest) is None:
                session.add(
                    PolicyVersion(
                        digest=digest,
                        process=process,
                        version=str(document.get("version") or "")[:64],
                        document=json.dumps(document, sort_keys=True),
                    )
                )
                try:
                    session.commit()
                except IntegrityError:  # stored meanwhile by another starter: the same bytes
                    session.rollback()
        with self._lock:
            self._documents[digest] = document
        return digest

    def get(self, digest: str) -> dict[str, Any] | None:
        """The document stored under `digest`, or None."""
        document = self._documents.get(digest)
        if document is not None:
            return document
        with Session(self._engine) as session:
            row = session.get(PolicyVersion, digest)
            if row is None:
                return None
            stored: dict[str, Any] = json.loads(row.document)
        document = stored
        with self._lock:
            self._documents[digest] = document
        return document


class PolicyActivities:
    def __init__(self, engine: Engine) -> None:
        self.versions = PolicyVersions(engine)

    @activity.defn(name="evaluate_policy")
    def evaluate_policy(self, input: EvaluatePolicyInput) -> PolicyEvaluation:
        raw = input.policy
        if raw is None:
            digest = input.policy_digest or ""
            raw = self.versions.get(digest)
            if raw is None:
                # Retried (Temporal's policy): a worker pointed at the wrong database, once
                # fixed, lets the case go on.
                raise ApplicationError(
                    f"policy version {digest} is not stored in this deployment's database "
                    "(table policy_versions): is the worker on the API's database?",
                    type="UnknownPolicyVersion",
                )
        try:
            document = PolicyDocument.model_validate(raw)
            return evaluate(document, input.facts)
        except (PolicyError, ValueError) as err:
            # A policy that does not evaluate will not evaluate on retry either.
            raise ApplicationError(
                f"policy does not evaluate: {err}", type="InvalidPolicy", non_retryable=True
            ) from None
