"""Page tokens round-trip and forged ones are a bad request."""

from __future__ import annotations

import pytest
from tienda_platform.errors import InvalidArgument, Validator
from tienda_platform.pagination import decode_page_token, encode_page_token, page_size

pytestmark = pytest.mark.unit


def test_page_tokens_round_trip() -> None:
    token = encode_page_token({"after": "0192-id"})
    assert decode_page_token(token, ("after",)) == {"after": "0192-id"}
    assert decode_page_token("", ("after",)) is None


@pytest.mark.parametrize("token", ["%%%", "e30", "eyJ2IjoyfQ", "x" * 10_000])
def test_foreign_page_tokens_are_invalid_arguments(token: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        decode_page_token(token, ("after",))
    assert caught.value.violations[0].field == "page_token"


def test_page_size_defaults_caps_and_refuses_negatives() -> None:
    assert (page_size(0), page_size(7), page_size(10_000)) == (20, 7, 100)
    with pytest.raises(InvalidArgument):
        page_size(-1)


def test_validator_reports_every_violation() -> None:
    check = Validator()
    check.check(False, "items[0].quantity", "must be at least 1")
    check.check(True, "payment_token", "required")
    check.check(False, "items[1].product_id", "not a UUID")
    with pytest.raises(InvalidArgument) as caught:
        check.raise_if_invalid()
    assert [v.field for v in caught.value.violations] == [
        "items[0].quantity",
        "items[1].product_id",
    ]
    assert "and 1 more" in caught.value.message


def test_a_page_token_nested_too_deeply_is_an_invalid_argument() -> None:
    import base64

    token = base64.urlsafe_b64encode(b"[" * 5000 + b"]" * 5000).decode().rstrip("=")
    with pytest.raises(InvalidArgument):
        decode_page_token(token, ("before",))
