"""Input rules: email normalisation and format, the password policy, names."""

from __future__ import annotations

import pytest
from auth_service.domain.model import (
    check_email,
    check_full_name,
    hash_refresh_token,
    new_refresh_token,
    normalise_email,
    password_problem,
)
from tienda_platform.errors import Validator

pytestmark = pytest.mark.unit


def test_email_is_trimmed_and_lower_cased() -> None:
    assert normalise_email("  Ada.Lovelace@Example.COM \n") == "ada.lovelace@example.com"


@pytest.mark.parametrize(
    "email", ["a@b.co", "first.last+tag@mail.example.org", "x@sub-1.example.io"]
)
def test_sane_emails_pass(email: str) -> None:
    validator = Validator()
    assert check_email(validator, email) == email
    assert validator.violations == []


@pytest.mark.parametrize(
    ("email", "description"),
    [
        ("", "is required"),
        ("   ", "is required"),
        ("no-at-sign.example.com", "is not an email address"),
        ("two@@example.com", "is not an email address"),
        ("a@localhost", "is not an email address"),
        ("a b@example.com", "is not an email address"),
        ("a@example..com", "is not an email address"),
        ("a@example.com.", "is not an email address"),
        ("a\x00@example.com", "is not an email address"),
        ("a" * 243 + "@example.com", "must be at most 254 characters"),
        ("a" * 1_000_000, "must be at most 254 characters"),
    ],
)
def test_bad_emails_are_violations(email: str, description: str) -> None:
    validator = Validator()
    check_email(validator, email)
    assert [(v.field, v.description) for v in validator.violations] == [("email", description)]


def test_email_of_exactly_254_characters_passes() -> None:
    email = "a" * 242 + "@example.com"
    assert len(email) == 254
    validator = Validator()
    check_email(validator, email)
    assert validator.violations == []


@pytest.mark.parametrize(
    ("password", "problem"),
    [
        ("abcdefgh12", None),
        ("ñandú-2024-pass", None),
        ("a1" * 64, None),
        ("abcdefg12", "must be 10 to 128 characters"),
        ("a1" * 64 + "x", "must be 10 to 128 characters"),
        ("x" * 1_000_000, "must be 10 to 128 characters"),
        ("abcdefghijk", "must contain at least one letter and one digit"),
        ("12345678901", "must contain at least one letter and one digit"),
        ("Ada1@Example.com", "must not be the email address"),
    ],
)
def test_password_policy(password: str, problem: str | None) -> None:
    assert password_problem(password, email="ada1@example.com") == problem


@pytest.mark.parametrize(
    ("full_name", "expected", "description"),
    [
        ("  Ada Lovelace ", "Ada Lovelace", None),
        ("", "", "is required"),
        ("   ", "", "is required"),
        ("x" * 201, "x" * 201, "must be at most 200 characters"),
        ("Ada\nLovelace", "Ada\nLovelace", "must not contain control characters"),
    ],
)
def test_full_name(full_name: str, expected: str, description: str | None) -> None:
    validator = Validator()
    assert check_full_name(validator, full_name) == expected
    assert [v.description for v in validator.violations] == ([description] if description else [])


def test_refresh_tokens_are_opaque_and_stored_as_sha256() -> None:
    first, second = new_refresh_token(), new_refresh_token()
    assert first.startswith("rt_") and len(first) == 46 and first != second
    digest = hash_refresh_token(first)
    assert len(digest) == 64 and int(digest, 16) >= 0
    assert digest != hash_refresh_token(second)
