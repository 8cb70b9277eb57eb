"""`python -m auth_service` as a process: migrate, rotate-keys, and serve (relaying its events
to Redis) until SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from pathlib import Path

import grpc
import pytest
from auth.v1 import auth_pb2, auth_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tienda_platform.testing import eventually

from .auth_streams import stream_events

pytestmark = pytest.mark.integration

ADMIN_PASSWORD = "process-admin-pass-1"
USER_PASSWORD = "process-user-pass-2"
CLIENT_SECRET = "process-client-secret-" + "c" * 32


def _environment(data_dir: Path, redis_url: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AUTH_", "BOOTSTRAP_", "SERVICE_", "REDIS_", "OTEL_"))
    }
    env.update(
        TIENDA_ENV="test",
        TIENDA_DATA_DIR=str(data_dir),
        AUTH_GRPC_PORT="0",
        AUTH_METRICS_PORT="0",
        ARGON2_TIME_COST="1",
        ARGON2_MEMORY_COST_KIB="8",
        ARGON2_PARALLELISM="1",
        BOOTSTRAP_ADMIN_EMAIL="root@example.com",
        BOOTSTRAP_ADMIN_PASSWORD=ADMIN_PASSWORD,
        SERVICE_CLIENT_SECRETS=f"order_service:{CLIENT_SECRET}",
        REDIS_URL=redis_url,
    )
    return env


async def _run(*args: str, env: dict[str, str]) -> str:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "auth_service", *args, env=env, stdout=asyncio.subprocess.PIPE
    )
    stdout, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, stdout.decode()
    return stdout.decode()


async def test_serve_migrate_and_rotate_keys(tmp_path: Path, redis_url: str) -> None:
    env = _environment(tmp_path, redis_url)
    await _run("migrate", env=env)
    assert (tmp_path / "auth.db").exists()
    [rotated] = [
        json.loads(line)
        for line in (await _run("rotate-keys", env=env)).splitlines()
        if json.loads(line)["message"] == "signing key rotated"
    ]

    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "auth_service", env=env, stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    lines: list[str] = []
    try:
        port = None
        while port is None:
            line = (await asyncio.wait_for(process.stdout.readline(), timeout=60)).decode()
            assert line, "auth_service exited before serving:\n" + "".join(lines)
            lines.append(line)
            if match := re.search(r"serving \S+ on [\d.]+:(\d+)", json.loads(line)["message"]):
                port = int(match.group(1))
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="auth.v1.AuthService")
            )
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            stub = auth_pb2_grpc.AuthServiceStub(channel)
            jwks = await stub.GetJwks(auth_pb2.GetJwksRequest())
            # Start-up found the rotated key active and made no other.
            assert [k.kid for k in jwks.keys] == [rotated["labels.kid"]]
            login = await stub.Login(
                auth_pb2.LoginRequest(email="root@example.com", password=ADMIN_PASSWORD)
            )
            assert login.token_type == "Bearer"
            service = await stub.IssueServiceToken(
                auth_pb2.IssueServiceTokenRequest(
                    client_id="order_service", client_secret=CLIENT_SECRET
                )
            )
            user = await stub.Register(
                auth_pb2.RegisterRequest(
                    email="ada@example.com", password=USER_PASSWORD, full_name="Ada"
                )
            )
            # The relay runs in the background of the serving process.
            # the admin's creation (user.updated), then Ada's registration
            await eventually(lambda: _has_events(redis_url, 2))
            created, registered = await stream_events(redis_url)
            assert (created.envelope.type, created.payload.email) == (  # type: ignore[attr-defined]
                "user.updated",
                "root@example.com",
            )
            assert (registered.envelope.type, registered.envelope.subject) == (
                "user.registered",
                f"users/{user.id}",
            )
        process.send_signal(signal.SIGTERM)
        rest, _ = await asyncio.wait_for(process.communicate(), timeout=30)
        lines.append(rest.decode())
        assert process.returncode == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    output = "".join(lines)
    assert "bootstrap admin created" in output
    assert ADMIN_PASSWORD not in output and "$argon2" not in output
    assert login.access_token not in output and login.refresh_token not in output
    assert CLIENT_SECRET not in output and service.access_token not in output
    assert USER_PASSWORD not in output


async def _has_events(redis_url: str, count: int) -> bool:
    return len(await stream_events(redis_url)) == count
