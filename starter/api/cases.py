"""Routes of cases and processes: list the processes, open a case of any of them, read a case,
store a document a case will refer to.

    GET  /processes            every process: name, title, JSON schema of its request
    POST /cases/{process}      open a case (header Idempotency-Key makes retries safe); one
                               route per registered process, typed by its request model
    GET  /cases/{case_id}      the case as its workflow sees it, whichever process runs it
    POST /documents            store a receipt image; a case refers to it by `attachment_id`
"""

# No `from __future__ import annotations`: the per-process routes are built at run time and
# FastAPI reads their parameter types from real annotations.

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Query, Response
from pydantic import BaseModel

from starter.api.deps import CaseId, Podium, Reader, Starter
from starter.api.problems import PROBLEM_RESPONSES
from starter.auth import forbidden
from starter.client import (
    IDEMPOTENCY_KEY_PATTERN,
    CaseRef,
    CaseView,
    ProcessInfo,
    ProcessNotFound,
)
from starter.documents import AttachmentUpload, DocumentRef
from workflows.registry import Process, Registry

__all__ = ["router"]

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        pattern=IDEMPOTENCY_KEY_PATTERN,
        description="Retry-safe key: the same key and body return the same case",
    ),
]


def _start_route(spec: Process) -> Callable[..., Awaitable[CaseRef]]:
    request_model: type[BaseModel] = spec.request

    async def start_case(
        body: Annotated[request_model, Body()],  # type: ignore[valid-type]
        podium: Podium,
        caller: Starter,
        response: Response,
        idempotency_key: IdempotencyKey = None,
    ) -> CaseRef:
        requested_by = getattr(body, "requested_by", None)
        if requested_by is not None and requested_by != caller.subject:
            raise forbidden("requested_by must be the caller; it is taken from the credential")
        ref = await podium.start(spec.name, body, idempotency_key, requested_by=caller.subject)
        response.headers["Location"] = f"/cases/{ref.case_id}"
        if not ref.created:
            response.status_code = 200
        return ref

    start_case.__name__ = f"start_{spec.name}_case"
    start_case.__doc__ = f"Open a case: {spec.title}."
    return start_case


def router(processes: Registry) -> APIRouter:
    """The routes of cases, with one start route per process of `processes`."""
    routes = APIRouter(tags=["cases"])

    @routes.get("/processes", response_model=list[ProcessInfo], responses=PROBLEM_RESPONSES)
    async def list_processes(podium: Podium, _: Reader) -> list[ProcessInfo]:
        """The processes a case can be opened of, with the JSON schema of their requests."""
        return podium.processes()

    for spec in processes:
        routes.add_api_route(
            f"/cases/{spec.name}",
            _start_route(spec),
            methods=["POST"],
            status_code=201,
            response_model=CaseRef,
            responses={
                200: {"model": CaseRef, "description": "The case already exists"},
                **PROBLEM_RESPONSES,
            },
            summary=spec.title,
        )

    @routes.post(
        "/cases/{process}", status_code=201, response_model=CaseRef, responses=PROBLEM_RESPONSES
    )
    async def start_unknown_process(
        process: str, body: Annotated[dict[str, Any], Body()], podium: Podium, _: Starter
    ) -> CaseRef:
        """Every registered process has its own route above: any other name is unknown."""
        raise ProcessNotFound(process, podium.registry.names)

    @routes.post(
        "/documents",
        status_code=201,
        response_model=DocumentRef,
        responses={
            200: {"model": DocumentRef, "description": "The same bytes were stored before"},
            **PROBLEM_RESPONSES,
        },
    )
    async def upload_document(
        body: AttachmentUpload, podium: Podium, _: Starter, response: Response
    ) -> DocumentRef:
        """Store a receipt image (PNG or JPEG by its bytes, up to 10 MB, base64 in JSON); open
        a case with its `document_id` as `attachment_id`."""
        document = await podium.upload_document(body)
        if not document.created:
            response.status_code = 200
        return document

    @routes.get("/cases/{case_id}", response_model=CaseView, responses=PROBLEM_RESPONSES)
    async def get_case(
        case_id: CaseId,
        podium: Podium,
        _: Reader,
        wait: Annotated[
            float,
            Query(
                ge=0,
                le=60,
                description="Seconds to wait for the case to reach an outcome before answering "
                "(a long-poll after `?ack=recorded`); 0 answers at once",
            ),
        ] = 0,
    ) -> CaseView:
        """The case as its workflow sees it (`state`, the process's own model) and Temporal.
        With `wait`, once it has an outcome or that many seconds have passed."""
        return await podium.get_case(case_id, timedelta(seconds=wait) if wait else None)

    return routes
