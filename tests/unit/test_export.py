"""`relay export`: members from membership changes, and the two file formats."""

import pytest

from app.config import ConfigError, load_settings
from app.export import attentive_list, build, latest_members, sessionm_tags
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
