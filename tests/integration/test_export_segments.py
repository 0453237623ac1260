"""`relay export sessionm-tags|attentive-list` against a real broker: members are the customers
whose latest audience.membership change for the segment is "entered"."""

import asyncio
import uuid

import orjson
import pytest

from app.cli import main
from app.localstack import produce

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
