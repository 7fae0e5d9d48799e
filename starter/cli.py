"""The `podium` command line: run the stack, open cases of any process, decide approvals.

    podium processes                                   what cases can be opened, and their fields
    podium start PROCESS --input FILE|JSON [--set field=value ...] [--key KEY]
    podium refund --customer C-1002 --message "..."    shortcut for `podium start refund`
    podium status CASE

    podium approve CASE --approver alice --role team_lead [--decision-id ID]
    podium reject CASE --approver alice --role team_lead --reason "outside the window"
    podium request-changes CASE --approver alice --role team_lead --amount 120.00
    podium delegate CASE --approver alice --role team_lead --to bob --reason "on leave"
    podium pending [--role finance]
    podium inbox --role finance [--approver bob] [--process refund]
    podium approval CASE

    podium verify CASE [--code 123456]                 an employee enters their reset's code

    podium audit verify | podium audit show CASE
    podium report [--since 7d] [--process P] [--json] the operations KPIs and the ROI
    podium reviews schedule | run-now | show           the access reviews' Temporal Schedule
    podium ops schedule | run-now kpi|sweep | show     the KPI snapshot's and SLA sweep's Schedules

Every command except `up`, `eval`, `audit`, `report` (which read the database directly) and
`reviews` (which manages a Temporal Schedule) talks to the
HTTP API (`--api-url`, env `PODIUM_API_URL`), so it works the same against a laptop and a shared
deployment. `--json` prints the API's answer as JSON.

Exit codes: 0 success, 1 the API refused the request (its problem is printed), 2 the API could
not be reached.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn
from urllib.parse import quote

import typer

if TYPE_CHECKING:
    import httpx

__all__ = ["DEFAULT_API_URL", "app", "create_cli", "main"]

DEFAULT_API_URL = "http://127.0.0.1:8000"
# A decision that closes an approval answers once it has been carried out: that can take a while.
HTTP_TIMEOUT_S = 90.0
CONNECT_TIMEOUT_S = 5.0

EXIT_REFUSED = 1
EXIT_UNREACHABLE = 2

JsonOption = Annotated[bool, typer.Option("--json", help="Print the API's answer as JSON.")]
RoleOption = Annotated[
    list[str] | None,
    typer.Option("--role", help="Your role, e.g. team_lead (repeatable); delegates need none."),
]
RequestIdOption = Annotated[
    str | None, typer.Option(help="The approval request (default: the pending one).")
]
ApproverOption = Annotated[
    str | None,
    typer.Option(help="Must be you (the token's subject); who decides comes from the token."),
]
DecisionIdOption = Annotated[
    str | None,
    typer.Option(help="Retry-safe key: the same id returns the first result (default: new)."),
]
WaitOption = Annotated[
    bool,
    typer.Option(
        "--wait/--no-wait",
        help="Wait until a decision that closes the approval is carried out (default), or "
        "return once the case has verified and recorded it (`podium status` shows the outcome).",
    ),
]


@dataclass(frozen=True)
class _Response:
    """What a command reads of an HTTP answer (the standard library's, or httpx's in tests)."""

    status_code: int
    reason_phrase: str
    text: str

    @property
    def is_error(self) -> bool:
        return self.status_code >= 400

    def json(self) -> Any:
        return json.loads(self.text)


@dataclass(frozen=True)
class _Api:
    """How commands reach the HTTP API: the standard library's HTTP client (importing httpx
    would double the start-up time of every command); `transport` routes through httpx (tests)."""

    base_url: str
    transport: httpx.BaseTransport | None = None
    token: str | None = None

    def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        sent = {"Accept": "application/json", **(headers or {})}
        if self.token:
            sent["Authorization"] = f"Bearer {self.token}"
        if self.transport is not None:
            response = self._via_httpx(method, path, json, params, sent)
        else:
            response = self._via_stdlib(method, path, json, params, sent)
        if response.is_error:
            _fail_with_problem(response)
        return response.json()

    def _via_stdlib(
        self,
        method: str,
        path: str,
        body: Any,
        params: dict[str, Any] | None,
        headers: dict[str, str],
    ) -> _Response:
        import socket
        import urllib.error
        import urllib.request
        from urllib.parse import urlencode

        url = self.base_url + path + (f"?{urlencode(params)}" if params else "")
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers = {**headers, "Content-Type": "application/json"}
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as answer:
                return _Response(answer.status, answer.reason, answer.read().decode("utf-8"))
        except urllib.error.HTTPError as err:
            return _Response(err.code, str(err.reason), err.read().decode("utf-8", "replace"))
        except TimeoutError:
            _fail(f"the Podium API at {self.base_url} did not answer in time", EXIT_UNREACHABLE)
        except urllib.error.URLError as err:
            if isinstance(err.reason, ConnectionRefusedError | socket.gaierror):
                _fail(
                    f"cannot reach the Podium API at {self.base_url} (is `make up` running?)",
                    EXIT_UNREACHABLE,
                )
            _fail(
                f"cannot talk to the Podium API at {self.base_url}: {err.reason}", EXIT_UNREACHABLE
            )
        except OSError as err:
            _fail(f"cannot talk to the Podium API at {self.base_url}: {err}", EXIT_UNREACHABLE)

    def _via_httpx(
        self,
        method: str,
        path: str,
        body: Any,
        params: dict[str, Any] | None,
        headers: dict[str, str],
    ) -> _Response:
        import httpx

        try:
            with httpx.Client(
                base_url=self.base_url,
                transport=self.transport,
                timeout=httpx.Timeout(HTTP_TIMEOUT_S, connect=CONNECT_TIMEOUT_S),
                headers=headers,
            ) as http:
                answer = http.request(method, path, json=body, params=params)
        except httpx.ConnectError:
            _fail(
                f"cannot reach the Podium API at {self.base_url} (is `make up` running?)",
                EXIT_UNREACHABLE,
            )
        except httpx.TimeoutException:
            _fail(f"the Podium API at {self.base_url} did not answer in time", EXIT_UNREACHABLE)
        except httpx.TransportError as err:
            _fail(f"cannot talk to the Podium API at {self.base_url}: {err}", EXIT_UNREACHABLE)
        return _Response(answer.status_code, answer.reason_phrase, answer.text)


def _fail(message: str, code: int) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _fail_with_problem(response: _Response) -> NoReturn:
    try:
        problem = response.json()
    except ValueError:
        problem = None
    if not isinstance(problem, dict):
        text = response.text.strip()[:200] or response.reason_phrase
        _fail(f"HTTP {response.status_code}: {text}", EXIT_REFUSED)
    title = problem.get("title") or response.reason_phrase
    errors = problem.get("errors") or []
    detail = problem.get("detail")
    if errors:
        # The field list says it better than the joined detail.
        typer.echo(f"error: {title}", err=True)
        for error in errors:
            typer.echo(f"  {error.get('field')}: {error.get('message')}", err=True)
        raise typer.Exit(EXIT_REFUSED)
    _fail(f"{title}: {detail}" if detail else str(title), EXIT_REFUSED)


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False))


# --- human output -------------------------------------------------------------------------------


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _duration(seconds: float) -> str:
    minutes = int(abs(seconds) // 60)
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m"


def time_left(due: datetime | None, now: datetime) -> str:
    if due is None:
        return "-"
    seconds = (due - now).total_seconds()
    return _duration(seconds) if seconds >= 0 else f"overdue {_duration(seconds)}"


def _money(cents: int | None) -> str:
    return "-" if cents is None else f"${cents / 100:,.2f}"


def _stamp(value: str | None) -> str:
    parsed = _parse_time(value)
    return parsed.strftime("%Y-%m-%d %H:%M UTC") if parsed else "-"


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in [headers, *rows]
    ]
    return "\n".join(line.rstrip() for line in lines)


def _request_body(source: str | None, assignments: list[str]) -> dict[str, Any]:
    """The request from `--input` (JSON text, a file, or '-' for stdin) and `--set` pairs."""
    body: dict[str, Any] = {}
    if source is not None:
        text = source
        if source == "-":
            text = sys.stdin.read()
        elif not source.lstrip().startswith("{"):
            try:
                text = Path(source).read_text(encoding="utf-8")
            except OSError as err:
                _fail(f"cannot read --input {source}: {err.strerror or err}", EXIT_REFUSED)
        try:
            parsed = json.loads(text)
        except ValueError as err:
            _fail(f"--input is not valid JSON: {err}", EXIT_REFUSED)
        if not isinstance(parsed, dict):
            _fail("--input must be a JSON object", EXIT_REFUSED)
        body = parsed
    for assignment in assignments:
        field, sep, raw = assignment.partition("=")
        if not sep or not field.strip():
            _fail(f"--set wants field=value, got '{assignment}'", EXIT_REFUSED)
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw  # plain text
        body[field.strip()] = value
    return body


def _show_case(view: dict[str, Any]) -> None:
    state: dict[str, Any] = view.get("state") or {}
    result: dict[str, Any] = view.get("result") or {}
    now = datetime.now(UTC)
    fields: list[tuple[str, str]] = [
        ("Case", view["case_id"]),
        ("Workflow", view.get("workflow_status") or "-"),
        ("Status", view.get("status") or "-"),
        ("Outcome", view.get("outcome") or "-"),
    ]
    if view.get("process"):
        fields.insert(1, ("Process", view["process"]))
    if view.get("summary"):
        fields.append(("Summary", view["summary"]))
    if state:
        if state.get("customer_id"):
            tier = f" ({state['customer_tier']})" if state.get("customer_tier") else ""
            fields.append(("Customer", f"{state['customer_id']}{tier}"))
        if "order_id" in state:
            fields.append(("Order", state.get("order_id") or "-"))
        if state.get("intent"):
            confidence = state.get("intent_confidence")
            suffix = f" ({confidence:.2f})" if confidence is not None else ""
            fields.append(("Intent", f"{state['intent']}{suffix}"))
        if "amount_cents" in state:
            fields.append(("Amount", _money(state.get("amount_cents"))))
        approval = state.get("approval")
        decision = state.get("decision")
        if approval and approval.get("status", "open") == "open":
            due = _parse_time(approval.get("sla_due_at"))
            levels = (approval.get("policy") or {}).get("levels") or []
            level = approval.get("level_name")
            where = f", level {approval.get('level')}/{len(levels)} {level}" if level else ""
            fields.append(
                (
                    "Approval",
                    f"pending (request {approval['request_id']}{where}), Podium recommends "
                    f"{approval.get('recommendation')}; SLA {time_left(due, now)}"
                    + (", escalated" if approval.get("escalated") else ""),
                )
            )
            waiting = [*approval.get("awaiting_roles", [])]
            waiting += [f"user:{name}" for name in approval.get("awaiting_people") or []]
            waiting += [f"user:{name}" for name in approval.get("delegates") or []]
            if waiting:
                fields.append(("Waiting for", ", ".join(waiting)))
            fields.extend(("Reason", reason) for reason in approval.get("reasons") or [])
        for record in (approval or {}).get("decisions") or []:
            why = record.get("reason") or record.get("comment")
            fields.append(
                (
                    "Decided",
                    f"{record.get('action')} by {record.get('approver')} at level "
                    f"{record.get('level_name')}, {_stamp(record.get('decided_at'))}"
                    + (f": {why}" if why else ""),
                )
            )
        if decision:
            verdict = "approved" if decision.get("approved") else "rejected"
            decided_at = _stamp(decision.get("decided_at"))
            fields.append(("Decision", f"{verdict} by {decision.get('approver')} at {decided_at}"))
        fields.extend(_references(state))
    elif result:
        if "amount_cents" in result:
            fields.append(("Amount", _money(result.get("amount_cents"))))
        fields.append(("Decided by", result.get("decided_by") or "-"))
        fields.extend(_references(result))
        fields.extend(("Reason", reason) for reason in result.get("reasons") or [])
    fields.append(("Started", _stamp(view.get("started_at"))))
    if view.get("closed_at"):
        fields.append(("Closed", _stamp(view["closed_at"])))
    fields.append(("UI", view.get("ui_url") or "-"))
    width = max(len(label) for label, _ in fields) + 1
    for label, value in fields:
        typer.echo(f"{label + ':':<{width}} {value}")


def _references(record: dict[str, Any]) -> list[tuple[str, str]]:
    """What a case did, by the ids its state or result carries (`refund_id` -> Refund)."""
    return [
        (key.removesuffix("_id").replace("_", " ").capitalize(), str(value))
        for key, value in record.items()
        if key.endswith("_id")
        and key not in ("case_id", "customer_id", "order_id", "attachment_id")
        and isinstance(value, str)
        and value
    ]


_VERBS = {
    "approve": "approved",
    "reject": "rejected",
    "request_changes": "approved a lower amount",
    "delegate": "delegated",
}


def _show_decision(case_id: str, result: dict[str, Any]) -> None:
    action = result.get("action") or ("approve" if result.get("approved") else "reject")
    verdict = _VERBS.get(action, action)
    if action == "request_changes":
        verdict = f"approved {_money(result.get('amount_cents'))}"
    who = f"{case_id}: {verdict} by {result.get('approver')} (request {result.get('request_id')})"
    if result.get("gate", "approved") == "open":
        waiting = ", ".join(result.get("waiting_for") or []) or "-"
        line = f"{who} at level {result.get('level_name')}; waiting for {waiting}"
    elif result.get("outcome") is None:
        # --no-wait: recorded; the case carries it out next (`podium status` shows the outcome).
        line = f"{who}; recorded, the outcome follows (podium status {case_id})"
    else:
        line = f"{who}; outcome {result.get('outcome')}"
    for name, value in (result.get("effects") or {}).items():
        line += f", {name.removesuffix('_id').replace('_', ' ')} {value}"
    typer.secho(line, fg=typer.colors.GREEN if result.get("approved") else typer.colors.YELLOW)


def _show_pending(items: list[dict[str, Any]]) -> None:
    if not items:
        typer.echo("No cases are waiting for approval.")
        return
    now = datetime.now(UTC)
    rows = []
    for item in items:
        due = _parse_time(item.get("sla_due_at"))
        amount = item.get("amount")
        rows.append(
            [
                item["case_id"],
                item.get("customer_id") or "-",
                item.get("tier") or "-",
                item.get("intent") or "-",
                "-" if amount is None else f"${amount:,.2f}",
                due.strftime("%Y-%m-%d %H:%M") if due else "-",
                time_left(due, now),
                "yes" if item.get("escalated") else "",
                ", ".join(item.get("awaiting_roles") or []) or "-",
            ]
        )
    headers = [
        "CASE",
        "CUSTOMER",
        "TIER",
        "INTENT",
        "AMOUNT",
        "SLA DUE (UTC)",
        "LEFT",
        "ESCALATED",
        "WAITING FOR",
    ]
    typer.echo(_table(headers, rows))


def _show_inbox(inbox: dict[str, Any]) -> None:
    items: list[dict[str, Any]] = inbox.get("items") or []
    whom = " / ".join(x for x in (inbox.get("role"), inbox.get("approver")) if x) or "anyone"
    if not items:
        typer.echo(f"Nothing is waiting for {whom}.")
        return
    now = datetime.now(UTC)
    rows = []
    for item in items:
        due = _parse_time(item.get("sla_due_at"))
        amount = item.get("amount")
        rows.append(
            [
                item["case_id"],
                item.get("process") or "-",
                str(item.get("level") or "-"),
                "-" if amount is None else f"${amount:,.2f}",
                item.get("tier") or "-",
                item.get("intent") or "-",
                due.strftime("%Y-%m-%d %H:%M") if due else "-",
                time_left(due, now),
                "yes" if item.get("escalated") else "",
            ]
        )
    headers = [
        "CASE",
        "PROCESS",
        "LEVEL",
        "AMOUNT",
        "TIER",
        "INTENT",
        "SLA DUE (UTC)",
        "LEFT",
        "ESCALATED",
    ]
    typer.echo(_table(headers, rows))
    if inbox.get("truncated"):
        typer.echo("(more approvals match than were scanned: the most urgent are shown)")


def _show_approval(view: dict[str, Any]) -> None:
    request: dict[str, Any] = view["request"]
    ai: dict[str, Any] = view.get("ai") or {}
    levels: list[str] = view.get("levels") or []
    fields: list[tuple[str, str]] = [("Case", view["case_id"])]
    if view.get("summary"):
        fields.append(("Summary", view["summary"]))
    fields.insert(1, ("Process", view.get("title") or view.get("process") or "-"))
    if view.get("customer_id"):
        tier = f" ({view['customer_tier']})" if view.get("customer_tier") else ""
        fields.append(("Customer", f"{view['customer_id']}{tier}"))
    if view.get("order_id"):
        fields.append(("Order", view["order_id"]))
    fields.append(("Amount", _money(view.get("amount_cents"))))
    fields.extend((fact["label"], fact["value"]) for fact in view.get("facts") or [])
    if request.get("amount_cents") not in (None, view.get("amount_cents")):
        fields.append(("Amount now", _money(request["amount_cents"])))
    if view.get("message"):
        fields.append(("Message", " ".join(str(view["message"]).split())))
    recommendation = [ai.get("recommendation") or request.get("recommendation") or "-"]
    if ai.get("risk"):
        recommendation.append(f"{ai['risk']} risk")
    if ai.get("intent"):
        confidence = ai.get("intent_confidence")
        suffix = f" ({confidence:.2f})" if confidence is not None else ""
        recommendation.append(f"intent {ai['intent']}{suffix}")
    fields.append(("Podium recommends", ", ".join(recommendation)))
    fields.extend(("Reason", reason) for reason in ai.get("reasons") or [])
    fields.append(("Level", f"{request.get('level')}/{len(levels)} {request.get('level_name')}"))
    fields.append(("Requested by", request.get("requested_by") or "-"))
    if view.get("pending"):
        fields.append(("Waiting for", ", ".join(view.get("waiting_for") or []) or "-"))
        left = view.get("time_left_s")
        due = _stamp(request.get("sla_due_at"))
        if left is not None:
            due += f" ({_duration(left)} left)" if left >= 0 else f" (overdue {_duration(left)})"
        fields.append(("SLA due", due + (", escalated" if request.get("escalated") else "")))
        fields.append(("Deadline", _stamp(request.get("deadline_at"))))
    else:
        outcome = f", outcome {view['outcome']}" if view.get("outcome") else ""
        fields.append(("Approval", f"{request.get('status')}{outcome}"))
    for record in request.get("decisions") or []:
        why = record.get("reason") or record.get("comment")
        fields.append(
            (
                "Decided",
                f"{record.get('action')} by {record.get('approver')} at level "
                f"{record.get('level_name')}, {_stamp(record.get('decided_at'))}"
                + (f": {why}" if why else ""),
            )
        )
    fields.append(("UI", view.get("ui_url") or "-"))
    width = max(len(label) for label, _ in fields) + 1
    for label, value in fields:
        typer.echo(f"{label + ':':<{width}} {value}")


# --- commands -----------------------------------------------------------------------------------


def _show_code_entry(answer: dict[str, Any]) -> None:
    outcome = answer.get("outcome")
    if outcome == "verified":
        typer.secho(f"Verified: case {answer['case_id']} goes on", fg=typer.colors.GREEN)
    elif outcome == "wrong_code":
        left = answer.get("attempts_left")
        typer.secho(f"Wrong code: {left} more wrong code(s) lock the case", fg=typer.colors.RED)
    elif outcome == "locked":
        typer.secho(
            "Wrong code: the case is now locked; the IT service desk will verify you another way",
            fg=typer.colors.RED,
        )
    else:
        typer.secho("The code has expired: ask for a new password reset", fg=typer.colors.RED)


def create_cli(transport: httpx.BaseTransport | None = None) -> typer.Typer:
    """Build the `podium` command; `transport` routes its HTTP calls (tests)."""
    cli = typer.Typer(
        name="podium",
        help="Podium: durable AI-orchestrated cases on Temporal (refunds, assists, ...).",
        no_args_is_help=True,
        pretty_exceptions_show_locals=False,
        # Plain help: rendering it with rich costs more start-up time than the whole command.
        rich_markup_mode=None,
    )

    @cli.callback()
    def _root(
        ctx: typer.Context,
        api_url: Annotated[
            str, typer.Option("--api-url", envvar="PODIUM_API_URL", help="Podium HTTP API.")
        ] = DEFAULT_API_URL,
        token: Annotated[
            str | None,
            typer.Option(
                "--token",
                envvar="PODIUM_TOKEN",
                help="Bearer token (JWT or pk_ API key); `podium up` prints development ones.",
                show_default=False,
            ),
        ] = None,
    ) -> None:
        ctx.obj = _Api(api_url.rstrip("/"), transport, token or None)

    @cli.command()
    def up() -> None:
        """Run Podium locally: Temporal dev server, worker and HTTP API."""
        from core.settings import Settings
        from starter.runtime import run

        run(Settings())

    @cli.command()
    def processes(ctx: typer.Context, json_output: JsonOption = False) -> None:
        """List the processes cases can be opened of, with their request fields."""
        found = ctx.obj.call("GET", "/processes")
        if json_output:
            _print_json(found)
            return
        for process in found:
            typer.secho(f"{process['name']}: {process['title']}", bold=True)
            schema = process.get("input_schema") or {}
            required = set(schema.get("required") or [])
            for field, spec in (schema.get("properties") or {}).items():
                mark = " (required)" if field in required else ""
                about = spec.get("description") or spec.get("title") or ""
                typer.echo(f"  {field}{mark}" + (f": {about}" if about else ""))

    @cli.command()
    def start(
        ctx: typer.Context,
        process: Annotated[str, typer.Argument(metavar="PROCESS", help="See `podium processes`.")],
        input: Annotated[
            str | None,
            typer.Option(
                "--input", help="The request: a JSON object, or a file holding one ('-': stdin)."
            ),
        ] = None,
        set_: Annotated[
            list[str] | None,
            typer.Option("--set", help="field=value (repeatable; a JSON value or plain text)."),
        ] = None,
        key: Annotated[
            str | None, typer.Option(help="Idempotency key: retries with it open one case.")
        ] = None,
        json_output: JsonOption = False,
    ) -> None:
        """Open a case of PROCESS with its request (--input and/or --set fields)."""
        body = _request_body(input, set_ or [])
        _open_case(ctx, process, body, key, json_output)

    @cli.command()
    def refund(
        ctx: typer.Context,
        customer: Annotated[str, typer.Option(help="Customer id, e.g. C-1002.")],
        message: Annotated[str, typer.Option(help="What the customer wrote.")],
        order: Annotated[str | None, typer.Option(help="Order id, e.g. O-5004.")] = None,
        channel: Annotated[str, typer.Option(help="Where the request came from.")] = "web",
        key: Annotated[
            str | None, typer.Option(help="Idempotency key: retries with it open one case.")
        ] = None,
        json_output: JsonOption = False,
    ) -> None:
        """Open a refund case (shortcut for `podium start refund`)."""
        body = {"channel": channel, "customer_id": customer, "order_id": order, "message": message}
        _open_case(ctx, "refund", body, key, json_output)  # registry-ok: the shortcut

    @cli.command()
    def message(
        ctx: typer.Context,
        sender: Annotated[
            str, typer.Option(help="Customer id, employee user name, or their email address.")
        ],
        conversation: Annotated[
            str, typer.Option(help="The channel's conversation id: replies join its case.")
        ],
        text: Annotated[str, typer.Option(help="What they wrote.")],
        channel: Annotated[str, typer.Option(help="email, chat, web or voice.")] = "chat",
        attachment: Annotated[
            list[str] | None, typer.Option(help="A stored document id (repeatable).")
        ] = None,
        json_output: JsonOption = False,
    ) -> None:
        """Send a message to the intake: triaged, routed to a process, or joined to the
        conversation's open case (POST /messages)."""
        body = {
            "channel": channel,
            "sender": sender,
            "conversation_id": conversation,
            "text": text,
            "attachments": attachment or [],
        }
        ack = ctx.obj.call("POST", "/messages", json=body)
        if json_output:
            _print_json(ack)
            return
        verb = "Joined" if ack["joined"] else "Opened"
        typer.secho(f"{verb} case {ack['case_id']} ({ack['process']})", fg=typer.colors.GREEN)
        typer.echo(f"  intent {ack['intent']} ({ack['confidence']:.2f})")
        if ack.get("reason"):
            typer.echo(f"  to a person: {ack['reason']}")

    @cli.command()
    def terminate(
        ctx: typer.Context,
        user_name: Annotated[str, typer.Argument(metavar="USER", help="The directory user name.")],
        reason: Annotated[str | None, typer.Option(help="Why, for the audit trail.")] = None,
        json_output: JsonOption = False,
    ) -> None:
        """The employee left: revoke every access Podium granted them, also from finished
        requests, and tell their running requests (POST /employees/{user}/termination). A
        repeat finds the first termination and revokes nothing twice."""
        body = {"reason": reason} if reason else None
        done = ctx.obj.call(
            "POST", f"/employees/{quote(user_name, safe='')}/termination", json=body
        )
        if json_output:
            _print_json(done)
            return
        case = done["case"]
        verb = "Opened" if case["created"] else "Found"
        typer.secho(f"{verb} termination case {case['case_id']}", fg=typer.colors.GREEN)
        running = done.get("running_cases") or []
        typer.echo(f"  running access requests told: {len(running)}")
        for case_id in running:
            typer.echo(f"    {case_id}")
        typer.echo(f"  {case['ui_url']}")

    def _open_case(
        ctx: typer.Context,
        process: str,
        body: dict[str, Any],
        key: str | None,
        json_output: bool,
    ) -> None:
        headers = {"Idempotency-Key": key} if key is not None else {}
        path = f"/cases/{quote(process, safe='')}"
        ref = ctx.obj.call("POST", path, json=body, headers=headers)
        if json_output:
            _print_json(ref)
            return
        if ref["created"]:
            typer.secho(f"Created case {ref['case_id']}", fg=typer.colors.GREEN)
        else:
            typer.echo(f"Case {ref['case_id']} already exists (same key and request)")
        typer.echo(f"  {ref['ui_url']}")

    @cli.command()
    def status(
        ctx: typer.Context,
        case_id: Annotated[str, typer.Argument(metavar="CASE")],
        json_output: JsonOption = False,
        wait: Annotated[
            float,
            typer.Option(
                "--wait",
                min=0,
                max=60,
                help="Seconds to wait for the case to reach an outcome first (after "
                "`approve --no-wait`)",
            ),
        ] = 0,
    ) -> None:
        """Show a case: where it stands, the pending approval, the decision."""
        params = {"wait": wait} if wait else None
        view = ctx.obj.call("GET", f"/cases/{quote(case_id, safe='')}", params=params)
        if json_output:
            _print_json(view)
        else:
            _show_case(view)

    def _decide(
        ctx: typer.Context,
        case_id: str,
        verb: str,
        json_output: bool,
        body: dict[str, Any],
        wait: bool = True,
    ) -> None:
        # --no-wait: the API answers once the case has recorded the decision (?ack=recorded).
        params = None if wait else {"ack": "recorded"}
        result = ctx.obj.call(
            "POST", f"/cases/{quote(case_id, safe='')}/{verb}", json=body, params=params
        )
        if json_output:
            _print_json(result)
        else:
            _show_decision(case_id, result)

    def _common(
        approver: str | None,
        roles: list[str] | None,
        comment: str | None,
        request_id: str | None,
        decision_id: str | None,
    ) -> dict[str, Any]:
        # Who decides comes from the token; --approver and --role only check and narrow it.
        body: dict[str, Any] = {"approver": approver} if approver else {}
        if roles:
            body["roles"] = roles
        return {
            **body,
            "comment": comment,
            "request_id": request_id,
            "decision_id": decision_id,
        }

    @cli.command()
    def approve(
        ctx: typer.Context,
        case_id: Annotated[str, typer.Argument(metavar="CASE")],
        role: RoleOption = None,
        approver: ApproverOption = None,
        comment: Annotated[str | None, typer.Option(help="Why.")] = None,
        request_id: RequestIdOption = None,
        decision_id: DecisionIdOption = None,
        json_output: JsonOption = False,
        wait: WaitOption = True,
    ) -> None:
        """Approve at the current level; the last approval carries the request out."""
        body = _common(approver, role, comment, request_id, decision_id)
        _decide(ctx, case_id, "approve", json_output, body, wait)

    @cli.command()
    def reject(
        ctx: typer.Context,
        case_id: Annotated[str, typer.Argument(metavar="CASE")],
        reason: Annotated[str, typer.Option(help="Why the request is rejected.")],
        role: RoleOption = None,
        approver: ApproverOption = None,
        comment: Annotated[str | None, typer.Option(help="A note for the record.")] = None,
        request_id: RequestIdOption = None,
        decision_id: DecisionIdOption = None,
        json_output: JsonOption = False,
        wait: WaitOption = True,
    ) -> None:
        """Reject the pending request."""
        body = {**_common(approver, role, comment, request_id, decision_id), "reason": reason}
        _decide(ctx, case_id, "reject", json_output, body, wait)

    @cli.command("request-changes")
    def request_changes(
        ctx: typer.Context,
        case_id: Annotated[str, typer.Argument(metavar="CASE")],
        amount: Annotated[
            str, typer.Option(help="The lower amount to approve, in dollars, e.g. 120.00.")
        ],
        role: RoleOption = None,
        approver: ApproverOption = None,
        reason: Annotated[str | None, typer.Option(help="Why the amount is lower.")] = None,
        comment: Annotated[str | None, typer.Option(help="A note for the record.")] = None,
        request_id: RequestIdOption = None,
        decision_id: DecisionIdOption = None,
        json_output: JsonOption = False,
        wait: WaitOption = True,
    ) -> None:
        """Approve a lower amount than the customer asked for."""
        body = {
            **_common(approver, role, comment, request_id, decision_id),
            "amount": amount,
            "reason": reason,
        }
        _decide(ctx, case_id, "request-changes", json_output, body, wait)

    @cli.command()
    def delegate(
        ctx: typer.Context,
        case_id: Annotated[str, typer.Argument(metavar="CASE")],
        to: Annotated[str, typer.Option("--to", help="Who decides instead.")],
        reason: Annotated[str, typer.Option(help="Why.")],
        role: RoleOption = None,
        approver: ApproverOption = None,
        comment: Annotated[str | None, typer.Option(help="A note for the record.")] = None,
        request_id: RequestIdOption = None,
        decision_id: DecisionIdOption = None,
        json_output: JsonOption = False,
        wait: WaitOption = True,
    ) -> None:
        """Let a named person decide at the current level without holding its role."""
        body = {
            **_common(approver, role, comment, request_id, decision_id),
            "to": to,
            "reason": reason,
        }
        _decide(ctx, case_id, "delegate", json_output, body, wait)

    @cli.command()
    def pending(
        ctx: typer.Context,
        min_amount: Annotated[
            float | None, typer.Option(help="Only amounts above this many dollars.")
        ] = None,
        limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
        role: Annotated[
            str | None,
            typer.Option(help="Only what this role (or user:NAME) may decide now."),
        ] = None,
        process: Annotated[
            str | None, typer.Option(help="Only this process's cases (see `podium processes`).")
        ] = None,
        json_output: JsonOption = False,
    ) -> None:
        """Cases waiting for a person, the most urgent SLA first."""
        params: dict[str, Any] = {"limit": limit}
        if process is not None:
            params["process"] = process
        if min_amount is not None:
            params["min_amount"] = min_amount
        if role is not None:
            params["role"] = role
        items = ctx.obj.call("GET", "/approvals/pending", params=params)
        if json_output:
            _print_json(items)
        else:
            _show_pending(items)

    @cli.command()
    def inbox(
        ctx: typer.Context,
        role: Annotated[
            str | None, typer.Option(help="Your role: what it may decide now, e.g. finance.")
        ] = None,
        approver: Annotated[
            str | None, typer.Option(help="You: also what was delegated to you.")
        ] = None,
        process: Annotated[str | None, typer.Option(help="Only this process.")] = None,
        limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
        json_output: JsonOption = False,
    ) -> None:
        """Approvals you may decide now, the most urgent SLA first, with the time left."""
        params: dict[str, Any] = {"limit": limit}
        for name, value in (("role", role), ("approver", approver), ("process", process)):
            if value is not None:
                params[name] = value
        answer = ctx.obj.call("GET", "/approvals", params=params)
        if json_output:
            _print_json(answer)
        else:
            _show_inbox(answer)

    @cli.command()
    def approval(
        ctx: typer.Context,
        case_id: Annotated[str, typer.Argument(metavar="CASE")],
        json_output: JsonOption = False,
    ) -> None:
        """One approval: the request, Podium's recommendation and confidence, decisions."""
        view = ctx.obj.call("GET", f"/approvals/{quote(case_id, safe='')}")
        if json_output:
            _print_json(view)
        else:
            _show_approval(view)

    @cli.command()
    def verify(
        ctx: typer.Context,
        case_id: Annotated[str, typer.Argument(metavar="CASE")],
        code: Annotated[
            str | None,
            typer.Option(
                help="The 6-digit code from the email (default: asked for, not echoed, so it "
                "stays out of the shell's history).",
                show_default=False,
            ),
        ] = None,
        json_output: JsonOption = False,
    ) -> None:
        """Enter the one-time code of your password reset (signed in as yourself: --token)."""
        if code is None:
            code = typer.prompt("Verification code", hide_input=True)
        answer = ctx.obj.call(
            "POST",
            f"/cases/{quote(case_id, safe='')}/verification-code",
            json={"code": code.strip()},
        )
        if json_output:
            _print_json(answer)
            return
        _show_code_entry(answer)
        if not answer.get("verified"):
            raise typer.Exit(EXIT_REFUSED)

    @cli.command()
    def token(
        role: Annotated[
            list[str], typer.Option("--role", help="A role for the token (repeatable).")
        ],
        sub: Annotated[str, typer.Option(help="Who the token identifies, e.g. an email.")],
        days: Annotated[float, typer.Option(min=0.001, help="How long it is valid.")] = 30,
    ) -> None:
        """Mint a development token from PODIUM_JWT_SECRET or the secret `podium up` created."""
        from core.settings import Settings
        from starter.auth import jwt_secret_file, mint_token

        settings = Settings()
        secret_file = jwt_secret_file(settings)
        if settings.jwt_secret is not None and settings.jwt_secret.get_secret_value():
            secret = settings.jwt_secret.get_secret_value()
        elif secret_file.exists():
            secret = secret_file.read_text().strip()
        else:
            _fail(
                f"no development JWT secret: set PODIUM_JWT_SECRET or run `podium up` once "
                f"(it creates {secret_file})",
                1,
            )
        typer.echo(
            mint_token(
                secret,
                sub,
                role,
                ttl_seconds=int(days * 86_400),
                audience=settings.jwt_audience,
                issuer=settings.jwt_issuer,
            )
        )

    from starter.eval import add_eval_command  # `podium eval`; loads its models lazily

    add_eval_command(cli)

    from starter.audit import add_audit_command  # `podium audit`; reads the database directly

    add_audit_command(cli)

    from starter.report import add_report_command  # `podium report`; reads the database directly

    add_report_command(cli)

    from starter.policy import add_policy_command  # `podium policy`; reads files and the database

    add_policy_command(cli)

    from starter.reviews import add_reviews_command  # `podium reviews`; talks to Temporal

    add_reviews_command(cli)

    from starter.operations import add_ops_command  # `podium ops`; talks to Temporal

    add_ops_command(cli)
    return cli


app = create_cli()


def main() -> None:
    app(prog_name="podium")
