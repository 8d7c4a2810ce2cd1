"""Number normalisation to E.164, table-driven."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from routing.numbers import NumberError, is_mobile, national_form, to_e164


@pytest.mark.parametrize(
    ("raw", "e164"),
    [
        ("+4936411234567", "+4936411234567"),
        ("004936411234567", "+4936411234567"),
        ("036411234567", "+4936411234567"),
        ("0365 123 456", "+49365123456"),
        ("0365/123-456", "+49365123456"),
        ("tel:+49365123456", "+49365123456"),
        ("+43 1 5331234", "+4315331234"),
        ("0043 1 5331234", "+4315331234"),
        ("015112345678", "+4915112345678"),
    ],
)
def test_every_delivered_form_becomes_e164(raw: str, e164: str) -> None:
    assert to_e164(raw) == e164


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "no number"),
        ("   ", "no number"),
        ("1234567", "no country or area code"),  # a local number without area code
        ("+49abc", "not a telephone number"),
        ("sip:alice@example.org", "not a telephone number"),
        ("+491", "length"),
        ("+4912345678901234567", "length"),
        ("+0123456789", "country code"),
        ("++49365", "not a telephone number"),
    ],
)
def test_garbage_is_refused_with_a_reason(raw: str, reason: str) -> None:
    with pytest.raises(NumberError, match=reason):
        to_e164(raw)


def test_national_form_and_mobile() -> None:
    assert national_form("+49365123456") == "0365123456"
    assert national_form("+4315331234") is None
    assert is_mobile("+4915112345678")
    assert not is_mobile("+49365123456")


@given(st.text(max_size=40))
def test_no_input_raises_anything_but_number_error(raw: str) -> None:
    try:
        result = to_e164(raw)
    except NumberError:
        return
    assert result.startswith("+")
    assert result[1:].isdigit()
