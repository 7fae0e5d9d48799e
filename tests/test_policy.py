"""Policy as code: loading and validation, rule outcomes, versions, simulation, the workflow."""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from activities.policy import PolicyActivities, PolicyVersions
from activities.types import DraftReplyInput, DraftReplyResult, TriageInput, TriageResult
from core.db import AuditEvent, ModelCall, PolicyVersion, create_tables, make_engine
from core.policy import DEFAULT_POLICY_FILE, PolicyError, evaluate, load_policy, parse_policy
from core.settings import Settings
from starter.cli import create_cli
from starter.client import PodiumClient
from tests.helpers import (
    fake_draft,
    fake_triage,
    make_worker,
    real_system_activities,
    seeded_engine,
)
from workflows.contracts import search_attributes as sa
from workflows.contracts.case import CaseContext
from workflows.contracts.policy import AutonomyDecision, EvaluatePolicyInput, PolicyFacts
from workflows.refund.starting import RefundRequest, prepare
from workflows.refund.types import (
    RefundCaseInput,
    RefundCaseResult,
    RefundOutcome,
)

BASE: dict[str, Any] = yaml.safe_load(DEFAULT_POLICY_FILE.read_bytes())


def _write(tmp_path: Path, data: dict[str, Any], name: str = "policy.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def _errors(tmp_path: Path, data: dict[str, Any]) -> str:
    path = _write(tmp_path, data)
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    message = str(info.value)
    assert str(path) in message
    return message


def _good(**facts: Any) -> PolicyFacts:
    base: dict[str, Any] = {
        "amount": 40.0,
        "customer_standing": "good",
        "intent": "refund_request",
        "intent_confidence": 0.9,
        "eligible": True,
        "risk": "low",
    }
    return PolicyFacts(**(base | facts))


# --- validation ----------------------------------------------------------------------------------


def test_the_shipped_policy_loads() -> None:
    document = load_policy(DEFAULT_POLICY_FILE)
    assert "default" == document.autonomy[-1].name
    assert 12 == len(document.digest)


def test_a_bad_expression_names_file_field_and_rule(tmp_path: Path) -> None:
    data = json.loads(json.dumps(BASE))
    data["autonomy"][1]["when"] = "customer_standing !="
    message = _errors(tmp_path, data)
    assert "autonomy[1].when" in message
    assert "rule 'customer_not_in_good_standing'" in message


def test_an_unknown_fact_in_an_expression_is_refused(tmp_path: Path) -> None:
    data = json.loads(json.dumps(BASE))
    data["autonomy"][0]["when"] = "refunded_twice"
    message = _errors(tmp_path, data)
    assert "autonomy[0].when" in message
    assert "unknown fact 'refunded_twice'" in message


def test_an_unknown_field_is_refused(tmp_path: Path) -> None:
    data = json.loads(json.dumps(BASE))
    data["limits"]["auto_refund_limt"] = 5
    message = _errors(tmp_path, data)
    assert "limits.auto_refund_limt: unknown field" in message


def test_a_missing_default_rule_is_refused(tmp_path: Path) -> None:
    data = json.loads(json.dumps(BASE))
    data["autonomy"] = data["autonomy"][:-1]
    message = _errors(tmp_path, data)
    assert "autonomy" in message
    assert "must be the default" in message


def test_an_unknown_approval_chain_is_refused(tmp_path: Path) -> None:
    data = json.loads(json.dumps(BASE))
    data["autonomy"][-1]["approval"] = "legal"
    message = _errors(tmp_path, data)
    assert "unknown approval chain 'legal'" in message


def test_human_without_a_chain_names_the_rule(tmp_path: Path) -> None:
    data = json.loads(json.dumps(BASE))
    del data["autonomy"][-1]["approval"]
    message = _errors(tmp_path, data)
    assert "autonomy[4]: rule 'default'" in message
    assert "needs an approval chain" in message


def test_the_version_is_the_content_hash() -> None:
    content = DEFAULT_POLICY_FILE.read_bytes()
    first = parse_policy(content).digest
    assert first == parse_policy(content).digest
    assert first != parse_policy(content + b"\n# a comment\n").digest


# --- outcomes ------------------------------------------------------------------------------------


def test_a_small_clear_refund_is_approved_with_its_explanation() -> None:
    result = evaluate(load_policy(DEFAULT_POLICY_FILE), _good())
    assert AutonomyDecision.AUTO_APPROVE == result.decision
    assert "small_clear_refund" == result.rule
    assert (
        "rule small_clear_refund matched: eligible refund of $40.00, at or under the $100.00 limit"
        == result.explanation
    )
    assert result.approval is None


def test_an_already_refunded_order_is_rejected() -> None:
    result = evaluate(load_policy(DEFAULT_POLICY_FILE), _good(already_refunded=True))
    assert AutonomyDecision.AUTO_REJECT == result.decision
    assert "already_refunded" == result.rule


def test_a_large_refund_goes_to_finance_review() -> None:
    document = load_policy(DEFAULT_POLICY_FILE)
    result = evaluate(document, _good(amount=750.0, risk="high"))
    assert AutonomyDecision.HUMAN == result.decision
    assert "finance_review" == result.approval_chain
    assert result.approval is not None
    assert ["team_lead", "finance"] == [level.name for level in result.approval.levels]
    assert (
        "rule large_refund matched: $750.00 is over five times the automatic limit of $100.00"
        == result.explanation
    )
    assert document.digest == result.policy_version


def test_the_default_rule_asks_a_team_lead() -> None:
    result = evaluate(load_policy(DEFAULT_POLICY_FILE), _good(amount=150.0, risk="medium"))
    assert ("default", "team_lead") == (result.rule, result.approval_chain)
    assert "rule default matched: a person decides (risk medium, eligible: yes)" == (
        result.explanation
    )


def test_a_case_over_the_model_budget_is_not_auto_approved() -> None:
    document = load_policy(DEFAULT_POLICY_FILE)
    assert 0.05 == document.budget.max_model_cost_usd_per_case
    result = evaluate(document, _good(model_cost_usd=0.06))
    assert AutonomyDecision.HUMAN == result.decision
    assert ("budget", "team_lead") == (result.rule, result.approval_chain)
    assert result.approval == document.approvals["team_lead"]
    assert (
        "rule small_clear_refund would approve, but model spend $0.06 is over the per-case "
        "budget of $0.05: a person decides"
    ) == result.explanation


def test_a_case_within_the_model_budget_is_still_auto_approved() -> None:
    result = evaluate(load_policy(DEFAULT_POLICY_FILE), _good(model_cost_usd=0.05))
    assert AutonomyDecision.AUTO_APPROVE == result.decision


def test_the_budget_does_not_turn_a_rejection_into_a_review() -> None:
    result = evaluate(
        load_policy(DEFAULT_POLICY_FILE), _good(already_refunded=True, model_cost_usd=1.0)
    )
    assert AutonomyDecision.AUTO_REJECT == result.decision


def test_the_budget_may_name_its_chain(tmp_path: Path) -> None:
    data = json.loads(json.dumps(BASE))
    data["budget"]["approval"] = "finance_review"
    result = evaluate(load_policy(_write(tmp_path, data)), _good(model_cost_usd=0.0512))
    assert "finance_review" == result.approval_chain
    assert "model spend $0.0512 is over the per-case budget of $0.05" in result.explanation


def test_an_unknown_budget_chain_is_refused(tmp_path: Path) -> None:
    data = json.loads(json.dumps(BASE))
    data["budget"]["approval"] = "nobody"
    assert "unknown approval chain 'nobody'" in _errors(tmp_path, data)


# --- simulation ----------------------------------------------------------------------------------

# (amount in dollars, standing, refunded, eligible): 10 synthetic past cases.
PAST = [
    (20, "good", False, True),
    (45, "good", False, True),
    (60, "good", False, True),
    (80, "good", False, True),
    (99, "good", False, True),
    (150, "good", False, True),
    (700, "good", False, True),
    (30, "blocked", False, True),
    (25, "good", True, False),
    (40, "good", False, False),
]


def _seed_audit(url: str) -> None:
    engine = make_engine(url)
    create_tables(engine)
    now = datetime(2025, 6, 1, tzinfo=UTC)
    with Session(engine) as session:
        for i, (dollars, standing, refunded, eligible) in enumerate(PAST):
            case = f"refund-sim-{i}"
            reasons = ["delivered 3 days ago, within the 30-day return window"]
            if standing != "good":
                reasons.append(f"customer standing is '{standing}'")
            if refunded:
                reasons = [f"order O-{i} has already been refunded"]
            triaged = {"intent": "refund_request", "confidence": 0.9, "sentiment": "negative"}
            assessed = {
                "eligible": eligible,
                "risk": "low",
                "reasons": reasons,
                "amount_cents": dollars * 100,
            }
            for step, (action, detail) in enumerate([("triaged", triaged), ("assessed", assessed)]):
                session.add(
                    AuditEvent(
                        idempotency_key=f"{case}:audit:{step}",
                        case_id=case,
                        process="refund",
                        action=action,
                        actor="podium",
                        detail=detail,
                        occurred_at=now,
                    )
                )
            session.add(
                ModelCall(
                    task="triage",
                    provider="small",
                    model="m",
                    cost_micro_usd=1_000,
                    outcome="ok",
                    case_id=case,
                )
            )
        session.commit()
    engine.dispose()


def test_simulate_compares_a_lower_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'podium.db'}"
    _seed_audit(url)
    monkeypatch.setenv("PODIUM_DATABASE_URL", url)
    monkeypatch.delenv("PODIUM_POLICY_FILE", raising=False)
    candidate = json.loads(json.dumps(BASE))
    candidate["limits"]["auto_refund_limit"] = 50.0
    candidate["version"] = "lower-limit"
    path = _write(tmp_path, candidate, "candidate.yaml")

    result = CliRunner().invoke(create_cli(), ["policy", "simulate", str(path), "--json"])
    assert 0 == result.exit_code, result.output
    report = json.loads(result.output)
    current, new = report["current"], report["candidate"]
    # Current ($100 limit): 20, 45, 60, 80, 99 automated; 150 team lead; 700 and the blocked
    # customer finance review; the refunded order rejected; the ineligible one a team lead.
    assert (10, 5, 1, 4) == (
        current["cases"],
        current["auto_approve"],
        current["auto_reject"],
        current["human"],
    )
    assert {"team_lead": 2, "finance_review": 2} == current["by_chain"]
    assert {"team_lead": 4} == current["by_first_role"]
    # Candidate ($50): 60, 80 and 99 go to a team lead; 700 is still over 5 x 50.
    assert (10, 2, 1, 7) == (new["cases"], new["auto_approve"], new["auto_reject"], new["human"])
    assert {"team_lead": 5, "finance_review": 2} == new["by_chain"]
    assert 0.01 == pytest.approx(current["model_cost_usd"])
    assert ["refund-sim-2", "refund-sim-3", "refund-sim-4"] == [
        change["case_id"] for change in report["changed"]
    ]

    text = CliRunner().invoke(create_cli(), ["policy", "simulate", str(path)])
    assert 0 == text.exit_code, text.output
    assert "3 case(s) would be decided differently" in text.output


