"""Braze segment -> SessionM tag: the segments file and the `segment_tag` action."""

import pytest

from app.config import ConfigError, DestinationConfig, load_settings
from app.destinations import sessionm
from app.destinations.base import Reply
from app.destinations.sessionm.segments import load_segments, parse_segments

SEG = sessionm.DESTINATION.actions["segment_tag"]
DOC = """
sessionm_tags:
  seg-a: {tag: tag_a, ttl_s: 3600}
  seg-b: {tag: tag_b, on_exit: expire}
  seg-c: {tag: tag_c, ttl_s: 60}
"""


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "segments.yaml"
    path.write_text(DOC)
    return DestinationConfig("http://sm.test/core", "secret",
                             {"api_key": "KEY", "segments_file": str(path)})


def delivery(segment, kind="audience.entered", ids=None):
    env = {"event_id": "ev-1", "type": kind, "source": "audience",
           "occurred_at": "2026-11-22T10:00:00.000Z",
           "identities": ids if ids is not None else {"braze_external_id": "B 1"},
           "attributes": {}, "payload": {"platform": "braze", "audience_id": segment}, "trace": {}}
    return {"delivery_id": "d", "action": "segment_tag", "params": {"segment": "$.payload.audience_id"},
            "envelope": env}


def test_parse_valid_file():
    segs = parse_segments({"sessionm_tags": {"s1": {"tag": "vip", "ttl_s": 10},
                                             "s2": {"tag": "x", "on_exit": "expire"}}})
    assert segs["s1"].tag == "vip" and segs["s1"].ttl_s == 10 and segs["s1"].on_exit == "keep"
    assert segs["s2"].ttl_s is None and segs["s2"].on_exit == "expire"
    assert parse_segments(None) == {}


@pytest.mark.parametrize("doc,fragment", [
    ({"sessionm_tags": {"s1": {"tag": "vip", "ttl_s": 0}}}, "segment 's1': 'ttl_s'"),
    ({"sessionm_tags": {"s1": {"tag": "vip", "ttl_s": "10"}}}, "'ttl_s'"),
    ({"sessionm_tags": {"s1": {"tag": "has space"}}}, "segment 's1': 'tag'"),
    ({"sessionm_tags": {"s1": {"ttl_s": 5}}}, "'tag'"),
    ({"sessionm_tags": {"s1": {"tag": "a", "ttl": 5}}}, "unknown key(s) ['ttl']"),
    ({"sessionm_tags": {"s1": {"tag": "a", "on_exit": "remove"}}}, "'on_exit'"),
    ({"segments": {}}, "unknown section"),
    ({"sessionm_tags": ["s1"]}, "must map segment ids"),
])
def test_parse_rejects_with_clear_errors(doc, fragment):
    with pytest.raises(ConfigError) as err:
        parse_segments(doc)
    assert fragment in str(err.value) and "SEGMENTS_FILE" in str(err.value)


def test_startup_validates_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("sessionm_tags:\n  seg-x: {tag: ok, ttl_s: -1}\n")
    with pytest.raises(ConfigError, match="seg-x"):
        load_settings({"SEGMENTS_FILE": str(bad)})
    with pytest.raises(ConfigError, match="SEGMENTS_FILE"):
        load_settings({"SEGMENTS_FILE": str(tmp_path / "missing.yaml")})
    settings = load_settings({})
    assert settings.destination("sessionm").extra["segments_file"] == settings.segments_file
    assert load_segments(settings.segments_file)  # the shipped file is valid and not empty


def test_enter_tags_with_ttl_by_external_id(config):
    item = SEG.prepare(delivery("seg-a"), config)
    req = SEG.request([item], config)
    assert req.path == "/priv/v1/apps/KEY/external/users/B%201/tags"
    assert req.json == {"tags": ["tag_a"], "ttl": 3600}


def test_sessionm_user_id_wins(config):
    item = SEG.prepare(delivery("seg-a", ids={"sessionm_user_id": "u1", "customer_id": "C1"}),
                       config)
    assert item["user_path"] == "/users/u1/tags"


def test_no_ttl_is_a_counter_tag(config):
    assert SEG.prepare(delivery("seg-b"), config)["body"] == {"tags": ["tag_b"]}


def test_exit_keeps_unless_expire(config):
    assert SEG.prepare(delivery("seg-a", "audience.exited"), config) == {"skip": "exit_keeps_tag"}
    item = SEG.prepare(delivery("seg-b", "audience.exited"), config)
    assert item["body"] == {"tags": ["tag_b"], "ttl": 1}


async def test_perform_skips_without_calls(config):
    calls = []

    async def send(req):
        calls.append(req)
        return Reply(200, {}, {"status": "ok"})

    items = [SEG.prepare(delivery("seg-unknown"), config),
             SEG.prepare(delivery("seg-a", "audience.exited"), config),
             SEG.prepare(delivery("seg-c"), config)]
    results = await SEG.perform(send, items, config)
    assert [(r.status, r.reason) for r in results] == [
        ("skipped", "segment_not_configured"), ("skipped", "exit_keeps_tag"), ("delivered", "")]
    assert len(calls) == 1 and calls[0].json == {"tags": ["tag_c"], "ttl": 60}
