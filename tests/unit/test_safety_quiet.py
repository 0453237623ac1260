"""Quiet hours: the customer's zone, and the end of the window across midnight and DST changes."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.safety.policy import QuietHours
from app.safety.quiet import country_zones, customer_zone, is_quiet, next_allowed

NY = ZoneInfo("America/New_York")
TPE = ZoneInfo("Asia/Taipei")
SMS = QuietHours(time(21), time(8))


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


# ---- the customer's zone ---------------------------------------------------------------------


@pytest.mark.parametrize("country,phone,expected", [
    ("US", "+13105551234", "America/Los_Angeles"),   # the phone narrows the US to one zone
    ("US", None, "America/New_York"),                # else the first zone
    ("US", "+18005551234", "America/New_York"),      # toll-free: every zone, narrows nothing
    (" us ", "", "America/New_York"),
    ("CA", "+16045551234", "America/Vancouver"),
    ("CA", None, "America/Toronto"),                 # primary zone, not Newfoundland
    ("AU", "+61412345678", "Australia/Sydney"),      # a mobile: several zones, not narrowed
    ("TW", "+819012345678", "Asia/Taipei"),          # a foreign phone doesn't move the country
    (None, "+819012345678", "Asia/Tokyo"),           # no country: the phone's region
    (None, "+13105551234", "America/Los_Angeles"),
    ("uk", "+447911123456", "Europe/London"),
    ("GB", None, "Europe/London"),
    ("Taiwan", "+886912345678", "Asia/Taipei"),      # not an ISO code: the phone decides
    ("XX", "not a phone", "Europe/Paris"),           # nothing readable: the default
    (None, "0912345678", "Europe/Paris"),            # a national number needs a country
    (None, None, "Europe/Paris"),
])
def test_customer_zone(country, phone, expected):
    assert customer_zone(country, phone, "Europe/Paris") == ZoneInfo(expected)


def test_every_country_has_a_zone_list():
    zones = country_zones()
    assert zones["US"][0] == "America/New_York" and zones["TW"] == ("Asia/Taipei",)
    assert len(zones) > 200


# ---- next_allowed: examples ------------------------------------------------------------------


def test_outside_the_window_sends_now():
    assert next_allowed(utc(2026, 11, 20, 4, 0), TPE, SMS) is None     # 12:00 Taipei
    assert next_allowed(utc(2026, 11, 20, 12, 59), TPE, SMS) is None   # 20:59
    assert next_allowed(utc(2026, 11, 20, 0, 0), TPE, SMS) is None     # 08:00 exactly
    assert next_allowed(utc(2026, 11, 20, 0, 0), TPE, None) is None


def test_an_sms_at_2am_local_waits_until_8am_local():
    assert next_allowed(utc(2026, 11, 19, 18, 0), TPE, SMS) == utc(2026, 11, 20, 0, 0)
    assert next_allowed(utc(2026, 11, 20, 13, 0), TPE, SMS) == utc(2026, 11, 21, 0, 0)  # 21:00
    assert next_allowed(datetime(2026, 11, 19, 18, 0), TPE, SMS) == utc(2026, 11, 20, 0, 0)


def test_a_window_inside_one_day():
    lunch = QuietHours(time(12), time(13, 30))
    assert next_allowed(utc(2026, 11, 20, 4, 15), TPE, lunch) == utc(2026, 11, 20, 5, 30)


def test_dst_nights_in_new_york():
    # 23:00 EST before spring-forward -> 08:00 EDT (12:00Z); before fall-back -> 08:00 EST.
    assert next_allowed(utc(2026, 3, 8, 4, 0), NY, SMS) == utc(2026, 3, 8, 12, 0)
    assert next_allowed(utc(2026, 11, 1, 3, 0), NY, SMS) == utc(2026, 11, 1, 13, 0)


def test_a_window_ending_at_a_skipped_time_ends_when_the_clock_jumps():
    window = QuietHours(time(1), time(2, 30))       # 02:30 does not exist on 2026-03-08
    assert next_allowed(utc(2026, 3, 8, 6, 10), NY, window) == utc(2026, 3, 8, 7, 0)  # 03:00 EDT


def test_a_window_ending_at_a_repeated_time_ends_at_its_first_occurrence():
    window = QuietHours(time(0), time(1, 30))       # 01:30 happens twice on 2026-11-01
    assert next_allowed(utc(2026, 11, 1, 4, 10), NY, window) == utc(2026, 11, 1, 5, 30)  # EDT
    # After the clocks fall back, 01:10 EST is quiet again by the wall clock, until 01:30 EST.
    assert next_allowed(utc(2026, 11, 1, 6, 10), NY, window) == utc(2026, 11, 1, 6, 30)


# ---- next_allowed: properties ----------------------------------------------------------------

ZONES = ["America/New_York", "Europe/London", "Asia/Taipei", "Australia/Sydney",
         "Australia/Lord_Howe", "Pacific/Chatham", "America/St_Johns", "Asia/Kolkata",
         "America/Santiago", "Europe/Berlin", "Pacific/Apia"]
# Days around DST changes of those zones (2026), so the search runs into them often.
DST_DAYS = [datetime(2026, 3, 8), datetime(2026, 11, 1), datetime(2026, 3, 29),
            datetime(2026, 10, 25), datetime(2026, 4, 5), datetime(2026, 10, 4),
            datetime(2026, 9, 27), datetime(2026, 4, 4), datetime(2026, 9, 6)]
CLOCK = st.builds(time, st.integers(0, 23), st.sampled_from([0, 15, 30, 45, 59]))
NEAR_DST = st.builds(lambda day, s: (day - timedelta(hours=36) + timedelta(seconds=s)).replace(
    tzinfo=UTC), st.sampled_from(DST_DAYS), st.integers(0, 72 * 3600))
ANY_TIME = st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2027, 12, 31),
                        timezones=st.just(UTC))


@settings(max_examples=250, deadline=None)
@given(st.sampled_from(ZONES), CLOCK, CLOCK, st.one_of(NEAR_DST, ANY_TIME))
def test_the_answer_is_the_first_allowed_instant(zone_name, start, end, now):
    if start == end:
        return
    zone, window = ZoneInfo(zone_name), QuietHours(start, end)
    answer = next_allowed(now, zone, window)
    if answer is None:
        assert not is_quiet(now, zone, window)
        return
    assert is_quiet(now, zone, window)
    assert answer > now and answer.tzinfo is not None
    assert not is_quiet(answer, zone, window)
    assert answer - now <= timedelta(hours=26)
    # Allowed stretches start on whole UTC minutes (window ends are HH:MM local, offsets whole
    # minutes), so checking every whole minute before the answer finds any earlier one.
    minute = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    while minute < answer:
        assert is_quiet(minute, zone, window), (minute, answer)
        minute += timedelta(minutes=1)
    assert is_quiet(answer - timedelta(microseconds=1), zone, window)
