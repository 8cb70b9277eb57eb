"""A real Prometheus scrapes the running stack with a test variant of the project's config,
and PromQL finds the RED, outbox and saga series."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from debian_tools import debian_tool
from e2e_support import User, create_product, place_order
from tienda_devstack.stack import Stack
from tienda_platform.redis_server import free_port

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "observability" / "prometheus" / "prometheus.yml"


def prometheus_binary() -> str:
    return debian_tool("prometheus", "prometheus")


def scrape_config_for(stack: Stack) -> dict:
    """The project's config with the tienda jobs pointed at this stack's loopback ports."""
    config = yaml.safe_load(CONFIG.read_text())
    ports = {
        "auth_service": stack.ports.auth_metrics,
        "product_service": stack.ports.product_metrics,
        "order_service": stack.ports.order_metrics,
        "gateway": stack.ports.gateway,
    }
    jobs = [j for j in config["scrape_configs"] if j["job_name"] in ports]
    assert {j["job_name"] for j in jobs} == set(ports), "the project config scrapes every service"
    for job in jobs:
        job["static_configs"] = [{"targets": [f"127.0.0.1:{ports[job['job_name']]}"]}]
    config["scrape_configs"] = jobs
    config["global"]["scrape_interval"] = "1s"
    config["global"]["scrape_timeout"] = "1s"  # may not exceed the interval
    config["global"]["evaluation_interval"] = "1s"
    config.pop("alerting", None)
    config["rule_files"] = [str(CONFIG.parent / name) for name in config.get("rule_files", [])]
    return config


@pytest.fixture
def prometheus(stack: Stack, tmp_path: Path) -> Iterator[str]:
    config_file = tmp_path / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(scrape_config_for(stack)))
    port = free_port()
    log = (tmp_path / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            prometheus_binary(),
            f"--config.file={config_file}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while not _ready(url):
            assert process.poll() is None, (tmp_path / "prometheus.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "prometheus did not become ready"
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(10)
        log.close()


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def query(url: str, promql: str) -> list[dict]:
    response = httpx.get(f"{url}/api/v1/query", params={"query": promql}, timeout=5)
    response.raise_for_status()
    return list(response.json()["data"]["result"])


def eventually(
    url: str,
    promql: str,
    timeout: float = 30,
    until: Callable[[list[dict]], bool] = bool,
) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = query(url, promql)
        except httpx.HTTPError:
            result = []
        if until(result):
            return result
        assert time.monotonic() < deadline, f"{promql} gave {result}"
        time.sleep(0.25)


def jobs(result: list[dict]) -> set[str]:
    return {r["metric"]["job"] for r in result}


def test_prometheus_scrapes_red_outbox_and_saga_series(
    prometheus: str, api: httpx.Client, admin: User, customer: User
) -> None:
    product = create_product(api, admin, stock=2)
    place_order(api, customer, product["id"], 1)

    services = {"auth_service", "product_service", "order_service"}
    eventually(prometheus, "up == 1", until=lambda r: jobs(r) == services | {"gateway"})
    eventually(
        prometheus,
        "sum by (job) (grpc_server_handled_total)",
        until=lambda r: jobs(r) >= services,
    )
    eventually(prometheus, 'http_server_requests_total{job="gateway", route="/v1/orders"}')
    eventually(
        prometheus,
        "histogram_quantile(0.99, sum by (le) (rate(grpc_server_handling_seconds_bucket[1m])))",
    )
    eventually(prometheus, 'grpc_client_handled_total{job="gateway"}')
    eventually(prometheus, "tienda_outbox_backlog")
    eventually(prometheus, "tienda_events_published_total")
    eventually(prometheus, "tienda_events_consumed_total")
    eventually(prometheus, "tienda_saga_outcomes_total")
    eventually(prometheus, "tienda_build_info")
    rules = httpx.get(f"{prometheus}/api/v1/rules", timeout=5).json()["data"]["groups"]
    assert rules, "the project's alert rules load"
