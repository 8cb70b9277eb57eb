"""docker-compose.yml: valid Compose, and true to the code, the Dockerfiles and the config files.

There is no Docker engine on the development machines, so nothing here starts a container;
instead every name the compose file relies on is checked against what it names.
"""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.contract

REPO = Path(__file__).resolve().parents[2]
OBSERVABILITY = REPO / "observability"

# The Compose specification's JSON schema, from the compose-spec/compose-spec repository
# (schema/compose-spec.json, Apache-2.0: see compose-spec.LICENSE), as vendored by
# check-jsonschema 0.39.0. Vendored because the tests run without network access.
COMPOSE_SCHEMA = Path(__file__).with_name("compose-spec.json")

# compose service -> (package folder, module, gRPC port or None, metrics port)
TIENDA = {
    "auth-service": ("auth_service", "auth_service", 50051, 9101),
    "product-service": ("product_service", "product_service", 50052, 9102),
    "order-service": ("order_service", "order_service", 50053, 9103),
    "gateway": ("gateway", "gateway", None, 8080),
}
PORT_VARIABLES = {
    "auth-service": {"AUTH_GRPC_PORT": 50051, "AUTH_METRICS_PORT": 9101},
    "product-service": {"PRODUCT_GRPC_PORT": 50052, "PRODUCT_METRICS_PORT": 9102},
    "order-service": {"ORDER_GRPC_PORT": 50053, "ORDER_METRICS_PORT": 9103},
    "gateway": {"GATEWAY_PORT": 8080},
}
# The variables the services read (the deployment contract); OTEL_* are read by the SDK.
CONTRACT = {
    "TIENDA_ENV",
    "LOG_LEVEL",
    "TIENDA_DATA_DIR",
    "BIND_HOST",
    "AUTH_GRPC_TARGET",
    "PRODUCT_GRPC_TARGET",
    "ORDER_GRPC_TARGET",
    "JWT_ISSUER",
    "JWT_AUDIENCE",
    "SHUTDOWN_GRACE_SECONDS",
    "AUTH_DATABASE_URL",
    "PRODUCT_DATABASE_URL",
    "ORDER_DATABASE_URL",
    "AUTH_GRPC_PORT",
    "AUTH_METRICS_PORT",
    "PRODUCT_GRPC_PORT",
    "PRODUCT_METRICS_PORT",
    "ORDER_GRPC_PORT",
    "ORDER_METRICS_PORT",
    "GATEWAY_PORT",
    "BOOTSTRAP_ADMIN_EMAIL",
    "BOOTSTRAP_ADMIN_PASSWORD",
    "PRODUCT_SEED_DEMO",
    "PAYMENT_TIMEOUT_SECONDS",
    "REDIS_URL",
    "ORDER_SAGA_MODE",
    "SMTP_HOST",
    "SMTP_PORT",
    "WEBHOOK_ALLOW_PRIVATE",
    # Service-to-service credentials: auth_service's accepted clients, order_service's own.
    "SERVICE_CLIENT_SECRETS",
    "SERVICE_CLIENT_SECRET",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
}
OBSERVABILITY_STACK = {
    "otel-collector",
    "jaeger",
    "prometheus",
    "alertmanager",
    "grafana",
    "elasticsearch",
    "filebeat",
    "kibana",
    "kibana-import",
}
# Services that cannot have a healthcheck, and why.
NO_HEALTHCHECK = {
    "otel-collector": "distroless image: no shell or client to probe with",
    "kibana-import": "a one-shot job that exits",
}
_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:?[-?+])?([^}]*)\}")


def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def container_ports(service: dict[str, Any]) -> set[int]:
    """Container ports a service publishes or exposes."""
    ports = set()
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            ports.add(int(entry["target"]))
        else:
            ports.add(int(str(entry).split("/")[0].rsplit(":", 1)[-1]))
    ports |= {int(str(p).split("/")[0]) for p in service.get("expose", [])}
    return ports


