"""Conditional requests: ETag on answers with an etag, If-Match on changes (sent upstream as
the resource's etag, 412 when the service finds it stale) and on reads, If-None-Match (304)."""

from __future__ import annotations

import httpx
import pytest

from .upstream_fakes import MUG_ETAG, MUG_ID, ORDER_ID, Upstream

pytestmark = pytest.mark.integration

TOKEN = {"Authorization": "Bearer header.payload.signature"}
MUG = f"/v1/products/{MUG_ID}"


async def test_a_change_with_the_current_entity_tag_goes_ahead(
    client: httpx.AsyncClient, upstreams: dict[str, Upstream]
) -> None:
    read = await client.get(MUG)
    response = await client.patch(
        MUG, headers={**TOKEN, "If-Match": read.headers["etag"]}, json={"stock": 9}
    )
    assert response.status_code == 200, response.text
    assert response.headers["etag"] == f'"{MUG_ETAG}"'
    request, _ = upstreams["product"].fake.last("UpdateProduct")
    assert request.product.etag == MUG_ETAG
    assert list(request.update_mask.paths) == ["stock"]


async def test_a_change_with_a_stale_entity_tag_is_412(
    client: httpx.AsyncClient, upstreams: dict[str, Upstream]
) -> None:
    response = await client.patch(
        MUG, headers={**TOKEN, "If-Match": '"an-older-etag"'}, json={"stock": 9}
    )
    assert response.status_code == 412
    body = response.json()
    assert body["code"] == 10  # ABORTED, as the service answered
    assert "changed since" in body["message"]


async def test_the_etag_in_a_body_is_a_condition_not_a_field_to_change(
    client: httpx.AsyncClient, upstreams: dict[str, Upstream]
) -> None:
    response = await client.patch(MUG, headers=TOKEN, json={"stock": 9, "etag": "an-older-etag"})
    assert response.status_code == 409  # ABORTED without If-Match, as AIP-154 has it
    request, _ = upstreams["product"].fake.last("UpdateProduct")
    assert list(request.update_mask.paths) == ["stock"]

    both = await client.patch(
        MUG, headers={**TOKEN, "If-Match": '"one"'}, json={"stock": 9, "etag": "another"}
    )
    assert both.status_code == 400
    assert "differ" in both.json()["message"]


@pytest.mark.parametrize(
    ("header", "status"),
    [
        ("*", 200),  # any: the product exists
        ('W/"weak"', 412),  # a weak tag never matches If-Match
        ('"a", "b"', 400),  # a change is made conditional on one tag
        ("no-quotes", 400),
        ('"unterminated', 400),
        ('"' + "x" * 2000 + '"', 400),
    ],
)
async def test_if_match_forms_on_a_change(
    client: httpx.AsyncClient, upstreams: dict[str, Upstream], header: str, status: int
) -> None:
    response = await client.patch(MUG, headers={**TOKEN, "If-Match": header}, json={"stock": 9})
    assert response.status_code == status, response.text
    if status != 200:
        assert set(response.json()) == {"code", "message", "details"}


async def test_if_match_on_a_resource_without_entity_tags_is_412(
    client: httpx.AsyncClient, upstreams: dict[str, Upstream]
) -> None:
    response = await client.post(
        f"/v1/orders/{ORDER_ID}:cancel", headers={**TOKEN, "If-Match": '"x"'}, json={}
    )
    assert response.status_code == 412
    assert not [c for c in upstreams["order"].fake.calls if c[0] == "CancelOrder"]


async def test_reads_answer_304_or_412_on_their_conditions(client: httpx.AsyncClient) -> None:
    tag = f'"{MUG_ETAG}"'
    not_modified = await client.get(MUG, headers={"If-None-Match": f'"other", W/{tag}'})
    assert not_modified.status_code == 304
    assert not_modified.content == b"" and not_modified.headers["etag"] == tag
    assert (await client.get(MUG, headers={"If-None-Match": '"other"'})).status_code == 200
    assert (await client.get(MUG, headers={"If-Match": tag})).status_code == 200
    stale = await client.get(MUG, headers={"If-Match": '"other"'})
    assert stale.status_code == 412
    assert stale.json()["code"] == 9
