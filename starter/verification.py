"""The employee's side of a password reset: enter the one-time code of a case.

    python -m starter.verification CASE_ID --code 123456
    python -m starter.verification CASE_ID --from-outbox     # demo: the code the outbox holds

`submit_code` is what a verification page does: store what the person typed as an attempt (the
code's salted HMAC, `activities.identity.record_code_attempt`) and send the case only the
attempt's id by the `enter_code` update, so the code never reaches Temporal history. The demo
mode reads the code from the outbox (where `podium up` keeps the email it would have sent).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from temporalio.client import Client

from activities.identity import record_code_attempt
from core.db import Message, make_engine
from core.settings import Settings
from core.temporal import connect
from starter.codec_server import dev_secrets
from workflows.password_reset.types import CodeAttemptInput, CodeAttemptResult

__all__ = ["code_from_outbox", "submit_code"]

_CODE = re.compile(r"code is (\d{6})\.")


async def submit_code(client: Client, engine: Engine, case_id: str, code: str) -> CodeAttemptResult:
    """Check `code` for the case: the case's answer (verified, wrong, locked, ...)."""
    attempt_id = await asyncio.to_thread(record_code_attempt, engine, case_id, code)
    result: CodeAttemptResult = await client.get_workflow_handle(case_id).execute_update(
        "enter_code", CodeAttemptInput(attempt_id=attempt_id), result_type=CodeAttemptResult
    )
    return result


def code_from_outbox(engine: Engine, case_id: str) -> str | None:
    """Demo only: the code in the verification email the outbox holds for the case."""
    with Session(engine) as session:
        message = session.exec(
            select(Message)
            .where(Message.case_id == case_id, Message.kind == "identity_verification_code")
            .order_by(col(Message.id).desc())
        ).first()
    found = _CODE.search(message.body) if message else None
    return found.group(1) if found else None


async def _main(case_id: str, code: str | None) -> int:
    # The keys `podium up` made under the data folder, when none are configured.
    settings, _ = dev_secrets(Settings())
    engine = make_engine(settings.resolved_database_url)
    try:
        code = code or code_from_outbox(engine, case_id)
        if code is None:
            print(f"no verification code was sent for {case_id}", file=sys.stderr)
            return 1
        client = await connect(settings)
        result = await submit_code(client, engine, case_id, code)
    finally:
        engine.dispose()
    print(result.model_dump_json(indent=2))
    return 0 if result.verified else 2


def main() -> None:
    parser = argparse.ArgumentParser(description="Enter the one-time code of a password reset.")
    parser.add_argument("case_id")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--code", help="the 6-digit code from the email")
    source.add_argument("--from-outbox", action="store_true", help="demo: read it from the outbox")
    args = parser.parse_args()
    raise SystemExit(asyncio.run(_main(args.case_id, args.code)))


if __name__ == "__main__":
    main()