def test_policy_check_reports_version_or_errors(tmp_path: Path) -> None:
    ok = CliRunner().invoke(create_cli(), ["policy", "check", str(DEFAULT_POLICY_FILE)])
    assert 0 == ok.exit_code
    assert load_policy(DEFAULT_POLICY_FILE).digest in ok.output
    bad = json.loads(json.dumps(BASE))
    bad["autonomy"][0]["when"] = "amount >"
    path = _write(tmp_path, bad)
    failed = CliRunner().invoke(create_cli(), ["policy", "check", str(path)])
    assert 1 == failed.exit_code
    assert f"{path}: autonomy[0].when: rule 'already_refunded'" in failed.output


# --- the workflow --------------------------------------------------------------------------------


def _refund_input(engine: Engine, document: dict[str, Any], by: str) -> RefundCaseInput:
    """The case input as the starter prepares it: the policy stored and named by its digest
    (`by="digest"`), or carried whole, as cases started before policy versions were stored."""
    stored = by == "digest"
    if stored:
        PolicyVersions(engine).save("refund", document)
    request = RefundRequest(
        channel="email", customer_id="C-1001", order_id="O-5001", message="refund O-5001 please"
    )
    context = CaseContext(
        case_id="c", requested_by="C-1001", policy_document=document, policy_stored=stored
    )
    case_input = prepare(request, context)
    assert (case_input.policy_document is None) == stored
    assert (case_input.policy_digest == document["digest"]) == stored
    return case_input


