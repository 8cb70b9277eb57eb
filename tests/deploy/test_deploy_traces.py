"""The OpenTelemetry Collector's pipeline: OTLP in from the services, traces out to Jaeger."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.contract

REPO = Path(__file__).resolve().parents[2]
COLLECTOR = REPO / "observability" / "otel-collector.yaml"


def collector() -> dict[str, Any]:
    return yaml.safe_load(COLLECTOR.read_text())


def ports_of(service: dict[str, Any]) -> set[int]:
    ports = {int(str(p).split("/")[0].rsplit(":", 1)[-1]) for p in service.get("ports", [])}
    return ports | {int(p) for p in service.get("expose", [])}


def test_every_component_in_a_pipeline_is_defined() -> None:
    config = collector()
    service = config["service"]

    assert set(service["extensions"]) <= set(config["extensions"])
    for pipeline in service["pipelines"].values():
        for kind in ("receivers", "processors", "exporters"):
            assert set(pipeline.get(kind, [])) <= set(config[kind]), kind


def test_traces_come_in_over_otlp_and_go_out_to_jaeger(compose: dict[str, Any]) -> None:
    config = collector()
    traces = config["service"]["pipelines"]["traces"]
    [exporter] = traces["exporters"]
    host, port = config["exporters"][exporter]["endpoint"].split(":")
    protocols = config["receivers"]["otlp"]["protocols"]

    assert traces["receivers"] == ["otlp"]
    assert "batch" in traces["processors"]
    assert exporter.split("/")[0] == "otlp"
    assert host == "jaeger"
    assert int(port) in ports_of(compose["services"]["jaeger"])
    assert protocols["grpc"]["endpoint"] == "0.0.0.0:4317"
    assert protocols["http"]["endpoint"] == "0.0.0.0:4318"


def test_debug_exporter_is_defined_but_off() -> None:
    config = collector()

    assert "debug" in config["exporters"]
    for pipeline in config["service"]["pipelines"].values():
        assert "debug" not in pipeline["exporters"]


def test_services_export_to_the_collectors_otlp_grpc_port(compose: dict[str, Any]) -> None:
    services = compose["services"]
    receiver_port = int(
        collector()["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"].split(":")[1]
    )

    for name in ("auth-service", "product-service", "order-service", "gateway"):
        endpoint = services[name]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"]
        assert endpoint.endswith(f"http://otel-collector:{receiver_port}}}"), name
    assert receiver_port in ports_of(services["otel-collector"])


def test_collector_command_loads_the_mounted_config_and_the_exporter_switch(
    compose: dict[str, Any],
) -> None:
    service = compose["services"]["otel-collector"]
    mounts = dict(v.split(":")[:2] for v in service["volumes"])
    [config_file, override] = service["command"]
    env_example = (REPO / ".env.example").read_text()

    assert config_file == f"--config={mounts['./observability/otel-collector.yaml']}"
    switch = re.fullmatch(
        r"--config=yaml:service::pipelines::traces::exporters: "
        r"\$\{OTELCOL_TRACE_EXPORTERS:-\[(.+)\]\}",
        override,
    )
    assert switch, override
    assert switch[1] == ", ".join(collector()["service"]["pipelines"]["traces"]["exporters"])
    assert "OTELCOL_TRACE_EXPORTERS=[otlp/jaeger]" in env_example
    assert "[otlp/jaeger, debug]" in env_example


def test_collectors_own_metrics_are_scraped() -> None:
    address = collector()["service"]["telemetry"]["metrics"]["address"]
    prometheus = yaml.safe_load((REPO / "observability/prometheus/prometheus.yml").read_text())
    targets = {
        t
        for job in prometheus["scrape_configs"]
        for sc in job["static_configs"]
        for t in sc["targets"]
    }

    assert f"otel-collector:{address.split(':')[1]}" in targets
