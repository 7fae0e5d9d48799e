"""Route of verification codes: an employee enters the one-time code of their password reset.

    POST /cases/{case_id}/verification-code    {"code": "123456"}

Who: the employee whose password the case resets, signed in as themselves (a person's JWT whose
subject is their directory user name, or that name at the domain of their address on file:
`workflows.password_reset.rules.is_the_employee`). Anyone else is refused with 403, an admin
and the service desk included (a locked case goes to the service desk through its approval
instead), and so is any service's API key: the code proves that the person typing it reads the
employee's mailbox, which only holds when the employee types it.

Answers (`CodeEntryResult`): 200 with `outcome` `verified`, `wrong_code` (with
`attempts_left`), `locked` (this wrong code was the last one allowed) or `expired` (the code's
lifetime had passed; not counted). A case that takes no code now answers a 409 problem:
`verification-locked` once wrong codes locked it, `code-not-awaited` otherwise (not sent yet,
already verified, expired, another process's case, closed: `case-closed`). Nothing is stored
then. Guesses are bounded by the case itself (its policy's `max_attempts` wrong codes lock it,
one check at a time) and the attempts stored for one case by a 429 `too-many-attempts`.

The code is kept out of everything that lasts: the route hands it to the client, which stores
its salted HMAC as an attempt and sends the case the attempt's id (`starter.verification`); no
log line, problem document or audit record quotes it.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from starter.api.deps import Caller, CaseId, Podium
from starter.api.problems import LIMITED_PROBLEM_RESPONSES
from starter.auth import forbidden
from starter.client import CodeEntryResult

__all__ = ["CODE_PATTERN", "VerificationCodeBody", "router"]

CODE_PATTERN = r"^\d{6}$"


class VerificationCodeBody(BaseModel):
    # A field that is not the code is a mistake to show, not to ignore.
    model_config = ConfigDict(extra="forbid")

    # repr=False: the code never shows in a repr, a traceback's locals or a log of the model.
    code: Annotated[str, StringConstraints(strip_whitespace=True, pattern=CODE_PATTERN)] = Field(
        repr=False, description="The 6-digit code from the email", examples=["123456"]
    )


def router() -> APIRouter:
    routes = APIRouter(tags=["verification"])

    @routes.post(
        "/cases/{case_id}/verification-code",
        response_model=CodeEntryResult,
        responses=LIMITED_PROBLEM_RESPONSES,
    )
    async def enter_verification_code(
        case_id: CaseId,
        body: Annotated[VerificationCodeBody, Body()],
        podium: Podium,
        caller: Caller,
    ) -> CodeEntryResult:
        """Enter the one-time code of your password reset, signed in as yourself."""
        if caller.kind != "user":
            raise forbidden(
                f"'{caller.subject}' is a service: only the employee, signed in as themselves, "
                "enters a verification code"
            )
        return await podium.enter_code(case_id, body.code, employee=caller.subject)

    return routes
