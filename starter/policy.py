"""`podium policy check` and `podium policy simulate`.

Registering the commands imports nothing heavy: the rule engine, the database and the
simulation load only when a policy command runs, so `podium --help` stays quick.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from pydantic import BaseModel

    from workflows.contracts.policy import PolicyDocument

__all__ = ["add_policy_command"]


def _load_or_exit(path: Path) -> PolicyDocument:
    from core.policy import PolicyError, load_policy

    try:
        return load_policy(path)
    except PolicyError as err:
        for line in err.errors:
            typer.echo(line, err=True)
        raise typer.Exit(1) from None


def add_policy_command(cli: typer.Typer) -> None:
    """Register `policy check` and `policy simulate` on the `podium` command."""
    policy = typer.Typer(help="Policy as code: validate and simulate policy files.")
    cli.add_typer(policy, name="policy")

    @policy.command("check")
    def check(
        files: Annotated[
            list[Path] | None,
            typer.Argument(help="Policy files (default: every file of the policies folder)."),
        ] = None,
    ) -> None:
        """Validate policy files: exit 0 with each version, 1 listing the errors. A file named
        after a process whose registry entry has its own policy model is read as that model
        (`policies/password_reset.yaml`); any other as the autonomy policy."""
        from core.policy import DEFAULT_POLICIES_DIR, PolicyError, load_policy
        from core.priority import PRIORITY_FILE_STEM, PriorityPolicy
        from core.report import DEFAULT_BASELINE_FILE, RoiBaseline
        from core.settings import Settings
        from starter.client import parse_policy_as
        from starter.intake.routing import ROUTING_FILE_STEM, RoutingTable
        from starter.operations import POLICY_FILE as OPERATIONS_POLICY
        from workflows.operations.types import OperationsPolicyFile
        from workflows.registry import PROCESSES

        models: dict[str | None, type[BaseModel]] = {
            p.policy: p.policy_model for p in PROCESSES if p.policy and p.policy_model
        }
        # The intake's routing table (`policies/routing.yaml`) is checked as what it is.
        models[ROUTING_FILE_STEM] = RoutingTable
        # The report's manual baseline (`policies/roi.yaml`) too.
        models[DEFAULT_BASELINE_FILE.stem] = RoiBaseline
        # Which cases go first (`policies/priority.yaml`).
        models[PRIORITY_FILE_STEM] = PriorityPolicy
        # The operations' Schedules (`policies/operations.yaml`).
        models[Path(OPERATIONS_POLICY).stem] = OperationsPolicyFile
        settings = Settings()
        paths = files or sorted((settings.policies_dir or DEFAULT_POLICIES_DIR).glob("*.yaml"))
        failed = False
        for path in paths:
            try:
                model = models.get(path.stem)
                if model is not None:
                    read = parse_policy_as(path, model)
                    digest, version = read["digest"], read["version"]
                else:
                    document = load_policy(path)
                    digest, version = document.digest, document.version
            except PolicyError as err:
                failed = True
                for line in err.errors:
                    typer.echo(line, err=True)
                continue
            typer.echo(f"{path}: ok, version {digest} ({version})")
        if failed:
            raise typer.Exit(1)

    @policy.command("simulate")
    def simulate_command(
        candidate: Annotated[Path, typer.Argument(metavar="NEW_POLICY", dir_okay=False)],
        current: Annotated[
            Path | None,
            typer.Option(
                help="The policy to compare with (default: the current one).", dir_okay=False
            ),
        ] = None,
        json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    ) -> None:
        """Replay past cases from the audit trail through NEW_POLICY and the current policy."""
        from core.policy import DEFAULT_POLICY_FILE, policy_path
        from core.settings import Settings
        from starter.simulation import show, simulate

        settings = Settings()
        current_path = current or (
            policy_path(settings.policies_dir, DEFAULT_POLICY_FILE.stem)
            if settings.policies_dir
            else DEFAULT_POLICY_FILE
        )
        report = simulate(
            _load_or_exit(candidate),
            _load_or_exit(current_path),
            settings.resolved_database_url,
            names=(str(candidate), str(current_path)),
        )
        if json_output:
            typer.echo(json.dumps(report.model_dump(mode="json"), indent=2))
        else:
            show(report)
