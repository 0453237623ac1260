"""Quiet hours in the customer's own time zone.

The zone (`customer_zone`): the profile's country (ISO 3166 alpha-2), else the phone number's
region, else the configured default. A country with several zones takes the phone's zone when the
phone narrows it to one of them (a +1 212 number in the US is America/New_York), else its primary
zone: the first of tzdata's `zone.tab` for the country (US America/New_York, MX
America/Mexico_City, ID Asia/Jakarta), except where that list starts at a geographic edge and
`PRIMARY_ZONES` names where most people live (AU Australia/Sydney rather than Lord Howe Island).

The window (`next_allowed`): an instant is quiet when its local wall-clock time is in
[start, end), a window with start > end crossing midnight. A message due in it waits until the
first later instant that is not quiet, which is usually the next local `end`, but daylight saving
time changes make that subtle, and the answer is always that first instant:

- `end` does not exist that day (clocks spring forward over it, e.g. 02:30 in New York on the
  second Sunday of March): the quiet window ends when the clock jumps past it (03:00 EDT);
- `end` happens twice (clocks fall back, e.g. 01:30 in New York in November): the first
  occurrence (zoneinfo `fold=0`, 01:30 EDT) ends it. With a window that also starts inside the
  repeated hour, the repeated wall times count as quiet again, as the wall clock says.

Property tests (tests/unit/test_safety_quiet.py) check, across zones and DST days, that the
answer is after now, is not quiet, and that no instant between now and it is allowed.
"""

from __future__ import annotations

import functools
from datetime import UTC, date, datetime, timedelta
from importlib import resources
from pathlib import Path
from zoneinfo import ZoneInfo

import phonenumbers
from phonenumbers import timezone as phone_timezone

from app.safety.policy import QuietHours

SYSTEM_ZONE_TAB = Path("/usr/share/zoneinfo/zone.tab")
PRIMARY_ZONES = {
    "AU": "Australia/Sydney",
    "BR": "America/Sao_Paulo",
    "CA": "America/Toronto",
    "RU": "Europe/Moscow",
    "UA": "Europe/Kyiv",
    "UZ": "Asia/Tashkent",
}
COUNTRY_ALIASES = {"UK": "GB"}
SAMPLE_S = 3600  # DST transitions are found by sampling the offset hourly, then bisecting


@functools.lru_cache(maxsize=1)
def country_zones() -> dict[str, tuple[str, ...]]:
    """ISO country code -> its IANA zones in zone.tab order (tzdata's copy, else the system's)."""
    try:
        text = (resources.files("tzdata.zoneinfo") / "zone.tab").read_text()
    except (ModuleNotFoundError, OSError):
        text = SYSTEM_ZONE_TAB.read_text() if SYSTEM_ZONE_TAB.exists() else ""
    zones: dict[str, list[str]] = {}
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) >= 3 and not line.startswith("#"):
            zones.setdefault(parts[0], []).append(parts[2])
    return {country: tuple(names) for country, names in zones.items()}


def _country(raw: str | None) -> str | None:
    code = raw.strip().upper() if isinstance(raw, str) else ""
    code = COUNTRY_ALIASES.get(code, code)
    return code if code in country_zones() else None


@functools.lru_cache(maxsize=4096)
def _phone(phone: str, region: str | None) -> tuple[tuple[str, ...], str | None]:
    """(the zones phonenumbers gives the number, its region) or ((), None) if unreadable."""
    try:
        parsed = phonenumbers.parse(phone, region)
    except phonenumbers.NumberParseException:
        return (), None
    if not phonenumbers.is_possible_number(parsed):
        return (), None
    zones = tuple(z for z in phone_timezone.time_zones_for_number(parsed) if "/" in z
                  and not z.startswith("Etc/"))
    return zones, phonenumbers.region_code_for_number(parsed)


def _zone_name(region: str, phone_zones: tuple[str, ...]) -> str:
    zones = country_zones()[region]
    narrowed = {z for z in phone_zones if z in zones}
    if len(narrowed) == 1:
        return narrowed.pop()
    return PRIMARY_ZONES.get(region, zones[0])


@functools.lru_cache(maxsize=65536)
def customer_zone(country: str | None, phone: str | None, default: str) -> ZoneInfo:
    """The customer's time zone (see the module docstring); `default` is an IANA name.
    Cached: it is asked for every message a customer is about to get."""
    region = _country(country)
    phone_zones, phone_region = _phone(phone.strip(), region) if isinstance(phone, str) and \
        phone.strip() else ((), None)
    for candidate in (region, _country(phone_region)):
        if candidate:
            return ZoneInfo(_zone_name(candidate, phone_zones))
    return ZoneInfo(default)


def is_quiet(instant: datetime, zone: ZoneInfo, window: QuietHours) -> bool:
    return window.covers(instant.astimezone(zone).time())


def _end_instants(local_day: date, zone: ZoneInfo, window: QuietHours) -> list[datetime]:
    """The UTC instants at which the wall clock shows `end`, around `local_day` (none on a day
    the time is skipped, two on a day it repeats)."""
    out = []
    for day in (local_day + timedelta(days=n) for n in (-1, 0, 1, 2)):
        for fold in (0, 1):
            wall = datetime.combine(day, window.end, tzinfo=zone).replace(fold=fold)
            instant = wall.astimezone(UTC)
            if instant.astimezone(zone).replace(tzinfo=None) == wall.replace(tzinfo=None):
                out.append(instant)
    return out


def _offset(ts: int, zone: ZoneInfo) -> timedelta | None:
    return datetime.fromtimestamp(ts, zone).utcoffset()


def _transitions(start: datetime, stop: datetime, zone: ZoneInfo) -> list[datetime]:
    """The UTC instants in (start, stop] at which the zone's offset changes."""
    out = []
    lo_ts, stop_ts = int(start.timestamp()), int(stop.timestamp()) + 1
    while lo_ts < stop_ts:
        hi_ts = min(lo_ts + SAMPLE_S, stop_ts)
        before = _offset(lo_ts, zone)
        if _offset(hi_ts, zone) != before:
            lo, hi = lo_ts, hi_ts  # offset(lo) == before != offset(hi)
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (mid, hi) if _offset(mid, zone) == before else (lo, mid)
            if start.timestamp() < hi <= stop.timestamp():
                out.append(datetime.fromtimestamp(hi, UTC))
        lo_ts = hi_ts
    return out


def next_allowed(now: datetime, zone: ZoneInfo, window: QuietHours | None) -> datetime | None:
    """None when a message may go now; else the first later UTC instant outside the window.

    `now` should be aware (naive is read as UTC). The next local `end` is always allowed (the
    window excludes it); only a clock change before it can end the window sooner."""
    if window is None:
        return None
    now = now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)
    if not is_quiet(now, zone, window):
        return None
    local_day = now.astimezone(zone).date()
    end = min(i for i in _end_instants(local_day, zone, window) if i > now)
    for change in _transitions(now, end, zone):
        if not is_quiet(change, zone, window):
            return change
    return end
