"""The production shape (docker-compose.yml, Dockerfile, .dockerignore, deploy/) checked statically.

There is no Docker engine on the development machines or in CI, so nothing here starts a
container. Instead: the compose file is validated against the Compose Specification schema, and
the wiring that a reviewer would otherwise check by eye (start-up order, pinned versions, the
Temporal schema job, search attributes, environment) is asserted on the parsed YAML.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from temporalio.common import SearchAttributeIndexedValueType

from workflows.contracts import search_attributes

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
CHECK_JSONSCHEMA = Path(sys.executable).parent / "check-jsonschema"

PODIUM_SERVICES = ("podium-worker", "podium-models", "podium-api")
LONG_RUNNING_SERVICES = ("postgres", "temporal", "temporal-ui", *PODIUM_SERVICES)
SCHEMA_JOB = "temporal-schema"
NAMESPACE_JOB = "temporal-namespace"
SEARCH_ATTRIBUTE_JOB = "temporal-search-attributes"

# The brief's list; also cross-checked against workflows/search_attributes.py below.
EXPECTED_SEARCH_ATTRIBUTES = {
    "PodiumProcess": "Keyword",
    "PodiumStatus": "Keyword",
    "PodiumOutcome": "Keyword",
    "PodiumAwaitingApproval": "Bool",
    "PodiumEscalated": "Bool",
    "PodiumIntent": "Keyword",
    "PodiumAmount": "Double",
    "PodiumCustomerId": "Keyword",
    "PodiumCustomerTier": "Keyword",
    "PodiumSlaDueAt": "Datetime",
    "PodiumAwaitingRoles": "KeywordList",
    "PodiumApprovalLevel": "Int",
    "PodiumModelCostUsd": "Double",
    "PodiumPolicyVersion": "Keyword",
}
CLI_TYPE_NAMES = {
    SearchAttributeIndexedValueType.TEXT: "Text",
    SearchAttributeIndexedValueType.KEYWORD: "Keyword",
    SearchAttributeIndexedValueType.INT: "Int",
    SearchAttributeIndexedValueType.DOUBLE: "Double",
    SearchAttributeIndexedValueType.BOOL: "Bool",
    SearchAttributeIndexedValueType.DATETIME: "Datetime",
    SearchAttributeIndexedValueType.KEYWORD_LIST: "KeywordList",
}
# Pre-allocated custom search attribute columns per namespace in PostgreSQL v12 visibility.
SQL_VISIBILITY_SLOTS = {
    "Keyword": 10,
    "Bool": 3,
    "Double": 3,
    "Datetime": 3,
    "Int": 3,
    "Text": 3,
    "KeywordList": 3,
}

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}; `$$` is a literal $.
INTERPOLATION = re.compile(
    r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
)


# --- helpers ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = compose["services"]
    assert isinstance(found, dict)
    return found


def interpolate(value: str) -> str:
    """Resolve compose variables the way `docker compose` does with an empty environment."""

    def replace(match: re.Match[str]) -> str:
        op, arg = match["op"], match["arg"]
        if op in (":-", "-"):
            return arg
        raise AssertionError(f"{match[0]!r} has no default, so compose fails without it set")

    return INTERPOLATION.sub(replace, value.replace("$$", "\0")).replace("\0", "$")


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.split("=", 1) for item in env)
        return {key: interpolate(value) for key, value in pairs}
    return {key: interpolate(str(value)) for key, value in env.items()}


def depends_on(service: dict[str, Any]) -> dict[str, str]:
    """Dependency name -> condition (the short list form means service_started)."""
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def image_reference(image: str) -> tuple[str, str | None]:
    """Split 'registry:5000/org/name:tag' into ('registry:5000/org/name', 'tag')."""
    image = interpolate(image).split("@", 1)[0]
    name, _, tag = image.rpartition(":")
    if not name or "/" in tag:
        return image, None
    return name, tag


def bind_mounts(service: dict[str, Any]) -> Iterator[tuple[Path, str]]:
    """(host path, container path) for every relative bind mount of a service."""
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            source, target = volume.get("source", ""), volume["target"]
        else:
            source, _, target = volume.partition(":")
            target = target.split(":")[0]
        if source.startswith("."):
            yield (COMPOSE_FILE.parent / source).resolve(), target


def host_path(service: dict[str, Any], container_path: str) -> Path:
    """The repository file that a bind mount shows at `container_path` inside the container."""
    wanted = PurePosixPath(container_path)
    for source, target in bind_mounts(service):
        mount = PurePosixPath(target)
        if wanted == mount or mount in wanted.parents:
            return source.joinpath(*wanted.relative_to(mount).parts)
    raise AssertionError(f"nothing is mounted at {container_path}")


def entry_script(service: dict[str, Any]) -> Path:
    """The repository script a one-shot job runs with `sh /path/in/container.sh`."""
    argv = service.get("entrypoint") or service.get("command")
    argv = shlex.split(argv) if isinstance(argv, str) else list(argv)
    assert argv[0] in ("sh", "/bin/sh"), f"expected `sh script`, got {argv}"
    return host_path(service, argv[1])


def shell_commands(script: Path) -> list[list[str]]:
    """The script's commands as argv lists, with line continuations joined and comments dropped."""
    text = script.read_text(encoding="utf-8").replace("\\\n", " ")
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [shlex.split(line) for line in lines if line]


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def dockerignore_excludes(path: str) -> bool:
    """Whether the build context drops `path` (Docker's rules: last matching pattern wins)."""
    excluded = False
    for raw in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negated = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        parts = PurePosixPath(path).parts
        # A pattern matching a directory excludes everything below it.
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        candidates = [pattern, pattern.removeprefix("**/")]
        if any(fnmatch.fnmatchcase(p, c) for p in prefixes for c in candidates):
            excluded = not negated
        if pattern.startswith("**/") and any(
            fnmatch.fnmatchcase(part, pattern.removeprefix("**/")) for part in parts
        ):
            excluded = not negated
    return excluded


