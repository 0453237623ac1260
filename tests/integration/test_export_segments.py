"""`relay export sessionm-tags|attentive-list` against a real broker: members are the customers
whose latest audience.membership change for the segment is "entered"; with a worker running,
their identifiers come from the identity graph (the worker's table changelogs)."""

import asyncio
import random
import uuid

import orjson
import pytest

from app.cli import main
from app.config import load_settings
from app.export import changelog_topic, read_graph, resolve_member
from app.localstack import produce
from tests.integration.conftest import wait_until

pytestmark = pytest.mark.integration


def change(customer: dict, segment: str, action: str, when: str) -> tuple[str, bytes, bytes]:
    doc = {"membership_id": str(uuid.uuid4()), "platform": "braze", "audience": {"id": segment},
           "action": action, "customer": customer, "occurred_at": when}
    return "audience.membership", b"", orjson.dumps(doc)


@pytest.fixture(scope="module")
def memberships(broker):
    records = [
        change({"external_id": "C1", "phone": "0912345678"}, "seg-vip", "entered",
               "2026-11-22T10:00:00Z"),
        change({"external_id": "C2", "email": "c2@example.com"}, "seg-vip", "entered",
               "2026-11-22T10:00:00Z"),
        change({"external_id": "C2"}, "seg-vip", "exited", "2026-11-22T11:00:00Z"),  # left
        change({"external_id": "C3", "email": "c3@example.com"}, "seg-vip", "exited",
               "2026-11-22T09:00:00Z"),
        change({"external_id": "C3", "email": "c3@example.com"}, "seg-vip", "entered",
               "2026-11-22T09:30:00Z"),  # came back
        change({"external_id": "C4"}, "seg-vip", "entered", "2026-11-22T10:00:00Z"),
        change({"external_id": "C5", "email": "c5@example.com"}, "seg-lapsed", "entered",
               "2026-11-22T10:00:00Z"),
        ("audience.membership", b"", b'{"platform": "braze"}'),  # rejected by the normalizer
    ]
    asyncio.run(produce(broker.bootstrap, records))
    return records


@pytest.fixture
def env(broker, monkeypatch):
    monkeypatch.setenv("BROKER_URL", broker.url)


def test_sessionm_tags_csv(memberships, env, tmp_path, capsys):
    out = tmp_path / "tags.csv"
    assert main(["export", "sessionm-tags", "--segment", "seg-vip", "--out", str(out),
                 "--idle", "1.5"]) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "user_id,tag,ttl"
    assert sorted(lines[1:]) == ["C1,braze_vip,2592000", "C3,braze_vip,2592000",
                                 "C4,braze_vip,2592000"]
    err = capsys.readouterr().err
    assert "exported 3 of 3 members" in err and "1 membership records rejected" in err
    assert "C1" not in err


