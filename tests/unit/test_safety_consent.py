"""Consent: precedence, merges (property-based), checks, and the signals each source carries."""

from __future__ import annotations

import copy
import itertools
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.config import Settings
from app.envelope import parse_time
from app.normalize import air, annex, identity, maac
from app.safety import consent
from app.safety.consent import Signal, allows, apply, effective, merge, outcome_signals, signals

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
SETTINGS = Settings()
T0 = 1_795_168_800  # 2026-11-20T08:00:00Z


def fixture(source: str, name: str) -> dict:
    return json.loads((FIXTURES / source / f"{name}.json").read_text())


def state(c: dict, channel: str) -> str | None:
    record = effective(c, channel)
    return record[0] if record else None


# ---- precedence ------------------------------------------------------------------------------


def test_latest_change_wins():
    c: dict = {}
    assert apply(c, "sms", "in", T0, "air", True)
    assert apply(c, "sms", "out", T0 + 10, "attentive", True)
    assert state(c, "sms") == "out"
    assert not apply(c, "sms", "in", T0 + 5, "air", True)  # older than what is known
    assert state(c, "sms") == "out"
    assert apply(c, "sms", "in", T0 + 20, "annex", True)
    assert effective(c, "sms") == ["in", T0 + 20, "annex", True]


def test_explicit_out_beats_any_later_inferred_in_but_not_a_later_explicit_in():
    c: dict = {}
    apply(c, "line", "out", T0, "maac", True)            # blocked the account
    apply(c, "line", "in", T0 + 100, "maac", False)      # e.g. a push went through
    assert effective(c, "line") == ["out", T0, "maac", True]
    apply(c, "line", "in", T0 + 200, "maac", True)       # bound LINE again
    assert state(c, "line") == "in"
    apply(c, "line", "out", T0 + 300, "maac", False)     # an inferred out still counts
    assert effective(c, "line") == ["out", T0 + 300, "maac", False]
    apply(c, "line", "in", T0 + 400, "maac", False)      # and a later inferred in undoes it
    assert state(c, "line") == "in"


def test_a_late_explicit_in_does_not_hide_a_later_inferred_out():
    """Why two registers: out of order, the later inferred "out" must still win."""
    c: dict = {}
    apply(c, "sms", "out", T0 + 50, "attentive", False)
    apply(c, "sms", "in", T0 + 10, "annex", True)
    assert state(c, "sms") == "out"


def test_ties_are_deterministic_and_safe():
    a, b = {}, {}
    apply(a, "sms", "in", T0, "air", True)
    apply(a, "sms", "out", T0, "annex", True)
    apply(b, "sms", "out", T0, "annex", True)
    apply(b, "sms", "in", T0, "air", True)
    assert a == b and state(a, "sms") == "out"
    c: dict = {}
    apply(c, "email", "in", T0, "x", True)
    apply(c, "email", "out", T0, "y", False)  # same second: out wins across registers too
    assert state(c, "email") == "out"


def test_unchanged_is_reported_and_bad_states_are_a_bug():
    c: dict = {}
    assert apply(c, "sms", "in", T0, "air", True)
    assert not apply(c, "sms", "in", T0, "air", True)
    with pytest.raises(ValueError):
        apply(c, "sms", "yes", T0, "air", True)


def test_flat_entries_and_damaged_ones_are_read():
    c = {"sms": ["out", T0, "attentive", True], "email": "garbage", "line": {"explicit": [1, 2]}}
    assert effective(c, "sms") == ["out", T0, "attentive", True]
    assert effective(c, "email") is None and effective(c, "line") is None
    assert apply(c, "sms", "in", T0 + 1, "maac", False)  # converted to the two registers
    assert c["sms"] == {"explicit": ["out", T0, "attentive"], "inferred": ["in", T0 + 1, "maac"]}
    assert state(c, "sms") == "out"
    assert merge(c, {}) == {"sms": c["sms"]}


# ---- merge properties ------------------------------------------------------------------------

CHANGE = st.tuples(st.sampled_from(["sms", "line", "email"]), st.sampled_from(["in", "out"]),
                   st.integers(0, 30), st.sampled_from(["air", "maac", "annex"]), st.booleans())
CHANGES = st.lists(CHANGE, max_size=12)


def build(changes) -> dict:
    c: dict = {}
    for change in changes:
        apply(c, *change)
    return c


@given(CHANGES, st.randoms())
def test_any_order_gives_the_same_consent(changes, rnd):
    shuffled = list(changes)
    rnd.shuffle(shuffled)
    assert build(changes) == build(shuffled)


