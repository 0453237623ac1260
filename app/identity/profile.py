"""Compact profiles and the merge rules (pure).

A profile is a small dict, stored in the `profiles` table as orjson bytes::

    {"i": {"email": {"a@b.c": 1795168800}, "line_uid": {"U1": 1795168000}},   # value -> last seen
     "a": {"first_name": ["Mei", 1795168800]},                               # value, updated at
     "n": [[1795168800, "called about order 12"], ...],                        # notes, newest first
     "u": 1795168800}                                                          # last change

or a tombstone `{"m": "<profile id it was merged into>"}`. Times are epoch seconds. Profiles
that were messaged or gave consent also keep `"c"` (per-channel consent, app/safety/consent.py)
and `"h"` (the messages sent, for frequency caps, app/safety/caps.py); a merge unites both.

Merge rules (`merge`): every identifier of both is kept (per value the later sighting); per
attribute a non-empty value beats an empty one (empties are never stored) and between two
non-empty values the most recently updated wins (ties: the larger JSON, so any merge order yields
the same profile); notes are the union, newest first, capped at NOTES_MAX. `merge` is
commutative, associative and idempotent (tests/unit/test_identity_merge.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import orjson

NOTES_MAX = 50
NOTE_FIELDS = ("notes", "history", "note")
EMPTY = (None, "", [], {})

Profile = dict[str, Any]


def epoch(iso: str | None) -> int:
    if not iso:
        return 0
    try:
        return int(datetime.fromisoformat(str(iso).replace("Z", "+00:00")).timestamp())
    except ValueError:
        return 0


def new_profile() -> Profile:
    return {"i": {}, "a": {}, "n": [], "u": 0}


def dumps(profile: Profile) -> bytes:
    return orjson.dumps(profile)


def loads(raw: bytes | None) -> Profile | None:
    return None if raw is None else orjson.loads(raw)


def _order(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def _later(a: list, b: list) -> list:
    """The attribute entry [value, ts] that wins: later ts, then the larger JSON."""
    if a[1] != b[1]:
        return a if a[1] > b[1] else b
    return a if _order(a[0]) >= _order(b[0]) else b


def _notes(*lists: Iterable[list]) -> list[list]:
    seen: dict[tuple, list] = {}
    for notes in lists:
        for ts, note in notes:
            seen[(ts, note)] = [ts, note]
    return [seen[k] for k in sorted(seen, reverse=True)[:NOTES_MAX]]


def merge(a: Profile, b: Profile) -> Profile:
    """One profile with everything of both (see the module docstring for the rules)."""
    ids: dict[str, dict[str, int]] = {k: dict(v) for k, v in a.get("i", {}).items()}
    for kind, values in b.get("i", {}).items():
        mine = ids.setdefault(kind, {})
        for value, ts in values.items():
            if ts > mine.get(value, -1):
                mine[value] = ts
    attrs = dict(a.get("a", {}))
    for name, entry in b.get("a", {}).items():
        attrs[name] = _later(attrs[name], entry) if name in attrs else entry
    merged = {"i": ids, "a": attrs, "n": _notes(a.get("n", ()), b.get("n", ())),
              "u": max(a.get("u", 0), b.get("u", 0))}
    if a.get("c") or b.get("c"):
        from app.safety.consent import merge as merge_consent

        merged["c"] = merge_consent(a.get("c") or {}, b.get("c") or {})
    if a.get("h") or b.get("h"):
        merged["h"] = contact_history(a.get("h") or (), b.get("h") or ())
    return merged


def contact_history(*histories: Iterable[list]) -> list[list]:
    """The messages both profiles were sent (app/safety/caps), one per delivery id, oldest
    first: a merged customer's caps count what each of their old profiles received."""
    seen: dict[str, list] = {}
    for history in histories:
        for entry in history:
            seen.setdefault(str(entry[-1]), list(entry))
    return sorted(seen.values(), key=lambda e: (e[0], str(e[-1])))


def note_entries(attributes: Mapping[str, Any], ts: int) -> list[list]:
    """Notes/history carried by an update's attributes: [[ts, text], ...]."""
    out = []
    for name in NOTE_FIELDS:
        raw = attributes.get(name)
        for item in raw if isinstance(raw, list) else ([raw] if raw not in EMPTY else []):
            when = ts
            if isinstance(item, Mapping):
                when = epoch(item.get("at") or item.get("time") or item.get("created_at")) or ts
                item = item.get("text") or item.get("note") or _order(item).decode()
            out.append([when, str(item)])
    return out


def apply(profile: Profile, ids: Mapping[str, str], ts: int,
          attributes: Mapping[str, Any] | None = None) -> tuple[bool, list[tuple[str, str]]]:
    """Apply what one event tells about its customer, in place.

    Returns (changed, new identifiers). Nothing changes for an identifier already known (unless
    a second value of its type becomes the latest, which moves the primary), nor for an attribute
    that is not newer, so most events write nothing."""
    changed = False
    new: list[tuple[str, str]] = []
    known = profile.setdefault("i", {})
    for kind, value in ids.items():
        values = known.get(kind)
        if values is None:
            known[kind] = {value: ts}
            new.append((kind, value))
            changed = True
        elif value not in values:
            values[value] = ts
            new.append((kind, value))
            changed = True
        elif len(values) > 1 and ts > values[value] and primary(values) != value:
            values[value] = ts
            changed = True
    if attributes:
        attrs = profile.setdefault("a", {})
        for name, value in attributes.items():
            if value in EMPTY or name in NOTE_FIELDS:
                continue
            current = attrs.get(name)
            if current is None or (ts > current[1] and current[0] != value):
                attrs[name] = [value, ts]
                changed = True
        notes = note_entries(attributes, ts)
        if notes:
            merged = _notes(profile.get("n", ()), notes)
            if merged != profile.get("n"):
                profile["n"] = merged
                changed = True
    if changed:
        profile["u"] = max(profile.get("u", 0), ts)
    return changed, new


def primary(values: Mapping[str, int]) -> str:
    """The value of a type shown in the flat view: the latest seen (ties: the smallest)."""
    if len(values) == 1:  # nearly every type has one value: no comparison to make
        for value in values:
            return value
    return min(values.items(), key=lambda item: (-item[1], item[0]))[0]


def flat_identities(profile: Profile) -> dict[str, str]:
    return {kind: primary(values) for kind, values in profile.get("i", {}).items() if values}


def all_identifiers(profile: Profile) -> list[tuple[str, str]]:
    return [(kind, value) for kind, values in profile.get("i", {}).items() for value in values]


def selected_attributes(profile: Profile, names: tuple[str, ...]) -> dict[str, Any]:
    attrs = profile.get("a", {})
    if names == ("*",):
        return {k: v[0] for k, v in attrs.items()}
    return {k: attrs[k][0] for k in names if k in attrs}


def enrich(envelope: dict[str, Any], pid: str, profile: Profile,
           attribute_names: tuple[str, ...]) -> dict[str, Any]:
    """Give the envelope its profile's identifiers (flat type -> value; the event's own values win
    conflicts) and selected attributes under `profile`."""
    ids = flat_identities(profile)
    ids.update(envelope.get("identities") or {})
    envelope["identities"] = ids
    envelope["profile"] = {"id": pid, "attributes": selected_attributes(profile, attribute_names)}
    return envelope
