"""The key table of the store and its documentation agree; records refuse what they must."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from verbund112.store import keys
from verbund112.store.records import AmlFixRecord, CallRecord, MoveRecord

DOC = (Path(__file__).resolve().parents[2] / "docs/store.md").read_text()


@pytest.mark.parametrize("entry", keys.TABLE, ids=lambda e: e.pattern)
def test_every_key_and_channel_is_documented(entry: keys.Entry) -> None:
    assert f"| `{entry.pattern}` | {entry.kind} |" in DOC


def test_every_key_the_store_spells_is_in_the_table() -> None:
    patterns = {e.pattern for e in keys.TABLE}
    spelled = [keys.aml("<e164>"), keys.call("<call id>"), keys.calls_by_number("<e164>"), keys.answered("<call id>"),
               keys.abandoned_entry("<call id>"), keys.heartbeat("<site>"), keys.AML_UPDATES_CHANNEL,
               keys.ABANDONED_CHANNEL, keys.ABANDONED_KEY, keys.MOVES_KEY, keys.AUDIT_KEY,
               keys.abandoned_seen("<call id>"), keys.aml_nonce("<nonce>")]  # fmt: skip
    assert sorted(spelled) == sorted(patterns)


def test_personal_data_is_kept_60_minutes_at_most() -> None:
    assert keys.PERSONAL_DATA_TTL_S <= 3600
    assert all("60 min" in e.expiry or e.kind == "channel" for e in keys.TABLE if e.personal)
    assert all(
        e.max_age_s is not None and e.max_age_s <= 3600 for e in keys.TABLE if e.personal and e.kind != "channel"
    )


@pytest.mark.parametrize(
    "fields",
    [
        {"lat": 90.1, "lon": 11, "radius_m": 1, "time": 1},
        {"lat": 50, "lon": 181, "radius_m": 1, "time": 1},
        {"lat": 50, "lon": 11, "radius_m": -1, "time": 1},
        {"lat": 50, "lon": 11, "radius_m": 2_000_000, "time": 1},
        {"lat": 50, "lon": 11, "radius_m": 1, "time": float("nan")},
        {"lat": 50, "lon": 11, "radius_m": 1, "time": -1},
        {"lat": 50, "lon": 11, "radius_m": 1, "time": 1, "confidence": 68},
        {"lat": "50", "lon": 11, "radius_m": 1, "time": 1, "method": "x" * 300},
    ],
)
def test_an_aml_fix_out_of_range_is_refused(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        AmlFixRecord.model_validate(fields)


def test_unknown_fields_of_a_newer_partner_are_ignored() -> None:
    record = CallRecord.model_validate_json(
        b'{"call_id": "gera-1.1", "routed_at": 1, "entry_site": "gera", "caller": "+49365", "route": "local",'
        b' "added_in_a_later_version": {"x": 1}}'
    )
    assert record.call_id == "gera-1.1"


def test_a_move_is_written_and_read_with_the_from_field_the_supervisor_view_reads() -> None:
    move = MoveRecord.model_validate({"call_id": "jena-1", "from": "jena", "to": "gera", "at": 1, "outcome": "moved"})
    assert move.as_dict()["from"] == "jena"
    assert MoveRecord.model_validate_json(move.to_json()) == move
