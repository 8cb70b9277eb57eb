"""Grafana: the provisioned datasources and links between them, and dashboards that parse,
use only provisioned datasources and query only the metrics in METRICS.md, in valid PromQL."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from tienda_platform.telemetry import exemplar

pytestmark = pytest.mark.contract

REPO = Path(__file__).resolve().parents[2]
GRAFANA = REPO / "observability" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
# What each required dashboard must show (series it must query).
REQUIRED = {
    "tienda-overview": {
        "grpc_server_handled_total",
        "grpc_server_handling_seconds_bucket",
        "grpc_client_handled_total",
        "http_server_requests_total",
        "http_server_request_duration_seconds_bucket",
    },
    "tienda-events": {
        "tienda_outbox_backlog",
        "tienda_outbox_oldest_unsent_age_seconds",
        "tienda_events_published_total",
        "tienda_events_consumed_total",
        "tienda_event_handling_seconds_bucket",
        "tienda_consumer_lag",
        "tienda_consumer_pending",
        "tienda_dead_letters",
    },
    "tienda-sagas": {"tienda_saga_outcomes_total", "grpc_server_handled_total"},
    "tienda-webhooks": {"tienda_webhook_deliveries_total"},
}
# Values Grafana substitutes before a query reaches Prometheus.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "1m",
    "$__range": "1h",
    "$job": ".*",
    "$mode": ".*",
}


def datasources() -> list[dict[str, Any]]:
    document = yaml.safe_load((GRAFANA / "provisioning/datasources/datasources.yml").read_text())
    return document["datasources"]


def by_uid() -> dict[str, dict[str, Any]]:
    return {source["uid"]: source for source in datasources()}


def walk(node: Any) -> Iterator[dict[str, Any]]:
    """Every mapping inside a JSON document."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item)


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def prometheus_queries(dashboard: dict[str, Any]) -> list[str]:
    return [
        target["expr"]
        for panel in panels(dashboard)
        for target in panel.get("targets", [])
        if "expr" in target
    ]


def test_datasources_are_provisioned_with_fixed_uids() -> None:
    sources = by_uid()

    assert {"prometheus", "jaeger", "elasticsearch"} <= set(sources)
    assert sources["prometheus"]["type"] == "prometheus"
    assert sources["jaeger"]["type"] == "jaeger"
    assert sources["elasticsearch"]["type"] == "elasticsearch"
    assert [s["uid"] for s in datasources() if s.get("isDefault")] == ["prometheus"]


def test_datasources_point_at_compose_services(compose: dict[str, Any]) -> None:
    for source in datasources():
        match = re.fullmatch(r"http://([\w-]+):(\d+)", source["url"])
        assert match, source["url"]
        service = compose["services"][match[1]]
        ports = {int(str(p).rsplit(":", 1)[-1]) for p in service.get("ports", [])}
        assert int(match[2]) in ports | {int(p) for p in service.get("expose", [])}


def test_metrics_logs_and_traces_link_to_each_other() -> None:
    sources = by_uid()
    prometheus = sources["prometheus"]["jsonData"]
    jaeger = sources["jaeger"]["jsonData"]
    elasticsearch = sources["elasticsearch"]["jsonData"]

    # metrics -> traces (exemplars), by the label the services give an exemplar's trace id
    [destination] = prometheus["exemplarTraceIdDestinations"]
    assert destination["datasourceUid"] == "jaeger"
    assert destination["name"] in recorded_exemplar()
    # logs -> traces
    [link] = elasticsearch["dataLinks"]
    assert link["field"] == "trace.id"
    assert link["datasourceUid"] == "jaeger"
    # traces -> logs and traces -> metrics
    assert jaeger["tracesToLogsV2"]["datasourceUid"] == "elasticsearch"
    assert "trace.id" in jaeger["tracesToLogsV2"]["query"]
    assert jaeger["tracesToMetrics"]["datasourceUid"] == "prometheus"
    assert {"key": "service.name", "value": "job"} in jaeger["tracesToMetrics"]["tags"]


def test_provisioning_escapes_grafanas_own_variables() -> None:
    """Grafana expands $VAR in provisioning files; its own ${__...} must be written $${__...}."""
    for path in (GRAFANA / "provisioning").rglob("*.yml"):
        unescaped = re.findall(r"(?<!\$)\$\{?__\w+", path.read_text())
        assert not unescaped, f"{path.name}: {unescaped}"


def test_elasticsearch_datasource_reads_the_filebeat_index() -> None:
    filebeat = yaml.safe_load((REPO / "observability/filebeat/filebeat.yml").read_text())
    elasticsearch = by_uid()["elasticsearch"]["jsonData"]

    assert elasticsearch["index"] == filebeat["output.elasticsearch"]["index"]
    assert elasticsearch["timeField"] == "@timestamp"
    assert elasticsearch["logLevelField"] == "log.level"
    assert elasticsearch["logMessageField"] == "message"


