"""Typed records of what the Verbund keeps in Redis; each validates what is read back.

Another site, an older version of this service or an operator with redis-cli
may have written a value: everything read is checked here (types, ranges,
finite numbers, sizes). Unknown extra fields are ignored, so a partner running
a newer version with more fields is still understood.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from routing.decision import AmlFix
from routing.location import MAX_ALTITUDE_M, MAX_RADIUS_M, MIN_ALTITUDE_M, Position

Text = Annotated[str, StringConstraints(max_length=256)]
LongText = Annotated[str, StringConstraints(max_length=8192)]
CallId = Annotated[str, StringConstraints(min_length=1, max_length=80)]
Site = Annotated[str, StringConstraints(min_length=1, max_length=32)]
Number = Annotated[str, StringConstraints(max_length=40)]
Latitude = Annotated[float, Field(ge=-90, le=90, allow_inf_nan=False)]
Longitude = Annotated[float, Field(ge=-180, le=180, allow_inf_nan=False)]
Radius = Annotated[float, Field(ge=0, le=MAX_RADIUS_M, allow_inf_nan=False)]
Epoch = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True)

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


class AmlFixRecord(Record):
    """One AML fix of a number (pushed by a handset or pulled from the central server)."""

    lat: Latitude
    lon: Longitude
    radius_m: Radius
    method: Text = ""
    time: Epoch  # of the fix
    received: Epoch | None = None
    confidence: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] | None = None  # 0..1
    format: Text | None = None
    altitude_m: Annotated[float, Field(allow_inf_nan=False)] | None = None

    @classmethod
    def of(cls, fix: AmlFix, received: float, **details: Any) -> AmlFixRecord:
        position = fix.position
        return cls(lat=position.lat, lon=position.lon, radius_m=position.radius_m, method=position.method,
                   time=fix.time, received=received, **details)  # fmt: skip

    def to_fix(self) -> AmlFix:
        return AmlFix(Position(self.lat, self.lon, self.radius_m, "Circle", self.method), self.time)


Altitude = Annotated[float, Field(ge=MIN_ALTITUDE_M, le=MAX_ALTITUDE_M, allow_inf_nan=False)]


class RoutedPosition(Record):
    lat: Latitude
    lon: Longitude
    radius_m: Radius
    method: Text = ""
    altitude_m: Altitude | None = None  # metres, from a 3-D PIDF-LO; shown on the card


class RoutedLocation(Record):
    """The location the routing used: its source and district (and the position, if it had one)."""

    source: Text
    district: Text | None = None
    ags: Text | None = None
    share: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] | None = None
    position: RoutedPosition | None = None


class CallRecord(Record):
    """What the entry site knew about a call, for the site that answers it."""

    call_id: CallId
    routed_at: Epoch
    entry_site: Site
    caller: Number
    routed_to: Text | None = None
    route: Text
    reason: LongText = ""
    certain: bool = False
    flags: Annotated[list[Text], Field(max_length=64)] = []
    location: RoutedLocation | None = None
    # the civic address of the PIDF-LO (RFC code -> value, routing.location.CivicAddress), for the card
    address: Annotated[dict[Annotated[str, StringConstraints(max_length=16)], Text], Field(max_length=32)] | None = None


class AnsweredMark(Record):
    site: Site
    dispatcher: Text
    at: Epoch


class AbandonedCall(Record):
    """A 112 call that ended before anyone answered: on every dispatcher's callback list."""

    call_id: CallId
    caller: Number
    site: Site
    at: Epoch
    waited_s: Annotated[float, Field(ge=0, allow_inf_nan=False)]


class MoveRecord(Record):
    """One overflow move and its outcome."""

    call_id: CallId
    from_site: Site = Field(alias="from")
    to: Site
    at: Epoch
    outcome: Text
    reason: LongText = ""
    detail: LongText = ""


class AuditEntry(Record):
    """Who changed or tried to change the routing rules, when and what."""

    at: Epoch
    site: Site
    who: Text
    action: Text
    result: Text
    problems: LongText | None = None
    old: Text | None = None
    new: Text | None = None
    changes: Annotated[list[LongText], Field(max_length=200)] = []


class EarlierCall(Record):
    call_id: CallId
    at: Epoch