def published(service: dict[str, Any]) -> dict[int, int]:
    """container port -> host port of the published ports."""
    mapping = {}
    for entry in service.get("ports", []):
        parts = str(entry).split("/")[0].split(":")
        assert len(parts) >= 2, f"publish with an explicit host port: {entry}"
        mapping[int(parts[-1])] = int(parts[-2])
    return mapping


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in (raw.strip() for raw in text.splitlines())
        if line and not line.startswith("#")
    ]


def has_healthcheck(name: str, service: dict[str, Any]) -> bool:
    if "healthcheck" in service:
        return not service["healthcheck"].get("disable", False)
    if name in TIENDA:
        dockerfile = REPO / service["build"]["dockerfile"]
        return any(kind == "HEALTHCHECK" for kind, _ in dockerfile_instructions(dockerfile))
    return False


def test_compose_file_matches_the_compose_specification_schema() -> None:
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("check-jsonschema")),
            "--schemafile",
            str(COMPOSE_SCHEMA),
            str(REPO / "docker-compose.yml"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stdout + result.stderr


def test_schema_check_refuses_what_compose_would_refuse(tmp_path: Path) -> None:
    broken = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    broken["services"]["gateway"]["depends_on"]["order-service"]["condition"] = "when_ready"
    broken["services"]["redis"]["restartt"] = "always"
    path = tmp_path / "docker-compose.yml"
    path.write_text(yaml.safe_dump(broken))

    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("check-jsonschema")),
            "--schemafile",
            str(COMPOSE_SCHEMA),
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode != 0
    assert "when_ready" in result.stdout
    assert "restartt" in result.stdout


