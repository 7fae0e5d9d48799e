"""structlog set-up: one call per process, at the entry point.

JSON lines when stderr is not a terminal (or `PODIUM_LOG_JSON=true`), readable console output
otherwise. The standard library and Temporal's loggers go through the same processors, and the
Temporal context they attach (workflow id, run id, activity type) becomes top-level fields.
Emails, card and phone numbers are masked in every line (`core.redaction`).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger
from temporalio import activity, workflow

from core.redaction import redact_personal_data

__all__ = ["configure_logging"]

_WORKFLOW_FIELDS = {
    "workflow_id": "workflow_id",
    "run_id": "run_id",
    "workflow_type": "workflow_type",
    "task_queue": "task_queue",
}
_ACTIVITY_FIELDS = {
    "activity_type": "activity_type",
    "activity_id": "activity_id",
    "workflow_id": "workflow_id",
    "workflow_run_id": "run_id",
    "attempt": "attempt",
}


def _temporal_fields(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    record = event_dict.get("_record")
    if record is None:
        return event_dict
    sources = (("temporal_workflow", _WORKFLOW_FIELDS), ("temporal_activity", _ACTIVITY_FIELDS))
    for attr, fields in sources:
        info = getattr(record, attr, None)
        if isinstance(info, dict):
            for source, target in fields.items():
                if source in info and target not in event_dict:
                    event_dict[target] = info[source]
    return event_dict


def configure_logging(level: str = "INFO", json: bool | None = None) -> None:
    as_json = (not sys.stderr.isatty()) if json is None else json
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _temporal_fields,
        structlog.processors.StackInfoRenderer(),
        # Last, so it sees every field; stdlib and Temporal records go through it too.
        redact_personal_data,
    ]
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    final: list[Processor] = [structlog.stdlib.ProcessorFormatter.remove_processors_meta]
    if as_json:
        final.append(structlog.processors.format_exc_info)
        final.append(redact_personal_data)  # the traceback text, now a field
    final.append(renderer)
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(foreign_pre_chain=shared, processors=final)
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    # Temporal's context travels as fields, not appended to the message text.
    workflow.logger.workflow_info_on_message = False
    activity.logger.activity_info_on_message = False
    # uvicorn installs its own handlers (plain text, unmasked) before the app starts: its lines
    # go through the handler above instead, like everyone else's.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True
    for noisy in ("httpx", "httpcore", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def get_logger(**initial: Any) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(**initial)
    return logger
