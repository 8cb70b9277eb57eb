"""observability/postgres/init.sh, run by psql against a real PostgreSQL server: one database
and one login role per service, each role locked out of the other services' databases."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

pytestmark = [pytest.mark.contract, pytest.mark.postgres]

REPO = Path(__file__).resolve().parents[2]
INIT = REPO / "observability" / "postgres" / "init.sh"
SERVICES = ("auth", "product", "order")
# Quotes and a dollar sign: the script must pass passwords to SQL without splicing them in.
PASSWORD = "pa'ss\"w0rd$1 x"


@pytest.fixture
def server_env() -> dict[str, str]:
    server = os.environ.get("TIENDA_TEST_POSTGRES_URL")
    if not server:
        pytest.skip("TIENDA_TEST_POSTGRES_URL is not set; .ci/run sets it")
    # the server is there to test against: a missing client is a failure, not a reason to skip
    assert shutil.which("psql"), "psql (postgresql-client) is needed with TIENDA_TEST_POSTGRES_URL"
    url = make_url(server)
    env = {**os.environ, "PGHOST": url.host or "127.0.0.1", "PGPORT": str(url.port or 5432)}
    if url.password:
        env["PGPASSWORD"] = url.password
    return env | {
        "POSTGRES_USER": url.username or "postgres",
        "POSTGRES_DB": url.database or "postgres",
    }


def psql(
    env: dict[str, str], sql: str, *, user: str | None = None, database: str | None = None
) -> str:
    result = subprocess.run(
        [
            "psql",
            "-v",
            "ON_ERROR_STOP=1",
            "-At",
            "-U",
            user or env["POSTGRES_USER"],
            "-d",
            database or env["POSTGRES_DB"],
            "-c",
            sql,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if result.returncode != 0:
        raise RuntimeError(result.stderr)
    return result.stdout.strip()


@pytest.fixture
def databases(server_env: dict[str, str], tmp_path: Path) -> Iterator[dict[str, str]]:
    """The init script with names unique to this run (its SQL untouched); dropped afterwards."""
    suffix = uuid.uuid4().hex[:8]
    names = {service: f"tienda_{service}_{suffix}" for service in SERVICES}
    script = INIT.read_text()
    for service, name in names.items():
        line = f'create_service_database tienda_{service} "${service.upper()}_DB_PASSWORD"'
        assert line in script
        script = script.replace(line, line.replace(f"tienda_{service}", name))
    copy = tmp_path / "init.sh"
    copy.write_text(script)
    env = server_env | {f"{s.upper()}_DB_PASSWORD": PASSWORD for s in SERVICES}
    try:
        result = subprocess.run(
            ["sh", str(copy)], env=env, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stderr
        yield names
    finally:
        for name in names.values():
            psql(server_env, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            psql(server_env, f'DROP ROLE IF EXISTS "{name}"')


def test_each_service_gets_its_own_database_owned_by_its_own_role(
    server_env: dict[str, str], databases: dict[str, str]
) -> None:
    for name in databases.values():
        owner = psql(
            server_env,
            f"SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '{name}'",
        )
        login = psql(
            server_env,
            f"SELECT rolcanlogin AND rolpassword IS NOT NULL FROM pg_authid WHERE rolname = '{name}'",
        )
        assert owner == name
        assert login == "t"


def test_a_service_role_works_in_its_database_only(
    server_env: dict[str, str], databases: dict[str, str]
) -> None:
    as_service = server_env | {"PGPASSWORD": PASSWORD}
    auth, product = databases["auth"], databases["product"]

    psql(as_service, "CREATE TABLE users (id text PRIMARY KEY)", user=auth, database=auth)
    assert psql(as_service, "SELECT count(*) FROM users", user=auth, database=auth) == "0"
    with pytest.raises(RuntimeError, match="permission denied"):
        psql(as_service, "SELECT 1", user=auth, database=product)
    can_connect = psql(
        server_env, f"SELECT has_database_privilege('{product}', '{auth}', 'CONNECT')"
    )
    assert can_connect == "f"
