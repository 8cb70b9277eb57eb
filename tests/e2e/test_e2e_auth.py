"""Accounts and tokens through REST against the real processes."""

from __future__ import annotations

import httpx
import pytest
from e2e_support import User, create_product, register

pytestmark = pytest.mark.e2e


def test_register_normalises_email_and_refuses_duplicates(api: httpx.Client) -> None:
    user = register(api)
    again = api.post(
        "/v1/auth/register",
        json={"email": f"  {user.email.upper()} ", "password": "another-pass-1", "fullName": "Dup"},
    )
    assert again.status_code == 409
    assert again.json()["code"] == 6


def test_refresh_rotates_and_a_reused_token_is_rejected(api: httpx.Client) -> None:
    user = register(api)

    first = api.post("/v1/auth/refresh", json={"refresh_token": user.refresh_token})
    assert first.status_code == 200, first.text
    rotated = first.json()
    assert rotated["token_type"] == "Bearer"
    assert rotated["refresh_token"] != user.refresh_token

    reused = api.post("/v1/auth/refresh", json={"refresh_token": user.refresh_token})
    assert reused.status_code == 401
    # reuse revokes the whole family, the rotated token included
    after = api.post("/v1/auth/refresh", json={"refresh_token": rotated["refresh_token"]})
    assert after.status_code == 401


def test_profile_read_update_and_delete(api: httpx.Client) -> None:
    user = register(api)

    me = api.get("/v1/users/me", headers=user.headers)
    assert me.status_code == 200
    assert me.json()["email"] == user.email
    assert me.json()["role"] == "ROLE_CUSTOMER"

    renamed = api.patch("/v1/users/me", headers=user.headers, json={"full_name": "Ada Lovelace"})
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["full_name"] == "Ada Lovelace"

    assert api.delete("/v1/users/me", headers=user.headers).status_code == 200
    gone = api.post("/v1/auth/login", json={"email": user.email, "password": user.password})
    assert gone.status_code == 401


def test_jwks_is_public_and_lists_eddsa_keys(api: httpx.Client) -> None:
    response = api.get("/.well-known/jwks.json")
    assert response.status_code == 200
    keys = response.json()["keys"]
    assert keys and all(k["kty"] == "OKP" and k["alg"] == "EdDSA" and k["kid"] for k in keys)


def test_catalogue_is_public_and_paginates_stably(api: httpx.Client, admin: User) -> None:
    for _ in range(3):
        create_product(api, admin, stock=1)
    seen: list[str] = []
    token = ""
    while True:
        page = api.get("/v1/products", params={"page_size": 2, "page_token": token})
        assert page.status_code == 200, page.text
        body = page.json()
        assert len(body["products"]) <= 2
        seen += [p["id"] for p in body["products"]]
        token = body["next_page_token"]
        if not token:
            break
    assert len(seen) == len(set(seen)) >= 3


def test_admin_updates_product_fields_named_in_the_body(api: httpx.Client, admin: User) -> None:
    product = create_product(api, admin, stock=1, price_cents=500)

    response = api.patch(
        f"/v1/products/{product['id']}", headers=admin.headers, json={"priceCents": 750}
    )

    assert response.status_code == 200, response.text
    updated = response.json()
    assert updated["price_cents"] == "750"
    assert updated["name"] == product["name"]
    assert updated["stock"] == 1