def test_the_whole_system_is_there(compose: dict[str, Any]) -> None:
    defined = services(compose)

    assert set(TIENDA) | {"postgres", "redis", "mailpit"} | OBSERVABILITY_STACK <= set(defined)
    assert defined["postgres"]["image"].startswith("postgres:16")
    assert defined["redis"]["image"].startswith("redis:7")
    assert "--appendonly" in defined["redis"]["command"]
    assert defined["redis"]["command"][defined["redis"]["command"].index("--appendonly") + 1] == (
        "yes"
    )
    assert defined["jaeger"]["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"
    assert defined["elasticsearch"]["environment"]["discovery.type"] == "single-node"


def test_plain_up_starts_everything_and_the_light_mode_leaves_out_observability(
    compose: dict[str, Any],
) -> None:
    defined = services(compose)
    env_example = dotenv(REPO / ".env.example")

    for name, service in defined.items():
        expected = ["observability"] if name in OBSERVABILITY_STACK else None
        assert service.get("profiles") == expected, name
    assert env_example["COMPOSE_PROFILES"] == "observability"
    # Light mode must start cleanly: nothing in the core waits for the observability stack.
    for name, service in defined.items():
        if name not in OBSERVABILITY_STACK:
            assert not set(service.get("depends_on", {})) & OBSERVABILITY_STACK, name


@pytest.mark.parametrize("name", TIENDA)
def test_service_builds_from_its_dockerfile_in_the_repository_root(
    compose: dict[str, Any], name: str
) -> None:
    build = services(compose)[name]["build"]
    folder = TIENDA[name][0]

    assert (REPO / build["context"]).resolve() == REPO
    assert build["dockerfile"] == f"{folder}/Dockerfile"
    assert (REPO / build["dockerfile"]).is_file()
    assert (REPO / folder / "pyproject.toml").is_file()


@pytest.mark.parametrize("name", TIENDA)
def test_dockerfile_command_runs_a_module_that_exists(compose: dict[str, Any], name: str) -> None:
    folder, module, _, _ = TIENDA[name]
    dockerfile = REPO / services(compose)[name]["build"]["dockerfile"]
    commands = [args for kind, args in dockerfile_instructions(dockerfile) if kind == "CMD"]

    assert commands, f"{dockerfile} has no CMD"
    assert yaml.safe_load(commands[-1]) == ["python", "-m", module]
    main = REPO / folder / "src" / module / "__main__.py"
    assert main.is_file(), f"`python -m {module}` needs {main.relative_to(REPO)}"


def test_every_mounted_file_exists(compose: dict[str, Any]) -> None:
    mounted = []
    for service in services(compose).values():
        for volume in service.get("volumes", []):
            source = volume["source"] if isinstance(volume, dict) else volume.split(":")[0]
            if source.startswith("."):
                mounted.append(source)

    assert mounted
    for source in mounted:
        path = (REPO / source).resolve()
        assert path.exists(), f"{source} is mounted but does not exist"
        assert path.is_relative_to(OBSERVABILITY), f"{source}: configs live in observability/"


def test_named_volumes_are_declared(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    used = set()
    for service in services(compose).values():
        for volume in service.get("volumes", []):
            source = volume["source"] if isinstance(volume, dict) else volume.split(":")[0]
            if not source.startswith((".", "/")):
                used.add(source)

    assert used == declared
    for stateful in ("postgres", "redis", "prometheus", "grafana", "elasticsearch"):
        assert any(
            not str(v).startswith((".", "/")) for v in services(compose)[stateful]["volumes"]
        ), f"{stateful} keeps its data in a named volume"


@pytest.mark.parametrize("name", TIENDA)
def test_published_ports_are_the_default_ports(compose: dict[str, Any], name: str) -> None:
    _, _, grpc_port, metrics_port = TIENDA[name]
    expected = {grpc_port, metrics_port} - {None}
    service = services(compose)[name]
    dockerfile = REPO / service["build"]["dockerfile"]
    exposed = {
        int(port)
        for kind, args in dockerfile_instructions(dockerfile)
        if kind == "EXPOSE"
        for port in args.split()
    }

    assert published(service) == {port: port for port in expected}
    assert exposed == expected
    for variable, default in PORT_VARIABLES[name].items():
        assert int(environment(service).get(variable, default)) == default


def test_every_depends_on_names_a_defined_service(compose: dict[str, Any]) -> None:
    defined = services(compose)
    for name, service in defined.items():
        depends_on = service.get("depends_on", {})
        names = depends_on if isinstance(depends_on, list) else list(depends_on)
        for dependency in names:
            assert dependency in defined, f"{name} depends on undefined {dependency}"
            assert dependency != name


def test_healthy_conditions_wait_on_services_that_have_a_healthcheck(
    compose: dict[str, Any],
) -> None:
    defined = services(compose)
    for name, service in defined.items():
        for dependency, condition in (service.get("depends_on") or {}).items():
            if condition["condition"] == "service_healthy":
                assert has_healthcheck(dependency, defined[dependency]), (
                    f"{name} waits for {dependency} to be healthy, which has no healthcheck"
                )


def test_every_service_that_can_have_a_healthcheck_has_one(compose: dict[str, Any]) -> None:
    for name, service in services(compose).items():
        if name not in NO_HEALTHCHECK:
            assert has_healthcheck(name, service), name


def test_start_order_is_gated_on_health(compose: dict[str, Any]) -> None:
    defined = services(compose)

    def waits_for(name: str) -> set[str]:
        return {
            dependency
            for dependency, condition in defined[name]["depends_on"].items()
            if condition["condition"] == "service_healthy"
        }

    assert {"postgres", "redis"} <= waits_for("auth-service")
    assert {"postgres", "redis", "auth-service"} <= waits_for("product-service")
    assert {"postgres", "redis", "auth-service", "product-service"} <= waits_for("order-service")
    assert {"auth-service", "product-service", "order-service"} <= waits_for("gateway")
    assert "kibana" in waits_for("kibana-import")
    assert "elasticsearch" in waits_for("filebeat")


def settings_variables(package: str) -> set[str] | None:
    """Environment variables the service's Settings class reads; None if not importable."""
    try:
        config = importlib.import_module(f"{package}.config")
    except Exception:
        return None
    settings = config.Settings
    prefix = str(settings.model_config.get("env_prefix") or "")
    names = set()
    for field_name, field in settings.model_fields.items():
        alias = field.validation_alias
        choices = getattr(alias, "choices", None)
        if choices is not None:
            names |= {c for c in choices if isinstance(c, str)}
        elif isinstance(alias, str):
            names.add(alias)
        else:
            names.add(f"{prefix}{field_name}".upper())
    return names


def read_in_sources(variable: str, folder: str) -> bool:
    """True when the name appears as a string literal in the service's or the platform's code."""
    literal = re.compile(rf"[\"']{re.escape(variable)}[\"']")
    roots = [REPO / folder / "src", REPO / "libs" / "platform" / "src"]
    return any(literal.search(p.read_text()) for root in roots for p in root.rglob("*.py"))


def otel_sdk_variables() -> set[str]:
    from opentelemetry.sdk import environment_variables

    return {v for k, v in vars(environment_variables).items() if k.startswith("OTEL_")}


@pytest.mark.parametrize("name", TIENDA)
def test_every_variable_set_on_a_service_is_one_it_reads(
    compose: dict[str, Any], name: str
) -> None:
    folder, package, _, _ = TIENDA[name]
    env = environment(services(compose)[name])
    from_settings = settings_variables(package)
    sdk = otel_sdk_variables()

    assert set(env) <= CONTRACT, f"not in the deployment contract: {set(env) - CONTRACT}"
    unread = sorted(
        variable
        for variable in env
        if not (variable in sdk and variable.startswith("OTEL_"))
        and variable not in (from_settings or set())
        and not read_in_sources(variable, folder)
    )
    assert not unread, f"{name} is given variables its code does not read: {unread}"


@pytest.mark.parametrize("name", TIENDA)
def test_redis_is_given_to_the_services_whose_code_connects_to_it(
    compose: dict[str, Any], name: str
) -> None:
    """Every service's settings have a redis_url (the base class's), so reading the variable
    proves nothing: the services that use it name it in their own code (the gateway, which
    publishes and reads no event, does not)."""
    folder = TIENDA[name][0]
    uses_redis = any("redis_url" in p.read_text() for p in (REPO / folder / "src").rglob("*.py"))
    assert ("REDIS_URL" in environment(services(compose)[name])) == uses_redis


@pytest.mark.parametrize("name", TIENDA)
def test_service_addresses_name_compose_services(compose: dict[str, Any], name: str) -> None:
    defined = services(compose)
    env = environment(defined[name])
    targets = {
        "AUTH_GRPC_TARGET": "auth-service:50051",
        "PRODUCT_GRPC_TARGET": "product-service:50052",
        "ORDER_GRPC_TARGET": "order-service:50053",
    }

    for variable, target in targets.items():
        if variable in env:
            assert env[variable] == target
    if "REDIS_URL" in env:
        assert env["REDIS_URL"] == "redis://redis:6379/0"
    assert env["BIND_HOST"] == "0.0.0.0"
    endpoint = re.fullmatch(
        r"\$\{OTEL_EXPORTER_OTLP_ENDPOINT-http://([\w-]+):(\d+)\}",
        env["OTEL_EXPORTER_OTLP_ENDPOINT"],
    )
    assert endpoint, env["OTEL_EXPORTER_OTLP_ENDPOINT"]
    assert endpoint[1] in defined
    assert int(endpoint[2]) in container_ports(defined[endpoint[1]])
    assert env["OTEL_SERVICE_NAME"] == TIENDA[name][1]
    if "SMTP_HOST" in env:
        assert env["SMTP_HOST"] in defined
        assert int(env["SMTP_PORT"]) in container_ports(defined[env["SMTP_HOST"]])


def test_every_service_has_the_same_tracing_settings(compose: dict[str, Any]) -> None:
    """A service that records no spans (no endpoint) marks the traces it starts as not
    sampled, and the services after it respect that: all of them export, or none."""
    defined = services(compose)
    settings = {
        name: {
            k: v
            for k, v in environment(defined[name]).items()
            if k.startswith("OTEL_") and k != "OTEL_SERVICE_NAME"
        }
        for name in TIENDA
    }
    first = next(iter(settings.values()))
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" in first
    assert all(each == first for each in settings.values()), settings


def test_each_service_has_its_own_database_and_role(compose: dict[str, Any]) -> None:
    defined = services(compose)
    init = (OBSERVABILITY / "postgres" / "init.sh").read_text()
    created = dict(re.findall(r'^create_service_database (\w+) "\$(\w+)"$', init, re.MULTILINE))
    postgres_env = environment(defined["postgres"])
    mount = next(v for v in defined["postgres"]["volumes"] if "init.sh" in v)

    assert mount.split(":")[1].startswith("/docker-entrypoint-initdb.d/")
    seen = set()
    for name, variable in [
        ("auth-service", "AUTH_DATABASE_URL"),
        ("product-service", "PRODUCT_DATABASE_URL"),
        ("order-service", "ORDER_DATABASE_URL"),
    ]:
        url = environment(defined[name])[variable]
        match = re.fullmatch(
            r"postgresql\+asyncpg://(\w+):\$\{(\w+):\?[^}]+\}@postgres:5432/(\w+)", url
        )
        assert match, url
        user, password_variable, database = match.groups()
        assert user == database, "each service's role owns its database"
        assert created.get(database) == password_variable
        assert password_variable in postgres_env
        seen.add(database)
    assert seen == set(created)


def dotenv(path: Path) -> dict[str, str]:
    pairs = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def test_env_example_lists_every_variable_and_commits_no_secret() -> None:
    text = (REPO / "docker-compose.yml").read_text()
    env_example = dotenv(REPO / ".env.example")
    interpolated = _INTERPOLATION.findall(text)

    assert interpolated
    for variable, operator, _ in interpolated:
        if operator == ":?":
            assert variable in env_example, f"{variable} is required: list it in .env.example"
            assert env_example[variable] == "", f"{variable} is a secret: leave it empty"
        elif not operator:
            assert variable in env_example, f"{variable} has no default"
    ignored = (REPO / ".gitignore").read_text().split()
    assert ".env" in ignored


def test_order_service_presents_a_secret_auth_service_accepts(compose: dict[str, Any]) -> None:
    auth = environment(services(compose)["auth-service"])
    order = environment(services(compose)["order-service"])
    clients = dict(pair.split(":", 1) for pair in auth["SERVICE_CLIENT_SECRETS"].split(","))

    assert clients["order_service"] == order["SERVICE_CLIENT_SECRET"]
    assert order["SERVICE_CLIENT_SECRET"].startswith("${ORDER_SERVICE_CLIENT_SECRET:?")


def test_required_secrets_have_no_default(compose: dict[str, Any]) -> None:
    text = (REPO / "docker-compose.yml").read_text()
    required = {
        variable for variable, operator, _ in _INTERPOLATION.findall(text) if operator == ":?"
    }

    assert {
        "POSTGRES_PASSWORD",
        "AUTH_DB_PASSWORD",
        "PRODUCT_DB_PASSWORD",
        "ORDER_DB_PASSWORD",
        "BOOTSTRAP_ADMIN_PASSWORD",
        "GRAFANA_ADMIN_PASSWORD",
        "ORDER_SERVICE_CLIENT_SECRET",
    } <= required


def test_published_ports_listen_on_loopback_only(compose: dict[str, Any]) -> None:
    for name, service in services(compose).items():
        for entry in service.get("ports", []):
            assert str(entry).startswith("127.0.0.1:"), f"{name} publishes {entry} to the network"
