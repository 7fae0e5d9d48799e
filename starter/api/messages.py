"""The intake's route: every message, on any channel, to the case it opens or joins.

POST /messages    triaged once, routed by policies/routing.yaml; 201 with the case it
                  opened, 200 with the case it joined (same conversation, or the same
                  customer's open case about the same order)
"""

from __future__ import annotations

from fastapi import APIRouter, Response

from starter.api.deps import Podium, Starter
from starter.api.problems import PROBLEM_RESPONSES
from starter.intake.types import IncomingMessage, MessageAck

__all__ = ["router"]


def router() -> APIRouter:
    routes = APIRouter(tags=["messages"])

    @routes.post(
        "/messages",
        status_code=201,
        response_model=MessageAck,
        responses={
            200: {"model": MessageAck, "description": "The message joined an open case"},
            **PROBLEM_RESPONSES,
        },
    )
    async def receive_message(
        body: IncomingMessage, podium: Podium, caller: Starter, response: Response
    ) -> MessageAck:
        """A customer's or an employee's message (email, chat, web or voice): triaged once by
        the embedded intent model and routed to a process, or joined to the conversation's
        open case. 422 for a bad channel, an empty text or a sender who is neither a known
        customer nor an employee of the directory."""
        ack = await podium.send_message(body, requested_by=caller.subject)
        response.headers["Location"] = f"/cases/{ack.case_id}"
        if ack.joined:
            response.status_code = 200
        return ack

    return routes