@given(CHANGES, CHANGES, CHANGES)
def test_merge_is_commutative_associative_idempotent(xs, ys, zs):
    a, b, c = build(xs), build(ys), build(zs)
    assert merge(a, b) == merge(b, a)
    assert merge(merge(a, b), c) == merge(a, merge(b, c))
    assert merge(a, a) == a and merge(a, {}) == a


@given(CHANGES, CHANGES)
def test_merge_equals_applying_every_change(xs, ys):
    assert merge(build(xs), build(ys)) == build(xs + ys)


@settings(max_examples=300)
@given(st.lists(st.tuples(st.sampled_from(["in", "out"]), st.booleans()), max_size=10),
       st.randoms())
def test_effective_state_is_the_time_ordered_rule(steps, rnd):
    """Reference: replay the changes in time order with the issue's rule."""
    changes = [("sms", s, ts, "src", x) for ts, (s, x) in enumerate(steps)]
    expected, last_explicit = None, None
    for _, s, _, _, x in changes:
        if x:
            last_explicit = expected = s
        elif not (s == "in" and last_explicit == "out"):
            expected = s
    rnd.shuffle(changes)
    assert state(build(changes), "sms") == expected


# ---- allows ----------------------------------------------------------------------------------


def test_allows():
    c = build([("sms", "in", T0, "annex", True), ("email", "out", T0, "air", True)])
    assert allows(c, "sms", "marketing") == (True, "consented")
    assert allows(c, "email", "marketing") == (False, "opted_out")
    assert allows(c, "line", "marketing") == (False, "no_consent")
    assert allows({}, "line", "transactional") == (True, "transactional")
    assert allows(c, "email", "transactional") == (True, "transactional")


def test_braze_counts_email_push_or_braze():
    assert allows({}, "braze", "marketing") == (False, "no_consent")
    email_out = build([("email", "out", T0, "air", True)])
    assert allows(email_out, "braze", "marketing") == (False, "opted_out")
    push_in = build([("email", "out", T0, "air", True), ("push", "in", T0, "x", True)])
    assert allows(push_in, "braze", "marketing") == (True, "consented")
    assert allows(build([("braze", "in", T0, "x", True)]), "braze", "marketing")[0]
    assert allows(build([("sms", "in", T0, "x", True)]), "braze", "marketing")[0] is False


# ---- signals: AIR ----------------------------------------------------------------------------


def air_env(communication=None) -> dict:
    doc = fixture("air", "wallet_consumer_update")
    if communication is not None:
        doc = copy.deepcopy(doc)
        for op in doc["atomicOperations"]:
            op["objectValue"]["data"]["communication"] = communication
    [env] = air.normalize(doc, {}, SETTINGS)
    return env


def test_air_consumer_flags_are_explicit_per_channel():
    env = air_env()
    ts = int(parse_time(env["occurred_at"]).timestamp())
    assert signals(env) == [Signal("email", "in", ts, "air", True),
                            Signal("sms", "in", ts, "air", True)]
    messy = air_env([{"optin": {"marketing": "Y", "sms": "false", "email": 0, "push": "N/A"}}])
    assert {(s.channel, s.state) for s in signals(messy)} == {("sms", "out"), ("email", "out")}


def test_air_marketing_false_is_out_everywhere_and_true_alone_says_nothing():
    out = signals(air_env([{"optin": {"marketing": "N", "sms": "Y"}}]))
    assert {s.channel for s in out} == set(consent.CONSENT_CHANNELS)
    assert {s.state for s in out} == {"out"}
    assert signals(air_env([{"optin": True}])) == []
    assert signals(air_env([])) == []


def test_air_envelope_without_channel_flags_falls_back_to_marketing_optin():
    env = {"type": "loyalty.consumer.updated", "source": "air", "occurred_at": "2026-11-20T08:00:00Z",
           "attributes": {"marketing_optin": False}, "payload": {"consumer": {}}}
    assert {s.state for s in signals(env)} == {"out"}
    env["attributes"]["marketing_optin"] = True
    assert signals(env) == []


def test_other_air_events_carry_no_consent():
    env = air_env()
    assert signals({**env, "type": "loyalty.points.earned"}) == []


# ---- signals: identity.updates and Insider ---------------------------------------------------


def identity_env(**fields) -> dict:
    doc = {"update_id": "u-1", "identifiers": {"customer_id": "C1"},
           "updated_at": "2026-11-20T08:00:00Z", **fields}
    [env] = identity.normalize(doc, {}, SETTINGS)
    return env


