"""Parsing google.api.http path templates and binding their variables."""

from __future__ import annotations

import pytest
from gateway.templates import SegmentKind, TemplateError, parse_template, split_path

pytestmark = pytest.mark.unit


def kinds(source: str) -> list[str]:
    return [s.literal or s.kind.value for s in parse_template(source).segments]


def test_literal_segments_and_a_single_variable() -> None:
    template = parse_template("/v1/products/{id}")
    assert kinds("/v1/products/{id}") == ["v1", "products", "*"]
    assert [(v.name, v.start, v.end) for v in template.variables] == [("id", 2, 3)]
    assert template.verb is None


def test_nested_field_path_variable() -> None:
    template = parse_template("/v1/products/{product.id}")
    assert template.variables[0].field_path == ("product", "id")
    assert template.bind(["v1", "products", "p%201"]) == {"product.id": "p 1"}


def test_custom_verb_is_split_from_the_last_segment() -> None:
    template = parse_template("/v1/orders/{id}:cancel")
    assert template.verb == "cancel"
    assert kinds("/v1/orders/{id}:cancel") == ["v1", "orders", "*"]


def test_variable_with_a_multi_segment_pattern() -> None:
    template = parse_template("/v1/{name=shelves/*/books/*}")
    assert kinds("/v1/{name=shelves/*/books/*}") == ["v1", "shelves", "*", "books", "*"]
    variable = template.variables[0]
    assert (variable.start, variable.end, variable.multi_segment) == (1, 5, True)
    assert template.bind(["v1", "shelves", "s1", "books", "b%2F2"]) == {
        "name": "shelves/s1/books/b%2F2"
    }
    assert template.openapi_path() == "/v1/{name}"


def test_deep_wildcard_variable_runs_to_the_end() -> None:
    template = parse_template("/v1/files/{path=**}")
    assert template.segments[-1].kind is SegmentKind.DEEP_WILDCARD
    assert template.variables[0].end is None
    assert template.bind(["v1", "files", "a", "b%20c"]) == {"path": "a/b c"}


def test_single_segment_variable_decodes_an_encoded_slash() -> None:
    assert parse_template("/v1/products/{id}").bind(["v1", "products", "a%2Fb"]) == {"id": "a/b"}


def test_dotted_literals_are_literals() -> None:
    assert kinds("/.well-known/jwks.json") == [".well-known", "jwks.json"]


@pytest.mark.parametrize(
    "source",
    [
        "v1/products",  # no leading slash
        "/v1/{id",  # unclosed variable
        "/v1/{a={b}}",  # nested variable
        "/v1/**/tail",  # ** not last
        "/v1/{1bad}",  # not an identifier
        "/v1//x",  # empty segment
        "/v1/x:",  # empty verb
    ],
)
def test_malformed_templates_are_refused(source: str) -> None:
    with pytest.raises(TemplateError):
        parse_template(source)


def test_split_path_keeps_raw_segments() -> None:
    assert split_path("/v1/a%2Fb/c") == ["v1", "a%2Fb", "c"]
    assert split_path("/") == [""]
