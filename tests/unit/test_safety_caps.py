"""Frequency caps: sliding windows, per-journey counting, replays that never count twice."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from app.safety.caps import HISTORY_MAX, check, journey_of, record
from app.safety.policy import Cap

T0 = 1_795_168_800
DAY = 86400
MARKETING_3 = Cap("marketing_3", DAY, 3, purpose="marketing")
JOURNEY_1 = Cap("journey_1", 7 * DAY, 1, purpose="marketing", per="journey")
SMS_1 = Cap("sms_1", DAY, 1, channel="sms", purpose="marketing")
CAPS = (MARKETING_3, JOURNEY_1, SMS_1)


def item(ts, channel="line", purpose="marketing", journey=None, delivery_id=None):
    return [ts, channel, purpose, journey, delivery_id or f"d-{ts}-{channel}-{journey}"]


def test_the_fourth_marketing_message_in_a_day_is_capped():
    history: list = []
    for n, channel in enumerate(["line", "braze", "line"]):
        message = item(T0 + n * 60, channel)
        assert check(history, CAPS, message, message[0]) is None
        history = record(history, message, message[0], 7 * DAY)
    fourth = item(T0 + 600, "braze")
    assert check(history, CAPS, fourth, T0 + 600) == "marketing_3"
    assert check(history, CAPS, fourth, T0 + DAY) is None            # first one left the window
    assert check(history, CAPS, item(T0 + 600, purpose="transactional"), T0 + 600) is None


def test_windows_slide_with_an_exclusive_start():
    history = record([], item(T0, "sms"), T0, DAY)
    assert check(history, CAPS, item(T0 + DAY - 1, "sms"), T0 + DAY - 1) == "sms_1"
    assert check(history, CAPS, item(T0 + DAY, "sms"), T0 + DAY) is None


def test_per_journey_caps_count_each_journey_alone():
    history = record([], item(T0, journey="journey:cart"), T0, 7 * DAY)
    assert check(history, CAPS, item(T0 + 5, journey="journey:cart"), T0 + 5) == "journey_1"
    assert check(history, CAPS, item(T0 + 5, journey="journey:browse"), T0 + 5) is None
    assert check(history, CAPS, item(T0 + 5, journey=None), T0 + 5) is None
    assert check(history, (JOURNEY_1,), item(T0 + 7 * DAY, journey="journey:cart"),
                 T0 + 7 * DAY) is None


def test_a_replay_is_never_capped_nor_counted_twice():
    first = item(T0, "sms", delivery_id="attentive:text:e1:r")
    history = record([], first, T0, DAY)
    again = item(T0 + 30, "sms", delivery_id="attentive:text:e1:r")
    assert check(history, CAPS, again, T0 + 30) is None
    assert record(history, again, T0 + 30, DAY) == history


def test_record_prunes_bounds_and_sorts():
    history = [item(T0 - 8 * DAY), item(T0 + 5), item(T0 + 1), ["damaged"], None]
    kept = record(history, item(T0 + 10), T0 + 10, 7 * DAY)
    assert [e[0] for e in kept] == [T0 + 1, T0 + 5, T0 + 10]
    many: list = []
    for n in range(HISTORY_MAX + 20):
        many = record(many, item(T0 + n), T0 + n, 7 * DAY)
    assert len(many) == HISTORY_MAX and many[-1][0] == T0 + HISTORY_MAX + 19
    assert record(many, item(T0), T0, 7 * DAY, max_len=0) == []


def test_check_accepts_datetimes_and_ignores_damaged_entries():
    now = datetime.fromtimestamp(T0 + 10, UTC)
    history = [item(T0, "sms"), ["x", "sms"], "junk", [True, "sms", "marketing", None, "b"]]
    assert check(history, CAPS, item(T0 + 10, "sms"), now) == "sms_1"


def test_journey_of():
    def delivery(**envelope):
        return {"envelope": envelope}

    assert journey_of(delivery(attributes={"journey_id": "j-1", "journey_name": "Cart"})) == \
        "journey:j-1"
    assert journey_of(delivery(payload={"journey": {"name": "Cart"}})) == "journey:Cart"
    assert journey_of(delivery(payload={"canvas_id": "cv-1", "campaign_id": "cp"})) == "canvas:cv-1"
    assert journey_of(delivery(payload={"campaign_id": 42})) == "campaign:42"
    assert journey_of(delivery(payload={"campaign_id": True, "journey": "flat"})) is None
    assert journey_of({"envelope": None}) is None and journey_of({}) is None
    assert len(journey_of(delivery(attributes={"journey_id": "x" * 500}))) == 100


# ---- properties ------------------------------------------------------------------------------

MESSAGE = st.tuples(st.integers(0, 3 * DAY), st.sampled_from(["sms", "line", "braze"]),
                    st.sampled_from(["marketing", "transactional"]),
                    st.sampled_from([None, "journey:a", "journey:b"]))


def counts(history, at):
    return {cap.name: sum(1 for e in history if e[0] > at - cap.window_s
                          and cap.matches(e[1], e[2])
                          and (cap.per != "journey" or e[3] is not None)) for cap in CAPS}


@settings(max_examples=200)
@given(st.lists(MESSAGE, min_size=1, max_size=25, unique_by=lambda m: m[0]), st.data())
def test_replaying_any_subset_changes_no_count(messages, data):
    messages.sort()
    history: list = []
    for n, (ts, channel, purpose, journey) in enumerate(messages):
        history = record(history, [T0 + ts, channel, purpose, journey, f"d{n}"], T0 + ts, 7 * DAY)
    now = T0 + messages[-1][0]
    replayed = history
    for n in data.draw(st.lists(st.integers(0, len(messages) - 1), max_size=10)):
        _, channel, purpose, journey = messages[n]
        later = now + data.draw(st.integers(1, 3600))
        replay = [later, channel, purpose, journey, f"d{n}"]
        assert check(replayed, CAPS, replay, later) is None
        replayed = record(replayed, replay, now, 7 * DAY)
    assert replayed == history
    assert counts(replayed, now) == counts(history, now)


@settings(max_examples=200)
@given(st.integers(1, 5), st.integers(60, 3 * DAY), st.sampled_from(["sms", "line"]),
       st.lists(st.integers(0, 10**6), min_size=5, max_size=5, unique=True))
def test_the_max_plus_first_message_in_a_window_is_capped_and_not_after_it(limit, window,
                                                                           channel, offsets):
    cap = Cap("c", window, limit, channel=channel)
    spread = sorted(o % window for o in offsets)[:limit]
    while len(spread) < limit:
        spread.append(spread[-1] if spread else 0)
    history: list = []
    for n, offset in enumerate(spread):
        history = record(history, item(T0 + offset, channel, delivery_id=f"m{n}"), T0 + offset,
                         window)
    last = T0 + spread[-1]
    one_more = item(last, channel, delivery_id="next")
    assert check(history, (cap,), one_more, last) == "c"
    oldest = T0 + spread[0]
    assert check(history, (cap,), one_more, oldest + window) is None  # the oldest left
    other = "line" if channel == "sms" else "sms"
    assert check(history, (cap,), item(last, other, delivery_id="x"), last) is None