@pytest.mark.parametrize("by", ["digest", "document"])
async def test_a_policy_file_decides_a_case(
    time_env: WorkflowEnvironment, tmp_path: Path, by: str
) -> None:
    engine = seeded_engine(tmp_path, now=await time_env.get_current_time())
    document = load_policy(DEFAULT_POLICY_FILE)
    with ThreadPoolExecutor(max_workers=4) as executor:
        worker = make_worker(
            time_env.client,
            [*real_system_activities(engine), fake_triage, fake_draft],
            executor,
        )
        async with worker:
            handle = await time_env.client.start_workflow(
                "refund",
                _refund_input(engine, document.model_dump(mode="json"), by),
                id=f"refund-test-{uuid.uuid4().hex}",
                task_queue=worker.task_queue,
                result_type=RefundCaseResult,
            )
            result = await handle.result()
            described = await handle.describe()
    assert RefundOutcome.AUTO_RESOLVED == result.outcome
    assert document.digest == result.policy_version
    assert any(r.startswith("rule small_clear_refund matched: ") for r in result.reasons)
    assert document.digest == described.typed_search_attributes.get(sa.POLICY_VERSION)
    with Session(engine) as session:
        assessed = session.exec(
            select(AuditEvent)
            .where(AuditEvent.case_id == handle.id)
            .where(AuditEvent.action == "assessed")
        ).one()
    assert document.digest == assessed.detail["policy_version"]
    assert document.digest == assessed.policy_version
    assert "small_clear_refund" == assessed.detail["policy_rule"]
    assert assessed.detail["explanation"].startswith("rule small_clear_refund matched: ")
    engine.dispose()


