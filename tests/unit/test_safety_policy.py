"""topics/messaging.yaml: the shipped rules, validation errors, and what counts as a message."""

from __future__ import annotations

import copy
from datetime import time
from pathlib import Path

import pytest
import yaml

from app.config import ConfigError, load_settings
from app.safety.policy import QuietHours, load_policy, message_kind, parse_policy, parse_window

FILE = Path(__file__).resolve().parents[2] / "topics" / "messaging.yaml"
DOC = yaml.safe_load(FILE.read_text())
POLICY = load_policy(str(FILE))


def test_shipped_rules():
    assert POLICY.default_timezone == "Asia/Taipei"
    sms = POLICY.channel("sms")
    assert sms.quiet_hours == QuietHours(time(21), time(8), frozenset({"marketing"}))
    assert POLICY.channel("line").quiet_hours.start == time(22)
    assert POLICY.channel("line").consent == "opt_out"
    assert POLICY.channel("email").quiet_hours is None and POLICY.channel("email").consent == "opt_in"
    assert POLICY.actions[("maac", "push")] == ("line", "marketing")
    assert POLICY.actions[("maac", "multicast")] == ("line", "marketing")
    assert POLICY.actions[("attentive", "text")] == ("sms", "marketing")
    assert POLICY.actions[("braze", "canvas_trigger")] == ("braze", "marketing")
    assert {(c.name, c.window_s, c.max, c.channel, c.purpose, c.per) for c in POLICY.caps} == {
        ("marketing_3_per_24h", 86400, 3, None, "marketing", None),
        ("journey_1_per_7d", 604800, 1, None, "marketing", "journey"),
        ("sms_1_per_24h", 86400, 1, "sms", "marketing", None),
    }
    assert POLICY.history_keep_s == 7 * 86400


def test_only_messaging_actions_have_a_kind():
    def kind(dest, action, **declared):
        return message_kind(POLICY, {"destination": dest, "action": action, **declared})

    assert kind("maac", "push") == ("line", "marketing")
    assert kind("attentive", "text") == ("sms", "marketing")
    for dest, action in [("braze", "track_attributes"), ("braze", "track_event"),
                         ("attentive", "custom_event"), ("attentive", "subscribe"),
                         ("insider", "upsert"), ("sessionm", "tag"), ("air", "trigger")]:
        assert kind(dest, action) is None, (dest, action)
    assert kind("attentive", "text", purpose="transactional") == ("sms", "transactional")
    assert kind("braze", "track_event", channel="push") == ("push", "marketing")
    assert kind("braze", "track_event", purpose="transactional") is None  # no channel known
    assert kind("maac", "push", channel="sms", purpose="bogus") == ("sms", "marketing")


def test_quiet_window_applies_to_its_purposes():
    assert POLICY.quiet_window("sms", "marketing") is not None
    assert POLICY.quiet_window("sms", "transactional") is None
    assert POLICY.quiet_window("email", "marketing") is None
    both = QuietHours(time(21), time(8), frozenset({"marketing", "transactional"}))
    assert both.covers(time(23, 59)) and both.covers(time(0)) and both.covers(time(7, 59))
    assert not both.covers(time(8)) and not both.covers(time(20, 59))
    day = QuietHours(time(12), time(13))
    assert day.covers(time(12, 30)) and not day.covers(time(13)) and not day.covers(time(11))


@pytest.mark.parametrize("raw,seconds", [("90m", 5400), ("24h", 86400), ("7d", 604800),
                                         ("30s", 30), (" 2H ", 7200), (3600, 3600)])
def test_windows(raw, seconds):
    assert parse_window(raw) == seconds


@pytest.mark.parametrize("raw", ["1w", "h", "", None, True, 0, -5, "400d", 1.5, "1.5h"])
def test_bad_windows(raw):
    with pytest.raises(ConfigError, match="MESSAGING_FILE"):
        parse_window(raw)


