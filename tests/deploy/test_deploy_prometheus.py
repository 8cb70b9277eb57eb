"""Prometheus, its alert rules and Alertmanager: promtool and amtool accept them, every rule
is unit-tested both ways, and every scrape target is a compose service's metrics port."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.contract

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS = REPO / "observability" / "prometheus"
ALERTMANAGER = REPO / "observability" / "alertmanager" / "alertmanager.yml"

REQUIRED_ALERTS = {
    "ServiceDown",
    "HighErrorRatio",
    "HighLatencyP99",
    "OutboxBacklogGrowing",
    "ConsumerLagGrowing",
    "DeadLettersPresent",
    "SagaFailuresSpiking",
}
# Prometheus job -> compose service; the job is the service.name of traces and logs.
TIENDA_JOBS = {
    "auth_service": "auth-service",
    "product_service": "product-service",
    "order_service": "order-service",
    "gateway": "gateway",
}


def run(*command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120)


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_promtool_accepts_the_config(promtool: str) -> None:
    result = run(promtool, "check", "config", "prometheus.yml", cwd=PROMETHEUS)

    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_accepts_the_rules(promtool: str) -> None:
    result = run(promtool, "check", "rules", "alerts.yml", cwd=PROMETHEUS)

    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_of_the_rules_pass(promtool: str) -> None:
    result = run(promtool, "test", "rules", "alerts_test.yml", cwd=PROMETHEUS)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_rule_unit_tests_can_fail(promtool: str, tmp_path: Path) -> None:
    """A rule that stops filtering client errors must break its unit tests."""
    mutated = (
        (PROMETHEUS / "alerts.yml")
        .read_text()
        .replace(
            'grpc_code=~"UNKNOWN|INTERNAL|UNAVAILABLE|DEADLINE_EXCEEDED|DATA_LOSS|UNIMPLEMENTED"',
            'grpc_code!="OK"',
        )
    )
    assert mutated != (PROMETHEUS / "alerts.yml").read_text()
    (tmp_path / "alerts.yml").write_text(mutated)
    (tmp_path / "alerts_test.yml").write_text((PROMETHEUS / "alerts_test.yml").read_text())

    result = run(promtool, "test", "rules", "alerts_test.yml", cwd=tmp_path)

    assert result.returncode != 0
    assert "HighErrorRatio" in result.stdout + result.stderr


def test_the_required_alerts_exist_with_their_thresholds() -> None:
    by_name = {rule["alert"]: rule for rule in rules() if "alert" in rule}

    assert set(by_name) >= REQUIRED_ALERTS
    assert by_name["ServiceDown"]["expr"].strip() == "up == 0"
    assert by_name["ServiceDown"]["for"] == "1m"
    assert by_name["HighErrorRatio"]["for"] == "5m"
    assert by_name["HighErrorRatio"]["expr"].count("> 0.05") == 2
    assert by_name["HighLatencyP99"]["for"] == "10m"
    assert by_name["HighLatencyP99"]["expr"].count("histogram_quantile(0.99") == 2
    for rule in by_name.values():
        assert rule["labels"]["severity"] in ("critical", "warning")
        assert rule["annotations"]["summary"]
        assert rule["annotations"]["description"]


def test_every_rule_is_unit_tested_firing_and_quiet() -> None:
    tests = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())
    cases = [case for test in tests["tests"] for case in test.get("alert_rule_test", [])]

    assert tests["rule_files"] == ["alerts.yml"]
    for rule in rules():
        name = rule["alert"]
        mine = [case for case in cases if case["alertname"] == name]
        assert any(case["exp_alerts"] for case in mine), f"no test where {name} fires"
        assert any(not case["exp_alerts"] for case in mine), f"no test where {name} is quiet"


def test_rules_name_only_catalogued_metrics(
    known_series: set[str], metric_names_of: Callable[[str], set[str]]
) -> None:
    for rule in rules():
        unknown = metric_names_of(rule["expr"]) - known_series
        assert not unknown, f"{rule['alert']}: not in METRICS.md: {unknown}"


_METRIC_DEFINITION = re.compile(
    r"\b(Counter|Gauge|Histogram|Summary)\(\s*(?:name=)?\"([a-zA-Z_:][a-zA-Z0-9_:]*)\""
)
SOURCE_ROOTS = [
    "libs/platform/src",
    "auth_service/src",
    "product_service/src",
    "order_service/src",
    "gateway/src",
]


def test_every_metric_the_code_defines_is_catalogued(metric_catalogue: dict[str, str]) -> None:
    defined = {}
    for root in SOURCE_ROOTS:
        for path in (REPO / root).rglob("*.py"):
            for kind, name in _METRIC_DEFINITION.findall(path.read_text()):
                if kind == "Counter" and not name.endswith("_total"):
                    name += "_total"  # as prometheus_client exposes it
                defined[name] = kind.lower()

    assert len(defined) >= 10, "the scan finds the services' metrics"
    for name, kind in defined.items():
        assert metric_catalogue.get(name) == kind, f"METRICS.md: {name} ({kind})"


def test_faststreams_own_metrics_are_catalogued(metric_catalogue: dict[str, str]) -> None:
    from faststream.prometheus.container import MetricsContainer

    names = {
        f"faststream_{slot}" for slot in MetricsContainer.__slots__ if not slot.startswith("_")
    }

    assert names
    assert names <= set(metric_catalogue)


def scrape_targets() -> dict[str, list[str]]:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    return {
        job["job_name"]: [t for sc in job["static_configs"] for t in sc["targets"]]
        for job in config["scrape_configs"]
    }


def ports_of(service: dict[str, Any]) -> set[int]:
    ports = {int(str(p).split("/")[0].rsplit(":", 1)[-1]) for p in service.get("ports", [])}
    return ports | {int(p) for p in service.get("expose", [])}


def test_every_tienda_process_is_scraped_on_its_metrics_port(compose: dict[str, Any]) -> None:
    targets = scrape_targets()
    metrics_variable = {
        "auth-service": "AUTH_METRICS_PORT",
        "product-service": "PRODUCT_METRICS_PORT",
        "order-service": "ORDER_METRICS_PORT",
        "gateway": "GATEWAY_PORT",
    }

    for job, service_name in TIENDA_JOBS.items():
        service = compose["services"][service_name]
        port = int(service["environment"][metrics_variable[service_name]])
        assert targets[job] == [f"{service_name}:{port}"]
        assert service["environment"]["OTEL_SERVICE_NAME"] == job


def test_every_scrape_target_is_a_compose_service_port(compose: dict[str, Any]) -> None:
    services = compose["services"]
    targets = scrape_targets()

    assert "otel-collector" in targets
    for job, addresses in targets.items():
        for address in addresses:
            host, port = address.rsplit(":", 1)
            if host == "localhost":
                assert job == "prometheus", "only Prometheus scrapes itself on localhost"
                continue
            assert host in services, f"{job}: {host} is not a compose service"
            if host not in TIENDA_JOBS.values():
                assert int(port) in ports_of(services[host]), f"{job}: {address} is not exposed"


def test_prometheus_alerts_through_the_compose_alertmanager(compose: dict[str, Any]) -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    [target] = [
        t
        for am in config["alerting"]["alertmanagers"]
        for sc in am["static_configs"]
        for t in sc["targets"]
    ]
    host, port = target.split(":")

    assert int(port) in ports_of(compose["services"][host])
    for rule_file in config["rule_files"]:
        assert (PROMETHEUS / rule_file).is_file()
    mounts = compose["services"]["prometheus"]["volumes"]
    assert "./observability/prometheus:/etc/prometheus:ro" in mounts


def test_amtool_accepts_the_alertmanager_config(amtool: str) -> None:
    result = run(amtool, "check-config", str(ALERTMANAGER), cwd=REPO)

    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["severity=critical", "alertname=ServiceDown"], "on-call-urgent"),
        (["severity=warning", "alertname=DeadLettersPresent"], "on-call"),
    ],
)
def test_alerts_are_routed_by_severity(amtool: str, labels: list[str], receiver: str) -> None:
    result = run(
        amtool, "config", "routes", "test", f"--config.file={ALERTMANAGER}", *labels, cwd=REPO
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.split() == [receiver]


def test_alertmanager_mails_the_compose_mailpit(compose: dict[str, Any]) -> None:
    config = yaml.safe_load(ALERTMANAGER.read_text())
    host, port = config["global"]["smtp_smarthost"].split(":")

    assert int(port) in ports_of(compose["services"][host])
    assert "mailpit" in compose["services"]["alertmanager"]["depends_on"]
