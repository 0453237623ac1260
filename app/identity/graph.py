"""Decisions of the identifier index (pure): profile ids, index entries, binds, merges and
quarantine. The index maps an identifier key `<type>:<value>` to the id of its profile.

An index entry is stored as bytes: the bare profile id for the usual case, or, once other
profiles have claimed the same unify-key value, `{"p": owner, "c": [claimants], "q": 1?}` where
`q` marks the value as quarantined (ambiguous: it resolves nothing and merges nothing).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import orjson

from app.identity import profile as profiles
from app.identity.keys import key_of


def profile_id_for(key: str) -> str:
    """The id of the profile first seen with identifier `key`: derived from the key, so two
    events that both miss the index on the same key start the same profile, and a replay too."""
    return "p" + hashlib.blake2b(key.encode(), digest_size=8).hexdigest()


@dataclass(frozen=True)
class Entry:
    owner: str
    claimants: tuple[str, ...] = ()
    quarantined: bool = False

    def encode(self) -> bytes:
        if not self.claimants and not self.quarantined:
            return self.owner.encode()
        doc = {"p": self.owner, "c": list(self.claimants)}
        if self.quarantined:
            doc["q"] = 1
        return orjson.dumps(doc)


def decode(raw: bytes | None) -> Entry | None:
    if raw is None:
        return None
    if raw[:1] != b"{":
        return Entry(raw.decode())
    doc = orjson.loads(raw)
    return Entry(doc["p"], tuple(doc.get("c", ())), bool(doc.get("q")))


def resolve(raw: bytes | None) -> str | None:
    """The profile an identifier resolves to; None when unknown or quarantined."""
    if raw is None:
        return None
    if raw[:1] != b"{":
        return raw.decode()
    entry = decode(raw)
    return None if entry.quarantined else entry.owner


@dataclass(frozen=True)
class Decision:
    entry: Entry | None = None                # the new entry to write; None: leave it
    merge: tuple[str, str] | None = None      # (loser, winner): ask the loser to merge
    quarantine: tuple[str, ...] = ()          # the profiles sharing a now quarantined value


def bind(raw: bytes | None, pid: str, *, unify: bool, limit: int,
         replaces: Iterable[str] = ()) -> Decision:
    """Profile `pid` holds the identifier whose entry is `raw`. `replaces`: profiles merged into
    `pid` whose entries may be rewritten. A conflict on a unify key merges the two profiles
    (the smaller id wins, so merge chains always end) unless more than `limit` profiles would
    then share the value: it is quarantined instead. Other identifiers stay with their first
    profile (they attach, they never merge)."""
    entry = decode(raw)
    if entry is None:
        return Decision(Entry(pid))
    if entry.owner == pid:
        return Decision()
    if entry.owner in replaces:
        return Decision(Entry(pid, entry.claimants, entry.quarantined))
    if not unify or entry.quarantined or pid in entry.claimants:
        return Decision()
    claimants = entry.claimants + (pid,)
    if 1 + len(claimants) > limit:
        return Decision(Entry(entry.owner, claimants, True),
                        quarantine=(entry.owner, *claimants))
    winner, loser = min(entry.owner, pid), max(entry.owner, pid)
    return Decision(Entry(winner, claimants), merge=(loser, winner))


def seed(ids: Mapping[str, str], ts: int, attributes: Mapping[str, object] | None = None
         ) -> tuple[str, bytes, list[tuple[str, bytes]]]:
    """A ready profile for pre-loading tables (bench, fixtures): (profile id, profile bytes,
    [(identifier key, index entry bytes)]). The id follows the first identifier's key, as the
    stages would derive it."""
    first_kind = next(iter(ids))
    pid = profile_id_for(key_of(first_kind, ids[first_kind]))
    prof = profiles.new_profile()
    profiles.apply(prof, ids, ts, attributes)
    return pid, profiles.dumps(prof), [(key_of(k, v), pid.encode()) for k, v in ids.items()]
