"""One intake for every message: who sent it, what it asks, which case it opens or joins.

`Intake.receive(message, requested_by)`:

1. a repeated `message_id` answers the first acknowledgement;
2. the sender is resolved: a customer id or a customer's email in the systems of record, else
   an employee's user name or email in the SCIM directory; unknown: `SenderUnknown` (422);
3. the text is triaged once, here in the API process, by the embedded intent model (offline,
   milliseconds on a thread): the acknowledgement names the intent and the case, so routing
   must be decided before the answer, and an activity would need a workflow of its own per
   message just to host it;
4. `policies/routing.yaml` picks the process (`starter.intake.routing.decide`); the message is
   mapped onto that process's request model, and a request it cannot fill goes to the
   fallback (a person) with the reason;
5. the conversation's open case, or the sender's open case about the same order, is joined:
   the message is recorded against it, audited `message_joined` and signalled
   `customer_message` when the case's workflow defines that signal. Otherwise the intake
   claims the conversation's next case (a unique row: of two racing messages one claims, the
   other joins) and starts it with the claimed id as Temporal workflow id;
6. a spike in volume (more than the routing file's `spike.max_messages` in its window, across
   every API process) raises an operations event once per window: logged `intake_spike`,
   counted in `podium_intake_spikes`, audited `intake_spike`.

Logs and audit details carry ids, intents and hashes, never the text or an email address.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import httpx
import structlog
from pydantic import BaseModel, ValidationError
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from temporalio.client import WorkflowExecutionStatus
from temporalio.runtime import Runtime
from temporalio.service import RPCError, RPCStatusCode

from activities.identity import ScimSettings
from activities.intelligence.text import extract_order_ids
from activities.types import Intent
from core import metrics
from core.audit_chain import AuditRecord, append_event
from core.db import Customer, make_engine
from core.policy import policy_path
from core.settings import Settings
from starter.client import InvalidRequest, PodiumClient, TemporalUnavailable
from starter.intake.routing import (
    ROUTING_FILE_STEM,
    MessageFacts,
    RouteDecision,
    RoutingTable,
    SenderKind,
    decide,
    is_question,
    load_routing,
)
from starter.intake.store import IntakeMessage, IntakeStore, OpenedCase
from starter.intake.types import IncomingMessage, MessageAck
from workflows.contracts.messages import CustomerMessage

__all__ = [
    "Classifier",
    "Intake",
    "Sender",
    "SenderUnknown",
    "catalogue_applications",
    "find_application",
    "read_message",
]

log = structlog.get_logger()

CUSTOMER_MESSAGE_SIGNAL = "customer_message"
# A claimed case whose workflow is not visible yet is being started by the message that claimed
# it: a message joins it for this long; after that the claim counts as abandoned.
STARTING_GRACE = timedelta(seconds=60)
RPC_TIMEOUT = timedelta(seconds=10)
DIRECTORY_TIMEOUT = httpx.Timeout(5.0, connect=3.0)
# How often a message tries to claim a conversation's case before giving up (each lost race
# means another message claimed it, which the next look joins).
CLAIM_ATTEMPTS = 4
AUDIT_ACTOR = "podium-intake"


class Classifier(Protocol):
    def classify_intent(self, text: str) -> tuple[Intent, float]: ...


class SenderUnknown(InvalidRequest):
    def __init__(self) -> None:
        super().__init__(
            "the sender is neither a known customer nor an employee of the directory",
            field="sender",
        )


@dataclass(frozen=True)
class Sender:
    kind: SenderKind
    id: str  # the customer id or the employee's user name

    @property
    def key(self) -> str:
        return _digest(f"{self.kind}:{self.id}")


def _digest(value: str, length: int = 32) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()[:length]


def conversation_key(channel: str, conversation_id: str) -> str:
    return _digest(f"{channel}\x00{conversation_id}")


class EmployeeDirectory:
    """Finds employees in the SCIM directory by user name or email (one GET each)."""

    def __init__(self, settings: ScimSettings | None = None) -> None:
        scim = settings or ScimSettings()
        headers = {"Accept": "application/scim+json", "User-Agent": "podium-intake"}
        if scim.token:
            headers["Authorization"] = f"Bearer {scim.token}"
        self._client = httpx.AsyncClient(
            base_url=scim.url.rstrip("/"), headers=headers, timeout=DIRECTORY_TIMEOUT
        )

    async def user_name(self, sender: str) -> str | None:
        attribute = "emails.value" if "@" in sender else "userName"
        quoted = '"' + sender.replace("\\", "\\\\").replace('"', '\\"') + '"'
        try:
            response = await self._client.get(
                "/Users", params={"filter": f"{attribute} eq {quoted}", "count": 1}
            )
        except httpx.TransportError:
            raise TemporalUnavailable("the employee directory did not answer") from None
        if response.status_code >= 500 or response.status_code in (408, 429):
            raise TemporalUnavailable("the employee directory did not answer")
        if response.status_code >= 400:
            return None
        found = response.json().get("Resources") or []
        name = found[0].get("userName") if found else None
        return str(name) if name else None

    async def aclose(self) -> None:
        await self._client.aclose()


_APPLICATION_WORD = re.compile(r"[a-z0-9]+")


@dataclass(frozen=True)
class _Application:
    name: str
    words: frozenset[str]
    levels: tuple[str, ...]


def find_application(text: str, apps: list[_Application]) -> tuple[str, str] | None:
    """The catalogue application the text names, and the level it names (else the first)."""
    words = set(_APPLICATION_WORD.findall(text.lower()))
    for app in apps:
        if app.words & words:
            level = next((lvl for lvl in app.levels if lvl.lower() in words), app.levels[0])
            return app.name, level
    return None


def read_message(
    model: Classifier, text: str, sender: SenderKind, apps: list[_Application]
) -> tuple[MessageFacts, str | None, tuple[str, str] | None]:
    """What routing needs of a message: its facts, its first order id, the application."""
    intent, confidence = model.classify_intent(text)
    orders = extract_order_ids(text)
    order_id = orders[0] if orders else None
    application = find_application(text, apps)
    found = {"order_id"} if order_id else set()
    if application is not None:
        found.add("application")
    facts = MessageFacts(intent, confidence, sender, frozenset(found), is_question(text))
    return facts, order_id, application


def catalogue_applications() -> list[_Application]:
    from activities.access import AccessSettings, load_catalogue

    catalogue = load_catalogue(AccessSettings().catalogue)
    return [
        _Application(
            name,
            frozenset({name.lower(), app.title.lower()}),
            tuple(app.levels),
        )
        for name, app in catalogue.applications.items()
    ]


class Intake:
    """The intake of one API process (or client). Safe to share across tasks."""

    def __init__(
        self,
        podium: PodiumClient,
        settings: Settings,
        *,
        classifier: Classifier | None = None,
        directory: EmployeeDirectory | None = None,
        routing_file: Path | None = None,
        engine: Engine | None = None,
    ) -> None:
        self._podium = podium
        self._settings = settings
        self._classifier = classifier
        self._directory = directory
        self._routing_file = routing_file or policy_path(settings.policies_dir, ROUTING_FILE_STEM)
        self._engine = engine
        self._owns_engine = engine is None
        self._lock = threading.Lock()
        self._store: IntakeStore | None = None
        self._routing: tuple[tuple[int, int], RoutingTable] | None = None
        self._apps: list[_Application] | None = None
        meter = (podium.temporal.service_client.config.runtime or Runtime.default()).metric_meter
        self._received = meter.create_counter(
            "podium_intake_messages", "Messages received by the intake"
        )
        self._spikes = meter.create_counter(
            "podium_intake_spikes", "Intake volume spikes (operations events)"
        )

    # --- resources, built on first use ------------------------------------------------------

    def _db(self) -> tuple[Engine, IntakeStore]:
        with self._lock:
            if self._engine is None:
                self._engine = make_engine(self._settings.resolved_database_url)
            if self._store is None:
                self._store = IntakeStore(self._engine)
            return self._engine, self._store

    def _model(self) -> Classifier:
        with self._lock:
            if self._classifier is None:
                from activities.intelligence.embedded import EmbeddedModels

                self._classifier = EmbeddedModels.load(
                    self._settings.datasets_dir, self._settings.templates_dir
                )
            return self._classifier

    def routing(self) -> RoutingTable:
        """The routing file, read again when it changed (the next message uses an edit)."""
        stat = self._routing_file.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if self._routing is None or self._routing[0] != stamp:
                self._routing = (stamp, load_routing(self._routing_file))
            return self._routing[1]

    def _catalogue(self) -> list[_Application]:
        with self._lock:
            if self._apps is None:
                self._apps = catalogue_applications()
            return self._apps

    def close(self) -> None:
        with self._lock:
            if self._engine is not None and self._owns_engine:
                self._engine.dispose()
            self._engine = self._store = None

    async def aclose(self) -> None:
        self.close()
        if self._directory is not None:
            await self._directory.aclose()

    # --- the intake -------------------------------------------------------------------------

    async def receive(
        self, message: IncomingMessage | Mapping[str, Any], *, requested_by: str | None = None
    ) -> MessageAck:
        incoming = _incoming(message)
        _, store = await asyncio.to_thread(self._db)
        if incoming.message_id is not None:
            first = await asyncio.to_thread(store.find, incoming.message_id)
            if first is not None:
                return _ack(first)
        message_id = incoming.message_id or uuid.uuid4().hex
        table = await asyncio.to_thread(self.routing)
        sender = await self._resolve(incoming.sender)
        model = await asyncio.to_thread(self._model)
        apps = await asyncio.to_thread(self._catalogue)
        facts, order_id, application = await asyncio.to_thread(
            read_message, model, incoming.text, sender.kind, apps
        )
        intent, confidence = facts.intent, facts.confidence
        decision = decide(table, facts, self._podium.registry.names)
        conversation = conversation_key(incoming.channel, incoming.conversation_id)
        record = IntakeMessage(
            message_id=message_id,
            conversation_key=conversation,
            case_id="",
            process="",
            joined=False,
            channel=incoming.channel,
            sender_key=sender.key,
            intent=str(intent),
            confidence=round(confidence, 4),
            reason=decision.reason,
            routing_version=table.digest,
            text=incoming.text,
            attachments=",".join(incoming.attachments),
        )
        for _ in range(CLAIM_ATTEMPTS):
            latest = await asyncio.to_thread(store.latest, conversation)
            joined = await self._open_case(store, latest, sender, order_id)
            if joined is not None:
                return await self._join(store, joined, record, incoming, requested_by)
            # The next generation after the one seen closed: a message that claimed it
            # meanwhile makes this claim fail, and the next look joins its case.
            generation = (latest.generation if latest else 0) + 1
            opened = await self._try_open(
                store, table, decision, conversation, generation, sender, order_id, application,
                incoming, requested_by,
            )  # fmt: skip
            if opened is not None:
                return await self._opened(store, opened, record, table)
        raise TemporalUnavailable("the conversation's case could not be claimed; send it again")

    async def _resolve(self, sender: str) -> Sender:
        engine, _ = await asyncio.to_thread(self._db)
        customer = await asyncio.to_thread(_customer, engine, sender)
        if customer is not None:
            return Sender(SenderKind.CUSTOMER, customer)
        if self._directory is None:
            self._directory = EmployeeDirectory()
        employee = await self._directory.user_name(sender)
        if employee is not None:
            return Sender(SenderKind.EMPLOYEE, employee)
        raise SenderUnknown()

    async def _open_case(
        self,
        store: IntakeStore,
        latest: OpenedCase | None,
        sender: Sender,
        order_id: str | None,
    ) -> OpenedCase | None:
        """The open case this message belongs to: its conversation's `latest`, else the
        sender's about the same order."""
        if latest is not None and await self._is_open(latest):
            return latest
        if order_id is not None:
            same_order = await asyncio.to_thread(store.latest_for_order, sender.key, order_id)
            if same_order is not None and await self._is_open(same_order):
                return same_order
        return None

    async def _is_open(self, case: OpenedCase) -> bool:
        handle = self._podium.temporal.get_workflow_handle(case.case_id)
        try:
            description = await handle.describe(rpc_timeout=RPC_TIMEOUT)
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                # Claimed a moment ago: the message that claimed it is starting it.
                return datetime.now(UTC) - case.opened_at < STARTING_GRACE
            raise TemporalUnavailable("Temporal did not answer; send the message again") from err
        return description.status == WorkflowExecutionStatus.RUNNING

    async def _try_open(
        self,
        store: IntakeStore,
        table: RoutingTable,
        decision: RouteDecision,
        conversation: str,
        generation: int,
        sender: Sender,
        order_id: str | None,
        application: tuple[str, str] | None,
        incoming: IncomingMessage,
        requested_by: str | None,
    ) -> tuple[OpenedCase, RouteDecision] | None:
        """Claim the conversation's next case and start it; None when another message claimed
        it first (the caller joins that one)."""
        decision, request = self._request(table, decision, sender, order_id, application, incoming)
        key = f"msg-{conversation}-{generation}"
        spec = self._podium.registry.get(decision.process)
        case_id = spec.case_id_prefix + key
        claimed = await asyncio.to_thread(
            store.claim, conversation, generation, case_id, spec.name, sender.key, order_id
        )
        if not claimed:
            return None
        try:
            ref = await self._podium.start(spec.name, request, key, requested_by=requested_by)
        except BaseException:
            await asyncio.to_thread(store.release, conversation, generation)
            raise
        return OpenedCase(ref.case_id, spec.name, generation, datetime.now(UTC)), decision

    def _request(
        self,
        table: RoutingTable,
        decision: RouteDecision,
        sender: Sender,
        order_id: str | None,
        application: tuple[str, str] | None,
        incoming: IncomingMessage,
    ) -> tuple[RouteDecision, BaseModel]:
        """The message as the request of the decided process; a request the message cannot
        fill goes to the fallback with the reason."""
        spec = self._podium.registry.get(decision.process)
        values = _fields(decision, sender, order_id, application, incoming)
        try:
            return decision, spec.request.model_validate(_fit(spec.request, values))
        except ValidationError as err:
            if decision.process == table.fallback:
                raise InvalidRequest(
                    f"the message does not make a {table.fallback} request", field="text"
                ) from None
            missing = ", ".join(sorted({str(e["loc"][0]) for e in err.errors() if e["loc"]}))
            reason = f"{decision.intent}: the message gives no valid {missing}"
            fallback = RouteDecision(table.fallback, decision.intent, reason)
            return self._request(table, fallback, sender, order_id, application, incoming)

    async def _join(
        self,
        store: IntakeStore,
        case: OpenedCase,
        record: IntakeMessage,
        incoming: IncomingMessage,
        requested_by: str | None,
    ) -> MessageAck:
        record.case_id, record.process, record.joined = case.case_id, case.process, True
        record.reason = None
        stored = await asyncio.to_thread(store.record, record)
        spec = self._podium.registry.get(case.process)
        definition = getattr(spec.workflow, "__temporal_workflow_definition", None)
        signalled = False
        if definition is not None and CUSTOMER_MESSAGE_SIGNAL in definition.signals:
            signal = CustomerMessage(
                message_id=stored.message_id,
                channel=incoming.channel,
                text=incoming.text,
                intent=stored.intent,
                confidence=stored.confidence,
                attachments=list(incoming.attachments),
            )
            handle = self._podium.temporal.get_workflow_handle(case.case_id)
            try:
                await handle.signal(CUSTOMER_MESSAGE_SIGNAL, signal, rpc_timeout=RPC_TIMEOUT)
                signalled = True
            except RPCError as err:
                if err.status != RPCStatusCode.NOT_FOUND:
                    raise TemporalUnavailable("Temporal did not answer") from err
        await self._audit(stored, "message_joined", requested_by, signalled=signalled)
        await self._after(store, stored)
        log.info(
            "message_joined",
            case_id=case.case_id,
            process=case.process,
            message_id=stored.message_id,
            intent=stored.intent,
            signalled=signalled,
        )
        return _ack(stored)

    async def _opened(
        self,
        store: IntakeStore,
        opened: tuple[OpenedCase, RouteDecision],
        record: IntakeMessage,
        table: RoutingTable,
    ) -> MessageAck:
        case, decision = opened
        record.case_id, record.process, record.reason = case.case_id, case.process, decision.reason
        stored = await asyncio.to_thread(store.record, record)
        await self._audit(stored, "message_routed", None)
        await self._after(store, stored)
        log.info(
            "message_routed",
            case_id=case.case_id,
            process=case.process,
            message_id=stored.message_id,
            intent=stored.intent,
            confidence=stored.confidence,
            handoff=decision.reason is not None,
            routing_version=table.digest,
        )
        return _ack(stored)

    async def _audit(
        self, stored: IntakeMessage, action: str, actor: str | None, **extra: Any
    ) -> bool:
        engine, _ = await asyncio.to_thread(self._db)
        detail = {
            "message_id": stored.message_id,
            "channel": stored.channel,
            "intent": stored.intent,
            "confidence": stored.confidence,
            "reason": stored.reason,
            "routing_version": stored.routing_version,
            "text_sha256": _digest(stored.text, 16),
            "text_chars": len(stored.text),
            **extra,
        }
        result = await asyncio.to_thread(
            append_event,
            engine,
            AuditRecord(
                idempotency_key=f"intake:{stored.message_id}:{action}",
                case_id=stored.case_id,
                process=stored.process,
                action=action,
                actor=actor or AUDIT_ACTOR,
                detail=detail,
                occurred_at=datetime.now(UTC),
                confidence=stored.confidence,
            ),
        )
        return result.created

    async def _after(self, store: IntakeStore, stored: IntakeMessage) -> None:
        """Count the message; raise the operations event when the volume spikes."""
        self._received.add(1, {"process": stored.process, "joined": str(stored.joined).lower()})
        metrics.INTAKE_MESSAGES.labels(
            route=metrics.label(stored.process), joined=str(stored.joined).lower()
        ).inc()
        table = await asyncio.to_thread(self.routing)
        rule = table.spike
        count = await asyncio.to_thread(store.received_since, rule.window)
        if count <= rule.max_messages:
            return
        window_s = rule.window.total_seconds()
        bucket = int(datetime.now(UTC).timestamp() // window_s)
        engine, _ = await asyncio.to_thread(self._db)
        raised = await asyncio.to_thread(
            append_event,
            engine,
            AuditRecord(
                idempotency_key=f"intake-spike:{table.digest}:{bucket}",
                case_id="intake",
                process="intake",
                action="intake_spike",
                actor=AUDIT_ACTOR,
                detail={"messages": count, "window_s": window_s, "max": rule.max_messages},
                occurred_at=datetime.now(UTC),
                policy_version=table.digest,
            ),
        )
        if raised.created:  # once per window, whichever API process saw it first
            self._spikes.add(1)
            metrics.INTAKE_SPIKES.inc()
            log.warning(
                "intake_spike", messages=count, window_s=window_s, max_messages=rule.max_messages
            )


def _incoming(message: IncomingMessage | Mapping[str, Any]) -> IncomingMessage:
    if isinstance(message, IncomingMessage):
        return message
    try:
        return IncomingMessage.model_validate(dict(message))
    except ValidationError as err:
        from starter.client import _invalid

        raise _invalid(err) from None


def _customer(engine: Engine, sender: str) -> str | None:
    with Session(engine) as session:
        if "@" in sender:
            statement = select(Customer.id).where(func.lower(Customer.email) == sender.lower())
        else:
            statement = select(Customer.id).where(col(Customer.id) == sender)
        return session.exec(statement).first()


def _fields(
    decision: RouteDecision,
    sender: Sender,
    order_id: str | None,
    application: tuple[str, str] | None,
    incoming: IncomingMessage,
) -> dict[str, Any]:
    """Every request field the intake can fill, by the names the processes use."""
    values: dict[str, Any] = {
        "channel": incoming.channel,
        "customer_id": sender.id,
        "employee": sender.id,
        "user_name": sender.id,
        "message": incoming.text,
        "question": incoming.text,
        "justification": incoming.text,
        "reason": decision.reason or incoming.text,
    }
    if order_id is not None:
        values["order_id"] = order_id
    if application is not None:
        values["application"], values["access_level"] = application
    if incoming.attachments:
        values["attachment_id"] = incoming.attachments[0]
    return values


def _fit(model: type[BaseModel], values: Mapping[str, Any]) -> dict[str, Any]:
    """`values` for the fields `model` has, texts cut to the field's length."""
    properties: dict[str, Any] = model.model_json_schema().get("properties", {})
    fitted: dict[str, Any] = {}
    for name, value in values.items():
        if name not in model.model_fields:
            continue
        limit = _max_length(properties.get(name, {}))
        fitted[name] = value[:limit] if isinstance(value, str) and limit else value
    return fitted


def _max_length(schema: Mapping[str, Any]) -> int | None:
    if "maxLength" in schema:
        return int(schema["maxLength"])
    for option in schema.get("anyOf", []):
        if isinstance(option, Mapping) and "maxLength" in option:
            return int(option["maxLength"])
    return None


def _ack(stored: IntakeMessage) -> MessageAck:
    return MessageAck(
        case_id=stored.case_id,
        process=stored.process,
        joined=stored.joined,
        intent=stored.intent,
        confidence=stored.confidence,
        reason=stored.reason,
        message_id=stored.message_id,
        routing_version=stored.routing_version,
    )