# --- the compose file as a whole --------------------------------------------------------------


def run_check_jsonschema(path: Path) -> subprocess.CompletedProcess[str]:
    assert CHECK_JSONSCHEMA.exists(), f"{CHECK_JSONSCHEMA} missing: pip install -e '.[dev]'"
    return subprocess.run(
        [str(CHECK_JSONSCHEMA), "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_compose_file_matches_the_compose_specification() -> None:
    result = run_check_jsonschema(COMPOSE_FILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_schema_validation_rejects_a_misspelt_key(tmp_path: Path) -> None:
    # Guards the test above against a validator that passes everything: the same file with one
    # misspelt key must fail.
    broken = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    broken["services"]["podium-api"]["helthcheck"] = broken["services"]["podium-api"].pop(
        "healthcheck"
    )
    path = tmp_path / "docker-compose.yml"
    path.write_text(yaml.safe_dump(broken), encoding="utf-8")
    result = run_check_jsonschema(path)
    assert result.returncode != 0, result.stdout
    assert "helthcheck" in result.stdout


def test_every_variable_has_a_default_so_compose_runs_without_an_env_file() -> None:
    for match in INTERPOLATION.finditer(COMPOSE_FILE.read_text(encoding="utf-8")):
        assert match["op"] in (":-", "-"), f"{match[0]} has no default"


def test_every_depends_on_target_exists(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for target in depends_on(service):
            assert target in services, f"{name} depends on unknown service {target}"


def test_named_volumes_are_declared(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    declared = set(compose.get("volumes") or {})
    for name, service in services.items():
        for volume in service.get("volumes") or []:
            source = volume.get("source", "") if isinstance(volume, dict) else volume.split(":")[0]
            if source and not source.startswith((".", "/", "~")):
                assert source in declared, f"{name} uses undeclared volume {source}"


def test_bind_mounted_files_exist_in_the_repository(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for source, target in bind_mounts(service):
            assert source.exists(), f"{name} mounts missing {source} at {target}"


def test_deploy_shell_scripts_parse() -> None:
    scripts = sorted((ROOT / "deploy").rglob("*.sh"))
    assert scripts, "deploy/ has no scripts"
    for script in scripts:
        first_line = script.read_text(encoding="utf-8").splitlines()[0]
        shell = "bash" if first_line.endswith("bash") else "sh"
        executable = shutil.which(shell)
        assert executable, f"{shell} not found"
        result = subprocess.run(
            [executable, "-n", str(script)], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, f"{script}: {result.stderr}"


# --- images -----------------------------------------------------------------------------------


def test_no_service_uses_the_deprecated_auto_setup_image(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, service in services.items():
        assert "temporalio/auto-setup" not in str(service.get("image", "")), name


def test_every_image_is_pinned_to_a_version(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        assert "image" in service or "build" in service, f"{name} has neither image nor build"
        if "image" in service:
            _, tag = image_reference(service["image"])
            assert tag, f"{name}: {service['image']} has no tag"
            assert tag != "latest", f"{name}: {service['image']} is not pinned"
            assert re.search(r"\d", tag), f"{name}: tag {tag!r} names no version"


def test_temporal_server_and_admin_tools_share_one_full_version(
    services: dict[str, dict[str, Any]],
) -> None:
    # The schema job migrates to the schema version shipped with admin-tools; it must be the
    # version the server expects.
    versions = {}
    for name, service in services.items():
        repo, tag = image_reference(service.get("image", ""))
        if repo in ("temporalio/server", "temporalio/admin-tools"):
            assert tag and re.fullmatch(r"\d+\.\d+\.\d+", tag), f"{name}: pin x.y.z, not {tag}"
            versions[name] = tag
    assert {"temporal", SCHEMA_JOB, NAMESPACE_JOB, SEARCH_ATTRIBUTE_JOB} <= versions.keys()
    assert len(set(versions.values())) == 1, versions


# --- PostgreSQL -------------------------------------------------------------------------------


def test_postgres_has_a_healthcheck_and_a_named_data_volume(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    postgres = services["postgres"]
    repo, tag = image_reference(postgres["image"])
    assert repo == "postgres"
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    data_mounts = [v for v in postgres["volumes"] if v.split(":")[0] in (compose["volumes"] or {})]
    assert len(data_mounts) == 1, postgres["volumes"]
    target = data_mounts[0].split(":")[1]
    major = int(tag.split(".")[0]) if tag else 0
    # Images from 18 on put PGDATA under /var/lib/postgresql/<major>/docker; a volume on
    # .../data would hold nothing and the data would live in an anonymous volume.
    expected = "/var/lib/postgresql" if major >= 18 else "/var/lib/postgresql/data"
    assert expected == target


def test_postgres_init_creates_podium_database_and_temporal_role(
    services: dict[str, dict[str, Any]],
) -> None:
    init_dir = host_path(services["postgres"], "/docker-entrypoint-initdb.d")
    sql = "\n".join(p.read_text(encoding="utf-8") for p in sorted(init_dir.iterdir()))
    assert re.search(r"CREATE DATABASE podium OWNER podium", sql)
    # The schema job creates Temporal's databases as `temporal`, so that role needs CREATEDB.
    assert re.search(r"CREATE ROLE temporal\b[^;]*\bCREATEDB", sql)
    env = environment(services["postgres"])
    for variable in re.findall(r'"\$(\w+)"', sql):
        if variable.startswith(("TEMPORAL_", "PODIUM_")):
            assert variable in env, f"init script reads {variable}, postgres does not set it"


# --- Temporal ---------------------------------------------------------------------------------


def test_startup_order_gates_every_step(services: dict[str, dict[str, Any]]) -> None:
    assert depends_on(services[SCHEMA_JOB]) == {"postgres": "service_healthy"}
    assert depends_on(services["temporal"]) == {SCHEMA_JOB: "service_completed_successfully"}
    assert depends_on(services[NAMESPACE_JOB]) == {"temporal": "service_healthy"}
    assert depends_on(services[SEARCH_ATTRIBUTE_JOB]) == {
        NAMESPACE_JOB: "service_completed_successfully"
    }
    for name in PODIUM_SERVICES:
        deps = depends_on(services[name])
        assert deps.get("postgres") == "service_healthy", name
        assert deps.get(SEARCH_ATTRIBUTE_JOB) == "service_completed_successfully", name
    for name in ("temporal", "postgres"):
        assert "healthcheck" in services[name], f"service_healthy on {name} needs a healthcheck"


def test_schema_job_creates_and_migrates_both_databases(
    services: dict[str, dict[str, Any]],
) -> None:
    job = services[SCHEMA_JOB]
    assert image_reference(job["image"])[0] == "temporalio/admin-tools"
    assert "restart" not in job or job["restart"].startswith("on-failure")
    script = entry_script(job)
    text = script.read_text(encoding="utf-8")
    assert "--plugin postgres12" in text
    schema_root = re.search(r"schema_dir=(\S+)", text)
    assert schema_root and schema_root[1] == "/etc/temporal/schema/postgresql/v12"

    steps = []
    for argv in shell_commands(script):
        if "--db" in argv:
            database = argv[argv.index("--db") + 1]
            action = argv[argv.index("--db") + 2]
            steps.append((database, action, argv[argv.index("--db") + 3 :]))
    assert steps == [
        ("temporal", "create-database", []),
        ("temporal", "setup-schema", ["-v", "0.0"]),
        ("temporal", "update-schema", ["-d", "$schema_dir/temporal/versioned"]),
        ("temporal_visibility", "create-database", []),
        ("temporal_visibility", "setup-schema", ["-v", "0.0"]),
        ("temporal_visibility", "update-schema", ["-d", "$schema_dir/visibility/versioned"]),
    ]

    env = environment(job)
    assert env["POSTGRES_HOST"] == "postgres"
    assert env["POSTGRES_USER"] == environment(services["temporal"])["POSTGRES_USER"]
    assert env["SQL_PASSWORD"] == environment(services["temporal"])["POSTGRES_PWD"]


def test_server_is_configured_for_postgres_through_its_environment(
    services: dict[str, dict[str, Any]],
) -> None:
    server = services["temporal"]
    assert image_reference(server["image"])[0] == "temporalio/server"
    env = environment(server)
    assert env["DB"] == "postgres12"
    assert env["POSTGRES_SEEDS"] in services
    assert env["DBNAME"] == "temporal"
    assert env["VISIBILITY_DBNAME"] == "temporal_visibility"
    assert env["BIND_ON_IP"] == "0.0.0.0", "the healthcheck and other containers need 0.0.0.0"
    assert int(env["NUM_HISTORY_SHARDS"]) >= 1
    dynamic_config = host_path(server, env["DYNAMIC_CONFIG_FILE_PATH"])
    assert dynamic_config.is_file(), dynamic_config
    assert isinstance(yaml.safe_load(dynamic_config.read_text(encoding="utf-8")), dict)


def test_namespace_job_creates_default_namespace_only_when_missing(
    services: dict[str, dict[str, Any]],
) -> None:
    job = services[NAMESPACE_JOB]
    env = environment(job)
    assert env["NAMESPACE"] == "default"
    assert env["TEMPORAL_ADDRESS"].split(":")[0] in services
    commands = [" ".join(argv) for argv in shell_commands(entry_script(job))]
    describe = next(i for i, c in enumerate(commands) if "operator namespace describe" in c)
    create = next(i for i, c in enumerate(commands) if "operator namespace create" in c)
    assert describe < create
    assert any("operator cluster health" in c for c in commands[:describe])


def registered_search_attributes(job: dict[str, Any]) -> dict[str, str]:
    argv = [*job.get("entrypoint", []), *job["command"]]
    assert argv[:4] == ["temporal", "operator", "search-attribute", "create"], argv
    assert argv[argv.index("--namespace") + 1] == "default"
    names = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--name"]
    types = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--type"]
    assert len(names) == len(types) == len(set(names)), argv
    return dict(zip(names, types, strict=True))


def test_search_attribute_job_registers_every_podium_attribute(
    services: dict[str, dict[str, Any]],
) -> None:
    assert (
        registered_search_attributes(services[SEARCH_ATTRIBUTE_JOB]) == EXPECTED_SEARCH_ATTRIBUTES
    )


def test_search_attribute_job_matches_the_keys_the_workflows_use(
    services: dict[str, dict[str, Any]],
) -> None:
    in_code = {key.name: CLI_TYPE_NAMES[key.indexed_value_type] for key in search_attributes.ALL}
    assert in_code == registered_search_attributes(services[SEARCH_ATTRIBUTE_JOB])


def test_search_attributes_fit_postgres_visibility_slots(
    services: dict[str, dict[str, Any]],
) -> None:
    registered = registered_search_attributes(services[SEARCH_ATTRIBUTE_JOB])
    for kind in set(registered.values()):
        used = sum(1 for value in registered.values() if value == kind)
        assert used <= SQL_VISIBILITY_SLOTS[kind], f"{used} {kind} attributes, SQL holds fewer"


def test_ui_is_published_on_8233_and_points_at_the_server(
    services: dict[str, dict[str, Any]],
) -> None:
    ui = services["temporal-ui"]
    assert image_reference(ui["image"])[0] == "temporalio/ui"
    assert "8233:8080" in ui["ports"]
    assert environment(ui)["TEMPORAL_ADDRESS"] == "temporal:7233"


# --- Podium -----------------------------------------------------------------------------------


def test_worker_and_api_share_one_image_built_from_this_repository(
    services: dict[str, dict[str, Any]],
) -> None:
    images = set()
    for name in PODIUM_SERVICES:
        build = services[name]["build"]
        if isinstance(build, str):
            build = {"context": build}
        context, dockerfile = build.get("context", "."), build.get("dockerfile", "Dockerfile")
        assert (COMPOSE_FILE.parent / context).resolve() == ROOT, name
        assert (ROOT / dockerfile).resolve() == DOCKERFILE, name
        images.add(interpolate(services[name]["image"]))
    assert len(images) == 1, images


def test_worker_runs_the_worker_and_api_runs_uvicorn(services: dict[str, dict[str, Any]]) -> None:
    assert services["podium-worker"]["command"] == ["python", "worker.py"]
    assert services["podium-models"]["command"] == ["python", "worker.py"]
    api = services["podium-api"]["command"]
    assert api[:2] == ["uvicorn", "starter.api:app"]
    assert api[api.index("--host") + 1] == "0.0.0.0"
    assert api[api.index("--port") + 1] == "8000"


def test_podium_services_connect_to_temporal_and_postgres(
    services: dict[str, dict[str, Any]],
) -> None:
    for name in PODIUM_SERVICES:
        env = environment(services[name])
        host, _, port = env["TEMPORAL_ADDRESS"].partition(":")
        assert host in services and port == "7233", f"{name}: {env['TEMPORAL_ADDRESS']}"
        assert env["TEMPORAL_NAMESPACE"] == "default", name
        assert env["PODIUM_TASK_QUEUE"], name
        url = re.fullmatch(
            r"postgresql\+psycopg://(\w+):[^@]+@([\w-]+):5432/(\w+)", env["PODIUM_DATABASE_URL"]
        )
        assert url, f"{name}: {env['PODIUM_DATABASE_URL']}"
        assert url.groups() == ("podium", "postgres", "podium")
    worker, models, api = (environment(services[name]) for name in PODIUM_SERVICES)
    # Each worker's role is its own; every other setting is shared.
    own = ("PODIUM_WORKER_ROLE", "PODIUM_MODEL_ACTIVITIES_PER_SECOND")
    for name, env in (("podium-worker", worker), ("podium-models", models)):
        shared = {
            k: v for k, v in env.items() if k.startswith(("PODIUM_", "TEMPORAL_")) and k not in own
        }
        assert shared.items() <= api.items(), f"{name} and api must agree on shared settings"
    assert (worker["PODIUM_WORKER_ROLE"], models["PODIUM_WORKER_ROLE"]) == ("cases", "models")


def test_api_is_published_on_8000_with_a_healthz_healthcheck(
    services: dict[str, dict[str, Any]],
) -> None:
    api = services["podium-api"]
    assert "8000:8000" in api["ports"]
    probe = " ".join(api["healthcheck"]["test"])
    assert "http://127.0.0.1:8000/healthz" in probe


def test_long_running_services_restart(services: dict[str, dict[str, Any]]) -> None:
    for name in LONG_RUNNING_SERVICES:
        assert services[name].get("restart") in ("always", "unless-stopped"), name


# --- Dockerfile and build context -------------------------------------------------------------


def test_dockerfile_installs_the_project_and_copies_runtime_data() -> None:
    instructions = dockerfile_instructions()
    base = next(rest for keyword, rest in instructions if keyword == "FROM")
    assert re.fullmatch(r"python:3\.1[1-9]-slim(-\w+)?", base), base
    runs = " ".join(rest for keyword, rest in instructions if keyword == "RUN")
    assert "pip install --no-cache-dir ." in runs
    copied = set()
    for keyword, rest in instructions:
        if keyword == "COPY" and not rest.startswith("--from"):
            *sources, _destination = shlex.split(rest)
            copied.update(source.rstrip("/") for source in sources if not source.startswith("--"))
    assert {"datasets", "templates", "pyproject.toml", "worker.py"} <= copied
    for source in copied:
        assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
        assert not dockerignore_excludes(source), f"COPY {source}: .dockerignore drops it"
    cmd = next(rest for keyword, rest in reversed(instructions) if keyword == "CMD")
    assert yaml.safe_load(cmd) == ["python", "worker.py"]


def test_dockerfile_does_not_run_as_root() -> None:
    users = [rest for keyword, rest in dockerfile_instructions() if keyword == "USER"]
    assert users, "no USER instruction: the container would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), users[-1]


def test_dockerignore_keeps_the_build_context_small() -> None:
    for path in (".venv", "var", ".git", "tests", ".env", ".pytest_cache", ".mypy_cache"):
        assert dockerignore_excludes(path), path
    assert dockerignore_excludes("core/__pycache__/settings.cpython-311.pyc")
    for path in ("pyproject.toml", "README.md", "worker.py", "datasets/x.csv", "templates/x.j2"):
        assert not dockerignore_excludes(path), path


# --- metrics: Prometheus and Grafana --------------------------------------------------------

PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "podium.json"


def test_prometheus_scrapes_the_worker_and_the_api_where_they_serve_metrics(
    services: dict[str, dict[str, Any]],
) -> None:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    worker_env = environment(services["podium-worker"])
    [worker_sd] = jobs["podium-worker"]["dns_sd_configs"]
    assert ["podium-worker"] == worker_sd["names"]
    assert worker_env["PODIUM_WORKER_METRICS_HOST"] == "0.0.0.0"  # reachable in the network
    assert int(worker_env["PODIUM_WORKER_METRICS_PORT"]) == worker_sd["port"]
    models_env = environment(services["podium-models"])
    [models_sd] = jobs["podium-models"]["dns_sd_configs"]
    assert ["podium-models"] == models_sd["names"]
    assert int(models_env["PODIUM_WORKER_METRICS_PORT"]) == models_sd["port"]
    [api_targets] = jobs["podium-api"]["static_configs"]
    api_port = environment(services["podium-api"])["PODIUM_API_PORT"]
    assert [f"podium-api:{api_port}"] == api_targets["targets"]
    assert "/metrics" == jobs["podium-api"]["metrics_path"]
    mounts = services["prometheus"]["volumes"]
    assert any(m.startswith("./deploy/prometheus/prometheus.yml:") for m in mounts)


def test_the_dashboard_queries_only_series_podium_exports() -> None:
    """Every panel of the provisioned dashboard asks for a series the worker or the API
    defines (core/metrics.py, core/case_metrics.py, the approval gate's meter), so a renamed
    series fails here rather than as an empty panel."""
    dashboard = json.loads(DASHBOARD.read_text())
    sources = "\n".join(
        (ROOT / path).read_text()
        for path in (
            "core/metrics.py",
            "core/case_metrics.py",
            "workflows/components/approval.py",
        )
    )
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert len(exprs) >= 10
    for expr in exprs:
        for series in re.findall(r"\b(podium_[a-z_]+)", expr):
            base = re.sub(r"_(total|bucket|sum|count)$", "", series)
            assert f'"{base}"' in sources, f"{series} in {expr!r} is not a series Podium exports"
