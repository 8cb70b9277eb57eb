"""A real Prometheus scrapes the running stack with a test variant of the project's config,
and PromQL finds the RED, outbox and saga series."""

from __future__ import annotations

import importlib
import re
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from debian_tools import debian_tool
from e2e_support import User, create_product, place_order
from prometheus_client.parser import text_string_to_metric_families
from sinks import WebhookReceiver
from tienda_devstack.stack import GRPC_SERVICES, Stack
from tienda_platform.redis_server import free_port

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "observability" / "prometheus" / "prometheus.yml"
COMPOSE = ROOT / "docker-compose.yml"


def compose_features() -> list[str]:
    """The --enable-feature flags docker-compose.yml gives Prometheus (exemplar storage)."""
    command = yaml.safe_load(COMPOSE.read_text())["services"]["prometheus"]["command"]
    return [flag for flag in command if flag.startswith("--enable-feature=")]


def prometheus_binary() -> str:
    return debian_tool("prometheus", "prometheus")


def scrape_config_for(stack: Stack) -> dict:
    """The project's config with the tienda jobs pointed at this stack's loopback ports."""
    config = yaml.safe_load(CONFIG.read_text())
    ports = {
        **{service: stack.metrics_port(service) for service in GRPC_SERVICES},
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
            *compose_features(),
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
    prometheus: str,
    api: httpx.Client,
    admin: User,
    customer: User,
    stack: Stack,
    webhook_receiver: WebhookReceiver,
) -> None:
    mode = stack.env["ORDER_SAGA_MODE"]
    services = {"auth_service", "product_service", "order_service"}
    publishers = services  # each has an outbox
    consumers = {"product_service", "order_service"}
    eventually(prometheus, "up == 1", until=lambda r: jobs(r) == services | {"gateway"})
    hook = api.post(
        "/v1/webhooks",
        headers=customer.headers,
        json={"url": f"{webhook_receiver.url}/metrics-test", "event_types": ["order.confirmed"]},
    )
    assert hook.status_code == 200, hook.text
    product = create_product(api, admin, stock=2)
    place_order(api, customer, product["id"], 1)
    # a series is new at its first scrape, which no rate counts: a second order, once the
    # first one's series are scraped, is one that rates see
    eventually(
        prometheus,
        'grpc_server_handling_seconds_count{job="order_service", grpc_method="CreateOrder"}',
    )
    place_order(api, customer, product["id"], 1)
    eventually(
        prometheus,
        "sum by (job) (grpc_server_handled_total)",
        until=lambda r: jobs(r) >= services,
    )
    eventually(prometheus, 'http_server_requests_total{job="gateway", route="/v1/orders"}')
    # a latency quantile that is a number, not NaN
    eventually(
        prometheus,
        'histogram_quantile(0.99, sum by (le) (rate(grpc_server_handling_seconds_bucket{job="order_service"}[1m])))',
        until=lambda r: bool(r) and r[0]["value"][1] not in ("NaN", "+Inf"),
    )
    # client side: the gateway's calls, and order_service's own to product_service
    eventually(
        prometheus,
        "sum by (job) (grpc_client_handled_total)",
        until=lambda r: jobs(r) >= {"gateway", "order_service"},
    )
    eventually(
        prometheus,
        'grpc_client_handled_total{job="order_service", grpc_service="product.v1.ProductService"}',
    )
    for metric in ("tienda_outbox_backlog", "tienda_outbox_oldest_unsent_age_seconds"):
        eventually(prometheus, metric, until=lambda r: jobs(r) >= publishers)
    eventually(prometheus, "tienda_events_published_total", until=lambda r: jobs(r) >= publishers)
    eventually(prometheus, "tienda_events_consumed_total", until=lambda r: jobs(r) >= consumers)
    for metric in ("tienda_consumer_pending", "tienda_consumer_lag"):
        eventually(prometheus, metric, until=lambda r: jobs(r) >= consumers)
    # the saga's own group, not only the notification groups
    eventually(prometheus, 'tienda_consumer_lag{job="order_service", group="order_service"}')
    eventually(prometheus, "tienda_dead_letters", until=lambda r: jobs(r) >= consumers)
    eventually(
        prometheus,
        f'tienda_saga_outcomes_total{{job="order_service", mode="{mode}"}}',
    )
    eventually(prometheus, "tienda_emails_total", until=lambda r: jobs(r) == {"order_service"})
    eventually(
        prometheus, "faststream_published_messages_total", until=lambda r: jobs(r) >= publishers
    )
    eventually(
        prometheus, "faststream_received_messages_total", until=lambda r: jobs(r) >= consumers
    )
    eventually(
        prometheus,
        'tienda_webhook_deliveries_total{job="order_service", result="succeeded"} >= 1',
    )
    # every process names its build, the gateway's included (the overview dashboard's job
    # selector lists the jobs of tienda_build_info)
    built = eventually(
        prometheus, "tienda_build_info == 1", until=lambda r: jobs(r) == services | {"gateway"}
    )
    assert {
        (r["metric"]["job"], r["metric"]["service"], r["metric"]["version"]) for r in built
    } == {(job, job, importlib.import_module(job).__version__) for job in services | {"gateway"}}
    rules = httpx.get(f"{prometheus}/api/v1/rules", timeout=5).json()["data"]["groups"]
    assert rules, "the project's alert rules load"


