"""If-Match / If-None-Match parsing and matching (RFC 9110, section 13)."""

from __future__ import annotations

import pytest
from gateway.conditional import Condition, entity_tag
from gateway.errors import ApiError
from hypothesis import given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.unit


def test_tags_lists_and_any() -> None:
    condition = Condition('"a", W/"b" ,"c"', "If-Match")
    assert condition.tags == [(False, "a"), (True, "b"), (False, "c")]
    assert condition.strong_match("a") and not condition.strong_match("b")
    assert condition.weak_match("b") and not condition.weak_match("d")
    assert Condition(" * ", "If-Match").any
    assert Condition("*", "If-None-Match").weak_match("anything")
    assert Condition('""', "If-Match").tags == [(False, "")]
    assert not Condition('""', "If-Match").strong_match("")  # no etag is no match


def test_a_change_is_conditional_on_one_strong_tag() -> None:
    assert Condition('"a"', "If-Match").strong_tag() == "a"
    assert Condition("*", "If-Match").strong_tag() is None
    with pytest.raises(ApiError) as weak:
        Condition('W/"a"', "If-Match").strong_tag()
    assert weak.value.http_status == 412
    with pytest.raises(ApiError) as several:
        Condition('"a", "b"', "If-Match").strong_tag()
    assert several.value.http_status == 400


@pytest.mark.parametrize(
    "header",
    ["", "abc", '"a" "b"', '"a",,', 'W/ "a"', '"a', '"a"b', '"\x7f"', '"' + "x" * 1100 + '"'],
)
def test_malformed_headers_are_400(header: str) -> None:
    with pytest.raises(ApiError) as malformed:
        Condition(header, "If-Match")
    assert malformed.value.http_status == 400
    assert "malformed If-Match" in malformed.value.message


@settings(max_examples=300, database=None, deadline=None)
@given(st.text(max_size=200))
def test_any_header_parses_or_is_refused_cleanly(header: str) -> None:
    try:
        condition = Condition(header, "If-Match")
    except ApiError as error:
        assert error.http_status == 400
        return
    try:
        tag = condition.strong_tag()
    except ApiError as error:
        assert error.http_status in (400, 412)
        return
    assert tag is None or entity_tag(tag) in header


@settings(max_examples=200, database=None, deadline=None)
@given(st.lists(st.from_regex(r"[!#-~]{0,20}", fullmatch=True), min_size=1, max_size=5))
def test_every_listed_tag_is_read_back(tags: list[str]) -> None:
    condition = Condition(", ".join(entity_tag(t) for t in tags), "If-None-Match")
    assert [tag for _, tag in condition.tags] == tags
    assert all(condition.weak_match(t) for t in tags if t)
