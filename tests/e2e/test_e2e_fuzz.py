"""Property-based fuzzing of the REST API: whatever a client sends, the answer is a 2xx or a
4xx in the error shape with a safe message, never a 5xx or a stack trace.

Bodies of every write route (arbitrary JSON, the route's real field names holding junk, and
raw bytes), path variables and the list routes' query parameters are drawn by hypothesis.
The examples are derandomized (the same every run) and no example database is kept.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from e2e_support import User, create_product, register, submit_order
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.e2e

LEAKS = ("Traceback", 'File "', "127.0.0.1", "/work/", "site-packages")
EVENT_TYPES = ("order.created", "order.confirmed", "order.cancelled", "order.rejected")


def fuzz_settings(max_examples: int) -> settings:
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,  # the same examples every run
        database=None,  # no example database (see HYPOTHESIS_STORAGE_DIRECTORY above)
        suppress_health_check=[
            HealthCheck.too_slow,  # every example is an HTTP round trip
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )


# --- strategies ------------------------------------------------------------------------------

# Any character, with extra weight on control, format, line-separator and surrogate characters.
_CHARS = st.one_of(
    st.characters(),
    st.characters(categories=["Cc", "Cf", "Cs", "Zl", "Zp"]),
    st.sampled_from(['"', "\\", "\x00", "/", "%", ":", "{", "}", "\ufeff", "\U0001f600"]),
)
short_text = st.text(_CHARS, max_size=40)
# Long strings are a short piece repeated (hypothesis draws long text slowly).
long_text = st.builds(
    lambda piece, times: (piece * times)[:10_000],
    st.text(_CHARS, min_size=1, max_size=8),
    st.integers(min_value=100, max_value=10_000),
)
texts = st.one_of(short_text, st.just(""), long_text)

_EDGE_INTEGERS = [
    0,
    -1,
    2**31 - 1,
    2**31,
    -(2**31) - 1,
    2**32,
    2**53 + 1,
    2**63 - 1,
    2**63,
    -(2**63) - 1,
    2**64,
    10**30,
    -(10**400),
]
integers = st.one_of(
    st.integers(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.sampled_from(_EDGE_INTEGERS),
)
floats = st.floats(allow_nan=False, allow_infinity=False)
scalars = st.one_of(st.none(), st.booleans(), integers, floats, texts)


def _containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(
            st.one_of(short_text, st.sampled_from(ALL_FIELD_NAMES)), children, max_size=5
        ),
    )


@dataclass(frozen=True)
class WriteRoute:
    name: str
    method: str
    path: str  # {product}, {order} and {webhook} stand for ids of real resources
    who: str  # "anyone", "customer", "admin" or "hooks" (a customer who has no orders)
    fields: tuple[str, ...]  # the body's real field names (snake_case and lowerCamelCase)


WRITE_ROUTES = [
    WriteRoute(
        "register",
        "POST",
        "/v1/auth/register",
        "anyone",
        ("email", "password", "full_name", "fullName"),
    ),
    WriteRoute("login", "POST", "/v1/auth/login", "anyone", ("email", "password")),
    WriteRoute("refresh", "POST", "/v1/auth/refresh", "anyone", ("refresh_token", "refreshToken")),
    WriteRoute(
        "update-me",
        "PATCH",
        "/v1/users/me",
        "customer",
        ("full_name", "password", "current_password", "fullName", "currentPassword"),
    ),
    WriteRoute(
        "create-product",
        "POST",
        "/v1/products",
        "admin",
        (
            "id",
            "sku",
            "name",
            "description",
            "price_cents",
            "priceCents",
            "stock",
            "create_time",
            "update_time",
        ),
    ),
    WriteRoute(
        "update-product",
        "PATCH",
        "/v1/products/{product}",
        "admin",
        ("id", "sku", "name", "description", "price_cents", "priceCents", "stock", "update_time"),
    ),
    WriteRoute(
        "create-order",
        "POST",
        "/v1/orders",
        "customer",
        ("items", "payment_token", "paymentToken"),
    ),
    WriteRoute("cancel-order", "POST", "/v1/orders/{order}:cancel", "customer", ("id",)),
    WriteRoute(
        "create-webhook",
        "POST",
        "/v1/webhooks",
        "hooks",
        (
            "id",
            "owner_id",
            "url",
            "event_types",
            "eventTypes",
            "secret",
            "create_time",
        ),
    ),
]
ALL_FIELD_NAMES = sorted({name for route in WRITE_ROUTES for name in route.fields})

json_values = st.recursive(scalars, _containers, max_leaves=25)


def field_values(name: str, real_ids: list[str]) -> st.SearchStrategy[Any]:
    """Junk for one field, plus near-valid values where a field takes a list or an id."""
    junk = st.one_of(json_values, texts, integers)
    if name == "items":
        item = st.fixed_dictionaries(
            {},
            optional={
                "product_id": st.one_of(st.sampled_from(real_ids), junk),
                "productId": junk,
                "quantity": st.one_of(integers, junk),
                "product_name": junk,
                "unit_price_cents": junk,
            },
        )
        return st.one_of(junk, st.lists(st.one_of(item, junk), max_size=4))
    if name in ("event_types", "eventTypes"):
        return st.one_of(junk, st.lists(st.one_of(st.sampled_from(EVENT_TYPES), junk), max_size=9))
    if name in ("id", "product_id", "owner_id"):
        return st.one_of(st.sampled_from(real_ids), junk)
    return junk


def junk_objects(route: WriteRoute, real_ids: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects with the route's field names (any subset), each holding junk, sometimes with an
    extra unknown field."""
    known = st.fixed_dictionaries(
        {}, optional={name: field_values(name, real_ids) for name in route.fields}
    )
    extra = st.dictionaries(short_text, json_values, max_size=1)
    return st.builds(lambda k, e: {**e, **k}, known, st.one_of(st.just({}), extra))


