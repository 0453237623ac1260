"""`relay export`: members from membership changes, their identifiers from the identity graph
(changelog records), and the two file formats."""

import orjson
import pytest

from app.config import ConfigError, load_settings
from app.export import (
    MAX_HOPS,
    GraphView,
    attentive_list,
    build,
    graph_view,
    latest_members,
    lookup_keys,
    member_keys,
    resolve_member,
    sessionm_tags,
    table_key,
    with_graph_identities,
)
from app.identity.graph import Entry, seed
from app.normalize.audience import normalize

SETTINGS = load_settings({})


def change(n, action, segment="seg-vip", when="2026-11-22T10:00:00Z", **customer):
    value = {"membership_id": f"m-{n}", "platform": "braze", "audience": {"id": segment},
             "action": action, "customer": customer or {"external_id": f"C{n}"},
             "occurred_at": when}
    return normalize(value, {}, SETTINGS)[0]


def test_latest_state_per_customer_decides():
    envs = [
        change(1, "entered", when="2026-11-22T10:00:00Z", external_id="C1"),
        change(2, "exited", when="2026-11-22T11:00:00Z", external_id="C1"),  # C1 left
        change(3, "exited", when="2026-11-22T09:00:00Z", external_id="C2"),
        change(4, "entered", when="2026-11-22T10:00:00Z", external_id="C2"),  # C2 came back
        change(5, "entered", external_id="C3"),
        change(6, "entered", segment="seg-other", external_id="C4"),
    ]
    members = latest_members(envs, "seg-vip")
    assert sorted(m["identities"]["braze_external_id"] for m in members) == ["C2", "C3"]


def test_out_of_order_arrival_uses_occurred_at():
    envs = [change(1, "exited", when="2026-11-22T12:00:00Z", external_id="C1"),
            change(2, "entered", when="2026-11-22T08:00:00Z", external_id="C1")]
    assert latest_members(envs, "seg-vip") == []


def test_sessionm_csv_rows_and_skips():
    members = [change(1, "entered", external_id="C1"),
               change(2, "entered", email="only@example.com")]
    export = sessionm_tags(members, "braze_vip", 2592000)
    assert export.csv() == "user_id,tag,ttl\nC1,braze_vip,2592000\n"
    assert (export.members, export.skipped) == (2, 1)
    assert sessionm_tags(members[:1], "t", None).rows == [["C1", "t", ""]]


def test_sessionm_user_id_choice():
    value = {"membership_id": "m", "platform": "sessionm", "audience": {"id": "seg-vip"},
             "action": "entered", "customer": {"user_id": "smu-9", "customer_id": "C9"},
             "occurred_at": "2026-11-22T10:00:00Z"}
    env = normalize(value, {}, SETTINGS)[0]
    assert sessionm_tags([env], "t", 5, "sessionm").rows == [["smu-9", "t", "5"]]
    assert sessionm_tags([env], "t", 5).rows == [["C9", "t", "5"]]


def test_attentive_list_e164_and_email():
    members = [change(1, "entered", customer_id="C1", phone="0912345678"),
               change(2, "entered", customer_id="C2", email="b@example.com"),
               change(3, "entered", customer_id="C3")]
    export = attentive_list(members)
    assert export.csv().splitlines() == ["phone,email,client_user_id", "+886912345678,,C1",
                                         ",b@example.com,C2"]
    assert export.skipped == 1
    assert "C1" not in export.summary() and "+886" not in export.summary()


def test_build_uses_the_segments_file_and_rejects_unknown_segments():
    export = build("sessionm-tags", [change(1, "entered", external_id="C1")], "seg-vip",
                   SETTINGS)
    assert export.rows == [["C1", "braze_vip", "2592000"]]
    with pytest.raises(ConfigError, match="seg-nope"):
        build("sessionm-tags", [], "seg-nope", SETTINGS)


# --- identifiers from the identity graph (changelog records -> view -> members) ---------------


def k(text: str) -> bytes:
    """A str table key as the changelog carries it (JSON-encoded)."""
    return orjson.dumps(text)


