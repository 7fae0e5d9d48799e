"""The employee's side of a password reset: the one-time code they enter, and the demo mailbox.

An employee enters the code through the API, signed in as themselves:

    POST /cases/{case_id}/verification-code   {"code": "123456"}      (starter.api.verification)
    podium verify CASE_ID                                              (prompts for the code)
    PodiumClient.enter_code(case_id, code, employee=...)

`CodeAttempts` is the entry point's part: it stores what the person typed as an attempt (the
code's salted HMAC, `activities.identity.record_code_attempt`) so that the case receives only
the attempt's id by its `enter_code` update: the code never reaches Temporal history, a log
line or the audit trail.

The demo has no mail server: `podium up` keeps the email it would have sent in the outbox.

    python -m starter.verification CASE_ID     # demo: the code the outbox holds for the case
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import threading

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from activities.identity import create_identity_tables, record_code_attempt
from core.db import Message, make_engine
from core.settings import Settings

__all__ = ["CodeAttempts", "code_from_outbox"]

_CODE = re.compile(r"code is (\d{6})\.")
CODE_MESSAGE_KIND = "identity_verification_code"


class CodeAttempts:
    """The API's access to the verification store, on an engine built on first use (the
    settings' database); the blocking work runs in a thread. Safe to share across tasks."""

    def __init__(self, settings: Settings) -> None:
        self._url = settings.resolved_database_url
        self._lock = threading.Lock()
        self._engine: Engine | None = None

    def _ready(self) -> Engine:
        with self._lock:
            if self._engine is None:
                engine = make_engine(self._url)
                create_identity_tables(engine)
                self._engine = engine
            return self._engine

    async def record(self, case_id: str, code: str) -> str:
        """Store `code` as an attempt of the case (its salted HMAC): the attempt's id. Raises
        `UnknownVerification` when no code was sent for the case, `AttemptsExhausted` when the
        case has taken all the attempts it stores."""
        return await asyncio.to_thread(lambda: record_code_attempt(self._ready(), case_id, code))

    def close(self) -> None:
        with self._lock:
            if self._engine is not None:
                self._engine.dispose()
            self._engine = None


def code_from_outbox(engine: Engine, case_id: str) -> tuple[str, str] | None:
    """Demo only: the code of the case's verification email the outbox holds, and the address
    it went to; None when there is none (never sent, or purged once used or expired)."""
    with Session(engine) as session:
        message = session.exec(
            select(Message)
            .where(Message.case_id == case_id, Message.kind == CODE_MESSAGE_KIND)
            .order_by(col(Message.id).desc())
        ).first()
    found = _CODE.search(message.body) if message else None
    return (found.group(1), message.recipient) if found and message else None


def _main(case_id: str) -> int:
    settings = Settings()
    engine = make_engine(settings.resolved_database_url)
    try:
        found = code_from_outbox(engine, case_id)
    finally:
        engine.dispose()
    if found is None:
        print(f"the outbox holds no verification code for {case_id}", file=sys.stderr)
        return 1
    code, address = found
    print(f"{address}: {code}")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Demo mailbox: the one-time code the outbox holds for a password reset."
    )
    parser.add_argument("case_id")
    args = parser.parse_args()
    raise SystemExit(_main(args.case_id))


if __name__ == "__main__":
    main()