def test_identity_update_consents_from_the_fixture():
    [env] = identity.normalize(fixture("identity", "crm_update"), {}, SETTINGS)
    got = {(s.channel, s.state, s.source, s.explicit) for s in signals(env)}
    assert got == {("email", "in", "salesforce", True), ("sms", "out", "salesforce", True)}


def test_insider_optin_attributes():
    env = identity_env(source="insider", attributes={
        "email_optin": "Y", "sms_optin": 0, "whatsapp_optin": "true", "gdpr_optin": True,
        "line_opt_in": "no", "push_unsubscribed": "yes", "first_name": "Mei", "tier_optin": True})
    got = {(s.channel, s.state) for s in signals(env)}
    assert got == {("email", "in"), ("sms", "out"), ("whatsapp", "in"), ("line", "out"),
                   ("push", "out")}
    assert {s.source for s in signals(env)} == {"insider"}


def test_insider_gdpr_opt_out_is_out_everywhere():
    env = identity_env(source="insider", attributes={"gdpr_optin": "false", "email_optin": True})
    assert {s.state for s in signals(env)} == {"out"}
    assert len(signals(env)) == len(consent.CONSENT_CHANNELS)


def test_identity_consent_shapes_and_missing_values():
    env = identity_env(consents=[{"channel": "Text", "granted": "Y"},
                                 {"channel": "email", "status": "N"},
                                 {"channel": "fax", "granted": True},
                                 {"channel": "line"}])
    assert {(s.channel, s.state) for s in signals(env)} == {("sms", "in"), ("email", "out")}
    assert {s.source for s in signals(env)} == {"identity.updates"}  # no CRM named
    assert signals(identity_env(attributes={"first_name": "Mei"})) == []


def test_consents_win_over_their_copied_attributes():
    env = identity_env(source="braze", consents={"sms": False}, attributes={"sms_optin": True})
    assert [(s.channel, s.state) for s in signals(env)] == [("sms", "out")]


# ---- signals: Annex subscriptions ------------------------------------------------------------


def annex_env(**fields) -> dict:
    doc = {"action_id": "a-1", "occurred_at": "2026-11-20T08:00:00Z",
           "member": {"member_id": "M1", "phone": "0912345678", "email": "a@example.com"},
           **fields}
    [env] = annex.normalize(doc, {}, SETTINGS)
    return env


def test_annex_opt_in_fixture_is_an_explicit_sms_in():
    [env] = annex.normalize(fixture("annex", "subscription_opt_in"), {}, SETTINGS)
    assert [(s.channel, s.state, s.source, s.explicit) for s in signals(env)] == [
        ("sms", "in", "annex", True)]


def test_annex_opt_out_without_a_channel_ends_every_subscription():
    [env] = annex.normalize(fixture("annex", "subscription_opt_out_email_bad_phone"), {}, SETTINGS)
    assert sorted((s.channel, s.state) for s in signals(env)) == [("email", "out"), ("sms", "out")]


@pytest.mark.parametrize("fields,expected", [
    ({"action_type": "subscribe"}, {("email", "in"), ("sms", "in")}),
    ({"action_type": "email_opt_in"}, {("email", "in")}),
    ({"action_type": "sms_opt_out"}, {("sms", "out")}),
    ({"action_type": "opt_out", "channel": "Email"}, {("email", "out")}),
    ({"action_type": "subscribe", "channel": "web"}, {("email", "in"), ("sms", "in")}),
    ({"action_type": "points_earned", "points": 10}, set()),
])
def test_annex_channels(fields, expected):
    assert {(s.channel, s.state) for s in signals(annex_env(**fields))} == expected


# ---- signals: LINE ---------------------------------------------------------------------------


def test_line_bound_is_explicit_and_an_open_is_inferred():
    [bound] = maac.normalize(fixture("maac", "line_bound"), {}, SETTINGS)
    assert signals(bound) == [Signal("line", "in", 1795168900, "maac", True)]
    [opened] = maac.normalize(fixture("maac", "first_open"), {}, SETTINGS)
    assert signals(opened) == [Signal("line", "in", 1795168800, "maac", False)]
    [clicks] = maac.normalize(fixture("maac", "report_clicks"), {}, SETTINGS)
    assert signals(clicks) == []  # campaign-level, no customer


def feedback(kind: str, reason: str | None = None) -> dict:
    """Shaped like app.feedback.from_outcome's records."""
    env = {"event_id": "f1", "type": kind, "source": "relay", "occurred_at": "2026-11-20T08:00:00.000Z",
           "customer_key": "customer_id:C1", "identities": {"customer_id": "C1", "line_uid": "U" + "a" * 32},
           "attributes": {"line_reachable": kind == "line.sent"}, "payload": {"journey": "cart"},
           "trace": {"feedback": "insider"}}
    if reason is not None:
        env["payload"]["reason"] = reason
    return env


