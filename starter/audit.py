"""`podium audit`: check the tamper-evident audit trail and read a case's story.

    podium audit verify [--json]        exit 0: intact (events checked); 1: names the first break
    podium audit show CASE [--json]     the case's events in order: time, actor, action, details

Unlike the commands that drive cases, these read the systems-of-record database directly
(`--database-url`, env `PODIUM_DATABASE_URL`, default the local SQLite under `PODIUM_DATA_DIR`),
the way `podium eval` runs locally: the API never exposes the audit tables. They only read.

Exit codes: 0 intact / shown, 1 the chain is broken / the case has no events, 2 the database
cannot be read.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

if TYPE_CHECKING:  # SQLAlchemy loads only when an audit command runs
    from sqlalchemy.engine import Engine

    from core.audit_chain import StoryEvent

__all__ = ["add_audit_command", "highlights"]

EXIT_BROKEN = 1
EXIT_UNREADABLE = 2

DatabaseOption = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="PODIUM_DATABASE_URL",
        help="SQLAlchemy URL of the database (default: the local SQLite under PODIUM_DATA_DIR).",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the answer as JSON.")]

# The details worth a glance, in the order a reader wants them.
_HIGHLIGHTS = (
    "intent",
    "confidence",
    "model",
    "sentiment",
    "needs_human",
    "order_id",
    "document_id",
    "eligible",
    "automatic",
    "risk",
    "recommendation",
    "policy_rule",
    "policy_decision",
    "decision",
    "level_name",
    "to_level",
    "amount_cents",
    "new_amount_cents",
    "total_cents",
    "outcome",
    "default_action",
    "delegate_to",
    "reason",
    "reasons",
    "error",
)


# Ids an event names that are not something the process did.
_NOT_EFFECTS = frozenset(
    {"request_id", "decision_id", "document_id", "order_id", "customer_id", "tool_call_id"}
)


def _fail(message: str, code: int) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@contextmanager
def _database(url: str | None) -> Iterator[Engine]:
    """The database, read-only in spirit: a missing SQLite file is an error, not created."""
    from sqlalchemy.exc import SQLAlchemyError

    from core.db import make_engine
    from core.settings import Settings

    url = url or Settings().resolved_database_url
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:" and not Path(path).is_file():
            _fail(f"no database at {path} (set --database-url or PODIUM_DATABASE_URL)", 2)
    engine = make_engine(url)
    try:
        yield engine
    except SQLAlchemyError as err:
        orig = getattr(err, "orig", None)  # the driver's own message, without the SQL
        reason = (str(orig if orig is not None else err).splitlines() or ["?"])[0]
        if "no such" in reason or "does not exist" in reason:
            reason += " (a database from before the audit chain gets it when a worker starts)"
        _fail(f"cannot read the audit trail: {reason}", EXIT_UNREADABLE)
    finally:
        engine.dispose()


def _money(cents: Any, currency: Any) -> str:
    text = f"{cents / 100:,.2f}" if isinstance(cents, int | float) else str(cents)
    return f"{text} {currency}" if isinstance(currency, str) and currency else text


def _value(key: str, value: Any, detail: dict[str, Any]) -> str:
    if key.endswith("_cents"):
        return _money(value, detail.get("currency"))
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, list):
        return "; ".join(str(item) for item in value)
    return str(value)


def highlights(event: StoryEvent) -> list[tuple[str, str]]:
    """The key details of an event (intent, confidence, model, decision, outcome...) and the
    ids of what a process did (any `*_id` of its detail: a refund, a credit, a grant)."""
    detail = {**event.detail}
    if event.model is not None:
        detail["model"] = event.model
    if event.confidence is not None:
        detail["confidence"] = event.confidence
    shown = []
    for key in _HIGHLIGHTS:
        value = detail.get(key)
        if value is None or value == [] or value == "" or (key == "needs_human" and not value):
            continue
        shown.append((key.removesuffix("_cents"), _value(key, value, detail)))
    for key, value in detail.items():
        if key.endswith("_id") and key not in _NOT_EFFECTS and isinstance(value, str) and value:
            shown.append((key, value))
    return shown


def _show_story(case_id: str, story: list[StoryEvent]) -> None:
    typer.echo(f"Case {case_id}: {len(story)} audit events")
    policies = sorted({event.policy_version for event in story if event.policy_version})
    if policies:
        typer.echo(f"Policy: {', '.join(policies)}")
    rows = [
        [
            f"#{event.seq}" if event.seq is not None else "-",
            event.occurred_at.strftime("%Y-%m-%d %H:%M:%S"),
            event.actor,
            event.action,
            ", ".join(f"{key} {value}" for key, value in highlights(event)),
        ]
        for event in story
    ]
    headers = ["SEQ", "TIME (UTC)", "ACTOR", "ACTION", "DETAILS"]
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers) - 1)]
    for row in [headers, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        typer.echo("  ".join([*cells, row[-1]]).rstrip())


def add_audit_command(cli: typer.Typer) -> None:
    """Register `audit verify` and `audit show` on the `podium` command."""
    audit = typer.Typer(
        name="audit",
        help="The tamper-evident audit trail. Reads the database directly (like `podium eval`, "
        "unlike the commands that go through the HTTP API): --database-url or "
        "PODIUM_DATABASE_URL, default the local SQLite.",
        no_args_is_help=True,
    )

    @audit.command("verify")
    def verify(database_url: DatabaseOption = None, json_output: JsonOption = False) -> None:
        """Recompute every event's hashes and links, in order; exit 1 at the first break.

        Reads the database directly, not through the HTTP API."""
        from core.audit_chain import verify_chain

        with _database(database_url) as engine:
            report = verify_chain(engine)
        if json_output:
            typer.echo(json.dumps(report.as_dict(), indent=2))
        elif report.broken is None:
            typer.secho(
                f"Audit chain intact: {report.checked} events checked "
                f"(head #{report.head_seq} {report.head_hash[:16]})",
                fg=typer.colors.GREEN,
            )
        else:
            broken = report.broken
            where = f"event #{broken.seq}" if broken.seq is not None else "the chain"
            typer.secho(
                f"Audit chain BROKEN at {where} ({broken.kind}): {broken.reason}",
                fg=typer.colors.RED,
                err=True,
            )
            typer.echo(f"{report.checked} events before it are intact.", err=True)
        if report.broken is not None:
            raise typer.Exit(EXIT_BROKEN)

    @audit.command("show")
    def show(
        case_id: Annotated[str, typer.Argument(metavar="CASE")],
        database_url: DatabaseOption = None,
        json_output: JsonOption = False,
    ) -> None:
        """A case's audit events in order: time, actor, action and the key details.

        Reads the database directly, not through the HTTP API."""
        from core.audit_chain import case_story

        with _database(database_url) as engine:
            story = case_story(engine, case_id)
        if not story:
            _fail(f"no audit events for case {case_id}", EXIT_BROKEN)
        if json_output:
            data = {"case_id": case_id, "events": [event.as_dict() for event in story]}
            typer.echo(json.dumps(data, indent=2, ensure_ascii=False))
        else:
            _show_story(case_id, story)

    cli.add_typer(audit, name="audit")