def test_latency_exemplars_link_the_metrics_to_traces(
    prometheus: str, api: httpx.Client, admin: User, customer: User
) -> None:
    """The services record the trace id of a sampled request with its duration, and the
    OpenMetrics scrape brings it to Prometheus, for Grafana's exemplar links to Jaeger."""
    product = create_product(api, admin, stock=2)
    place_order(api, customer, product["id"], 1)
    wanted = {"gateway", "order_service", "product_service"}

    def exemplar_jobs() -> set[str]:
        now = time.time()
        response = httpx.get(
            f"{prometheus}/api/v1/query_exemplars",
            params={
                "query": "grpc_server_handling_seconds_bucket or http_server_request_duration_seconds_bucket",
                "start": now - 300,
                "end": now + 60,
            },
            timeout=5,
        )
        response.raise_for_status()
        found = set()
        for series in response.json()["data"]:
            if any(len(e["labels"].get("trace_id", "")) == 32 for e in series["exemplars"]):
                found.add(series["seriesLabels"]["job"])
        return found

    deadline = time.monotonic() + 30
    while not wanted <= (found := exemplar_jobs()):
        assert time.monotonic() < deadline, f"exemplars only from {found}"
        time.sleep(0.25)


# an entity's id (UUIDs, the ids of orders, products and users) or a trace id in a label value
# would make a new series for every request
ID_LIKE = re.compile(r"[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}", re.I)


def test_every_exposition_passes_promtool_and_labels_carry_no_ids(
    api: httpx.Client, admin: User, customer: User, stack: Stack
) -> None:
    """Prometheus naming conventions as `promtool check metrics` checks them (units in names,
    `_total` counters, help text), and bounded labels: requests for many different ids, and
    paths that match no route, add no label value that names one."""
    product = create_product(api, admin, stock=2)
    order = place_order(api, customer, product["id"], 1)
    assert api.get(f"/v1/orders/{order['id']}", headers=customer.headers).status_code == 200
    missing = str(uuid.uuid4())
    assert api.get(f"/v1/orders/{missing}", headers=customer.headers).status_code == 404
    assert api.get(f"/v1/no-such-thing/{missing}").status_code == 404
    promtool = debian_tool("promtool", "prometheus")
    ports = {
        **{service: stack.metrics_port(service) for service in GRPC_SERVICES},
        "gateway": stack.ports.gateway,
    }
    for job, port in ports.items():
        exposition = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        lint = subprocess.run(
            [promtool, "check", "metrics"], input=exposition, capture_output=True, text=True
        )
        assert (lint.returncode, lint.stdout + lint.stderr) == (0, ""), job
        for family in text_string_to_metric_families(exposition):
            for sample in family.samples:
                named = [v for v in sample.labels.values() if ID_LIKE.search(v)]
                assert not named, f"{job}: {sample.name}{sample.labels}"
