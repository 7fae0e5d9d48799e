"""Typed settings, loaded once at each entry point and passed down.

Every Podium setting reads from the environment with the `PODIUM_` prefix (or a `.env` file).
The Temporal connection follows Temporal's own environment configuration (`TEMPORAL_ADDRESS`,
`TEMPORAL_NAMESPACE`, `TEMPORAL_API_KEY`, `TEMPORAL_TLS*`, `TEMPORAL_PROFILE`); see
`core.temporal`.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["CACHED_CASE_KIB", "Settings"]

# What one cached case holds in a cases' worker (a parked refund; bench.parked with 1,000 cached:
# 137.7 -> 342.7 MiB, 205 KiB each, with shared workflow code and the policy by digest).
CACHED_CASE_KIB = 205


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PODIUM_", env_file=".env", extra="ignore")

    # Where the embedded runtime keeps its state (git-ignored).
    data_dir: Path = Path("var")
    # SQLAlchemy URL of the systems-of-record database; SQLite under data_dir by default.
    # PostgreSQL: postgresql+psycopg://user:password@host:5432/podium
    database_url: str | None = None

    # Data the product reads: intent examples and reply templates (default: the repository's).
    datasets_dir: Path | None = None
    templates_dir: Path | None = None
    # Model routes, prices and breakers (default: the repository's config/models.yaml, which
    # uses only the embedded models). See config/models.openai.example.yaml for LLM chains.
    models_file: Path | None = None
    # Where trained embedded models are kept between worker starts, one file per version of the
    # intent examples (default: data_dir/models; safe to delete, rebuilt on the next start).
    model_cache_dir: Path | None = None

    # Temporal
    task_queue: str = "podium"
    temporal_port: int = 7233
    temporal_ui_port: int = 8233
    temporal_ui_url: str | None = Field(
        default=None, description="Base URL of the Temporal UI, for links (default: embedded UI)"
    )

    # Payload encryption (core/codec.py): AES-256-GCM on every payload in Temporal history.
    # Keys: comma-separated `kid:base64key` entries; the active id encrypts, all ids decrypt.
    # `podium up` creates a development key under data_dir/keys when none is configured.
    encryption: Literal["on", "off"] = "on"
    encryption_keys: SecretStr | None = None
    encryption_key_id: str | None = Field(default=None, description="Default: the only key")
    # Codec server (starter/codec_server.py): decrypts payloads for the Temporal UI and CLI
    # callers that present `Authorization: Bearer <codec_token>`.
    codec_host: str = "127.0.0.1"
    codec_port: int = 8234
    codec_token: SecretStr | None = None
    codec_cors_origins: list[str] | None = Field(
        default=None, description="Browser origins allowed; default: the Temporal UI's"
    )

    # The worker's Prometheus endpoint (core/metrics.py): its own series and the Temporal
    # runtime's, at http://host:port/metrics; loopback by default, port 0 turns it off.
    worker_metrics_host: str = "127.0.0.1"
    worker_metrics_port: int = Field(default=9464, ge=0, le=65535)

    # Starter HTTP API
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    # Who may call it (starter/auth.py). Services: comma-separated `name:key:role1+role2` API
    # keys. People: JWTs, HS256 with jwt_secret (development; `podium up` creates one under
    # data_dir/keys) or RS256 checked against jwt_jwks_url; audience and issuer when set.
    api_keys: SecretStr | None = None
    jwt_secret: SecretStr | None = None
    jwt_jwks_url: str | None = None
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    # Decision tokens (core/decision_tokens.py): the API signs each approval decision for the
    # verified caller; the worker checks it before a case applies it. One key per deployment
    # (`podium up` creates a development one under data_dir/keys when none is set).
    decision_secret: SecretStr | None = None
    decision_token_ttl_s: int = Field(default=600, ge=30, le=86_400)

    # Worker Versioning (core/rollout.py): with both set, the worker joins this Temporal Worker
    # Deployment as this build, and becomes its current version only after replaying the
    # running cases of its task queue; a build that cannot replay them exits non-zero.
    deployment_name: str | None = None
    build_id: str | None = None

    # What a worker process serves (worker.py): `all` (the default: cases, model calls and the
    # operations in one process), `cases` (the case and operations workflows and every activity
    # but the models'; it loads no model) or `models` (the model calls only). `podium up` runs
    # one `cases` and one `models` worker; compose scales them apart.
    worker_role: Literal["all", "cases", "models"] = "all"
    # Model calls run on their own task queue, `<task_queue>-models` (core/scheduling.py),
    # polled with this queue-wide rate limit (Temporal's max_task_queue_activities_per_second):
    # the provider quotas hold however many workers run. 0: no limit.
    model_activities_per_second: float = Field(default=50.0, ge=0)
    max_concurrent_model_activities: int = Field(default=8, ge=1)

    # Worker sizing
    max_cached_workflows: int = 2_000
    # The sticky cache sized to memory instead: about this many MiB of cached cases
    # (`CACHED_CASE_KIB` each, measured by bench.parked); set, it replaces max_cached_workflows.
    # A case out of the cache costs the worker nothing while it waits; it replays from its
    # history on its next event (a decision, a timer).
    workflow_cache_mib: float | None = Field(default=None, gt=0)
    # How long a cached case's next workflow task waits for this worker before any worker may
    # take it (Temporal's sticky schedule-to-start timeout; then it replays from its history).
    # Temporal's default, 10 s, is shorter than a burst's backlog on a small worker: every case
    # would replay. Longer: a dead worker's cached cases wait that long before another takes them.
    sticky_queue_timeout_s: float = Field(default=10.0, gt=0)
    # Hold the cases in motion in the cache (core/sticky_cache.py): while the cache is full and
    # the cases it would push out still wait on an activity, a task for a case that is not cached
    # waits (at most `sticky_cache_patience_s` per case in motion) instead of making one of them
    # replay. Off: Temporal's plain least-recently-used cache.
    sticky_cache_guard: bool = True
    sticky_cache_patience_s: float = Field(default=5.0, gt=0)
    # Workflow tasks one worker runs at once (Temporal's max_concurrent_workflow_tasks).
    max_concurrent_workflow_tasks: int = Field(default=100, ge=2)
    # Podium's activities are synchronous (thread pool): one slot per thread.
    max_concurrent_activities: int = 32
    activity_threads: int = 32

    # Refund policy defaults (stamped on each case when it starts)
    auto_refund_limit: float = Field(default=100.0, ge=0, description="Dollars")
    return_window_days: int = 30
    min_intent_confidence: float = 0.8
    # Policy as code: each new case carries its process's policy file,
    # `<policies_dir>/<process>.yaml` (default: the repository's policies/), and its autonomy
    # rules decide; a refund policy's limits replace the three above.
    # PODIUM_POLICY_AS_CODE=false leaves the decision to the settings above.
    policies_dir: Path | None = None
    policy_as_code: bool = True

    # Approval gate defaults (stamped on each case when it starts). Medium risk: `team_lead`;
    # high risk: `team_lead` then `finance`. Each level has the SLA and reminders below.
    approval_sla_hours: float = Field(default=48.0, gt=0, description="Per level")
    approval_deadline_hours: float = Field(default=168.0, gt=0)
    approval_reminders: list[float] = Field(
        default=[0.5, 0.9], description="Fractions of the SLA; env JSON, e.g. [0.5, 0.9]"
    )
    approval_on_breach: Literal["escalate", "backup"] = "escalate"
    approval_backup_roles: list[str] = Field(default=["ops_manager"], description="For 'backup'")
    approval_team_lead_roles: list[str] = ["team_lead"]
    approval_finance_roles: list[str] = ["finance"]
    approval_finance_quorum: int = Field(default=1, ge=1)
    approval_default_action: Literal["deny", "handoff", "approve_within_limit"] = "deny"
    approval_default_limit: float | None = Field(
        default=None, ge=0, description="Dollars, for 'approve_within_limit'"
    )
    approval_four_eyes: bool = True
    # Approver notices: the structured log, or this webhook (it may hold a token: never logged).
    approval_webhook_url: str | None = None
    approval_webhook_timeout_s: float = Field(default=10.0, gt=0)

    # Logging
    log_level: str = "INFO"
    log_json: bool | None = Field(
        default=None, description="JSON lines; default: JSON unless stderr is a terminal"
    )

    @property
    def cached_workflows(self) -> int:
        """The sticky cache's size in cases: `workflow_cache_mib` over `CACHED_CASE_KIB`, or
        `max_cached_workflows`."""
        if self.workflow_cache_mib is None:
            return self.max_cached_workflows
        return max(1, int(self.workflow_cache_mib * 1024 // CACHED_CASE_KIB))

    @cached_property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'podium.db'}"

    @property
    def ui_base_url(self) -> str:
        return self.temporal_ui_url or f"http://localhost:{self.temporal_ui_port}"
