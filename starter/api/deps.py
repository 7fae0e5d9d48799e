"""What the routers take from a request: the Podium client and the caller's permissions."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request

from starter.auth import CASE_READ, CASE_START, Principal, require
from starter.client import PodiumClient

__all__ = ["Caller", "CaseId", "Podium", "Reader", "Starter"]


def _podium(request: Request) -> PodiumClient:
    podium = request.app.state.podium
    assert isinstance(podium, PodiumClient)
    return podium


Podium = Annotated[PodiumClient, Depends(_podium)]
Starter = Annotated[Principal, Depends(require(CASE_START))]
Reader = Annotated[Principal, Depends(require(CASE_READ))]
Caller = Annotated[Principal, Depends(require())]
CaseId = Annotated[str, Path(min_length=1, max_length=200)]
