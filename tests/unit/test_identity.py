"""Identity graph, pure parts: identifier normalization, index decisions, merge rules."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.config import ConfigError, load_settings
from app.envelope import Rejected
from app.identity import graph
from app.identity import profile as P
from app.identity.keys import clean_identities, lookup_order, mask, normalize_identifier


# --- normalization -----------------------------------------------------------------------------
def test_email_is_trimmed_and_lower_cased():
    assert normalize_identifier("email", "  Mei.Lin@Example.COM ", "TW") == "mei.lin@example.com"


@pytest.mark.parametrize("raw,region,expected", [
    ("0912-345-678", "TW", "+886912345678"),
    ("+1 (415) 555-2671", "TW", "+14155552671"),
    ("020 7946 0958", "GB", "+442079460958"),
])
def test_phone_becomes_e164_in_the_default_region(raw, region, expected):
    assert normalize_identifier("phone", raw, region) == expected


@pytest.mark.parametrize("kind,raw,code", [
    ("email", "not-an-email", "invalid_email"),
    ("phone", "12", "invalid_phone"),
    ("line_uid", "   ", "empty"),
    ("Bad Type", "x", "invalid_type"),
    ("customer_id", "a\x00b", "invalid_value"),
    ("customer_id", "x" * 300, "invalid_value"),
])
def test_invalid_values_are_rejected_with_a_reason(kind, raw, code):
    with pytest.raises(Rejected) as err:
        normalize_identifier(kind, raw, "TW")
    assert err.value.code == code
    assert str(raw).strip() not in err.value.detail or not str(raw).strip()


def test_clean_identities_keeps_valid_ones_and_names_the_rejected():
    clean, rejected = clean_identities(
        {"email": "A@B.CO", "phone": "nope", "air_identity:MEMBER": " M1 "}, "TW")
    assert clean == {"email": "a@b.co", "air_identity:MEMBER": "M1"}
    assert rejected == ["phone: invalid_phone"]


def test_unify_keys_setting_is_validated():
    assert load_settings({"UNIFY_KEYS": "email, customer_id"}).unify_keys == ("email", "customer_id")
    with pytest.raises(ConfigError, match="UNIFY_KEYS"):
        load_settings({"UNIFY_KEYS": "line_uid,email,phone,customer_id"})
    with pytest.raises(ConfigError, match="AMBIGUOUS_KEY_LIMIT"):
        load_settings({"AMBIGUOUS_KEY_LIMIT": "1"})


def test_lookup_order_asks_unify_keys_first():
    ids = {"customer_id": "C1", "email": "a@b.co", "line_uid": "U1"}
    assert [k for _t, k in lookup_order(ids, ("line_uid", "email"))] == [
        "line_uid:U1", "email:a@b.co", "customer_id:C1"]


def test_mask_hides_values():
    assert mask("email", "mei.lin@example.com") == "m***@example.com"
    assert "912345" not in mask("phone", "+886912345678")
    assert mask("line_uid", "U4af4980629a1") == "U4***a1"


# --- index decisions ---------------------------------------------------------------------------
def test_first_bind_owns_the_identifier():
    d = graph.bind(None, "p2", unify=True, limit=3)
    assert d.entry.encode() == b"p2" and d.merge is None
    assert graph.bind(b"p2", "p2", unify=True, limit=3).entry is None


def test_unify_conflict_merges_into_the_smaller_id():
    d = graph.bind(b"pb", "pa", unify=True, limit=3)
    assert d.merge == ("pb", "pa")
    assert graph.resolve(d.entry.encode()) == "pa"
    d = graph.bind(b"pa", "pb", unify=True, limit=3)
    assert d.merge == ("pb", "pa") and graph.resolve(d.entry.encode()) == "pa"


def test_non_unify_identifiers_attach_but_never_merge():
    d = graph.bind(b"pa", "pb", unify=False, limit=3)
    assert d.entry is None and d.merge is None


def test_rewrite_after_merge_replaces_the_loser():
    d = graph.bind(b"pb", "pa", unify=False, limit=3, replaces=["pb"])
    assert d.entry.encode() == b"pa" and d.merge is None


def test_value_shared_by_more_than_limit_profiles_is_quarantined():
    raw = b"p1"
    d = graph.bind(raw, "p2", unify=True, limit=2)
    assert d.merge == ("p2", "p1")
    raw = d.entry.encode()
    assert graph.bind(raw, "p2", unify=True, limit=2).merge is None  # same claimant again
    d = graph.bind(raw, "p3", unify=True, limit=2)
    assert d.merge is None and set(d.quarantine) == {"p1", "p2", "p3"}
    raw = d.entry.encode()
    assert graph.resolve(raw) is None  # resolves nothing any more
    later = graph.bind(raw, "p4", unify=True, limit=2)
    assert later.merge is None and later.entry is None


def test_profile_ids_are_stable():
    assert graph.profile_id_for("email:a@b.co") == graph.profile_id_for("email:a@b.co")
    assert graph.profile_id_for("email:a@b.co") != graph.profile_id_for("email:a@b.cd")


# --- merge rules -------------------------------------------------------------------------------
def test_apply_writes_only_when_something_changed():
    prof = P.new_profile()
    changed, new = P.apply(prof, {"line_uid": "U1", "email": "a@b.co"}, 100,
                           {"first_name": "Mei"})
    assert changed and sorted(new) == [("email", "a@b.co"), ("line_uid", "U1")]
    assert P.apply(prof, {"line_uid": "U1"}, 200) == (False, [])
    assert P.apply(prof, {}, 300, {"first_name": "Mei"}) == (False, [])
    assert P.apply(prof, {}, 50, {"first_name": "Old"}) == (False, [])  # older loses
    assert P.apply(prof, {}, 300, {"first_name": "Mei-Lin"})[0]
    assert prof["a"]["first_name"] == ["Mei-Lin", 300]


def test_merge_rules():
    a = P.new_profile()
    P.apply(a, {"email": "a@b.co", "customer_id": "C1"}, 100,
            {"first_name": "Mei", "tier": "", "notes": ["first call"]})
    b = P.new_profile()
    P.apply(b, {"line_uid": "U1", "customer_id": "C2"}, 200,
            {"first_name": "", "tier": "gold", "city": "Taipei", "notes": ["second call"]})
    c = P.new_profile()
    P.apply(c, {"email": "a@b.co"}, 300, {"first_name": "Mei-Lin"})
    m = P.merge(P.merge(a, b), c)
    assert P.all_identifiers(m) and {k for k, _ in P.all_identifiers(m)} == {
        "email", "customer_id", "line_uid"}
    assert set(m["i"]["customer_id"]) == {"C1", "C2"}  # every identifier kept
    assert m["a"]["tier"][0] == "gold"            # non-empty beats empty
    assert m["a"]["first_name"][0] == "Mei-Lin"   # newest non-empty wins
    assert [n[1] for n in m["n"]] == ["second call", "first call"]  # newest first
    env = P.enrich({"identities": {"line_uid": "U1"}}, "p1", m, ("tier", "first_name"))
    assert env["identities"]["email"] == "a@b.co" and env["identities"]["customer_id"] == "C2"
    assert env["profile"] == {"id": "p1", "attributes": {"tier": "gold", "first_name": "Mei-Lin"}}


KINDS = st.sampled_from(["email", "phone", "line_uid", "customer_id"])
VALUES = st.sampled_from(["x", "y", "z"])
ATTR = st.tuples(st.sampled_from(["tier", "name"]),
                 st.one_of(st.sampled_from(["", "gold", "silver"]), st.integers(0, 2)))
UPDATE = st.tuples(st.dictionaries(KINDS, VALUES, max_size=3), st.integers(0, 5),
                   st.dictionaries(st.sampled_from(["tier", "name"]),
                                   st.sampled_from(["", "gold", "silver", 1]), max_size=2),
                   st.lists(st.sampled_from(["n1", "n2"]), max_size=2))


def build(updates):
    prof = P.new_profile()
    for ids, ts, attrs, notes in updates:
        P.apply(prof, ids, ts, {**attrs, "notes": notes})
    return prof


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(UPDATE, min_size=1, max_size=3), min_size=1, max_size=4),
       st.randoms())
def test_merge_order_does_not_change_the_final_profile(groups, rnd):
    profs = [build(g) for g in groups]
    forward = profs[0]
    for p in profs[1:]:
        forward = P.merge(forward, p)
    shuffled = list(profs)
    rnd.shuffle(shuffled)
    tree = shuffled
    while len(tree) > 1:  # a different grouping too
        tree = [P.merge(tree[i], tree[i + 1]) if i + 1 < len(tree) else tree[i]
                for i in range(0, len(tree), 2)]
    assert P.dumps(tree[0]) == P.dumps(forward) or P.merge(tree[0], {}) == P.merge(forward, {})
    assert tree[0]["a"] == forward["a"] and tree[0]["n"] == forward["n"]
    assert tree[0]["i"] == forward["i"] and tree[0]["u"] == forward["u"]
    assert P.merge(forward, forward) == forward  # idempotent
