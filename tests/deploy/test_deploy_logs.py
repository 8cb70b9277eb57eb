"""Logs: Filebeat reads the tienda containers' JSON lines into Elasticsearch with an index
template that maps every field the services write; Kibana gets a data view and saved searches."""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from loguru import logger
from opentelemetry.sdk.trace import TracerProvider
from tienda_platform.logging import ecs_document

pytestmark = pytest.mark.contract

REPO = Path(__file__).resolve().parents[2]
FILEBEAT = REPO / "observability" / "filebeat"
SAVED_OBJECTS = REPO / "observability" / "kibana" / "saved-objects.ndjson"
# The ECS fields the services promise (DESIGN.md, issue 4): each has an explicit type.
ECS_FIELDS = {
    "@timestamp": "date",
    "log.level": "keyword",
    "message": "match_only_text",
    "service.name": "keyword",
    "service.version": "keyword",
    "trace.id": "keyword",
    "span.id": "keyword",
    "event.dataset": "keyword",
    "error.type": "keyword",
    "error.message": "match_only_text",
    "error.stack_trace": "wildcard",
    "order.id": "keyword",
    "user.id": "keyword",
    "product.id": "keyword",
}


def filebeat() -> dict[str, Any]:
    return yaml.safe_load((FILEBEAT / "filebeat.yml").read_text())


def template() -> dict[str, Any]:
    return json.loads((FILEBEAT / "index-template.json").read_text())


def saved_objects() -> list[dict[str, Any]]:
    return [json.loads(line) for line in SAVED_OBJECTS.read_text().splitlines() if line.strip()]


def mapped_type(field: str, value: Any) -> str | None:
    """The type the index template gives a dotted field: explicit, else a dynamic template's."""
    mappings = template()["template"]["mappings"]
    node: dict[str, Any] = {"properties": mappings["properties"]}
    for part in field.split("."):
        node = node.get("properties", {}).get(part, {})
        if not node:
            break
    if "type" in node and node["type"] != "object":
        return str(node["type"])
    if isinstance(value, str):
        for rule in mappings["dynamic_templates"]:
            [(_, spec)] = rule.items()
            if spec.get("match_mapping_type") == "string" and fnmatch.fnmatch(
                field, spec.get("path_match", "*")
            ):
                return str(spec["mapping"]["type"])
    return None


def test_filebeat_reads_the_tienda_containers_and_decodes_their_json(
    compose: dict[str, Any],
) -> None:
    [provider] = filebeat()["filebeat.autodiscover"]["providers"]
    [rule] = provider["templates"]
    [(label, value)] = rule["condition"]["equals"].items()
    [stream_input] = rule["config"]
    parsers = {next(iter(p)): next(iter(p.values())) for p in stream_input["parsers"]}
    tienda = ["auth-service", "product-service", "order-service", "gateway"]

    assert provider["type"] == "docker"
    assert stream_input["type"] == "filestream"
    assert list(parsers) == ["container", "ndjson"], "unwrap Docker's format, then the JSON"
    assert parsers["ndjson"]["target"] == "", "decoded at the root of the event"
    assert parsers["ndjson"]["expand_keys"] is True
    key = label.removeprefix("docker.container.labels.")
    for name, service in compose["services"].items():
        labelled = service.get("labels", {}).get(key) == value
        assert labelled == (name in tienda), name
        if labelled:
            assert service["logging"]["driver"] == "json-file", "Filebeat reads json-file logs"


def test_filebeat_ships_to_the_compose_elasticsearch(compose: dict[str, Any]) -> None:
    config = filebeat()
    output = config["output.elasticsearch"]
    service = compose["services"]["filebeat"]
    environment_hosts = service["environment"]["ELASTICSEARCH_HOSTS"]

    assert "${ELASTICSEARCH_HOSTS:http://elasticsearch:9200}" in output["hosts"]
    assert environment_hosts == "http://elasticsearch:9200"
    assert "elasticsearch" in compose["services"]
    assert "elasticsearch" in service["depends_on"]
    assert fnmatch.fnmatch(output["index"], config["setup.template.pattern"])
    mounts = dict(v.split(":")[:2] for v in service["volumes"])
    assert mounts["./observability/filebeat/filebeat.yml"] == "/usr/share/filebeat/filebeat.yml"
    template_path = config["setup.template.json.path"].replace(
        "${path.config}", "/usr/share/filebeat"
    )
    assert mounts["./observability/filebeat/index-template.json"] == template_path


