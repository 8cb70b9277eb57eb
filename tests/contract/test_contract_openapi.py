"""The gateway's OpenAPI document lists every RPC that has a google.api.http annotation."""

from __future__ import annotations

import httpx
import pytest
import tienda_contracts
from google.api import annotations_pb2

pytestmark = pytest.mark.contract

VERBS = ("get", "put", "post", "delete", "patch")


def annotated_rpcs() -> list[tuple[str, str, str]]:
    found = []
    for module in tienda_contracts.service_modules():
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                rule = method.GetOptions().Extensions[annotations_pb2.http]
                verb = rule.WhichOneof("pattern")
                if verb in VERBS:
                    found.append((method.name, verb, getattr(rule, verb)))
    return found


def test_every_annotated_rpc_is_in_the_openapi_document(api: httpx.Client) -> None:
    response = api.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.1")
    operations = {
        op["operationId"]: (verb, path)
        for path, item in document["paths"].items()
        for verb, op in item.items()
        if verb in VERBS
    }
    rpcs = annotated_rpcs()
    assert len(rpcs) >= 15
    for name, verb, path in rpcs:
        assert operations.get(name) == (verb, path), name


def test_docs_ui_is_served_without_a_cdn(api: httpx.Client) -> None:
    page = api.get("/docs")
    assert page.status_code == 200
    assert "openapi.json" in page.text
    assert "unpkg" not in page.text and "cdn" not in page.text.lower()


def test_asyncapi_document_of_the_event_channels_is_served(api: httpx.Client) -> None:
    from tienda_contracts.topology import SUBSCRIPTIONS

    response = api.get("/asyncapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["asyncapi"].startswith("3.")
    for sub in SUBSCRIPTIONS:
        assert f"{sub.stream}:{sub.group}" in document["channels"]