def seeded(ids: dict, ts: int = 1795168800) -> tuple[str, list[tuple[str, bytes, bytes]]]:
    """(profile id, changelog records) of one profile and its index entries."""
    pid, prof, entries = seed(ids, ts)
    return pid, [("profiles", k(pid), prof)] + [("identities", k(key), entry)
                                                for key, entry in entries]


def member(**ids) -> dict:
    return change(1, "entered", **ids)


def test_changelog_keys_are_json_strings():
    assert table_key(b'"customer_id:C1"') == "customer_id:C1"
    assert table_key(b"customer_id:C1") is None  # not what a str table writes
    assert table_key(b'"') is None and table_key(None) is None and table_key(b"5") is None


def test_customer_id_only_member_gets_the_profiles_identifiers():
    pid, records = seeded({"customer_id": "C1", "phone": "+886912345678",
                           "email": "c1@example.com", "sessionm_user_id": "smu-1",
                           "braze_external_id": "B1"})
    view = graph_view(records)
    assert resolve_member({"customer_id": "C1"}, view, SETTINGS.unify_keys)[0] == pid
    [out], resolved = with_graph_identities([member(customer_id="C1")], view, SETTINGS)
    assert resolved == 1
    assert out["identities"] == {"customer_id": "C1", "phone": "+886912345678",
                                 "email": "c1@example.com", "sessionm_user_id": "smu-1",
                                 "braze_external_id": "B1"}
    assert attentive_list([out]).rows == [["+886912345678", "c1@example.com", "C1"]]
    assert sessionm_tags([out], "t", None, "sessionm").rows == [["smu-1", "t", ""]]


def test_merge_tombstones_are_followed_to_the_surviving_profile():
    winner, records = seeded({"customer_id": "C1", "email": "c1@example.com"})
    loser, more = seeded({"customer_id": "C2", "phone": "+886912345678"})
    merged = {"i": {"customer_id": {"C1": 1, "C2": 1}, "email": {"c1@example.com": 1},
                    "phone": {"+886912345678": 1}}, "a": {}, "n": [], "u": 1}
    records += more + [("profiles", k(loser), orjson.dumps({"m": winner})),
                       ("profiles", k(winner), orjson.dumps(merged))]
    [out], resolved = with_graph_identities([member(customer_id="C2")], graph_view(records),
                                            SETTINGS)
    assert resolved == 1
    assert out["identities"]["email"] == "c1@example.com"
    assert out["identities"]["customer_id"] == "C2"  # the record's own value wins conflicts


def test_merge_chains_are_bounded():
    loops = [("profiles", k("pa"), orjson.dumps({"m": "pb"})),
             ("profiles", k("pb"), orjson.dumps({"m": "pa"})),
             ("identities", k("customer_id:C1"), b"pa")]
    assert resolve_member({"customer_id": "C1"}, graph_view(loops), ()) is None
    chain = [("profiles", k(f"p{n}"), orjson.dumps({"m": f"p{n + 1}"}))
             for n in range(MAX_HOPS + 1)]
    chain += [("profiles", k(f"p{MAX_HOPS + 1}"), orjson.dumps({"i": {}})),
              ("identities", k("customer_id:C1"), b"p0")]
    assert resolve_member({"customer_id": "C1"}, graph_view(chain), ()) is None


def test_quarantined_entry_resolves_nothing():
    pid, records = seeded({"customer_id": "C9", "phone": "+886912345678"})
    quarantined = Entry(pid, ("p-other",), quarantined=True).encode()
    records.append(("identities", k("email:shop@example.com"), quarantined))
    mem = member(email="shop@example.com", external_id="B7")
    [out], resolved = with_graph_identities([mem], graph_view(records), SETTINGS)
    assert resolved == 0 and out["identities"] == mem["identities"]
    # a quarantined customer_id entry is passed over for the member's next identifier
    other, more = seeded({"email": "b@example.com", "phone": "+886987654321"})
    records += more + [("identities", k("customer_id:C9"), quarantined)]
    found = resolve_member({"customer_id": "C9", "email": "b@example.com"},
                           graph_view(records), SETTINGS.unify_keys)
    assert found[0] == other