def test_index_template_is_a_data_stream_template_for_the_filebeat_index() -> None:
    config = filebeat()
    document = template()

    assert "data_stream" in document
    assert config["setup.template.json.data_stream"] is True
    assert any(
        fnmatch.fnmatch(config["output.elasticsearch"]["index"], p)
        for p in document["index_patterns"]
    )


@pytest.mark.parametrize(("field", "kind"), ECS_FIELDS.items())
def test_index_template_maps_the_ecs_fields(field: str, kind: str) -> None:
    assert mapped_type(field, None) == kind


def a_real_log_line() -> dict[str, Any]:
    """The ECS document the services' logging writes for an error inside a span."""
    documents: list[dict[str, Any]] = []
    # Built in the sink, as the services' sink does, while the span is current.
    sink = logger.add(lambda message: documents.append(ecs_document(message.record)))
    try:
        with TracerProvider().get_tracer("deploy-test").start_as_current_span("request"):
            try:
                raise ValueError("the payment provider did not answer")
            except ValueError:
                logger.bind(order_id="o-1", product_id="p-1", user_id="u-1").exception("failed")
    finally:
        logger.remove(sink)
    [document] = documents
    return document


def test_index_template_maps_every_field_of_a_real_log_line() -> None:
    document = a_real_log_line()

    assert set(ECS_FIELDS) <= set(document)
    unmapped = sorted(k for k, v in document.items() if mapped_type(k, v) is None)
    assert not unmapped, f"the template gives no type to {unmapped}"


def test_kibana_gets_a_data_view_and_the_two_saved_searches() -> None:
    objects = saved_objects()
    ids = {(o["type"], o["id"]) for o in objects}
    [view] = [o for o in objects if o["type"] == "index-pattern"]
    searches = {o["attributes"]["title"]: o for o in objects if o["type"] == "search"}

    assert fnmatch.fnmatch(filebeat()["output.elasticsearch"]["index"], view["attributes"]["title"])
    assert view["attributes"]["timeFieldName"] == "@timestamp"
    assert {"Errors", "One trace"} <= set(searches)
    for search in searches.values():
        for reference in search["references"]:
            assert (reference["type"], reference["id"]) in ids, reference
    errors = json.loads(
        searches["Errors"]["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"]
    )
    assert errors["query"] == {"query": "log.level:error", "language": "kuery"}
    trace = json.loads(
        searches["One trace"]["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"]
    )
    [trace_filter] = trace["filter"]
    assert trace_filter["meta"]["key"] == "trace.id"
    assert len(trace_filter["query"]["match_phrase"]["trace.id"]) == 32


def test_trace_ids_in_kibana_link_to_jaeger(compose: dict[str, Any]) -> None:
    [view] = [o for o in saved_objects() if o["type"] == "index-pattern"]
    formats = json.loads(view["attributes"]["fieldFormatMap"])
    url = formats["trace.id"]["params"]["urlTemplate"]

    assert url == "http://localhost:16686/trace/{{value}}"
    assert "127.0.0.1:16686:16686" in compose["services"]["jaeger"]["ports"]


def test_saved_objects_are_imported_once_kibana_is_healthy(compose: dict[str, Any]) -> None:
    importer = compose["services"]["kibana-import"]
    [mount] = importer["volumes"]
    source, target = mount.split(":")[:2]
    script = "\n".join(importer["command"])

    assert (REPO / source).resolve() == SAVED_OBJECTS
    assert importer["depends_on"]["kibana"]["condition"] == "service_healthy"
    assert "http://kibana:5601/api/saved_objects/_import?overwrite=true" in script
    assert f"file=@{target}" in script
    assert "kbn-xsrf" in script
    assert '"success":true' in script, "an import with errors must fail the job"
