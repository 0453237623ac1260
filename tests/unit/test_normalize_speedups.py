"""The normalizers' shortcuts give exactly what the plain code they replace gives."""

from __future__ import annotations

import random
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone

import pytest

from app.envelope import (
    EVENT_NAMESPACE,
    Rejected,
    _parse_time_text,
    _utc_iso,
    event_id_for,
    parse_time,
    utc_iso,
)
from app.normalize import air, common

SOURCE_IDS = ["", "a90538a8-bdde-4351-9848-2f80437be438", "C100017/points/EARN", "ünïcødé 漢字",
              "x" * 500, "message.first_open:1:U123"]


@pytest.mark.parametrize("source_id", SOURCE_IDS)
def test_event_id_is_uuid5(source_id):
    for source in ("air", "maac", "journey"):
        expected = str(uuid.uuid5(EVENT_NAMESPACE, f"{source}:{source_id}"))
        assert event_id_for(source, source_id) == expected


def test_event_id_is_uuid5_for_many_ids():
    for index in range(2000):
        source_id = f"{index:x}-{index * 7919}"
        expected = str(uuid.uuid5(EVENT_NAMESPACE, f"air:{source_id}"))
        assert event_id_for("air", source_id) == expected


@pytest.mark.parametrize("raw", ["2026-11-20T09:00:00", "2026-11-20 09:00:00Z",
                                 " 2026-11-20T09:00:00+08:00 ", "2026-11-20T09:00:00.123456z",
                                 "2026-11-20"])
def test_cached_time_parsing_is_the_plain_parse(raw):
    first = parse_time(raw)
    assert parse_time(raw) == first == _parse_time_text.__wrapped__(raw)
    assert first.utcoffset().total_seconds() == 0


@pytest.mark.parametrize("raw", ["", "   ", "yesterday", "2026-13-45"])
def test_unreadable_times_are_rejected_every_time(raw):
    for _ in range(2):
        with pytest.raises(Rejected):
            parse_time(raw)


# --- common helpers -----------------------------------------------------------------------------

SCALARS = [None, "", " ", " a ", "abc", 0, 7, -3, 10**30, 0.0, 2.0, 2.5, -1.0, float("inf"), True,
           False, [], {}, [1], {"a": 1}]


def plain_text(value):
    """common.text as it was, without the fast paths."""
    if value is None or isinstance(value, (dict, list, bool)):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    result = str(value).strip()
    return result or None


@pytest.mark.parametrize("value", SCALARS)
def test_text_fast_paths(value):
    assert common.text(value) == plain_text(value)
    assert type(common.text(value)) is type(plain_text(value))


@pytest.mark.parametrize("value", SCALARS + [OrderedDict(), OrderedDict(a=1), (1, 2), b"x"])
def test_is_mapping(value):
    assert common.is_mapping(value) is isinstance(value, Mapping)


def plain_snake_keys(doc):
    if isinstance(doc, Mapping):
        return {common.snake_case(k) or str(k): plain_snake_keys(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [plain_snake_keys(v) for v in doc]
    return doc


def test_snake_keys():
    doc = {"currentBalance": 1, "--": 2, 3: {"lifeTime": [{"aB": None}, 1.5]}, "a_b": "x",
           "A B": OrderedDict(cD=1), True: False}
    assert repr(common.snake_keys(doc)) == repr(plain_snake_keys(doc))


def plain_add_from(ids, doc, aliases=None, *, keep_unknown=False):
    """Identities.add_from as it was: every spelling of every type asked of the record."""
    if not isinstance(doc, Mapping):
        return
    if aliases:
        table = dict(common.ID_ALIASES)
        for kind, names in aliases.items():
            table[kind] = tuple(names) + tuple(table.get(kind, ()))
    else:
        table = common.ID_ALIASES
    for kind, names in table.items():
        for name in names:
            value = doc.get(name)
            if value not in common.EMPTY and not isinstance(value, (dict, list)):
                ids.add(kind, value)
                break
    if keep_unknown:
        known = {n for names in table.values() for n in names}
        for name, value in doc.items():
            if name in known or value in common.EMPTY or isinstance(value, (dict, list, bool)):
                continue
            kind = common.snake_case(name)
            if kind:
                ids.add(kind, value)


FIELD_NAMES = sorted(common.ALIAS_TO_ID) + ["user_id", "uuid", "external_id", "member_id",
                                            "loyaltyNo", "first_name", "Other Id"]
FIELD_VALUES = [None, "", "C1", " c2 ", 17, 2.0, True, [], {"x": 1}, "a@b.co", "A@B.CO",
                "bad-mail", "0912345678", "+886912345678", "12"]
ALIASES = [None, {}, {"customer_id": ("external_id", "customer_id")},
           {"insider_uuid": ["uuid", "user_id"]}, {"annex_member_id": ("member_id", "user_id")},
           {"sessionm_user_id": ("user_id",), "customer_id": ("external_id", "email")}]


def test_alias_table_reads_what_every_spelling_read():
    rng = random.Random(7)
    for _ in range(3000):
        names = rng.sample(FIELD_NAMES, rng.randint(0, 12))
        doc = {name: rng.choice(FIELD_VALUES) for name in names}
        aliases = rng.choice(ALIASES)
        keep_unknown = rng.random() < 0.3
        fast, plain = common.Identities("TW"), common.Identities("TW")
        fast.add_from(doc, aliases, keep_unknown=keep_unknown)
        plain_add_from(plain, doc, aliases, keep_unknown=keep_unknown)
        assert list(fast.ids.items()) == list(plain.ids.items())
        assert fast.rejected == plain.rejected


@pytest.mark.parametrize("value", SCALARS + [[None], {"": None}, "0", -0.0, float("nan")])
def test_truthy_json_values_are_never_empty(value):
    """The shortcut `v or v not in EMPTY` used by the hot helpers."""
    assert bool(value or value not in common.EMPTY) is (value not in common.EMPTY)
    assert common.drop_empty({"k": value}) == ({} if value in common.EMPTY else {"k": value})


@pytest.mark.parametrize("raw", [None, "", "  ", " points ", "Ecoupon", "ß", 5, 2.0, True, [], {}])
def test_upper_text(raw):
    assert air.upper_text(raw) == ((common.text(raw) or "").upper() or None)


def test_utc_iso_cache_gives_the_plain_format():
    zone = timezone(timedelta(hours=8))
    moments = [datetime(2026, 11, 20, 9, 0, 0, 123456, tzinfo=UTC),
               datetime(2026, 11, 20, 9, 0, 0, 123456),
               datetime(2026, 11, 20, 17, 0, 0, 123456, tzinfo=zone),
               datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, 59, 999999)]
    for when in moments * 2:
        assert utc_iso(when) == _utc_iso(when)
    assert utc_iso(moments[2]) == utc_iso(moments[0]) == "2026-11-20T09:00:00.123Z"