def test_unknown_customer_falls_back_to_the_records_identities():
    _pid, records = seeded({"customer_id": "C1", "email": "c1@example.com"})
    mem = member(customer_id="C5", phone="0912345678")
    [out], resolved = with_graph_identities([mem], graph_view(records), SETTINGS)
    assert resolved == 0 and out == mem
    [out], _ = with_graph_identities([mem], GraphView(), SETTINGS)
    assert out == mem


def test_customer_id_is_looked_up_first():
    by_customer, records = seeded({"customer_id": "C1", "phone": "+886912345678"})
    by_email, more = seeded({"email": "x@example.com", "phone": "+886900000000"})
    view = graph_view(records + more)
    ids = {"email": "x@example.com", "customer_id": "C1"}
    assert lookup_keys(ids, SETTINGS.unify_keys) == ["customer_id:C1", "email:x@example.com"]
    assert resolve_member(ids, view, SETTINGS.unify_keys)[0] == by_customer
    # a customer_id the graph doesn't know yet: the next identifier resolves
    assert resolve_member({**ids, "customer_id": "C2"}, view, SETTINGS.unify_keys)[0] == by_email


def test_latest_value_wins_and_a_tombstone_deletes():
    pid, records = seeded({"customer_id": "C1", "email": "old@example.com"})
    newer = {"i": {"customer_id": {"C1": 2}, "email": {"new@example.com": 2}}, "u": 2}
    view = graph_view(records + [("profiles", k(pid), orjson.dumps(newer))])
    assert resolve_member({"customer_id": "C1"}, view, ())[1]["i"]["email"] == {
        "new@example.com": 2}
    gone = graph_view(records + [("identities", k("customer_id:C1"), None)])
    assert "customer_id:C1" not in gone.index
    assert resolve_member({"customer_id": "C1"}, gone, ()) is None
    no_profile = graph_view(records + [("profiles", k(pid), None)])
    assert resolve_member({"customer_id": "C1"}, no_profile, ()) is None
    assert (view.unreadable, gone.unreadable) == (0, 0)


def test_unreadable_records_are_counted_and_skipped():
    pid, records = seeded({"customer_id": "C1", "email": "c1@example.com"})
    bad = [("identities", b"not json", b"p1"),
           ("identities", k("customer_id:C2"), b'{"not": "an entry"}'),
           ("identities", k("customer_id:C3"), b"\xff\xfe"),
           ("profiles", k("p-bad"), b"{oops"),
           ("profiles", k("p-list"), b"[1, 2]"),
           ("profiles", k("p-ids"), b'{"i": {"email": "not a map"}}'),
           ("profiles", k("p-merge"), b'{"m": 5}')]
    view = graph_view(records + bad)
    assert view.unreadable == len(bad)
    assert resolve_member({"customer_id": "C1"}, view, ())[0] == pid
    # an unreadable latest value leaves the key unknown rather than stale
    overwritten = graph_view(records + [("profiles", k(pid), b"garbage")])
    assert overwritten.unreadable == 1
    assert resolve_member({"customer_id": "C1"}, overwritten, ()) is None


def test_only_wanted_index_entries_are_kept():
    _pid, records = seeded({"customer_id": "C1", "email": "c1@example.com"})
    wanted = member_keys([member(customer_id="C1", email=" C1@Example.com ")], SETTINGS)
    assert wanted == {"customer_id:C1", "email:c1@example.com"}
    view = graph_view(records + seeded({"customer_id": "C2"})[1], {"customer_id:C1"})
    assert set(view.index) == {"customer_id:C1"}


def test_build_with_the_graph_counts_but_names_nobody():
    _pid, records = seeded({"customer_id": "C1", "phone": "+886912345678",
                            "email": "c1@example.com"})
    view = graph_view(records + [("profiles", k("p-bad"), b"{oops")])
    envs = [change(1, "entered", customer_id="C1"), change(2, "entered", customer_id="C2")]
    export = build("attentive-list", envs, "seg-vip", SETTINGS, view=view)
    assert export.rows == [["+886912345678", "c1@example.com", "C1"]]
    summary = export.summary()
    assert summary == ("exported 1 of 2 members (1 without the needed identifier, 0 membership"
                       " records rejected, 1 found in the identity graph, 1 unreadable"
                       " identity-graph records skipped)")
    assert "C1" not in summary and "+886" not in summary and "example" not in summary