@pytest.mark.parametrize("by", ["digest", "document"])
async def test_a_policy_file_routes_the_case_models(
    time_env: WorkflowEnvironment, tmp_path: Path, by: str
) -> None:
    """`model_routing` in the case's policy reaches the model activities as their chain."""
    seen: dict[str, list[str] | None] = {}

    @activity.defn(name="triage_request")
    def recording_triage(input: TriageInput) -> TriageResult:
        seen["intent"] = input.model_chain
        return fake_triage(input)

    @activity.defn(name="draft_reply")
    def recording_draft(input: DraftReplyInput) -> DraftReplyResult:
        seen["draft"] = input.model_chain
        return fake_draft(input)

    engine = seeded_engine(tmp_path, now=await time_env.get_current_time())
    document = load_policy(DEFAULT_POLICY_FILE).model_dump(mode="json")
    document["model_routing"] = {"intent": ["premium", "embedded"], "draft": ["small"]}
    with ThreadPoolExecutor(max_workers=4) as executor:
        worker = make_worker(
            time_env.client,
            [*real_system_activities(engine), recording_triage, recording_draft],
            executor,
        )
        async with worker:
            handle = await time_env.client.start_workflow(
                "refund",
                _refund_input(engine, document, by),
                id=f"refund-test-{uuid.uuid4().hex}",
                task_queue=worker.task_queue,
                result_type=RefundCaseResult,
            )
            await handle.result()
    engine.dispose()
    assert {"intent": ["premium", "embedded"], "draft": ["small"]} == seen