raw_bodies = st.one_of(
    st.binary(max_size=300),
    short_text.map(lambda text: text.encode("utf-8", "surrogatepass")),
    st.integers(min_value=1, max_value=100_000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(min_value=1, max_value=100_000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
    st.sampled_from(
        [
            b"{",
            b'{"items": [',
            b"NaN",
            b"Infinity",
            b'{"price_cents": NaN}',
            b'{"stock": -Infinity}',
            b'{"email": "\\ud800"}',
            b"\xef\xbb\xbf{}",
            b"\xff\xfe{\x00}\x00",
            b"1" * 5000,
            b'{"a": 1, "a": 2}',
            b"null",
            b"[]",
            b'""',
        ]
    ),
)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


# Page tokens: text, and base64 of what a token might decode to (real tokens are base64 JSON).
page_tokens = st.one_of(
    texts,
    st.binary(max_size=100).map(_b64),
    json_values.map(lambda value: _b64(json.dumps(value).encode())),
    st.fixed_dictionaries(
        {"v": st.one_of(st.just(1), json_values)},
        optional={"before": json_values, "after": json_values},
    ).map(lambda cursor: _b64(json.dumps(cursor).encode())),
    # deeply nested JSON (a base64 token of up to URL_PART_LIMIT characters holds ~1100 levels)
    st.one_of(
        st.integers(min_value=1, max_value=1100), st.sampled_from([100, 500, 1000, 1100])
    ).map(lambda n: _b64(b"[" * n + b"]" * n)),
)
page_sizes = st.one_of(texts, integers.map(str), floats.map(str))


# --- the system under test --------------------------------------------------------------------


@dataclass
class Targets:
    """Real resources for the routes to act on, and the callers' headers."""

    customer: User
    hooks: User
    admin: User
    product_id: str
    order_id: str
    webhook_id: str

    def headers(self, who: str) -> dict[str, str]:
        user = {"customer": self.customer, "hooks": self.hooks, "admin": self.admin}.get(who)
        return dict(user.headers) if user else {}

    def path(self, template: str) -> str:
        return template.format(
            product=self.product_id, order=self.order_id, webhook=self.webhook_id
        )

    @property
    def real_ids(self) -> list[str]:
        return [self.product_id, self.order_id, self.webhook_id, self.customer.id]


@pytest.fixture(scope="module")
def targets(api: httpx.Client, admin: User) -> Iterator[Targets]:
    """One set per stack, shared by every example: hypothesis runs many examples per test."""
    customer = register(api)
    product = create_product(api, admin, stock=100_000)
    order = submit_order(api, customer, product["id"])
    # Webhooks belong to a customer who never orders, so none is ever delivered to.
    hooks = register(api, "Hook Owner")
    webhook = api.post(
        "/v1/webhooks",
        headers=hooks.headers,
        json={"url": "http://127.0.0.1:9/fuzz", "event_types": ["order.created"]},
    )
    assert webhook.status_code == 200, webhook.text
    yield Targets(customer, hooks, admin, product["id"], order["id"], webhook.json()["id"])
    listed = api.get("/v1/webhooks", headers=hooks.headers, params={"page_size": 100})
    for created in listed.json().get("webhooks", []):
        api.delete(f"/v1/webhooks/{created['id']}", headers=hooks.headers)


def encode_json(value: Any, ascii_only: bool) -> bytes:
    """JSON as a client could send it: escaped, or raw UTF-8 (lone surrogates kept as such)."""
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


# Request lines longer than this are refused by the HTTP server itself (h11 allows 16 KiB
# for the whole request head) or by httpx before sending: keep the fuzzed ones below it.
URL_PART_LIMIT = 3000


def url_quoted(text: str, safe: str = "") -> str:
    """text percent-encoded as UTF-8 (lone surrogates too), at most URL_PART_LIMIT long."""
    quoted = quote(text.encode("utf-8", "surrogatepass"), safe=safe)
    if len(quoted) > URL_PART_LIMIT:
        quoted = quoted[:URL_PART_LIMIT]
        if "%" in quoted[-2:]:  # never cut an escape in half
            quoted = quoted[: quoted.rindex("%")]
    return quoted


def url_sized(text: str) -> str:
    """The longest start of text whose percent-encoded UTF-8 fits in URL_PART_LIMIT, with lone
    surrogates replaced (a query string is UTF-8 text)."""
    text = text.encode("utf-8", "replace").decode()
    size = 0
    for index, char in enumerate(text):
        size += len(quote(char, safe=""))
        if size > URL_PART_LIMIT:
            return text[:index]
    return text


def send(
    api: httpx.Client,
    method: str,
    path: str,
    *,
    headers: dict[str, str],
    content: bytes | None = None,
    params: list[tuple[str, str]] | None = None,
) -> httpx.Response:
    # A connection of its own for each request: a server that drops one after an error
    # must not make the next example fail.
    headers = {**headers, "Connection": "close"}
    if content is not None:
        headers["Content-Type"] = "application/json"
    response = api.request(method, path, headers=headers, content=content, params=params)
    assert_safe(response, method, path, content, params)
    return response


def assert_safe(
    response: httpx.Response,
    method: str,
    path: str,
    content: bytes | None,
    params: list[tuple[str, str]] | None,
) -> None:
    """A 2xx, or a 4xx in the error shape with nothing internal in it."""
    shown = content if content is None or len(content) <= 2000 else content[:2000] + b"..."
    context = (
        f"\n{method} {str(response.request.url)[:2000]} params={params!r} body={shown!r}"
        f"\n-> {response.status_code} {response.text[:1000]}"
    )
    status = response.status_code
    assert status < 500, "server error" + context
    assert 200 <= status < 300 or 400 <= status < 500, "unexpected status" + context
    if status < 400:
        return
    assert response.headers.get("content-type", "").startswith("application/json"), context
    try:
        body = response.json()
    except ValueError:
        pytest.fail("the error body is not JSON" + context)
    assert isinstance(body, dict) and set(body) == {"code", "message", "details"}, context
    assert isinstance(body["code"], int) and 0 < body["code"] <= 16, context
    assert isinstance(body["message"], str) and 0 < len(body["message"]) < 500, context
    assert isinstance(body["details"], list), context
    for leak in LEAKS:
        assert leak not in response.text, f"the error leaks {leak!r}" + context


def send_body(api: httpx.Client, targets: Targets, route: WriteRoute, content: bytes) -> None:
    """Send a body to a write route as its caller (checked by send), then forget any webhook
    it registered."""
    response = send(
        api,
        route.method,
        targets.path(route.path),
        headers=targets.headers(route.who),
        content=content,
    )
    _forget_webhook(api, targets, response)


def _forget_webhook(api: httpx.Client, targets: Targets, response: httpx.Response) -> None:
    """A fuzzed body may register a webhook: remove it at once."""
    if response.request.url.path == "/v1/webhooks" and response.status_code == 200:
        created = response.json().get("id")
        if created and created != targets.webhook_id:
            api.delete(f"/v1/webhooks/{created}", headers=targets.headers("hooks"))


# --- the properties ----------------------------------------------------------------------------

ROUTE_IDS = [route.name for route in WRITE_ROUTES]


@pytest.mark.parametrize("route", WRITE_ROUTES, ids=ROUTE_IDS)
@fuzz_settings(max_examples=30)
@given(data=st.data())
def test_write_routes_answer_any_json_safely(
    api: httpx.Client, targets: Targets, route: WriteRoute, data: st.DataObject
) -> None:
    body = data.draw(json_values, label="body")
    send_body(api, targets, route, encode_json(body, data.draw(st.booleans(), label="ascii_only")))


@pytest.mark.parametrize("route", WRITE_ROUTES, ids=ROUTE_IDS)
@fuzz_settings(max_examples=40)
@given(data=st.data())
def test_write_routes_answer_junk_fields_safely(
    api: httpx.Client, targets: Targets, route: WriteRoute, data: st.DataObject
) -> None:
    body = data.draw(junk_objects(route, targets.real_ids), label="body")
    send_body(api, targets, route, encode_json(body, data.draw(st.booleans(), label="ascii_only")))


@fuzz_settings(max_examples=60)
@given(data=st.data())
def test_write_routes_answer_raw_bytes_safely(
    api: httpx.Client, targets: Targets, data: st.DataObject
) -> None:
    route = data.draw(st.sampled_from(WRITE_ROUTES), label="route")
    send_body(api, targets, route, data.draw(raw_bodies, label="body"))


PATH_ROUTES = [
    ("GET", "/v1/products/{}", "anyone"),
    ("GET", "/v1/orders/{}", "customer"),
    ("GET", "/v1/orders/{}/details", "customer"),
    ("GET", "/v1/webhooks/{}/deliveries", "hooks"),
    ("POST", "/v1/orders/{}:cancel", "customer"),
    ("PATCH", "/v1/products/{}", "admin"),
    ("DELETE", "/v1/webhooks/{}", "hooks"),
]


@pytest.mark.parametrize(
    ("method", "template", "who"), PATH_ROUTES, ids=[f"{m} {t}" for m, t, _ in PATH_ROUTES]
)
@fuzz_settings(max_examples=30)
@given(
    value=st.one_of(texts.filter(bool), st.uuids().map(str)),
    safe=st.sampled_from(["", ":", ":@!$&'()*+,;="]),
)
def test_path_variables_answer_any_text_safely(
    api: httpx.Client, targets: Targets, method: str, template: str, who: str, value: str, safe: str
) -> None:
    segment = url_quoted(value, safe)
    content = b"{}" if method in ("POST", "PATCH") else None
    send(api, method, template.format(segment), headers=targets.headers(who), content=content)


LIST_ROUTES = [
    ("/v1/products", "anyone"),
    ("/v1/orders", "customer"),
    ("/v1/webhooks", "hooks"),
    ("/v1/webhooks/{webhook}/deliveries", "hooks"),
]


@pytest.mark.parametrize(("template", "who"), LIST_ROUTES, ids=[t for t, _ in LIST_ROUTES])
@fuzz_settings(max_examples=40)
@given(
    page_size=st.one_of(st.none(), page_sizes),
    page_token=st.one_of(st.none(), page_tokens),
    extra=st.lists(st.tuples(short_text, short_text), max_size=2),
)
def test_list_query_parameters_answer_junk_safely(
    api: httpx.Client,
    targets: Targets,
    template: str,
    who: str,
    page_size: str | None,
    page_token: str | None,
    extra: list[tuple[str, str]],
) -> None:
    params = [
        *([("page_size", page_size)] if page_size is not None else []),
        *([("page_token", page_token)] if page_token is not None else []),
        *extra,
    ]
    params = [(url_sized(key), url_sized(value)) for key, value in params]
    send(api, "GET", targets.path(template), headers=targets.headers(who), params=params)


# Inputs the fuzzing above has found to break the rule, pinned so that they are always sent.
NASTY_BODIES = [
    rb'{"\ud800": null}',  # a lone surrogate in a field name, escaped...
    b'{"\xed\xa0\x80": null}',  # ...and as raw (invalid) UTF-8
    rb'{"items": "\ud800"}',  # a lone surrogate where a list is expected
    rb'{"event_types": "\ud800"}',
    rb'{"email": "\ud800", "full_name": "\udfff"}',
    b"[" * 100_000 + b"]" * 100_000,
]
NASTY_PAGE_TOKENS = [
    _b64(b"[" * 1100 + b"]" * 1100),  # deeply nested JSON inside the token
    _b64(b'{"v": 1, "before": ' + b"[" * 1000 + b"]" * 1000 + b"}"),
]


def test_known_nasty_inputs_get_a_safe_answer(api: httpx.Client, targets: Targets) -> None:
    failures: list[str] = []

    def attempt(method: str, path: str, who: str, **kwargs: Any) -> None:
        try:
            send(api, method, path, headers=targets.headers(who), **kwargs)
        except AssertionError as error:
            failures.append(str(error).split("\nassert")[0])

    for route in WRITE_ROUTES:
        for body in NASTY_BODIES:
            attempt(route.method, targets.path(route.path), route.who, content=body)
    for template, who in LIST_ROUTES:
        for token in NASTY_PAGE_TOKENS:
            attempt("GET", targets.path(template), who, params=[("page_token", token)])
    assert not failures, f"{len(failures)} unsafe answers:\n" + "\n".join(failures)


def test_the_fixture_ids_are_real(api: httpx.Client, targets: Targets) -> None:
    """The fuzzed routes act on real resources (so a 404 is not all they ever reach)."""
    assert api.get(f"/v1/products/{targets.product_id}").status_code == 200
    order = api.get(f"/v1/orders/{targets.order_id}", headers=targets.headers("customer"))
    assert order.status_code == 200
    deliveries = api.get(
        f"/v1/webhooks/{targets.webhook_id}/deliveries", headers=targets.headers("hooks")
    )
    assert deliveries.status_code == 200
