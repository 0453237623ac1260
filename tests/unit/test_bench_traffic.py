"""The bench's traffic: members of the pre-loaded graph who keep their identifiers, and sign-ups."""

from __future__ import annotations

import collections

from app.bench import MEMBERS, backlog
from app.bench_profiles import members, profile_ids
from app.config import Settings
from app.envelope import Rejected
from app.identity.keys import clean_identities
from app.normalize import SOURCE_BY_TOPIC, normalize_bytes

SETTINGS = Settings()


def test_members_present_the_identifiers_the_graph_holds():
    for i, member in enumerate(members(40)):
        ids = profile_ids(i)
        clean, rejected = clean_identities(
            {"customer_id": member.customer_id, "email": member.email, "phone": member.phone,
             "line_uid": member.line_uid}, "TW")
        assert not rejected
        assert clean == ids, i
    # upstream's presentation varies: some e-mails in mixed case, some phones in local format
    raw = members(200)
    assert any(m.email != profile_ids(i)["email"] for i, m in enumerate(raw))
    assert any(m.phone.startswith("09") for m in raw)


def test_backlog_comes_from_members_who_keep_their_identifiers():
    member_ids = {m.customer_id for m in members(MEMBERS)}
    emails: dict[str, set[str]] = collections.defaultdict(set)
    known = new = 0
    for topic, _key, value in backlog(4_000, seed=1000):  # two chunks, two seeds
        try:
            envelopes = normalize_bytes(SOURCE_BY_TOPIC[topic], value, {}, SETTINGS)
        except Rejected:
            continue
        for env in envelopes:
            ids, _ = clean_identities(env["identities"], "TW")
            cid = ids.get("customer_id")
            if not cid:
                continue
            if cid in member_ids:
                known += 1
                if "email" in ids:
                    emails[cid].add(ids["email"])
            else:
                new += 1
    assert 0.02 < new / (known + new) < 0.10
    assert sum(len(v) for v in emails.values()) == len(emails) > 10  # one e-mail per member
