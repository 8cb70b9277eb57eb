"""The route trie: matching, precedence, verbs, 404 versus 405."""

from __future__ import annotations

import pytest
from gateway.routing import Route, RouteTable
from gateway.templates import parse_template
from starlette.requests import Request
from starlette.responses import Response

pytestmark = pytest.mark.unit


async def handler(request: Request, params: dict[str, str]) -> Response:
    return Response()


def table(*rules: tuple[str, str]) -> RouteTable:
    routes = RouteTable()
    for method, path in rules:
        routes.add(Route(method, parse_template(path), handler))
    return routes


ROUTES = table(
    ("GET", "/v1/products"),
    ("POST", "/v1/products"),
    ("GET", "/v1/products/{id}"),
    ("PATCH", "/v1/products/{product.id}"),
    ("GET", "/v1/users/me"),
    ("GET", "/v1/users/{id}"),
    ("GET", "/v1/orders/{id}"),
    ("GET", "/v1/orders/{id}/details"),
    ("POST", "/v1/orders/{id}:cancel"),
    ("GET", "/v1/files/{path=**}"),
    ("GET", "/v1/{name=shelves/*}/books/{book}"),
    ("GET", "/.well-known/jwks.json"),
)


def label_and_params(method: str, path: str) -> tuple[str, dict[str, str]] | None:
    match = ROUTES.match(method, path)
    if match is None or match.route is None:
        return None
    return match.route.label, match.params


def test_literal_and_variable_routes() -> None:
    assert label_and_params("GET", "/v1/products") == ("/v1/products", {})
    assert label_and_params("GET", "/v1/products/p1") == ("/v1/products/{id}", {"id": "p1"})
    assert label_and_params("PATCH", "/v1/products/p1") == (
        "/v1/products/{product.id}",
        {"product.id": "p1"},
    )
    assert label_and_params("GET", "/.well-known/jwks.json") == ("/.well-known/jwks.json", {})


def test_a_literal_wins_over_a_variable() -> None:
    assert label_and_params("GET", "/v1/users/me") == ("/v1/users/me", {})
    assert label_and_params("GET", "/v1/users/u1") == ("/v1/users/{id}", {"id": "u1"})


def test_longer_template_under_a_variable() -> None:
    assert label_and_params("GET", "/v1/orders/o1/details") == (
        "/v1/orders/{id}/details",
        {"id": "o1"},
    )


def test_custom_verb() -> None:
    assert label_and_params("POST", "/v1/orders/o1:cancel") == (
        "/v1/orders/{id}:cancel",
        {"id": "o1"},
    )
    # Without a route for the verb, the colon is part of the variable.
    assert label_and_params("GET", "/v1/orders/o1:cancel") == (
        "/v1/orders/{id}",
        {"id": "o1:cancel"},
    )


def test_deep_wildcard_and_pattern_variables() -> None:
    assert label_and_params("GET", "/v1/files/a/b/c.txt") == (
        "/v1/files/{path=**}",
        {"path": "a/b/c.txt"},
    )
    assert label_and_params("GET", "/v1/shelves/s1/books/b1") == (
        "/v1/{name=shelves/*}/books/{book}",
        {"name": "shelves/s1", "book": "b1"},
    )


def test_unknown_paths_have_no_match() -> None:
    for path in ("/v1/nothing", "/v1/products/p1/extra", "/v1/products/", "/", "/v2/products"):
        assert ROUTES.match("GET", path) is None, path


def test_known_path_with_another_method_lists_the_allowed_ones() -> None:
    match = ROUTES.match("PUT", "/v1/products")
    assert match is not None and match.route is None
    assert match.allowed == {"GET", "POST"}
    match = ROUTES.match("DELETE", "/v1/products/p1")
    assert match is not None and match.allowed == {"GET", "PATCH"}


def test_a_duplicate_route_is_refused() -> None:
    with pytest.raises(ValueError, match="two routes"):
        table(("GET", "/v1/x/{a}"), ("GET", "/v1/x/{b}"))