def test_attentive_list_to_stdout(memberships, env, capsys):
    assert main(["export", "attentive-list", "--segment", "seg-vip", "--idle", "1.5"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0] == "phone,email,client_user_id"
    assert sorted(lines[1:]) == ["+886912345678,,C1", ",c3@example.com,C3"]
    assert "exported 2 of 3 members (1 without the needed identifier" in captured.err


def test_unknown_segment_is_a_clear_error(env, capsys):
    assert main(["export", "sessionm-tags", "--segment", "seg-nope"]) == 2
    assert "segment 'seg-nope' has no SessionM tag in SEGMENTS_FILE" in capsys.readouterr().err


# --- identifiers from the identity graph: a real worker builds it from identity.updates --------

GRAPH_SEGMENT = "seg-newsletter"  # configured (counter tag, no TTL), used by no other test here


def identity_update(identifiers: dict) -> tuple[str, None, bytes]:
    return "identity.updates", None, orjson.dumps({
        "update_id": f"u-{uuid.uuid4()}", "source": "crm", "identifiers": identifiers,
        "attributes": {}, "updated_at": "2026-11-22T10:00:00Z"})


@pytest.fixture(scope="module")
def graph_members(broker, start_worker):
    """Two members whose membership records carry only a customer_id. C's identifiers come from
    one identity update; D's from another profile (no customer_id) the graph unified with D's
    through a shared e-mail. Ready once the worker's changelogs resolve both with a phone."""
    start_worker()
    tag = uuid.uuid4().hex[:8]
    n1, n2 = random.sample(range(10**6), 2)
    c, d = f"CG-{tag}", f"CD-{tag}"
    expect = {c: (f"+886912{n1:06d}", f"c.{tag}@example.com", f"smu-c-{tag}"),
              d: (f"+886933{n2:06d}", f"d.{tag}@example.com", f"smu-d-{tag}")}
    asyncio.run(produce(broker.bootstrap, [
        identity_update({"customer_id": c, "phone": f"0912{n1:06d}",
                         "email": expect[c][1].upper(), "sessionm_user_id": expect[c][2]}),
        identity_update({"customer_id": d, "line_uid": f"U{tag}"}),
        identity_update({"phone": f"0933{n2:06d}", "email": expect[d][1],
                         "sessionm_user_id": expect[d][2]}),
        identity_update({"line_uid": f"U{tag}", "email": expect[d][1]}),  # unifies the two
    ]))
    settings = load_settings({"BROKER_URL": broker.url})
    wanted = {f"customer_id:{c}", f"customer_id:{d}"}

    def graph_knows_both():
        view = asyncio.run(read_graph(settings, broker.bootstrap, wanted, idle_s=0.5))
        for customer, (phone, email, smu) in expect.items():
            found = resolve_member({"customer_id": customer}, view, settings.unify_keys)
            ids = found[1]["i"] if found else {}
            if not all(v in ids.get(t, {}) for t, v in
                       (("phone", phone), ("email", email), ("sessionm_user_id", smu))):
                return False
        return True

    wait_until(graph_knows_both, 90, interval_s=0.5, what="both customers in the changelogs")
    asyncio.run(produce(broker.bootstrap, [
        change({"customer_id": c}, GRAPH_SEGMENT, "entered", "2026-11-22T10:00:00Z"),
        change({"customer_id": d}, GRAPH_SEGMENT, "entered", "2026-11-22T10:00:00Z"),
    ]))
    return expect


def test_attentive_list_takes_contacts_from_the_identity_graph(graph_members, env, capsys):
    assert main(["export", "attentive-list", "--segment", GRAPH_SEGMENT, "--idle", "1.5"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0] == "phone,email,client_user_id"
    assert sorted(lines[1:]) == sorted(f"{phone},{email},{customer}" for customer, (
        phone, email, _smu) in graph_members.items())
    assert "exported 2 of 2 members" in captured.err
    assert "2 found in the identity graph" in captured.err
    assert not any(value in captured.err for ids in graph_members.values() for value in ids)
    assert not any(customer in captured.err for customer in graph_members)


def test_sessionm_tags_by_the_graphs_sessionm_user_id(graph_members, env, tmp_path, capsys):
    out = tmp_path / "tags.csv"
    assert main(["export", "sessionm-tags", "--segment", GRAPH_SEGMENT, "--user-id", "sessionm",
                 "--out", str(out), "--idle", "1.5"]) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "user_id,tag,ttl"
    assert sorted(lines[1:]) == sorted(f"{smu},braze_newsletter," for _p, _e, smu in
                                       graph_members.values())
    assert "2 found in the identity graph" in capsys.readouterr().err


def test_unreadable_changelog_records_are_counted_not_fatal(broker, graph_members, env,
                                                            capsys):
    app_id = load_settings({}).app_id
    tag = uuid.uuid4().hex[:8]
    asyncio.run(produce(broker.bootstrap, [  # keys no event uses, so the worker never reads them
        (changelog_topic(app_id, "identities"), orjson.dumps(f"customer_id:junk-{tag}"),
         b'{"p": '),
        (changelog_topic(app_id, "profiles"), orjson.dumps(f"pjunk{tag}"), b"\xff{not json"),
    ]))
    assert main(["export", "attentive-list", "--segment", GRAPH_SEGMENT, "--idle", "1.5"]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 3  # the header and both members, as before
    assert "2 found in the identity graph" in captured.err
    assert "2 unreadable identity-graph records skipped" in captured.err
