"""The verdict on planned deliveries of real payloads and routes: send, suppress or defer."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.config import Settings
from app.normalize import annex, journey, sessionm
from app.routing import load_rules, parse_rules, plan
from app.safety import caps, consent
from app.safety.decide import ACTIONS, CAP_PREFIX, REASONS, decide, reason_label, stale_after_s
from app.safety.policy import load_policy

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
SETTINGS = Settings()
POLICY = load_policy(str(ROOT / "topics" / "messaging.yaml"))
RULES = load_rules(str(ROOT / "topics" / "routes.yaml"))
TPE = ZoneInfo("Asia/Taipei")
AFTERNOON = datetime(2026, 11, 20, 6, 0, tzinfo=UTC)     # 14:00 in Taipei
NIGHT = datetime(2026, 11, 20, 18, 0, tzinfo=UTC)        # 02:00 in Taipei
MORNING = datetime(2026, 11, 21, 0, 0, tzinfo=UTC)       # 08:00 in Taipei


def fixture(source: str, name: str) -> dict:
    return json.loads((FIXTURES / source / f"{name}.json").read_text())


def deliveries(normalizer, doc: dict) -> list[dict]:
    return [d for env in normalizer.normalize(doc, {}, SETTINGS) for d in plan(RULES, env)]


def only(found: list[dict], destination: str, action: str) -> dict:
    [delivery] = [d for d in found if (d["destination"], d["action"]) == (destination, action)]
    return delivery


def line_push(**overrides) -> dict:
    doc = {**fixture("journey", "cart_abandoned"), **overrides}
    return only(deliveries(journey, doc), "maac", "push")


def sms_text(**overrides) -> dict:
    return only(deliveries(annex, {**fixture("annex", "points_earned"), **overrides}),
                "attentive", "text")


def braze_trigger() -> dict:
    [trigger] = [d for d in deliveries(sessionm, fixture("sessionm", "offer_issued"))
                 if d["destination"] == "braze"]
    assert trigger["action"] in ("campaign_trigger", "canvas_trigger")
    return trigger


def sms_in(ts: float = 0) -> dict:
    c: dict = {}
    consent.apply(c, "sms", "in", ts, "annex", True)
    return c


def run(delivery, consents=None, history=(), now=AFTERNOON, zone=TPE):
    return decide(POLICY, delivery, consents or {}, list(history), zone, now)


def test_what_is_not_a_message_is_sent_untouched():
    for delivery in deliveries(annex, fixture("annex", "points_earned")):
        if delivery["action"] != "text":
            verdict = run(delivery, now=NIGHT)
            assert (verdict.action, verdict.reason, verdict.channel) == ("send", "not_a_message", None)


def test_consent():
    text = sms_text()
    assert run(text).action == "suppress" and run(text).reason == "no_consent"
    assert run(text, sms_in()).action == "send" and run(text, sms_in()).reason == "consented"
    out = sms_in()
    consent.apply(out, "sms", "out", 10, "attentive", True)
    verdict = run(text, out)
    assert (verdict.action, verdict.reason, verdict.channel, verdict.purpose) == (
        "suppress", "opted_out", "sms", "marketing")


def test_line_needs_no_recorded_opt_in_but_honours_a_block():
    push = line_push()
    assert (run(push).action, run(push).reason) == ("send", "no_consent_required")
    blocked: dict = {}
    consent.apply(blocked, "line", "out", 0, "maac", True)
    assert (run(push, blocked).action, run(push, blocked).reason) == ("suppress", "opted_out")


def test_braze_campaigns_go_unless_email_and_push_are_opted_out():
    # The shipped policy: Braze checks its own subscription groups, the relay holds opt-outs.
    trigger = braze_trigger()
    assert run(trigger).action == "send"
    c: dict = {}
    consent.apply(c, "email", "out", 0, "air", True)
    assert run(trigger, c).reason == "opted_out"
    consent.apply(c, "push", "in", 1, "insider", True)
    assert run(trigger, c).action == "send"


def test_an_sms_at_2am_local_is_deferred_to_8am_local():
    verdict = run(sms_text(occurred_at="2026-11-20T17:59:00Z"), sms_in(), now=NIGHT)
    assert (verdict.action, verdict.reason, verdict.until) == ("defer", "quiet_hours", MORNING)


def test_a_journey_stale_by_the_end_of_the_window_is_suppressed_instead():
    stale = line_push(occurred_at="2026-11-20T17:30:00Z")        # stale_after_s: 7200
    assert stale_after_s(stale) == 7200
    assert (run(stale, now=NIGHT).action, run(stale, now=NIGHT).reason) == (
        "suppress", "stale_in_quiet_hours")
    patient = line_push(occurred_at="2026-11-20T17:30:00Z", stale_after_s=86400)
    assert run(patient, now=NIGHT).action == "defer"
    timeless = line_push(occurred_at="2026-11-20T17:30:00Z", stale_after_s=None)
    assert run(timeless, now=NIGHT).action == "defer"


def test_stale_after_s_sources_in_order():
    base = {"envelope": {"payload": {}, "attributes": {}}, "params": {}}
    assert stale_after_s(base) is None
    assert stale_after_s({**base, "params": {"stale_after_s": 600}}) == 600
    assert stale_after_s({**base, "params": {"stale_after_s": "$.attributes.ttl"},
                          "envelope": {"attributes": {"ttl": "900"}}}) == 900
    assert stale_after_s({"envelope": {"payload": {"stale_after_s": 60},
                                       "attributes": {"stale_after_s": 120}},
                          "params": {"stale_after_s": 600}}) == 60
    for junk in (0, -5, "soon", True, None, [1]):
        assert stale_after_s({**base, "params": {"stale_after_s": junk}}) is None


def test_transactional_messages_skip_consent_and_quiet_hours():
    rules = parse_rules({"routes": [{"name": "receipt", "when": {"type": "loyalty_action.*"},
                                     "deliver": [{"destination": "attentive", "action": "text",
                                                  "purpose": "transactional",
                                                  "params": {"template": "hi"}}]}]})
    [env] = annex.normalize(fixture("annex", "points_earned"), {}, SETTINGS)
    [receipt] = plan(rules, env)
    verdict = run(receipt, now=NIGHT)
    assert (verdict.action, verdict.reason, verdict.purpose) == ("send", "transactional",
                                                                 "transactional")


def history_of(*messages: tuple[str, str, str | None], at: datetime = AFTERNOON) -> list:
    history: list = []
    for n, (channel, purpose, journey_key) in enumerate(messages):
        ts = at.timestamp() - 3600 + n
        history = caps.record(history, [ts, channel, purpose, journey_key, f"old-{n}"], ts,
                              POLICY.history_keep_s)
    return history


def test_the_fourth_marketing_message_in_a_day_is_suppressed():
    three = history_of(("line", "marketing", None), ("braze", "marketing", None),
                       ("email", "marketing", None))
    verdict = run(line_push(), history=three)
    assert (verdict.action, verdict.reason) == ("suppress", "cap:marketing_3_per_24h")
    assert reason_label(verdict.reason) == "cap"
    assert run(line_push(), history=three, now=AFTERNOON + timedelta(days=1)).action == "send"


def test_one_message_per_journey_and_one_sms_a_day():
    push = line_push()
    journey_key = caps.journey_of(push)
    assert journey_key == "journey:j-cart-01"
    seen = history_of(("line", "marketing", journey_key))
    assert run(push, history=seen).reason == "cap:journey_1_per_7d"
    assert run(sms_text(), sms_in(), history_of(("sms", "marketing", None))).reason == \
        "cap:sms_1_per_24h"


def test_a_replayed_message_is_not_capped():
    push = line_push()
    history = history_of(("line", "marketing", None), ("braze", "marketing", None))
    history = caps.record(history, [AFTERNOON.timestamp(), "line", "marketing",
                                    caps.journey_of(push), push["delivery_id"]],
                          AFTERNOON, POLICY.history_keep_s)
    assert run(push, history=history).action == "send"


def test_order_consent_then_caps_then_quiet_hours():
    out: dict = {}
    consent.apply(out, "sms", "out", 0, "attentive", True)
    full = history_of(("sms", "marketing", None), at=NIGHT)
    assert run(sms_text(), out, full, now=NIGHT).reason == "opted_out"
    assert run(sms_text(), sms_in(), full, now=NIGHT).reason == "cap:sms_1_per_24h"
    assert run(sms_text(), sms_in(), [], now=NIGHT).reason == "quiet_hours"


def test_naive_now_is_utc_and_the_zone_matters():
    assert run(sms_text(), sms_in(), now=NIGHT.replace(tzinfo=None)).action == "defer"
    assert run(sms_text(), sms_in(), now=NIGHT, zone=ZoneInfo("Europe/London")).action == "send"


# ---- property: every verdict is well-formed --------------------------------------------------

CHANGES = st.lists(st.tuples(st.sampled_from(["sms", "line", "email", "push"]),
                             st.sampled_from(["in", "out"]), st.integers(0, 100),
                             st.sampled_from(["air", "maac"]), st.booleans()), max_size=6)
PAST = st.lists(st.tuples(st.sampled_from(["sms", "line", "braze", "email"]),
                          st.sampled_from(["marketing", "transactional"]),
                          st.sampled_from([None, "journey:j-cart-01"]),
                          st.integers(0, 8 * 86400)), max_size=8)
NOW = st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2027, 1, 1),
                   timezones=st.just(UTC))


@pytest.fixture(scope="module")
def candidates():
    return [line_push(), sms_text(), braze_trigger(),
            *deliveries(annex, fixture("annex", "points_earned"))]


@settings(max_examples=150, deadline=None)
@given(changes=CHANGES, past=PAST, now=NOW, pick=st.integers(0, 20),
       zone=st.sampled_from(["Asia/Taipei", "America/New_York", "Asia/Tokyo"]))
def test_every_verdict_is_well_formed(candidates, changes, past, now, pick, zone):
    delivery = candidates[pick % len(candidates)]
    consents: dict = {}
    for change in changes:
        consent.apply(consents, *change)
    history = [[now.timestamp() - age, c, p, j, f"h{n}"] for n, (c, p, j, age) in enumerate(past)]
    verdict = decide(POLICY, delivery, consents, history, ZoneInfo(zone), now)
    assert verdict.action in ACTIONS
    assert verdict.reason in REASONS or (verdict.reason.startswith(CAP_PREFIX) and verdict.reason[
        len(CAP_PREFIX):] in {cap.name for cap in POLICY.caps})
    assert (verdict.until is not None) == (verdict.action == "defer")
    if verdict.until is not None:
        assert verdict.until > now
    if verdict.reason == "not_a_message":
        assert verdict.channel is None and verdict.action == "send"
    else:
        allowed, _ = consent.allows(consents, verdict.channel, verdict.purpose)
        if verdict.action != "suppress" and not allowed:
            assert POLICY.channel(verdict.channel).consent == "opt_out"
    identities = delivery["envelope"]["identities"].values()
    assert not any(str(value) in verdict.reason for value in identities)