def edited(path: str, value, delete: bool = False) -> dict:
    doc = copy.deepcopy(DOC)
    parts = path.split(".")
    target = doc
    for part in parts[:-1]:
        target = target[int(part)] if isinstance(target, list) else target[part]
    if delete:
        del target[parts[-1]]
    elif isinstance(target, list):
        target[int(parts[-1])] = value
    else:
        target[parts[-1]] = value
    return doc


@pytest.mark.parametrize("doc,needle", [
    (edited("default_timezone", "Mars/Olympus"), "'Mars/Olympus'"),
    (edited("default_timezone", None, delete=True), "default_timezone"),
    (edited("channels.fax", {}), "'fax'"),
    (edited("channels.sms.quiet_hours.start", 1260), "channel 'sms' quiet_hours.start"),
    (edited("channels.sms.quiet_hours.end", "8:00"), "channel 'sms' quiet_hours.end"),
    (edited("channels.sms.quiet_hours.end", "21:00"), "start and end are equal"),
    (edited("channels.sms.quiet_hours.from", "21:00"), "unknown key(s) ['from']"),
    (edited("channels.sms.quiet_hours.purposes", ["promo"]), "purposes entry"),
    (edited("channels.line.consent", "maybe"), "channel 'line' consent"),
    (edited("channels.sms.volume", 3), "unknown key(s) ['volume']"),
    (edited("actions.maac.push.channel", "pigeon"), "action maac.push channel"),
    (edited("actions.maac.push.purpose", None, delete=True), "action maac.push needs"),
    (edited("actions.maac.shout", {"channel": "line", "purpose": "marketing"}),
     "maac.shout is not a known"),
    (edited("caps.0.window", "1 week"), "cap 'marketing_3_per_24h' window"),
    (edited("caps.0.max", 0), "cap 'marketing_3_per_24h': 'max'"),
    (edited("caps.1.name", "marketing_3_per_24h"), "appears twice"),
    (edited("caps.1.name", "Journey Cap!"), "'name' must be"),
    (edited("caps.2.match.channel", "fax"), "match.channel"),
    (edited("caps.2.match.audience", "vip"), "unknown key(s) ['audience']"),
    (edited("caps.1.per", "campaign"), "cap 'journey_1_per_7d' per"),
    (edited("caps.0.limit", 3), "unknown key(s) ['limit']"),
    (edited("caps", {"a": 1}), "caps must be a list"),
    (edited("holidays", []), "unknown key(s) ['holidays']"),
    ([1, 2], "must be a mapping"),
])
def test_mistakes_stop_startup_with_one_line_naming_the_entry(doc, needle, tmp_path):
    path = tmp_path / "messaging.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError) as err:
        load_policy(str(path))
    message = str(err.value)
    assert needle in message and message.startswith("MESSAGING_FILE")
    assert str(path) in message and "\n" not in message


def test_load_settings_validates_the_file(tmp_path):
    assert load_settings({}).messaging_file == str(FILE)
    bad = tmp_path / "bad.yaml"
    bad.write_text("default_timezone: Asia/Taipei\ncaps: [{name: x, window: 1w, max: 1}]\n")
    with pytest.raises(ConfigError, match="MESSAGING_FILE cap 'x' window"):
        load_settings({"MESSAGING_FILE": str(bad)})
    with pytest.raises(ConfigError, match="MESSAGING_FILE points at a missing file"):
        load_settings({"MESSAGING_FILE": str(tmp_path / "none.yaml")})
    unreadable = tmp_path / "broken.yaml"
    unreadable.write_text("channels: [\n")
    with pytest.raises(ConfigError, match="MESSAGING_FILE is not valid YAML"):
        load_settings({"MESSAGING_FILE": str(unreadable)})


def test_minimal_policy_has_no_caps_and_no_windows():
    policy = parse_policy({"default_timezone": "UTC"})
    assert policy.caps == () and policy.history_keep_s == 0
    assert policy.quiet_window("sms", "marketing") is None
    assert message_kind(policy, {"destination": "maac", "action": "push"}) is None
