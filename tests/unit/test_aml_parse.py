"""AML parsing (SMS v1, SMS v2, HTTPS): tolerant of sloppy handsets, strict on what places a caller."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aml.parse import METHODS, AmlError, AmlMessage, parse_https, parse_https_body, parse_sms
from routing.location import Position

SENDER = "+4915112345678"

# --- SMS version 1 ------------------------------------------------------------------------------------------------

README_V1 = (
    'A"ML=1;lt=+50.92720;lg=+11.58640;rd=15;top=20250101120000;lc=68;pm=G;'
    "si=262010000000000;ei=353472104343540;mcc=262;mnc=01;ml=128"
)
V1_EXPECTED = AmlMessage(
    number="+4915112345678",
    position=Position(50.9272, 11.5864, 15.0, "Circle", "GNSS"),
    confidence=0.68,
    method="GNSS",
    fix_time=1735732800.0,
    imei="353472104343540",
    imsi="262010000000000",
    network="26201",
    altitude_m=None,
    format="sms-v1",
)
V1_NO_FIX = replace(V1_EXPECTED, position=None, confidence=None, method="Unknown", fix_time=None)


def v1(**changes: str | None) -> str:
    """The README message with fields replaced (a value) or removed (None), in the original order."""
    fields = dict(part.split("=", 1) for part in README_V1.split(";")[1:])
    for key, value in changes.items():
        if value is None:
            fields.pop(key, None)
        else:
            fields[key] = value
    return 'A"ML=1;' + ";".join(f"{key}={value}" for key, value in fields.items())


def at(method: str) -> AmlMessage:
    return replace(V1_EXPECTED, method=method, position=Position(50.9272, 11.5864, 15.0, "Circle", method))


@pytest.mark.parametrize(
    ("text", "sender", "expected"),
    [
        pytest.param(README_V1, SENDER, V1_EXPECTED, id="readme"),
        pytest.param(v1(ml="127"), SENDER, V1_EXPECTED, id="wrong-ml"),
        pytest.param(v1(ml="x"), SENDER, V1_EXPECTED, id="garbled-ml"),
        pytest.param(v1(ml=None), SENDER, V1_EXPECTED, id="no-ml"),
        pytest.param(v1(rd="N"), SENDER, V1_NO_FIX, id="rd-N"),
        pytest.param(v1(pm="N"), SENDER, V1_NO_FIX, id="pm-N"),
        pytest.param(
            v1(lt="+00.00000", lg="+000.00000", rd="N", lc="0", pm="N"), SENDER, V1_NO_FIX, id="google-no-location"
        ),
        pytest.param(v1(lt="abc", rd="N"), SENDER, V1_NO_FIX, id="no-fix-coordinates-unread"),
        pytest.param(v1(lt=None, lg=None), SENDER, V1_NO_FIX, id="no-coordinates"),
        pytest.param(v1(lt="0", lg="0"), SENDER, V1_NO_FIX, id="zero-zero-filler"),
        pytest.param(v1(), "004915112345678", V1_EXPECTED, id="sender-00"),
        pytest.param(v1(), "015112345678", V1_EXPECTED, id="sender-national"),
        pytest.param(v1(), None, replace(V1_EXPECTED, number=None), id="no-sender"),
        pytest.param(v1(), "  ", replace(V1_EXPECTED, number=None), id="blank-sender"),
        pytest.param(v1(pm="W"), SENDER, at("WiFi"), id="pm-W"),
        pytest.param(v1(pm="C"), SENDER, at("Cell"), id="pm-C"),
        pytest.param(v1(pm="g"), SENDER, V1_EXPECTED, id="pm-lower"),
        pytest.param(v1(pm="X"), SENDER, at("Unknown"), id="pm-unknown-letter"),
        pytest.param(v1(pm=None), SENDER, at("Unknown"), id="pm-missing"),
        pytest.param(
            v1(rd=None),
            SENDER,
            replace(V1_EXPECTED, position=Position(50.9272, 11.5864, 0.0, "Point", "GNSS")),
            id="no-radius-is-a-point",
        ),
        pytest.param(
            v1(rd="0"),
            SENDER,
            replace(V1_EXPECTED, position=Position(50.9272, 11.5864, 0.0, "Circle", "GNSS")),
            id="radius-0",
        ),
        pytest.param(
            v1(lt="-33.5", lg="151.25", rd="1000000"),
            SENDER,
            replace(V1_EXPECTED, position=Position(-33.5, 151.25, 1_000_000.0, "Circle", "GNSS")),
            id="limits",
        ),
        pytest.param(v1(top=None), SENDER, replace(V1_EXPECTED, fix_time=None), id="no-top"),
        pytest.param(v1(lc=None), SENDER, replace(V1_EXPECTED, confidence=None), id="no-lc"),
        pytest.param(v1(lc="150"), SENDER, replace(V1_EXPECTED, confidence=None), id="lc-out-of-range"),
        pytest.param(v1(lc="abc"), SENDER, replace(V1_EXPECTED, confidence=None), id="lc-garbled"),
        pytest.param(
            v1(si="abc", ei=None, mcc="2620"),
            SENDER,
            replace(V1_EXPECTED, imsi=None, imei=None, network=None),
            id="ids",
        ),
        pytest.param(v1(mnc="010"), SENDER, replace(V1_EXPECTED, network="262010"), id="three-digit-mnc"),
    ],
)
def test_sms_v1(text: str, sender: str | None, expected: AmlMessage) -> None:
    assert parse_sms(text, sender) == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(README_V1.lower().replace('a"ml', 'A"ML'), id="lower-case-keys"),
        pytest.param(README_V1.replace("lt=", "LT=").replace("pm=", "Pm="), id="mixed-case-keys"),
        pytest.param('a"ml=1' + README_V1[6:], id="lower-case-header"),
        pytest.param(README_V1 + ";", id="trailing-semicolon"),
        pytest.param(README_V1.replace(";", ";;"), id="empty-fields"),
        pytest.param("\r\n  " + README_V1 + "\r\n", id="crlf-around"),
        pytest.param(README_V1.replace(";", " ;\r\n"), id="crlf-between"),
        pytest.param(README_V1.replace("lt=", "lt = "), id="spaces-around-equals"),
        pytest.param(README_V1 + ";xx=unknown;hello;zz=", id="unknown-keys-and-fragments"),
        pytest.param(README_V1.replace("lc=68;", "") + ";lc=68", id="order-irrelevant"),
        pytest.param(README_V1 + ";lt=+50.92720", id="repeated-same-value"),
    ],
)
def test_sms_v1_real_world_deviations(text: str) -> None:
    assert parse_sms(text, SENDER) == V1_EXPECTED


def test_sms_v1_missing_lc_still_placed() -> None:
    message = parse_sms(v1(lc=None), SENDER)
    assert message.position == V1_EXPECTED.position
    assert message.confidence is None


# --- SMS version 2 (Android) ----------------------------------------------------------------------------------------

V2 = (
    'A"ML=2;en=112;et=1735732800;lo=50.92720,11.58640,15.0;lt=7;lc=68;lz=231.5,3.0;ls=F;'
    "ei=358239059042542;nc=26201;hc=26203;lg=de-DE"
)
V2_EXPECTED = AmlMessage(
    number="+4915112345678",
    position=Position(50.9272, 11.5864, 15.0, "Circle", "Fused"),
    confidence=0.68,
    method="Fused",
    fix_time=1735732807.0,
    imei="358239059042542",
    imsi=None,
    network="26201",
    altitude_m=231.5,
    format="sms-v2",
)


def v2_at(method: str) -> AmlMessage:
    return replace(V2_EXPECTED, method=method, position=Position(50.9272, 11.5864, 15.0, "Circle", method))


@pytest.mark.parametrize(
    ("text", "sender", "expected"),
    [
        pytest.param(V2, SENDER, V2_EXPECTED, id="v2"),
        # en is the dialled number (112), never the caller: the caller is the SMS originator
        pytest.param(V2.replace("en=112", "en=+4936411234"), SENDER, V2_EXPECTED, id="en-is-not-the-caller"),
        pytest.param(V2, None, replace(V2_EXPECTED, number=None), id="no-sender"),
        pytest.param(V2.replace("ls=F", "ls=G"), SENDER, v2_at("GNSS"), id="ls-G"),
        pytest.param(V2.replace("ls=F", "ls=W"), SENDER, v2_at("WiFi"), id="ls-W"),
        pytest.param(V2.replace("ls=F", "ls=C"), SENDER, v2_at("Cell"), id="ls-C"),
        pytest.param(V2.replace("ls=F", "ls=U"), SENDER, v2_at("Unknown"), id="ls-U"),
        pytest.param(V2.replace(";ls=F", ""), SENDER, v2_at("Unknown"), id="ls-missing"),
        pytest.param(V2.replace("lt=7", "lt=-9999"), SENDER, replace(V2_EXPECTED, fix_time=None), id="lt-unknown"),
        pytest.param(V2.replace(";lt=7", ""), SENDER, replace(V2_EXPECTED, fix_time=None), id="lt-missing"),
        pytest.param(V2.replace(";et=1735732800", ""), SENDER, replace(V2_EXPECTED, fix_time=None), id="et-missing"),
        pytest.param(V2.replace(";lz=231.5,3.0", ""), SENDER, replace(V2_EXPECTED, altitude_m=None), id="lz-missing"),
        pytest.param(V2.replace("lz=231.5", "lz=x"), SENDER, replace(V2_EXPECTED, altitude_m=None), id="lz-garbled"),
        pytest.param(
            V2.replace(",15.0;", ",0.0;"),
            SENDER,
            replace(V2_EXPECTED, position=Position(50.9272, 11.5864, 0.0, "Point", "Fused")),
            id="accuracy-0-is-unknown",
        ),
        pytest.param(
            V2.replace(",15.0;", ";"),
            SENDER,
            replace(V2_EXPECTED, position=Position(50.9272, 11.5864, 0.0, "Point", "Fused")),
            id="lo-without-accuracy",
        ),
        pytest.param(
            V2.replace(";lo=50.92720,11.58640,15.0", ""),
            SENDER,
            replace(V2_EXPECTED, position=None, confidence=None, method="Unknown", fix_time=None, altitude_m=None),
            id="no-fix",
        ),
        pytest.param(V2.lower() + ";\r\n", SENDER, V2_EXPECTED, id="lower-case-crlf"),
    ],
)
def test_sms_v2(text: str, sender: str | None, expected: AmlMessage) -> None:
    assert parse_sms(text, sender) == expected


def test_sms_v2_googles_published_example() -> None:
    """ELS Beta example as published (lt=-9999, US numbers): parsed, the fix time left unknown."""
    text = (
        'A"ML=2;en=+15555555555;et=1593187189;lo=-37.42175,-122.08461,2000.1;lt=-9999;lc=68;lz=-100.1,100.1;'
        "ls=G;ei=358239059042542;nc=310260;hc=310260;lg=en-US"
    )
    message = parse_sms(text, "+15555550100")
    assert message.position == Position(-37.42175, -122.08461, 2000.1, "Circle", "GNSS")
    assert (message.number, message.fix_time, message.network, message.altitude_m) == (
        "+15555550100",
        None,
        "310260",
        -100.1,
    )


# --- HTTPS ----------------------------------------------------------------------------------------------------------

HTTPS = {
    "v": "1",
    "emergency_number": "112",
    "source": "call",
    "time": "1735732800000",
    "location_time": "1735732805500",
    "location_latitude": "50.8786",
    "location_longitude": "12.0824",
    "location_accuracy": "12.5",
    "location_confidence": "0.68",
    "location_source": "gps",
    "location_altitude": "201.0",
    "location_floor": "2",
    "device_number": "+4915112345678",
    "device_imei": "354773072099116",
    "device_imsi": "262011234567890",
    "cell_network_mcc": "262",
    "cell_network_mnc": "01",
    "cell_home_mcc": "262",
    "cell_home_mnc": "03",
    "device_languages": "de-DE",
}
HTTPS_EXPECTED = AmlMessage(
    number="+4915112345678",
    position=Position(50.8786, 12.0824, 12.5, "Circle", "GNSS"),
    confidence=0.68,
    method="GNSS",
    fix_time=1735732805.5,
    imei="354773072099116",
    imsi="262011234567890",
    network="26201",
    altitude_m=201.0,
    format="https",
)


def https(**changes: str | None) -> dict[str, str]:
    fields = dict(HTTPS)
    for key, value in changes.items():
        if value is None:
            fields.pop(key, None)
        else:
            fields[key] = value
    return fields


def https_at(method: str) -> AmlMessage:
    return replace(HTTPS_EXPECTED, method=method, position=Position(50.8786, 12.0824, 12.5, "Circle", method))


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param(HTTPS, HTTPS_EXPECTED, id="full"),
        pytest.param(https(location_source="GPS"), HTTPS_EXPECTED, id="source-upper-case"),
        pytest.param(https(location_source="wifi"), https_at("WiFi"), id="wifi"),
        pytest.param(https(location_source="cell"), https_at("Cell"), id="cell"),
        pytest.param(https(location_source="unknown"), https_at("Unknown"), id="unknown"),
        pytest.param(https(location_source="fused"), https_at("Unknown"), id="anything-else"),
        pytest.param(https(location_source=None), https_at("Unknown"), id="no-source"),
        pytest.param(https(emergency_number="999"), HTTPS_EXPECTED, id="emergency-number-ignored"),
        pytest.param(https(device_number=None), replace(HTTPS_EXPECTED, number=None), id="no-device-number"),
        pytest.param(https(device_number="004915112345678"), HTTPS_EXPECTED, id="device-number-00"),
        pytest.param(https(location_time=None), replace(HTTPS_EXPECTED, fix_time=None), id="no-location-time"),
        pytest.param(https(time=None), HTTPS_EXPECTED, id="no-time"),
        pytest.param(https(location_confidence="83"), replace(HTTPS_EXPECTED, confidence=None), id="confidence-gt-1"),
        pytest.param(https(location_altitude=None), replace(HTTPS_EXPECTED, altitude_m=None), id="no-altitude"),
        pytest.param(https(cell_network_mnc=None), replace(HTTPS_EXPECTED, network=None), id="no-mnc"),
        pytest.param(https(device_imei="", device_imsi=None), replace(HTTPS_EXPECTED, imei=None, imsi=None), id="ids"),
        pytest.param(
            https(location_accuracy=None),
            replace(HTTPS_EXPECTED, position=Position(50.8786, 12.0824, 0.0, "Point", "GNSS")),
            id="no-accuracy",
        ),
        pytest.param(
            https(location_longitude="1.0E-4"),
            replace(HTTPS_EXPECTED, position=Position(50.8786, 0.0001, 12.5, "Circle", "GNSS")),
            id="java-exponent",
        ),
        pytest.param(
            https(location_latitude=None, location_longitude=None),
            replace(HTTPS_EXPECTED, position=None, confidence=None, method="Unknown", fix_time=None, altitude_m=None),
            id="no-fix",
        ),
        pytest.param(
            {key.upper(): f" {value} " for key, value in HTTPS.items()}, HTTPS_EXPECTED, id="key-case-whitespace"
        ),
        pytest.param(
            {"device_number": "+4915112345678", "extra": "x"},
            AmlMessage("+4915112345678", None, None, "Unknown", None, None, None, None, None, "https"),
            id="number-only",
        ),
    ],
)
def test_https(fields: dict[str, str], expected: AmlMessage) -> None:
    assert parse_https(fields) == expected


# --- Refusals ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "sender", "reason"),
    [
        pytest.param(v1(lt="+91.00000"), SENDER, "latitude out of range", id="lat-91"),
        pytest.param(v1(lt="-90.5"), SENDER, "latitude out of range", id="lat-minus-90.5"),
        pytest.param(v1(lg="+200.00000"), SENDER, "longitude out of range", id="lon-200"),
        pytest.param(v1(lt="abc"), SENDER, "latitude is not a number", id="lt-abc"),
        pytest.param(v1(lg="nan"), SENDER, "longitude is not a number", id="lon-nan"),
        pytest.param(v1(lt="inf"), SENDER, "latitude is not a number", id="lat-inf"),
        pytest.param(v1(lt="50,92720"), SENDER, "latitude is not a number", id="decimal-comma"),
        pytest.param(v1(lg=None), SENDER, "coordinate is missing", id="lat-without-lon"),
        pytest.param(v1(rd="-5"), SENDER, "negative radius", id="radius-minus-5"),
        pytest.param(v1(rd="1000001"), SENDER, "radius absurdly large", id="radius-absurd"),
        pytest.param(v1(rd="far"), SENDER, "radius is not a number", id="radius-text"),
        pytest.param(v1(top="20251301120000"), SENDER, "unparseable top", id="top-month-13"),
        pytest.param(v1(top="2025-01-01T12:00"), SENDER, "unparseable top", id="top-iso"),
        pytest.param(v1(top="202501011200"), SENDER, "unparseable top", id="top-short"),
        pytest.param(v1(top="99990101000000"), SENDER, "not a plausible time", id="top-year-9999"),
        pytest.param(v1(), "+49 151 abc", "malformed number", id="malformed-sender"),
        pytest.param(v1(), "4915112345678", "malformed number", id="sender-without-prefix"),
        pytest.param(v1(), "+0123456789", "malformed number", id="sender-country-0"),
        pytest.param(v1(), "1" * 100, "malformed number", id="sender-huge"),
        pytest.param("", SENDER, "empty", id="empty"),
        pytest.param(" \r\n ", SENDER, "empty", id="blank"),
        pytest.param(README_V1 + ";xx=" + "y" * 1000, SENDER, "too long", id="too-long"),
        pytest.param("hello there", SENDER, "not an AML message", id="not-aml"),
        pytest.param("AML=1;lt=50.9;lg=11.5", SENDER, "not an AML message", id="header-without-quote"),
        pytest.param('A"ML=3;lt=50.9;lg=11.5', SENDER, "unsupported AML version", id="version-3"),
        pytest.param(v1(rd="N"), None, "nothing usable", id="neither-number-nor-position"),
        pytest.param('A"ML=1', None, "nothing usable", id="bare-header"),
        pytest.param(README_V1 + ";lt=+51.0", SENDER, "lt given twice", id="conflicting-repeat"),
        pytest.param(V2.replace("lt=7", "lt=abc"), SENDER, "unparseable lt", id="v2-lt-abc"),
        pytest.param(V2.replace("lt=7", "lt=4102444800"), SENDER, "after the year 2100", id="v2-lt-huge"),
        pytest.param(V2.replace("et=1735732800", "et=yesterday"), SENDER, "unparseable et", id="v2-et-text"),
        pytest.param(V2.replace("lo=50.92720,", "lo=91,"), SENDER, "latitude out of range", id="v2-lat-91"),
        pytest.param(V2.replace("11.58640,", "200,"), SENDER, "longitude out of range", id="v2-lon-200"),
        pytest.param(V2.replace(",15.0;", ",-5;"), SENDER, "negative radius", id="v2-radius-minus-5"),
        pytest.param(V2.replace("lo=50.92720,11.58640,15.0", "lo=50.9"), SENDER, "lo must be", id="v2-lo-short"),
        pytest.param(V2, "not-a-number", "malformed number", id="v2-malformed-sender"),
    ],
)
def test_sms_refusals(text: str, sender: str | None, reason: str) -> None:
    with pytest.raises(AmlError, match=reason):
        parse_sms(text, sender)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        pytest.param(https(location_latitude="91"), "latitude out of range", id="lat-91"),
        pytest.param(https(location_longitude="200"), "longitude out of range", id="lon-200"),
        pytest.param(https(location_latitude="abc"), "latitude is not a number", id="lat-abc"),
        pytest.param(https(location_longitude="-Infinity"), "longitude is not a number", id="lon-inf"),
        pytest.param(https(location_longitude="1e999"), "longitude is not a number", id="lon-overflow"),
        pytest.param(https(location_longitude=None), "coordinate is missing", id="lat-without-lon"),
        pytest.param(https(location_accuracy="-5"), "negative radius", id="radius-minus-5"),
        pytest.param(https(location_accuracy="2000000"), "radius absurdly large", id="radius-absurd"),
        pytest.param(https(location_time="yesterday"), "unparseable location_time", id="location-time-text"),
        pytest.param(https(time="2025-01-01T12:00:00Z"), "unparseable time", id="time-iso"),
        pytest.param(https(location_time="999999999999999"), "not a plausible time", id="location-time-far"),
        pytest.param(https(device_number="+49 151 abc"), "malformed number", id="malformed-number"),
        pytest.param(https(device_number="112"), "malformed number", id="short-number"),
        pytest.param({}, "nothing usable", id="empty"),
        pytest.param({"emergency_number": "112", "v": "1"}, "nothing usable", id="neither-number-nor-position"),
        pytest.param(https(device_languages="de" * 101), "too long", id="field-too-long"),
        pytest.param({**HTTPS, "x" * 201: "1"}, "too long", id="key-too-long"),
        pytest.param({**HTTPS, "LOCATION_LATITUDE": "51.0"}, "given twice", id="conflicting-case-duplicate"),
    ],
)
def test_https_refusals(fields: dict[str, str], reason: str) -> None:
    with pytest.raises(AmlError, match=reason):
        parse_https(fields)


# --- Properties -------------------------------------------------------------------------------------------------------

V1_KEYS = ["lt", "lg", "rd", "top", "lc", "pm", "si", "ei", "mcc", "mnc", "ml", "LT", "xx"]
V2_KEYS = ["en", "et", "lo", "lt", "lc", "lz", "ls", "ei", "nc", "hc", "lg", "LO"]
HTTPS_KEYS = [*HTTPS, "LOCATION_LATITUDE", "x"]
# Values near the real ones: digits, signs, separators, N, the odd letter and unicode digit
VALUE = st.one_of(
    st.text(alphabet="0123456789+-.,eENGWCFUn ٣", max_size=20),
    st.from_regex(r"[+-]?[0-9]{1,3}\.[0-9]{1,6}", fullmatch=True),
    st.from_regex(r"[0-9]{1,16}", fullmatch=True),
    st.text(max_size=20),
)
SENDERS = st.one_of(st.none(), st.text(max_size=30), st.from_regex(r"\+?[0-9 ]{0,20}", fullmatch=True))


def sms(header: str, keys: list[str]) -> st.SearchStrategy[str]:
    pairs = st.lists(st.tuples(st.sampled_from(keys), VALUE), max_size=14)
    return pairs.map(lambda items: header + "".join(f";{key}={value}" for key, value in items))


def mutated(text: str) -> st.SearchStrategy[str]:
    """A valid message with some values replaced by near-miss ones (reaches the deeper checks)."""
    header, *parts = text.split(";")
    keys = [part.split("=", 1)[0] for part in parts]
    return st.dictionaries(st.sampled_from(keys), VALUE, max_size=4).map(
        lambda changes: ";".join(
            [header, *(f"{key}={changes.get(key, value)}" for key, value in (p.split("=", 1) for p in parts))]
        )
    )


def check(message: AmlMessage) -> None:
    assert message.position is not None or message.number is not None
    assert message.method in METHODS
    assert message.number is None or message.number.startswith("+")
    assert message.confidence is None or 0 <= message.confidence <= 1
    assert message.fix_time is None or math.isfinite(message.fix_time)
    if message.position is not None:
        position = message.position
        assert -90 <= position.lat <= 90
        assert -180 <= position.lon <= 180
        assert 0 <= position.radius_m <= 1_000_000
        assert position.method == message.method


@given(
    text=st.one_of(
        st.text(max_size=1100),
        sms('A"ML=1', V1_KEYS),
        sms('A"ML=2', V2_KEYS),
        sms('a"ml=1', V2_KEYS),
        mutated(README_V1),
        mutated(V2),
    ),
    sender=SENDERS,
)
def test_parse_sms_raises_only_aml_error(text: str, sender: str | None) -> None:
    try:
        message = parse_sms(text, sender)
    except AmlError as exc:
        assert str(exc)
    else:
        check(message)


@given(
    fields=st.one_of(
        st.dictionaries(st.text(max_size=30), st.text(max_size=220), max_size=8),
        st.dictionaries(st.sampled_from(HTTPS_KEYS), VALUE, max_size=12),
        st.dictionaries(st.sampled_from(HTTPS_KEYS), st.text(max_size=220), max_size=12),
        st.dictionaries(st.sampled_from(HTTPS_KEYS), VALUE, max_size=4).map(lambda changes: {**HTTPS, **changes}),
    )
)
def test_parse_https_raises_only_aml_error(fields: dict[str, str]) -> None:
    try:
        message = parse_https(fields)
    except AmlError as exc:
        assert str(exc)
    else:
        check(message)


@pytest.mark.parametrize(
    ("body", "number"),
    [
        (b"device_number=+4915112345678&location_latitude=50.9&location_longitude=11.5", "+4915112345678"),
        (b"device_number=%2B4915112345678&location_latitude=50.9&location_longitude=11.5", "+4915112345678"),
        (b"device_number=015112345678&location_latitude=50.9&location_longitude=11.5", "+4915112345678"),
    ],
)
def test_a_plus_that_was_not_percent_encoded_is_a_plus(body: bytes, number: str) -> None:
    assert parse_https_body(body).number == number


@pytest.mark.parametrize(
    "body",
    [b"device_number=+49+151+12&location_latitude=50.9&location_longitude=11.5", b"device_number=++4915112345678"],
)
def test_only_a_leading_space_before_digits_is_taken_for_a_plus(body: bytes) -> None:
    with pytest.raises(AmlError, match="number"):
        parse_https_body(body)
