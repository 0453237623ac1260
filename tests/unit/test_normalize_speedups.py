"""The normalizers' shortcuts give exactly what the plain code they replace gives."""

from __future__ import annotations

import uuid

import pytest

from app.envelope import EVENT_NAMESPACE, Rejected, _parse_time_text, event_id_for, parse_time

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
