"""Calling numbers in E.164, whatever form the network delivers them in.

The carrier sends +49..., 0049..., 0... (national) and sometimes worse. The
routing, the AML store and the screen pops all key on the same E.164 form.
"""

from __future__ import annotations

import re

COUNTRY_CODE = "49"
_DIGITS = re.compile(r"^\+?[0-9]+$")
# German mobile ranges (015x, 016x, 017x): no Ortsnetz, the area-code source does not apply.
MOBILE_PREFIXES = ("+4915", "+4916", "+4917")


class NumberError(ValueError):
    """The number cannot be brought into E.164; the message says why."""


def to_e164(raw: str) -> str:
    """'+4936411234', '004936411234', '036411234' -> '+4936411234'."""
    number = raw.strip().replace(" ", "").replace("-", "").replace("/", "")
    if number.lower().startswith("tel:"):
        number = number[4:]
    if not number:
        raise NumberError("no number")
    if not _DIGITS.match(number):
        raise NumberError("not a telephone number")  # never the number itself: errors get logged
    if number.startswith("+"):
        e164 = number
    elif number.startswith("00"):
        e164 = "+" + number[2:]
    elif number.startswith("0"):
        e164 = f"+{COUNTRY_CODE}{number[1:]}"
    else:
        raise NumberError("no country or area code")
    if not 8 <= len(e164) - 1 <= 15 or e164[1] == "0":
        raise NumberError("not a valid E.164 length or country code")
    return e164


def national_form(e164: str) -> str | None:
    """'+4936411234' -> '036411234'; None outside Germany."""
    if e164.startswith("+" + COUNTRY_CODE):
        return "0" + e164[1 + len(COUNTRY_CODE) :]
    return None


def is_mobile(e164: str) -> bool:
    return e164.startswith(MOBILE_PREFIXES)
