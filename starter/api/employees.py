"""Routes of employees, as the directory reports on them:

    POST /employees/{user_name}/termination   the employee left: open (or find) their access
                                              termination case, which revokes every membership
                                              Podium granted them, also from finished access
                                              requests; their running access requests are told

A repeated termination answers 200 with the same case and revokes nothing twice.
"""

# No `from __future__ import annotations`: FastAPI reads the parameter types at run time.

from typing import Annotated

from fastapi import APIRouter, Body, Path, Response
from pydantic import BaseModel, ConfigDict, Field

from starter.api.deps import Podium, Starter
from starter.api.problems import PROBLEM_RESPONSES
from starter.client import TerminationRef

__all__ = ["TerminationNotice", "router"]

UserName = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$")]


class TerminationNotice(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, max_length=200, examples=["left the company"])


def router() -> APIRouter:
    routes = APIRouter(tags=["employees"])

    @routes.post(
        "/employees/{user_name}/termination",
        status_code=201,
        response_model=TerminationRef,
        responses={
            200: {"model": TerminationRef, "description": "The employee's termination exists"},
            **PROBLEM_RESPONSES,
        },
    )
    async def terminate_employee(
        user_name: UserName,
        podium: Podium,
        caller: Starter,
        response: Response,
        notice: Annotated[TerminationNotice | None, Body()] = None,
    ) -> TerminationRef:
        """The directory says the employee left: revoke everything Podium granted them."""
        done = await podium.terminate_employee(
            user_name, notice.reason if notice else None, requested_by=caller.subject
        )
        response.headers["Location"] = f"/cases/{done.case.case_id}"
        if not done.case.created:
            response.status_code = 200
        return done

    return routes