def test_dashboard_provider_reads_the_mounted_folder(compose: dict[str, Any]) -> None:
    provider = yaml.safe_load((GRAFANA / "provisioning/dashboards/dashboards.yml").read_text())
    [source] = provider["providers"]
    mounts = dict(
        v.rsplit(":", 2)[:2] for v in compose["services"]["grafana"]["volumes"] if ":ro" in v
    )

    assert mounts["./observability/grafana/dashboards"] == source["options"]["path"]
    assert mounts["./observability/grafana/provisioning"] == "/etc/grafana/provisioning"


def test_the_four_dashboards_exist_and_show_what_they_are_for(
    metric_names_of: Callable[[str], set[str]],
) -> None:
    dashboards = {load(path)["uid"]: load(path) for path in DASHBOARDS}

    assert set(REQUIRED) <= set(dashboards)
    for uid, series in REQUIRED.items():
        queried = set().union(*(metric_names_of(q) for q in prometheus_queries(dashboards[uid])))
        assert series <= queried, f"{uid} lacks {series - queried}"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_is_grafana_dashboard_json(path: Path) -> None:
    dashboard = load(path)
    ids = [panel["id"] for panel in panels(dashboard)]

    assert dashboard["title"] and dashboard["uid"]
    assert isinstance(dashboard["schemaVersion"], int)
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for panel in panels(dashboard):
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["targets"], f"{panel['title']} queries nothing"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_uses_only_provisioned_datasources(path: Path) -> None:
    provisioned = by_uid()
    used = [
        node["datasource"] for node in walk(load(path)) if isinstance(node.get("datasource"), dict)
    ]

    assert used
    for reference in used:
        assert reference["uid"] in provisioned, reference
        assert reference["type"] == provisioned[reference["uid"]]["type"], reference


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_queries_only_catalogued_metrics(
    path: Path, known_series: set[str], metric_names_of: Callable[[str], set[str]]
) -> None:
    dashboard = load(path)
    queries = prometheus_queries(dashboard)
    for variable in dashboard["templating"]["list"]:
        query = (
            variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
        )
        match = re.fullmatch(r"label_values\((.+),\s*\w+\)", query)
        assert match, f"variable {variable['name']}: {query}"
        queries.append(match[1])

    assert queries
    for query in queries:
        names = metric_names_of(query)
        assert names, f"selects no metric: {query}"
        assert names <= known_series, f"not in METRICS.md: {names - known_series} in {query}"


def test_every_dashboard_query_is_valid_promql(promtool: str, tmp_path: Path) -> None:
    """promtool parses each query (with Grafana's variables filled in) as a recording rule."""
    queries = []
    for path in DASHBOARDS:
        for query in prometheus_queries(load(path)):
            for variable, value in GRAFANA_VARIABLES.items():
                query = query.replace(variable, value)
            assert "$" not in query, f"unknown Grafana variable in {query}"
            queries.append(query)
    rules = [{"record": f"dashboard:query_{i}:check", "expr": q} for i, q in enumerate(queries)]
    (tmp_path / "queries.yml").write_text(
        yaml.safe_dump({"groups": [{"name": "q", "rules": rules}]})
    )

    result = subprocess.run(
        [promtool, "check", "rules", "queries.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            'sum by (job, le) (rate(grpc_server_handling_seconds_bucket{job=~"$job"}[$__rate_interval]))',
            {"grpc_server_handling_seconds_bucket"},
        ),
        ("histogram_quantile(0.99, sum by (le) (rate(a_bucket[5m]))) > 2.5e3", {"a_bucket"}),
        (
            "up == 0 or on (job) group_left (version) tienda_build_info offset 5m",
            {"up", "tienda_build_info"},
        ),
        ('sum(x{status!="confirmed", reason=~"a|b"}) / sum(y) and bool z', {"x", "y", "z"}),
        ('vector(0) or label_replace(m, "dst", "$1", "src", "(.*)")', {"m"}),
    ],
)
def test_metric_names_are_read_out_of_promql(
    expr: str, names: set[str], metric_names_of: Callable[[str], set[str]]
) -> None:
    assert metric_names_of(expr) == names


def recorded_exemplar() -> dict[str, str]:
    """The exemplar the services record with an observation made in a sampled trace."""
    trace_id = 0x0AF7651916CD43DD8448EB211C80319C
    sampled = SpanContext(trace_id, 0xB7AD6B7169203331, True, TraceFlags(TraceFlags.SAMPLED))
    with trace.use_span(NonRecordingSpan(sampled)):
        recorded = exemplar()
    assert recorded is not None and f"{trace_id:032x}" in recorded.values()
    return recorded