@pytest.mark.parametrize("kind,reason,expected", [
    ("line.sent", None, [("in", False)]),
    ("line.unreachable", "Failed to send messages; The user has blocked the account or is not a "
                         "friend", [("out", True)]),
    ("line.unreachable", "no LINE uid", []),
    ("line.unreachable", "LINE uid malformed", []),
    ("line.unreachable", "LINE error", []),
    ("line.unreachable", None, []),
])
def test_line_feedback_records(kind, reason, expected):
    assert [(s.state, s.explicit) for s in signals(feedback(kind, reason))] == expected


# ---- outcome signals (Attentive and MAAC answers) --------------------------------------------

PHONE_AND_EMAIL = {"envelope": {"identities": {"phone": "+886912345678", "email": "a@b.c"}}}


@pytest.mark.parametrize("delivery,status,reason,expected", [
    ({"destination": "attentive", "action": "subscribe", **PHONE_AND_EMAIL}, "delivered", "",
     {("email", "in", True), ("sms", "in", True)}),
    ({"destination": "attentive", "action": "subscribe", "params": {"channel": "TEXT"},
      **PHONE_AND_EMAIL}, "skipped", "already_subscribed", {("sms", "in", False)}),
    ({"destination": "attentive", "action": "subscribe", **PHONE_AND_EMAIL}, "failed", "http_400",
     set()),
    ({"destination": "attentive", "action": "unsubscribe"}, "delivered", "",
     {("email", "out", True), ("sms", "out", True)}),
    ({"destination": "attentive", "action": "unsubscribe",
      "params": {"subscriptions": [{"type": "MARKETING", "channel": "TEXT"}]}}, "delivered", "",
     {("sms", "out", True)}),
    ({"destination": "attentive", "action": "text"}, "skipped", "not_subscribed",
     {("sms", "out", False)}),
    ({"destination": "attentive", "action": "text"}, "delivered", "", {("sms", "in", False)}),
    ({"destination": "attentive", "action": "text"}, "skipped", "older_than_12h", set()),
    ({"destination": "maac", "action": "multicast"}, "delivered", "", {("line", "in", False)}),
    ({"destination": "maac", "action": "push"}, "unreachable",
     "The user has blocked the account or is not a friend", {("line", "out", True)}),
    ({"destination": "maac", "action": "push"}, "unreachable", "no LINE uid", set()),
    ({"destination": "braze", "action": "campaign_trigger"}, "delivered", "", set()),
])
def test_outcome_signals(delivery, status, reason, expected):
    got = outcome_signals(delivery, status, reason, T0 + 0.7)
    assert {(s.channel, s.state, s.explicit) for s in got} == expected
    assert all(s.ts == T0 for s in got)


# ---- signals never raise ---------------------------------------------------------------------

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=12)
TYPES = st.sampled_from(["identity.updated", "loyalty.consumer.updated", "loyalty.programme.joined",
                         "membership.subscribed", "membership.unsubscribed", "line.bound",
                         "line.unreachable", "line.clicked", "anything"])


@settings(max_examples=300)
@given(TYPES, st.sampled_from(["air", "annex", "identity", "maac", "relay"]),
       st.one_of(st.just("2026-11-20T08:00:00Z"), JSON), JSON, JSON, JSON)
def test_signals_never_raise(kind, source, occurred, attributes, payload, identities):
    env = {"type": kind, "source": source, "occurred_at": occurred, "attributes": attributes,
           "payload": payload, "identities": identities}
    for found in signals(env):
        assert found.state in ("in", "out") and isinstance(found.ts, int)
    assert signals(None) == [] and signals([]) == []


@given(JSON, st.text(max_size=10), st.text(max_size=30))
def test_outcome_signals_never_raise(junk, status, reason):
    for dest, action in itertools.product(["attentive", "maac"], ["subscribe", "unsubscribe",
                                                                  "text", "push"]):
        outcome_signals({"destination": dest, "action": action, "params": junk,
                         "envelope": junk}, status, reason, T0)


def test_consent_words_in_the_wild_are_understood():
    from app.normalize.common import boolean

    for word in ("granted", "Opted-In", "consented", "opt in"):
        assert boolean(word) is True, word
    for word in ("denied", "Opted Out", "revoked", "withdrawn", "declined"):
        assert boolean(word) is False, word
    assert boolean("pending") is None