def test_a_policy_version_is_stored_once_and_read_by_digest(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'podium.db'}")
    create_tables(engine)
    document = load_policy(DEFAULT_POLICY_FILE).model_dump(mode="json")
    assert document["digest"] == PolicyVersions(engine).save("refund", document)
    assert document["digest"] == PolicyVersions(engine).save("refund", document)  # a 2nd starter
    with Session(engine) as session:
        rows = session.exec(select(PolicyVersion)).all()
    assert [(document["digest"], "refund")] == [(r.digest, r.process) for r in rows]
    reader = PolicyVersions(engine)  # another process: nothing cached
    assert not reader.known(document["digest"])
    assert document == reader.get(document["digest"])
    assert reader.known(document["digest"])
    assert reader.get("0" * 12) is None
    with pytest.raises(ValueError, match="digest"):
        reader.save("refund", {**document, "digest": ""})
    engine.dispose()


def test_the_activity_evaluates_a_stored_policy_and_retries_an_unknown_one(
    tmp_path: Path,
) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'podium.db'}")
    create_tables(engine)
    document = load_policy(DEFAULT_POLICY_FILE)
    facts = PolicyFacts(
        amount=20.0,
        customer_tier="gold",
        customer_standing="good",
        channel="email",
        intent="refund_request",
        intent_confidence=0.95,
        sentiment="neutral",
        risk="low",
        eligible=True,
        late=False,
        within_return_window=True,
    )
    activities = PolicyActivities(engine)
    inline = activities.evaluate_policy(
        EvaluatePolicyInput(facts=facts, policy=document.model_dump(mode="json"))
    )
    PolicyVersions(engine).save("refund", document.model_dump(mode="json"))
    by_digest = activities.evaluate_policy(
        EvaluatePolicyInput(facts=facts, policy_digest=document.digest)
    )
    assert inline == by_digest
    assert document.digest == by_digest.policy_version
    with pytest.raises(ApplicationError, match="is not stored") as unknown:
        activities.evaluate_policy(EvaluatePolicyInput(facts=facts, policy_digest="0" * 12))
    assert "UnknownPolicyVersion" == unknown.value.type
    assert not unknown.value.non_retryable  # a worker on the wrong database, once fixed
    for both_or_neither in ({}, {"policy": {}, "policy_digest": "x"}):
        with pytest.raises(ValueError, match="not both or neither"):
            EvaluatePolicyInput(facts=facts, **both_or_neither)
    engine.dispose()


async def test_the_starter_stores_the_policy_and_the_case_carries_its_digest(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """`PodiumClient.start` stores the process's policy file under its digest (once) and a
    refund case starts with the digest and the model routes, not the document."""
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        task_queue=f"policy-ref-{uuid.uuid4().hex}",  # nobody polls it: the start is enough
        data_dir=tmp_path,
    )
    document = load_policy(DEFAULT_POLICY_FILE)
    podium = PodiumClient(dev_env.client, settings)
    refs = [
        await podium.start(
            "refund",
            RefundRequest(
                channel="email", customer_id="C-1001", order_id="O-5001", message="refund please"
            ),
            f"policy-ref-{uuid.uuid4().hex}",
        )
        for _ in range(2)
    ]
    try:
        for ref in refs:
            handle = dev_env.client.get_workflow_handle(ref.case_id)
            started = (await handle.fetch_history()).events[0]
            payload = started.workflow_execution_started_event_attributes.input.payloads[0]
            case_input = RefundCaseInput.model_validate_json(payload.data)
            assert case_input.policy_document is None
            assert document.digest == case_input.policy_digest
            assert document.model_routing == case_input.policy_routes
        engine = make_engine(settings.resolved_database_url)
        with Session(engine) as session:
            rows = session.exec(select(PolicyVersion)).all()
        engine.dispose()
        assert [(document.digest, "refund")] == [(r.digest, r.process) for r in rows]
        assert document.model_dump(mode="json") == json.loads(rows[0].document)
    finally:
        for ref in refs:
            await dev_env.client.get_workflow_handle(ref.case_id).terminate("test done")
        podium.close()
