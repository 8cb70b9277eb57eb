"""`make run` (python -m tienda_devstack run): ready, usable, stopped by Ctrl-C, data kept."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import astuple
from pathlib import Path

import httpx
import pytest
from tienda_devstack.stack import Ports, Stack
from tienda_platform import redis_server
from tienda_platform.redis_server import EMBEDDED_REDIS_URL_FILE, free_port

pytestmark = pytest.mark.e2e


def start_run(data_dir: Path, ports: Ports) -> tuple[subprocess.Popen[str], str]:
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("REDIS_URL",)},
        "AUTH_GRPC_PORT": str(ports.auth),
        "PRODUCT_GRPC_PORT": str(ports.product),
        "ORDER_GRPC_PORT": str(ports.order),
        "GATEWAY_PORT": str(ports.gateway),
        "AUTH_METRICS_PORT": str(ports.auth_metrics),
        "PRODUCT_METRICS_PORT": str(ports.product_metrics),
        "ORDER_METRICS_PORT": str(ports.order_metrics),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "tienda_devstack", "run", "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    banner = ""
    deadline = time.monotonic() + 60
    assert process.stdout is not None
    while "Press Ctrl-C to stop." not in banner:
        line = process.stdout.readline()
        assert line or process.poll() is None, f"make run exited early:\n{banner}"
        banner += line
        assert time.monotonic() < deadline, banner
    return process, banner


def interrupt(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=30)
    return output


def port_closed(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_make_run_starts_serves_stops_and_keeps_data(tmp_path: Path) -> None:
    ports = Ports.free()
    process, banner = start_run(tmp_path, ports)
    try:
        login = re.search(r"admin login\s+(\S+) / (\S+)", banner)
        assert login, banner
        assert re.search(r"ready in \d+\.\d+s", banner)
        api = f"http://127.0.0.1:{ports.gateway}"
        assert httpx.get(f"{api}/readyz").status_code == 200
        seeded = httpx.get(f"{api}/v1/products", params={"page_size": 100}).json()["products"]
        assert seeded, "demo products are seeded on the first run"
        token = httpx.post(
            f"{api}/v1/auth/login", json={"email": login[1], "password": login[2]}
        ).json()["access_token"]
        created = httpx.post(
            f"{api}/v1/products",
            headers={"Authorization": f"Bearer {token}"},
            json={"sku": "KEEP-1", "name": "Kept", "price_cents": 100, "stock": 1},
        )
        assert created.status_code == 200, created.text
        # the dead-letter CLI finds the embedded Redis by the data folder alone
        dead_letters = subprocess.run(
            [sys.executable, "-m", "tienda_platform.dead_letters", "list"],
            env={
                **{k: v for k, v in os.environ.items() if k != "REDIS_URL"},
                "TIENDA_DATA_DIR": str(tmp_path),
            },
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert (dead_letters.returncode, dead_letters.stdout) == (0, ""), dead_letters.stderr
        assert (tmp_path / EMBEDDED_REDIS_URL_FILE).read_text().startswith("redis://127.0.0.1:")
    finally:
        output = interrupt(process)
    assert process.returncode == 0, output
    assert "stopped" in output
    assert not (tmp_path / EMBEDDED_REDIS_URL_FILE).exists()  # its Redis is gone
    for port in (ports.auth, ports.product, ports.order, ports.gateway):
        assert port_closed(port)

    process, second_banner = start_run(tmp_path, ports)
    try:
        assert f"{login[1]} / {login[2]}" in second_banner  # same admin
        products = httpx.get(
            f"http://127.0.0.1:{ports.gateway}/v1/products", params={"page_size": 100}
        ).json()["products"]
        assert "KEEP-1" in {p["sku"] for p in products}
        assert len(products) == len(seeded) + 1  # demo products were not seeded twice
    finally:
        interrupt(process)
    assert process.returncode == 0


def test_the_stack_s_redis_takes_no_port_its_services_were_given(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The services' ports are chosen before the services bind them: still free when the
    embedded Redis starts first and looks for a port, they must not be offered to it."""
    ports = Ports.free()
    spare = free_port(avoid=astuple(ports))
    # the port picker's draws: the order service's metrics port, then a free one
    draws = iter([ports.order_metrics, spare])
    monkeypatch.setattr(redis_server.random, "choice", lambda _ports: next(draws))
    stack = Stack(data_dir=tmp_path, ports=ports, env={})
    stack.start(services=())  # the embedded Redis alone
    try:
        assert stack.redis is not None and stack.redis.port == spare
    finally:
        stack.stop()
